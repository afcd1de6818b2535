"""Which Warning Events the sidecars' failure reports call for, on which Tunnel, and when.

The operator polls every sidecar on a timer, so a peer that stays down is in every
report; an Event per poll would flood the Tunnel's Events. An Event is due when a
(tunnel, pod, peer, reason) failure *appears*: it is in the new report of the pod and
was not in the previous one. A peer that stays down is announced once, and again only
after it came up (or failed for another reason) and failed again. A sidecar that could
not be reached reports nothing, so its failures count as cleared and are announced
again when it answers.

The message names the pod and the peer pod and explains the reason with a fixed
sentence; it is never built from the sidecar's free text (`last_error`), so no key,
PSK or token can reach an Event. One poll posts at most :data:`MAX_EVENTS_PER_POLL`;
the rest are counted (the Tunnel's `Degraded` condition and the pods' metrics still
show them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from .cluster import ObjectKey
from .peers import Link
from .status import SidecarReport

MAX_EVENTS_PER_POLL: Final = 20
"""Events one poll of a Tunnel's pods may post (a Tunnel of 1,000 pods whose PSK is
wrong fails everywhere at once)."""

EVENT_REASONS: Final[Mapping[str, str]] = {
    "no_proposal_chosen": "NoProposalChosen",
    "authentication_failed": "AuthenticationFailed",
    "ts_unacceptable": "TrafficSelectorsUnacceptable",
    "peer_dead": "PeerUnreachable",
    "invalid_ke": "HandshakeFailed",
    "other": "HandshakeFailed",
}
"""Event reason per sidecar failure reason (:data:`kipsec_sidecar.handshake_failures.REASONS`)."""

_EXPLANATIONS: Final[Mapping[str, str]] = {
    "NoProposalChosen": "the two ends share no acceptable algorithm proposal",
    "AuthenticationFailed": (
        "authentication failed (the pre-shared keys differ, or a certificate is not trusted,"
        " expired or does not name the pod)"
    ),
    "TrafficSelectorsUnacceptable": "the peer refused the traffic selectors",
    "PeerUnreachable": "the peer does not answer IKE (pod gone, or UDP 500/4500 dropped)",
    "HandshakeFailed": "the IKE handshake failed",
}


@dataclass(frozen=True, order=True)
class FailureEvent:
    """One Warning Event to post on the Tunnel `tunnel`."""

    tunnel: ObjectKey
    pod: ObjectKey
    """The pod whose sidecar reports the failure."""
    peer: str
    """The peer pod, `namespace/name` (the peer name in the sidecar's document)."""
    reason: str
    """The Event's reason, a value of :data:`EVENT_REASONS`."""

    @property
    def message(self) -> str:
        return (
            f"pod {self.pod[0]}/{self.pod[1]} has no SA with peer pod {self.peer}: "
            f"{_EXPLANATIONS[self.reason]}"
        )


@dataclass(frozen=True)
class FailureEvents:
    """The Events one poll calls for, in order, and how many more the bound dropped."""

    events: tuple[FailureEvent, ...] = ()
    dropped: int = 0


def failure_events(
    previous: Mapping[ObjectKey, SidecarReport],
    new: Mapping[ObjectKey, SidecarReport],
    links: Mapping[ObjectKey, Iterable[Link]],
    limit: int = MAX_EVENTS_PER_POLL,
) -> FailureEvents:
    """The Events for failures in `new` that were not in `previous`, at most `limit`.

    `previous` and `new` are reports per pod (only the pods in `new` are looked at);
    `links` are the links per local pod (:attr:`~.peers.Links.by_pod`), which say
    under which Tunnels a pod has a peer. A failure for a peer no link names (a stale
    peer) posts nothing.
    """
    due: list[FailureEvent] = []
    for pod, report in new.items():
        before = _failures(pod, previous.get(pod), links)
        due += _failures(pod, report, links) - before
    due.sort()
    return FailureEvents(tuple(due[:limit]), max(0, len(due) - limit))


def _failures(
    pod: ObjectKey, report: SidecarReport | None, links: Mapping[ObjectKey, Iterable[Link]]
) -> set[FailureEvent]:
    if report is None or not report.failures:
        return set()
    tunnels: dict[str, set[ObjectKey]] = {}
    for link in links.get(pod, ()):
        tunnels.setdefault(link.remote.peer_name, set()).add(link.tunnel)
    return {
        FailureEvent(tunnel, pod, peer, EVENT_REASONS.get(reason, "HandshakeFailed"))
        for peer, reason in report.failures
        for tunnel in tunnels.get(peer, ())
    }


__all__ = [
    "EVENT_REASONS",
    "MAX_EVENTS_PER_POLL",
    "FailureEvent",
    "FailureEvents",
    "failure_events",
]
