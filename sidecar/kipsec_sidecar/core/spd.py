"""The Security Policy Database (RFC 4301 section 4.4.1).

An ordered list of policies, each a pair of traffic selectors (local, remote), a
direction and an action: PROTECT (through the SA or peer named by ``sa_ref``), BYPASS
(send in clear) or DISCARD. A packet's 5-tuple (from :func:`~kipsec_sidecar.core.ip.five_tuple`)
matches the first policy by ascending ``priority`` (lower wins, as in XFRM), then by
insertion order. Unmatched traffic gets the database's default: DISCARD when fail-closed
(the default), BYPASS otherwise.

Outbound, ``local`` is matched against the source and ``remote`` against the
destination; inbound the other way round.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

from .errors import LocalProtocolError
from .ip import FiveTuple, five_tuple
from .traffic_selectors import TrafficSelector


class Direction(Enum):
    IN = "in"
    OUT = "out"


class Action(Enum):
    PROTECT = "protect"
    BYPASS = "bypass"
    DISCARD = "discard"


@dataclass(frozen=True, slots=True)
class Policy:
    """One SPD entry. ``sa_ref`` (required for PROTECT) names the SA or peer to use."""

    local: TrafficSelector
    remote: TrafficSelector
    direction: Direction
    action: Action
    priority: int = 0
    sa_ref: Hashable | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.action is Action.PROTECT and self.sa_ref is None:
            raise LocalProtocolError(f"PROTECT policy {self.name!r} needs an sa_ref")
        if self.local.version != self.remote.version:
            raise LocalProtocolError(f"policy {self.name!r} mixes IPv4 and IPv6 selectors")

    def matches(self, packet: FiveTuple) -> bool:
        """Does the packet fall inside both selectors, seen from this policy's direction?"""
        return selectors_allow(packet, (self.local,), (self.remote,), self.direction)


def selectors_allow(
    packet: FiveTuple,
    local: Sequence[TrafficSelector],
    remote: Sequence[TrafficSelector],
    direction: Direction,
) -> bool:
    """Does ``packet`` fall inside one of ``local`` and one of ``remote`` (an SA's or a
    peer's selector lists, TSi x TSr as IKEv2 negotiates them)?

    Outbound the source is the local end; inbound (``Direction.IN``) the destination is.
    The inbound form is RFC 4301 section 5.2 step 4: a packet that came out of an SA
    must be one the SA's selectors allow, or it is dropped — otherwise a peer could use
    its SA to inject traffic from addresses or ports it was never granted.
    """
    if direction is Direction.OUT:
        local_addr, local_port = packet.src, packet.src_port
        remote_addr, remote_port = packet.dst, packet.dst_port
    else:
        local_addr, local_port = packet.dst, packet.dst_port
        remote_addr, remote_port = packet.src, packet.src_port
    protocol = packet.protocol
    return any(ts.contains_packet(local_addr, protocol, local_port) for ts in local) and any(
        ts.contains_packet(remote_addr, protocol, remote_port) for ts in remote
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a lookup: the action, and the policy that decided (None = default)."""

    action: Action
    policy: Policy | None = field(default=None)


class SecurityPolicyDatabase:
    """Ordered policies with a fail-closed (DISCARD) or fail-open (BYPASS) default."""

    def __init__(self, *, fail_closed: bool = True) -> None:
        self.fail_closed = fail_closed
        self._entries: list[tuple[int, int, Policy]] = []
        self._counter = itertools.count()

    def add(self, policy: Policy) -> None:
        """Append a policy; among equal priorities, earlier additions win."""
        self._entries.append((policy.priority, next(self._counter), policy))
        self._entries.sort(key=lambda e: (e[0], e[1]))

    def remove(self, policy: Policy) -> None:
        """Remove a policy; LocalProtocolError when it is not present."""
        for i, (_, _, p) in enumerate(self._entries):
            if p == policy:
                del self._entries[i]
                return
        raise LocalProtocolError(f"policy {policy.name!r} is not in the SPD")

    def lookup(self, packet: FiveTuple, direction: Direction) -> Policy | None:
        """The first matching policy for this direction, or None."""
        for _, _, policy in self._entries:
            if policy.direction is direction and policy.matches(packet):
                return policy
        return None

    def decide(self, packet: FiveTuple, direction: Direction) -> Decision:
        """The action for a packet: its policy's, or the database default."""
        policy = self.lookup(packet, direction)
        if policy is not None:
            return Decision(policy.action, policy)
        return Decision(Action.DISCARD if self.fail_closed else Action.BYPASS)

    def decide_packet(self, data: bytes, direction: Direction) -> Decision:
        """:meth:`decide` for raw IP bytes (ParseError when they are malformed)."""
        return self.decide(five_tuple(data), direction)

    def __iter__(self) -> Iterator[Policy]:
        return iter([p for _, _, p in self._entries])

    def __len__(self) -> int:
        return len(self._entries)
