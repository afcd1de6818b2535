"""The sans-IO IKE endpoint: routes datagrams to IKE SAs and guards against floods.

One :class:`Endpoint` per local IKE socket pair (500/4500). It owns every IKE SA of
this node — initiators it was asked to start and responders it creates for new
IKE_SA_INIT requests — keyed by our own IKE SPI. When ``cookie_threshold`` responders
(default 10, strongSwan's default) are half-open, a new IKE_SA_INIT is answered
statelessly with a COOKIE (RFC 7296 section 2.6) and state is created only for a
request that echoes a valid one:

    cookie = version (2 bytes) | SHA-256(secret[version] | Ni | IPi | SPIi)[:16]

The secret is rotated every ``cookie_secret_lifetime`` seconds of engine time; the
previous one is still accepted, so a retry straddling a rotation still works.

Refusing is cheap, because a flood is mostly refusals. A new IKE_SA_INIT costs, in this
order: the 28-byte header; the configuration lookup by address (no configuration:
refused as ``unknown_peer``, nothing else read); while cookies are required, a walk over
the generic payload headers (:func:`~.message.payload_bodies`) for the first payload and
the nonce, one SHA-256 and a 40-byte answer. Only a request that gets past all of that
is decoded in full and gets an :class:`IkeSa` (its Diffie-Hellman runs when it
answers). Routing a datagram and collecting what the SAs queued costs the same whatever
the number of half-open SAs. Counters: :attr:`Endpoint.cookies_sent`,
:attr:`Endpoint.refused` by reason, :attr:`Endpoint.half_open_count`, and
:attr:`Endpoint.dropped` for datagrams that fit no SA (garbage, unknown SPIs).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections import deque
from collections.abc import Callable

from ..errors import KipsecError, LocalProtocolError
from .config import Address, IkeConfig
from .constants import NON_ESP_MARKER, ExchangeType, NotifyType, PayloadType
from .engine import IkeSa
from .events import Event
from .message import (
    Header,
    Message,
    UnsupportedCriticalPayload,
    decode_header,
    decode_message,
    encode_message,
    payload_bodies,
)
from .payloads import NotifyPayload

Rng = Callable[[int], bytes]
ConfigLookup = Callable[[Address], IkeConfig | None]
ZERO_SPI = bytes(8)
COOKIE_HASH_LEN = 16
#: Half-open responders from which on new requests must echo a COOKIE (strongSwan's
#: ``charon.cookie_threshold`` default).
COOKIE_THRESHOLD = 10
#: Why an IKE_SA_INIT request got no state: no configuration for its address; unparseable
#: or without a nonce; a critical payload we do not know (answered with a Notify).
#: Requests answered with a COOKIE are counted in ``cookies_sent``.
REFUSALS = ("unknown_peer", "malformed", "unsupported_critical")


class Endpoint:
    """Dispatcher of IKE datagrams to the IKE SAs of one node.

    ``config`` is the configuration responders use, or a function from the peer
    address to one (None refuses the peer: its IKE_SA_INIT is dropped).
    """

    def __init__(
        self,
        config: IkeConfig | ConfigLookup,
        *,
        rng: Rng = os.urandom,
        cookie_threshold: int = COOKIE_THRESHOLD,
        cookie_secret_lifetime: float = 300.0,
        now: float = 0.0,
    ) -> None:
        self._lookup: ConfigLookup = config if callable(config) else (lambda _addr: config)
        self.rng = rng
        self.cookie_threshold = cookie_threshold
        self.cookie_secret_lifetime = cookie_secret_lifetime
        self.sas: dict[bytes, IkeSa] = {}
        # Responders by (SPIi, address), so that a retransmitted or late IKE_SA_INIT
        # reaches the SA it created instead of creating another one.
        self._half_open: dict[tuple[bytes, Address], IkeSa] = {}
        self._half_open_key: dict[IkeSa, tuple[bytes, Address]] = {}
        # Our SPIs per SA (the reverse of ``sas``), so collecting costs the same whatever
        # the number of SAs.
        self._spis: dict[IkeSa, set[bytes]] = {}
        self._events: deque[tuple[IkeSa, Event]] = deque()
        self._outgoing: list[tuple[bytes, Address]] = []
        self._secret_version = 0
        self._secrets: dict[int, bytes] = {0: rng(32)}
        self._secret_rotate_at = now + cookie_secret_lifetime
        self.dropped = 0
        """Datagrams that fit no SA and are no new IKE_SA_INIT: garbage, unknown SPIs."""
        self.cookies_sent = 0
        self.refused: dict[str, int] = dict.fromkeys(REFUSALS, 0)
        """IKE_SA_INIT requests refused before any state was made, by reason."""

    # ------------------------------------------------------------------ API

    def initiate(self, config: IkeConfig, peer_addr: Address, now: float) -> IkeSa:
        """Start an IKE SA towards ``peer_addr``; it is owned and routed by this endpoint."""
        sa = IkeSa.initiator(config, peer_addr, rng=self.rng, now=now)
        self._register(sa)
        return sa

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Route one datagram; never raises for anything the peer sends."""
        self._rotate(now)
        raw = data[4:] if data[:4] == NON_ESP_MARKER else data
        try:
            header = decode_header(raw)
        except KipsecError:
            self.dropped += 1
            return
        ours = header.spi_r if header.is_initiator else header.spi_i
        sa = self.sas.get(ours) if ours != ZERO_SPI else None
        decoded: Message | None = None
        if sa is None and self._is_new_init(header.exchange, header.is_response, header.spi_r):
            sa = self._half_open.get((header.spi_i, addr))
            if sa is None:
                made = self._new_responder(raw, header, addr, now)
                if made is None:
                    return  # refused, and counted as such
                sa, decoded = made  # the new SA takes the request as decoded here
        if sa is None:
            self.dropped += 1
            return
        sa.receive_datagram(data, addr, now, decoded=decoded)
        self._collect(sa)

    def handle_timer(self, now: float) -> None:
        self._rotate(now)
        for sa in list(self.sas.values()):
            timer = sa.get_timer()
            if timer is not None and timer <= now:
                sa.handle_timer(now)
            self._collect(sa)

    def get_timer(self) -> float | None:
        times = [t for sa in self.sas.values() if (t := sa.get_timer()) is not None]
        times.append(self._secret_rotate_at)
        return min(times)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        for sa in list(self.sas.values()):
            self._collect(sa)
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> tuple[IkeSa, Event] | None:
        """The oldest (IKE SA, event) pair not yet taken, or None."""
        return self._events.popleft() if self._events else None

    @property
    def half_open_count(self) -> int:
        return sum(1 for sa in self._half_open.values() if sa.half_open)

    def cookie_for(
        self, nonce_i: bytes, addr: Address, spi_i: bytes, version: int | None = None
    ) -> bytes:
        """The cookie this endpoint expects from (Ni, IPi, SPIi) under a secret version."""
        v = self._secret_version if version is None else version
        secret = self._secrets[v]
        ip = ipaddress.ip_address(addr[0]).packed
        digest = hashlib.sha256(secret + nonce_i + ip + spi_i).digest()[:COOKIE_HASH_LEN]
        return v.to_bytes(2, "big") + digest

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _is_new_init(exchange: int, is_response: bool, spi_r: bytes) -> bool:
        return exchange == ExchangeType.IKE_SA_INIT and not is_response and spi_r == ZERO_SPI

    def _new_responder(
        self, raw: bytes, header: Header, addr: Address, now: float
    ) -> tuple[IkeSa, Message] | None:
        """A responder for a new IKE_SA_INIT and the request decoded, or None (refused,
        counted): see the module."""
        config = self._lookup(addr)
        if config is None:
            self.refused["unknown_peer"] += 1
            return None
        try:
            bodies = payload_bodies(header, raw)
        except KipsecError:
            self.refused["malformed"] += 1
            return None
        nonce = next((body for kind, body in bodies if kind == PayloadType.NONCE), None)
        if nonce is None:
            self.refused["malformed"] += 1
            return None
        if self.half_open_count >= self.cookie_threshold and not self._valid_cookie(
            bodies[0], nonce, addr, header.spi_i
        ):
            self._send_cookie(header.spi_i, nonce, addr)
            return None
        try:
            request = decode_message(raw)
        except UnsupportedCriticalPayload as exc:
            self.refused["unsupported_critical"] += 1
            self._send_unsupported(raw, exc.payload_type, addr)
            return None
        except KipsecError:
            self.refused["malformed"] += 1
            return None  # the SA would only drop it; no state for garbage
        sa = IkeSa.responder(config, addr, header.spi_i, rng=self.rng, now=now)
        self._half_open[(header.spi_i, addr)] = sa
        self._half_open_key[sa] = (header.spi_i, addr)
        self._register(sa)
        return sa, request

    def _valid_cookie(
        self, first: tuple[int, bytes], nonce_i: bytes, addr: Address, spi_i: bytes
    ) -> bool:
        """Whether the first payload (type, body) is a COOKIE Notify this endpoint made."""
        kind, body = first
        # Notify body: protocol (1), SPI size (1), type (2), SPI, data (section 3.10).
        if kind != PayloadType.NOTIFY or len(body) < 4 or body[1] != 0:
            return False
        if int.from_bytes(body[2:4], "big") != NotifyType.COOKIE:
            return False
        cookie = body[4:]
        if len(cookie) != 2 + COOKIE_HASH_LEN:
            return False
        version = int.from_bytes(cookie[:2], "big")
        if version not in self._secrets:
            return False
        return hmac.compare_digest(cookie, self.cookie_for(nonce_i, addr, spi_i, version))

    def _send_cookie(self, spi_i: bytes, nonce_i: bytes, addr: Address) -> None:
        cookie = self.cookie_for(nonce_i, addr, spi_i)
        answer = Message(
            spi_i,
            ZERO_SPI,
            ExchangeType.IKE_SA_INIT,
            0,
            True,
            False,
            (NotifyPayload(NotifyType.COOKIE, data=cookie),),
        )
        self.cookies_sent += 1
        self._outgoing.append((encode_message(answer), addr))

    def _send_unsupported(self, raw: bytes, payload_type: int, addr: Address) -> None:
        """RFC 7296 2.5: a critical payload we do not know is refused, naming its type."""
        header = decode_header(raw)
        notify = NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, data=bytes([payload_type]))
        answer = Message(
            header.spi_i, ZERO_SPI, ExchangeType.IKE_SA_INIT, 0, True, False, (notify,)
        )
        self._outgoing.append((encode_message(answer), addr))

    def _rotate(self, now: float) -> None:
        if now < self._secret_rotate_at:
            return
        self._secret_version = (self._secret_version + 1) & 0xFFFF
        self._secrets = {v: s for v, s in self._secrets.items() if v == self._secret_version - 1}
        self._secrets[self._secret_version] = self.rng(32)
        self._secret_rotate_at = now + self.cookie_secret_lifetime

    def _register(self, sa: IkeSa) -> None:
        for spi in sa.local_spis():
            existing = self.sas.get(spi)
            if existing is not None and existing is not sa:
                raise LocalProtocolError("IKE SPI collision")  # 2^-64: the rng is broken
            self.sas[spi] = sa
        self._spis[sa] = set(sa.local_spis())

    def _collect(self, sa: IkeSa) -> None:
        self._outgoing += sa.datagrams_to_send(0.0)
        while (event := sa.next_event()) is not None:
            self._events.append((sa, event))
        if sa.closed:
            key = self._half_open_key.pop(sa, None)
            if key is not None:
                self._half_open.pop(key, None)
            for spi in self._spis.pop(sa, set()):
                if self.sas.get(spi) is sa:
                    del self.sas[spi]
            return
        current = set(sa.local_spis())
        known = self._spis.get(sa, set())
        if current == known:
            return
        for spi in known - current:
            if self.sas.get(spi) is sa:
                del self.sas[spi]
        for spi in current:
            self.sas.setdefault(spi, sa)
        self._spis[sa] = current
