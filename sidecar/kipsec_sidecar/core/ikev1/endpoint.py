"""The sans-IO IKEv1 endpoint: routes ISAKMP datagrams to ISAKMP SAs by cookie.

The IKEv1 sibling of :class:`kipsec_sidecar.core.ike.endpoint.Endpoint`, with the same
methods, so that :class:`~kipsec_sidecar.core.ike_versions.VersionedEndpoint` can put
both behind one socket pair. An SA is found by our cookie (CKY-I for the SAs we
started, CKY-R for the ones we answer); a main mode message 1 (CKY-R zero) from an
address with a configuration creates a responder — a retransmitted one reaches the
responder it created. IKEv1 has no cookie exchange (RFC 2408's anti-clogging cookies are
the SPIs themselves), so a half-open responder costs a few hundred bytes until its
``give_up_after`` deadline; ``max_half_open`` bounds their number.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable

from ..errors import KipsecError
from ..ike.config import Address, IkeConfig
from ..ike.constants import NON_ESP_MARKER
from ..ike.events import Event
from .constants import REFUSALS, ExchangeType
from .engine import ZERO_COOKIE, IsakmpSa
from .message import decode_header

Rng = Callable[[int], bytes]
ConfigLookup = Callable[[Address], IkeConfig | None]
MAX_HALF_OPEN = 64


class IsakmpEndpoint:
    """Dispatcher of ISAKMP datagrams to the ISAKMP SAs of one node."""

    def __init__(
        self,
        config: IkeConfig | ConfigLookup,
        *,
        rng: Rng = os.urandom,
        max_half_open: int = MAX_HALF_OPEN,
    ) -> None:
        self._lookup: ConfigLookup = config if callable(config) else (lambda _addr: config)
        self.rng = rng
        self.max_half_open = max_half_open
        self.sas: dict[bytes, IsakmpSa] = {}
        self._half_open: dict[tuple[bytes, Address], IsakmpSa] = {}
        self._events: deque[tuple[IsakmpSa, Event]] = deque()
        self._outgoing: list[tuple[bytes, Address]] = []
        self.dropped = 0
        self.cookies_sent = 0  #: always 0: IKEv1 has no cookie exchange (same metrics)
        self.refused: dict[str, int] = dict.fromkeys(REFUSALS, 0)

    def initiate(self, config: IkeConfig, peer_addr: Address, now: float) -> IsakmpSa:
        sa = IsakmpSa.initiator(config, peer_addr, rng=self.rng, now=now)
        self._register(sa.cookie_i, sa)
        return sa

    def _register(self, cookie: bytes, sa: IsakmpSa) -> None:
        """Route ``cookie`` to ``sa`` and let it see the others (re-authentication,
        INITIAL-CONTACT)."""
        self.sas[cookie] = sa
        sa.siblings = self.sas.values

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Route one datagram; never raises for anything the peer sends."""
        raw = data[4:] if data[:4] == NON_ESP_MARKER else data
        try:
            header = decode_header(raw)
        except KipsecError:
            self.dropped += 1
            return
        sa = self.sas.get(header.spi_r) if header.spi_r != ZERO_COOKIE else None
        if sa is None or sa.is_initiator:
            initiated = self.sas.get(header.spi_i)
            sa = initiated if initiated is not None and initiated.is_initiator else sa
        if sa is None and header.spi_r == ZERO_COOKIE:
            sa = self._half_open.get((header.spi_i, addr))
            if sa is None:
                sa = self._new_responder(header.spi_i, header.exchange, addr, now)
                if sa is None:
                    return
        if sa is None:
            self.dropped += 1
            return
        sa.receive_datagram(data, addr, now)
        self._collect(sa)

    def handle_timer(self, now: float) -> None:
        for sa in list(self.sas.values()):
            timer = sa.get_timer()
            if timer is not None and timer <= now:
                sa.handle_timer(now)
            self._collect(sa)

    def get_timer(self) -> float | None:
        times = [t for sa in self.sas.values() if (t := sa.get_timer()) is not None]
        return min(times) if times else None

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        for sa in list(self.sas.values()):
            self._collect(sa)
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> tuple[IsakmpSa, Event] | None:
        return self._events.popleft() if self._events else None

    @property
    def half_open_count(self) -> int:
        return sum(1 for sa in self._half_open.values() if sa.half_open)

    def _new_responder(
        self, cookie_i: bytes, exchange: int, addr: Address, now: float
    ) -> IsakmpSa | None:
        if exchange == ExchangeType.AGGRESSIVE:
            self.refused["aggressive_mode"] += 1  # exposes a PSK hash to offline guessing
            return None
        if exchange != ExchangeType.MAIN:
            self.dropped += 1
            return None
        config = self._lookup(addr)
        if config is None or config.version != 1:
            self.refused["unknown_peer"] += 1
            return None
        if self.half_open_count >= self.max_half_open:
            self.refused["half_open_limit"] += 1
            return None
        sa = IsakmpSa.responder(config, addr, cookie_i, rng=self.rng, now=now)
        self._half_open[(cookie_i, addr)] = sa
        self._register(sa.cookie_r, sa)
        return sa

    def _collect(self, sa: IsakmpSa) -> None:
        for new in sa.take_spawned():  # a re-authentication's main mode
            self._register(new.cookie_i, new)
            self._collect(new)
        self._outgoing += sa.datagrams_to_send(0.0)
        while (event := sa.next_event()) is not None:
            self._events.append((sa, event))
        if sa.closed or not sa.half_open:
            for key in [k for k, v in self._half_open.items() if v is sa]:
                del self._half_open[key]
        if sa.closed:
            for spi in sa.local_spis():
                if self.sas.get(spi) is sa:
                    del self.sas[spi]


__all__ = ["MAX_HALF_OPEN", "REFUSALS", "IsakmpEndpoint"]
