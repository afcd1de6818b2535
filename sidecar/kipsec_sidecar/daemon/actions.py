"""What a peer does after its SAs are lost, and what ends a control command's ``--wait``.

Pure functions over the configured actions and the engine's events, so the daemon's
event handlers stay thin and the rules can be tested without sockets.

A peer's *reconnect mode* is what it does while it has no SA: ``restart`` (initiate,
retrying with backoff), ``onDemand`` (initiate on the next packet for it) or ``none``
(initiate only when asked by ``kipsec-sidecar initiate``; packets for it are dropped).
It starts as :func:`~kipsec_sidecar.config.model.implied_action` of ``start``, returns
to that whenever a child SA is established, and becomes ``closeAction`` when the peer
deletes the SAs, ``dpdAction`` when it is found dead (both only for SAs that were
established). Any other loss (authentication or
negotiation failure, expiry) leaves it as it is. ``terminate`` holds a peer down on top
of all this until ``initiate`` or a reload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config.model import Action
from ..core.ike.constants import NotifyType
from ..core.ike.events import (
    AuthenticationFailedEvent,
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaRekeyed,
    Event,
    IkeSaDeleted,
    IkeSaRekeyed,
    NegotiationFailed,
    PeerDead,
)

#: IkeSaDeleted / ChildSaDeleted reasons meaning the peer deleted the SA.
PEER_DELETED = "deleted-by-peer"
#: IkeSaDeleted reason meaning liveness found the peer dead.
PEER_DEAD = "peer-dead"


def reconnect_after_loss(
    reason: str, current: Action, close: Action, dpd: Action, *, established: bool = True
) -> Action:
    """The reconnect mode after the peer's last SA went away for ``reason``.

    ``reason`` is an IkeSaDeleted or ChildSaDeleted reason; ``current`` the mode before.
    An IKE SA that never got established (an initiation that timed out or failed) is
    not a close or a dead peer: the mode stays, so an onStart peer keeps retrying an
    unreachable peer as it always did.
    """
    if not established:
        return current
    if reason == PEER_DELETED:
        return close
    if reason == PEER_DEAD:
        return dpd
    return current


def initiates_on_traffic(mode: Action, held: bool) -> bool:
    """Whether a packet for a peer without SA starts an initiation (else it is dropped)."""
    return not held and mode != "none"


def retries(mode: Action, held: bool) -> bool:
    """Whether the peer re-initiates by itself (with backoff) while it has no SA."""
    return not held and mode == "restart"


# --- --wait: which events end a command --------------------------------------------------

WaitCommand = Literal["initiate", "rekey-child", "rekey-ike", "terminate"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a waited-for exchange ended: ``ok``, else ``reason`` says why it failed."""

    ok: bool
    reason: str = ""


DONE = Outcome(ok=True)


def failure(event: Event) -> Outcome | None:
    """The failure ``event`` reports (the reason as the operator knows it), or None."""
    match event:
        case AuthenticationFailedEvent(reason=why, by_peer=by_peer):
            side = "the peer refused us" if by_peer else "the peer did not authenticate"
            return Outcome(False, f"AUTHENTICATION_FAILED ({side}: {why})")
        case NegotiationFailed(reason=why, notify=notify):
            return Outcome(False, f"{_notify_name(notify)} ({why})")
        case PeerDead(tries=tries):
            return Outcome(False, f"PEER_DEAD (no answer after {tries} transmissions)")
    return None


def _notify_name(notify: int | None) -> str:
    """``NO_PROPOSAL_CHOSEN`` and the like, as strongSwan's logs name them."""
    if notify is None:
        return "NEGOTIATION_FAILED"
    try:
        return NotifyType(notify).name
    except ValueError:
        return f"NOTIFY_{notify}"


def wait_outcome(command: WaitCommand, event: Event, *, peer_down: bool) -> Outcome | None:
    """Whether ``event`` (of the command's peer) ends the wait of ``command``.

    ``peer_down`` is True when the peer has no live IKE SA left after the event. None:
    keep waiting.
    """
    if command == "terminate":
        # The DELETE was answered, or given up after retransmissions: the SAs are gone
        # either way, which is what terminate promises.
        return DONE if isinstance(event, IkeSaDeleted) and peer_down else None
    if (failed := failure(event)) is not None:
        return failed
    match command, event:
        case "initiate", ChildSaEstablished():
            return DONE
        case "rekey-child", ChildSaRekeyed():
            return DONE
        case "rekey-ike", IkeSaRekeyed():
            return DONE
        case _, IkeSaDeleted(reason=why) if peer_down:
            return Outcome(False, f"IKE SA deleted ({why})")
        case _, ChildSaDeleted(reason=why) if command != "rekey-ike" and why == PEER_DELETED:
            return Outcome(False, "child SA deleted by the peer")
    return None


__all__ = [
    "DONE",
    "PEER_DEAD",
    "PEER_DELETED",
    "Outcome",
    "WaitCommand",
    "failure",
    "initiates_on_traffic",
    "reconnect_after_loss",
    "retries",
    "wait_outcome",
]
