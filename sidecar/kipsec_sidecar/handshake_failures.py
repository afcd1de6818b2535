"""Why an IKE SA never got established, as one of a few stable reasons (a metric label).

The engine says what went wrong in events (:class:`AuthenticationFailedEvent`,
:class:`NegotiationFailed` with the error notify, :class:`PeerDead`) before it reports
the IKE SA deleted. The daemon remembers the cause each IKE SA last reported and, when
one dies before it was established, counts the failure under that cause — so
``kipsec_handshake_failures_total{reason}`` tells "wrong proposals" from "wrong key"
from "nobody answers" without reading logs. The set is closed (:data:`REASONS`):
anything else is ``other``, so the label can never grow with what a peer sends.
"""

from __future__ import annotations

from typing import Final

from .core.ike.constants import NotifyType
from .core.ike.events import AuthenticationFailedEvent, IkeSaDeleted, NegotiationFailed, PeerDead

REASONS: Final = (
    "no_proposal_chosen",
    "authentication_failed",
    "ts_unacceptable",
    "invalid_ke",
    "peer_dead",
    "other",
)
"""Every value of the ``reason`` label, in the order metrics list them."""

_BY_NOTIFY: Final[dict[int, str]] = {
    NotifyType.NO_PROPOSAL_CHOSEN: "no_proposal_chosen",
    NotifyType.AUTHENTICATION_FAILED: "authentication_failed",
    NotifyType.TS_UNACCEPTABLE: "ts_unacceptable",
    NotifyType.INVALID_KE_PAYLOAD: "invalid_ke",
}


def failure_reason(event: object, earlier: str | None = None) -> str | None:
    """The reason `event` gives for a failing handshake, or None if it gives none.

    An :class:`IkeSaDeleted` names only ``peer-dead`` and ``authentication-failed``
    precisely; for ``negotiation-failed`` the event that preceded it says more, and
    the caller should prefer that one. ``earlier`` is the reason the same IKE SA gave
    before: IKEv1 ends a main mode that failed to authenticate with a
    :class:`NegotiationFailed` detailing the :class:`AuthenticationFailedEvent` it
    reported first (its notify may be INVALID-ID-INFORMATION, for an identity), which
    stays ``authentication_failed``.
    """
    match event:
        case AuthenticationFailedEvent():
            return "authentication_failed"
        case NegotiationFailed() if earlier == "authentication_failed":
            return earlier
        case NegotiationFailed(notify=notify):
            return _BY_NOTIFY.get(notify, "other") if notify is not None else "other"
        case PeerDead():
            return "peer_dead"
        case IkeSaDeleted(reason="peer-dead"):
            return "peer_dead"
        case IkeSaDeleted(reason="authentication-failed"):
            return "authentication_failed"
    return None


__all__ = ["REASONS", "failure_reason"]
