"""IKEv2 and IKEv1 behind one socket pair: dispatch by the ISAKMP version byte.

Both protocols share UDP 500 and 4500 and the 28-byte header, whose 18th byte is the
version: 0x20 for IKEv2 (RFC 7296), 0x10 for ISAKMP/IKEv1 (RFC 2408). A
:class:`VersionedEndpoint` hands each datagram to the IKEv2
:class:`~kipsec_sidecar.core.ike.endpoint.Endpoint` or to the IKEv1
:class:`~kipsec_sidecar.core.ikev1.endpoint.IsakmpEndpoint` accordingly, initiates with
the engine a peer's ``IkeConfig.version`` names, and answers a peer only in the version
its configuration names (an IKEv1 main mode from an IKEv2 peer is refused as
``unknown_peer``, and the other way round). Its methods are the Endpoint's, so the
daemon drives one object.

The IKEv1 endpoint, and with it the IKEv1 engine (~20 modules, ~1 MiB, ~0.03 s of a
sidecar's start), is made at the first IKEv1 datagram or initiation: a sidecar whose
peers all speak IKEv2 never loads it. It holds no state before then (its counters
start at zero), so making it later changes nothing a peer or a metric can see.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from .ike.config import Address, IkeConfig
from .ike.constants import NON_ESP_MARKER
from .ike.endpoint import REFUSALS as V2_REFUSALS
from .ike.endpoint import Endpoint
from .ike.engine import IkeSa, IkeState
from .ike.events import Event
from .ikev1.constants import REFUSALS as V1_REFUSALS

if TYPE_CHECKING:
    from .ikev1.endpoint import IsakmpEndpoint
    from .ikev1.engine import IsakmpSa

Rng = Callable[[int], bytes]
ConfigLookup = Callable[[Address], IkeConfig | None]
AnySa: TypeAlias = "IkeSa | IsakmpSa"
"""An IKE SA of either version: both have the calling convention the daemon uses."""
VERSION_OFFSET = 17  #: the header byte holding major (high nibble) and minor version
REFUSALS = tuple(dict.fromkeys((*V2_REFUSALS, *V1_REFUSALS)))


def awaiting_first_answer(sa: AnySa) -> bool:
    """Whether ``sa`` is our initiation still waiting for the peer's first answer
    (IKE_SA_INIT sent; IKEv1 main mode message 1 sent): the peer holds at most a
    half-open responder state that times out, so abandoning it is always safe."""
    if isinstance(sa, IkeSa):
        return sa.state is IkeState.INIT_SENT
    # An IKEv1 SA exists, so its engine is loaded already (it is imported lazily).
    from .ikev1.engine import Phase1State

    return sa.state is Phase1State.MM_SENT_SA


def authenticating(sa: AnySa) -> bool:
    """Whether ``sa`` is our initiation whose authenticating message is sent and not yet
    answered (IKE_AUTH; IKEv1 main mode message 5): the peer may already hold it
    established as responder (with, for IKEv2, its first child SA), so closing it
    without a DELETE could leave the peer an orphan. Before that message the peer holds
    at most a half-open responder (:func:`awaiting_first_answer`)."""
    if isinstance(sa, IkeSa):
        return sa.state is IkeState.AUTH_SENT
    from .ikev1.engine import Phase1State  # loaded already: an IKEv1 SA exists

    return sa.state is Phase1State.MM_SENT_ID


def quick_mode_under_way(sa: AnySa) -> bool:
    """Whether ``sa`` is an IKEv1 SA with a quick mode in flight (its initiator starts
    the first one as soon as main mode completes): deleting it now would leave the peer
    the IPsec SAs that quick mode makes, which a Delete of the ISAKMP SA alone does not
    remove. IKEv2 has no such state: its first child comes inside IKE_AUTH."""
    if isinstance(sa, IkeSa):
        return False
    return bool(sa.quick)


def detached(sa: AnySa) -> bool:
    """Whether ``sa`` is an IKEv1 SA whose ISAKMP SA is gone (expired, or deleted alone
    by the peer) while the IPsec SAs it holds live on until their own lifetime or a new
    main mode (:meth:`~kipsec_sidecar.core.ikev1.engine.IsakmpSa.detach`). IKEv2 has no
    such state: its child SAs go with the IKE SA."""
    if isinstance(sa, IkeSa):
        return False
    return sa.detached


def renew_credentials(sa: AnySa, config: IkeConfig) -> None:
    """Renewed credentials (``config``, the same link) for what ``sa`` authenticates
    from now on: an IKEv1 SA's re-authentication
    (:meth:`~kipsec_sidecar.core.ikev1.engine.IsakmpSa.renew_credentials`). An IKEv2 SA
    rekeys without authenticating again: nothing to do."""
    if not isinstance(sa, IkeSa):
        sa.renew_credentials(config)


def ike_version(sa: AnySa) -> int:
    """1 or 2: which protocol ``sa`` speaks."""
    return 2 if isinstance(sa, IkeSa) else 1


def _only(version: int, lookup: ConfigLookup) -> ConfigLookup:
    def found(addr: Address) -> IkeConfig | None:
        config = lookup(addr)
        return config if config is not None and config.version == version else None

    return found


class VersionedEndpoint:
    """The IKEv2 and the IKEv1 endpoint of one node, one datagram stream in."""

    def __init__(
        self, config: IkeConfig | ConfigLookup, *, rng: Rng = os.urandom, now: float = 0.0
    ) -> None:
        lookup: ConfigLookup = config if callable(config) else (lambda _addr: config)
        self.v2 = Endpoint(_only(2, lookup), rng=rng, now=now)
        self._v1_lookup = _only(1, lookup)
        self._rng = rng
        self._v1: IsakmpEndpoint | None = None
        self.unknown_version = 0
        """Datagrams whose version byte is neither 1.x nor 2.x (dropped)."""

    @property
    def v1(self) -> IsakmpEndpoint:
        """The IKEv1 endpoint, made on first use (see the module's docstring)."""
        if self._v1 is None:
            from .ikev1.endpoint import IsakmpEndpoint

            self._v1 = IsakmpEndpoint(self._v1_lookup, rng=self._rng)
        return self._v1

    def _v1_if_made(self) -> tuple[IsakmpEndpoint, ...]:
        return () if self._v1 is None else (self._v1,)

    def initiate(self, config: IkeConfig, peer_addr: Address, now: float) -> AnySa:
        if config.version == 1:
            return self.v1.initiate(config, peer_addr, now)
        return self.v2.initiate(config, peer_addr, now)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        raw = data[4:] if data[:4] == NON_ESP_MARKER else data
        major = raw[VERSION_OFFSET] >> 4 if len(raw) > VERSION_OFFSET else 0
        if major == 1:
            self.v1.receive_datagram(data, addr, now)
        elif major == 2:
            self.v2.receive_datagram(data, addr, now)
        else:
            self.unknown_version += 1

    def handle_timer(self, now: float) -> None:
        self.v2.handle_timer(now)
        for v1 in self._v1_if_made():
            v1.handle_timer(now)

    def get_timer(self) -> float | None:
        timers = [self.v2.get_timer(), *(v1.get_timer() for v1 in self._v1_if_made())]
        times = [t for t in timers if t is not None]
        return min(times) if times else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out = self.v2.datagrams_to_send(now)
        for v1 in self._v1_if_made():
            out += v1.datagrams_to_send(now)
        return out

    def next_event(self) -> tuple[AnySa, Event] | None:
        found: tuple[AnySa, Event] | None = self.v2.next_event()
        if found is None and self._v1 is not None:
            found = self._v1.next_event()
        return found

    @property
    def half_open_count(self) -> int:
        return self.v2.half_open_count + sum(v1.half_open_count for v1 in self._v1_if_made())

    @property
    def cookies_sent(self) -> int:
        return self.v2.cookies_sent

    @property
    def dropped(self) -> int:
        v1_dropped = sum(v1.dropped for v1 in self._v1_if_made())
        return self.v2.dropped + v1_dropped + self.unknown_version

    @property
    def refused(self) -> dict[str, int]:
        out = dict.fromkeys(REFUSALS, 0)
        for counts in (self.v2.refused, *(v1.refused for v1 in self._v1_if_made())):
            for reason, n in counts.items():
                out[reason] += n
        return out


__all__ = [
    "REFUSALS",
    "AnySa",
    "VersionedEndpoint",
    "authenticating",
    "awaiting_first_answer",
    "ike_version",
    "quick_mode_under_way",
    "renew_credentials",
]
