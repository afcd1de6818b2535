"""The IKEv2 SA state machine (RFC 7296), sans-IO in the aioquic style.

One :class:`IkeSa` per IKE SA (and its child SAs). It is fed datagrams and timer
ticks with the caller's ``now`` (seconds on any monotonic scale) and answers with
datagrams to send, the next time it wants :meth:`IkeSa.handle_timer`, and events. It
never reads a clock, never opens a socket and takes all randomness (SPIs, nonces,
Diffie-Hellman keys, IVs, jitter) from the injected ``rng``, so a run is reproducible.

This module holds what every exchange shares: routing a datagram to its context, the
message-ID windows, the response cache, retransmission, timers, the action queue and
closing. The exchanges themselves live in :mod:`.ike_sa_init`, :mod:`.ike_auth`,
:mod:`.create_child` and :mod:`.informational`.

Anything the peer sends that is malformed, tampered, out of window or unexpected is
dropped and counted in :attr:`IkeSa.stats` (with a :class:`~.events.ProtocolErrorEvent`);
nothing the peer sends makes these methods raise.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from functools import partial

from ..errors import (
    IntegrityError,
    KipsecError,
    LocalProtocolError,
    ParseError,
    RemoteProtocolError,
)
from . import create_child, ike_auth, ike_sa_init, informational
from .child_sa import ChildSa, ChildState
from .config import Address, IkeConfig, Lifetime
from .constants import IKE_NATT_PORT, NON_ESP_MARKER, ExchangeType, NotifyType, PayloadType
from .events import (
    ChildSaDeleted,
    Event,
    IkeSaDeleted,
    NegotiationFailed,
    PeerDead,
    ProtocolErrorEvent,
)
from .message import (
    Header,
    Message,
    UnsupportedCriticalPayload,
    decode_header,
    decode_message,
    encode_message,
)
from .payloads import EncryptedFragment, NotifyPayload, Payload
from .sa_context import Outstanding, ResponseHandler, SaContext, TimeoutHandler
from .sk import protect, protect_fragments, unprotect

Rng = Callable[[int], bytes]
ZERO_SPI = bytes(8)
Action = Callable[[float], None]


class IkeState(Enum):
    """Where the IKE SA is in its life (the child SAs have their own states)."""

    INIT_SENT = "init-sent"  #: initiator: IKE_SA_INIT request outstanding
    AUTH_SENT = "auth-sent"  #: initiator: IKE_AUTH request outstanding
    RESPONDER_NEW = "responder-new"  #: responder: waiting for (or answering) IKE_SA_INIT
    INIT_DONE = "init-done"  #: responder: IKE_SA_INIT answered, waiting for IKE_AUTH
    ESTABLISHED = "established"
    CLOSED = "closed"


@dataclass(slots=True)
class IkeStats:
    """Counters for metrics: what came in, what was dropped and why, what was resent."""

    datagrams_received: int = 0
    dropped_malformed: int = 0
    dropped_integrity: int = 0
    dropped_invalid: int = 0
    dropped_unexpected: int = 0
    dropped_out_of_window: int = 0
    answered_from_cache: int = 0
    retransmissions: int = 0
    internal_errors: int = 0


# Requests the peer may send, by our state: the h11-style table of legal transitions.
_REQUESTS_ALLOWED: dict[IkeState, frozenset[int]] = {
    IkeState.RESPONDER_NEW: frozenset({ExchangeType.IKE_SA_INIT}),
    IkeState.INIT_DONE: frozenset({ExchangeType.IKE_AUTH}),
    IkeState.ESTABLISHED: frozenset({ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL}),
}
# An old or redundant IKE SA still answers Deletes, liveness checks and (with
# TEMPORARY_FAILURE, RFC 7296 2.25.2) a late rekey request from a colliding peer.
_DRAINING_ALLOWED = frozenset({ExchangeType.INFORMATIONAL, ExchangeType.CREATE_CHILD_SA})


class IkeSa:
    """One IKE SA and its children. Build it with :meth:`initiator` or :meth:`responder`.

    Thread of use: ``receive_datagram``/``handle_timer``/actions, then drain
    ``datagrams_to_send`` and ``next_event``, then sleep until ``get_timer()``.
    Actions (:meth:`initiate_child`, :meth:`rekey_child`, ...) are queued and run one
    exchange at a time (window size 1). A misuse (unknown child name or SPI) raises
    :class:`~kipsec_sidecar.core.errors.LocalProtocolError`; nothing else raises.
    """

    def __init__(
        self,
        config: IkeConfig,
        peer_addr: Address,
        *,
        initiator: bool,
        rng: Rng,
        now: float,
        spi_i: bytes,
        spi_r: bytes,
    ) -> None:
        self.config = config
        self.peer_addr: Address = peer_addr
        self.is_initiator = initiator
        self.rng = rng
        self.stats = IkeStats()
        self.state = IkeState.INIT_SENT if initiator else IkeState.RESPONDER_NEW
        self.children: dict[bytes, ChildSa] = {}
        self.nat_local = False
        self.nat_remote = False
        self.peer_fragmentation = False
        self.peer_hash_algorithms: set[int] = set()
        self.peer_certreq = False
        self.remote_identity: str | None = None
        self._ctx = SaContext(spi_i, spi_r, original_initiator=initiator)
        self._draining: list[SaContext] = []
        self._events: deque[Event] = deque()
        self._outgoing: list[tuple[bytes, Address]] = []
        self._actions: deque[Action] = deque()
        self._scheduled: list[tuple[float, Action]] = []
        self._natt = False
        self._last_inbound = now
        self._created = now
        self._half_open_deadline: float | None = None if initiator else now + self._give_up_after()
        self._ike_rekey_at: float | None = None
        self._ike_expire_at: float | None = None
        # Exchange state shared by the exchange modules (documented where they set it).
        self.init = ike_sa_init.InitState()
        self.ike_rekey_candidate: create_child.IkeRekeyCandidate | None = None
        self.closing: tuple[str, str] | None = None  # (reason, child reason) of our Delete

    # ------------------------------------------------------------------ constructors

    @classmethod
    def initiator(
        cls,
        config: IkeConfig,
        peer_addr: Address,
        *,
        rng: Rng = os.urandom,
        now: float = 0.0,
    ) -> IkeSa:
        """Start an IKE SA towards ``peer_addr``: the IKE_SA_INIT request is ready to send."""
        sa = cls(
            config,
            peer_addr,
            initiator=True,
            rng=rng,
            now=now,
            spi_i=_random_spi(rng, 8),
            spi_r=ZERO_SPI,
        )
        ike_sa_init.start(sa, now)
        return sa

    @classmethod
    def responder(
        cls,
        config: IkeConfig,
        peer_addr: Address,
        spi_i: bytes,
        *,
        rng: Rng = os.urandom,
        now: float = 0.0,
    ) -> IkeSa:
        """A responder for the IKE_SA_INIT from ``peer_addr`` with SPI ``spi_i``.

        Feed it that request with :meth:`receive_datagram`. Normally made by the
        :class:`~.endpoint.Endpoint`, which also handles cookies.
        """
        return cls(
            config,
            peer_addr,
            initiator=False,
            rng=rng,
            now=now,
            spi_i=spi_i,
            spi_r=_random_spi(rng, 8),
        )

    # ------------------------------------------------------------------ public state

    @property
    def spi_i(self) -> bytes:
        return self._ctx.spi_i

    @property
    def spi_r(self) -> bytes:
        return self._ctx.spi_r

    @property
    def original_initiator(self) -> bool:
        """Whether this side is the original initiator of the IKE SA that exists now.

        That is the side that sent IKE_SA_INIT until the IKE SA is rekeyed, and the side
        that started the rekey after it (RFC 7296 section 2.18: the new SA's SPIs, keys
        and I flag follow the rekey's initiator). :attr:`is_initiator` keeps who started
        the first exchange of this object, for decisions about how it was created.
        """
        return self._ctx.original_initiator

    @property
    def established(self) -> bool:
        return self.state is IkeState.ESTABLISHED

    @property
    def closed(self) -> bool:
        return self.state is IkeState.CLOSED

    @property
    def half_open(self) -> bool:
        """A responder that answered IKE_SA_INIT and waits for IKE_AUTH (cookie threshold)."""
        return self.state in (IkeState.RESPONDER_NEW, IkeState.INIT_DONE)

    @property
    def nat_detected(self) -> bool:
        """A NAT is on the path: IKE moved to port 4500, ESP must be UDP-encapsulated."""
        return self.nat_local or self.nat_remote

    @property
    def fragmentation(self) -> bool:
        """Both sides announced IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383)."""
        return self.config.fragmentation and self.peer_fragmentation

    @property
    def current(self) -> SaContext:
        """The context new exchanges use (the newest after an IKE SA rekey)."""
        return self._ctx

    def local_spis(self) -> list[bytes]:
        """Our IKE SPIs of every context still alive: route datagrams for them here."""
        return [self._ctx.local_spi] + [c.local_spi for c in self._draining]

    def child_by_spi(self, spi_in: bytes) -> ChildSa | None:
        return self.children.get(spi_in)

    # ------------------------------------------------------------------ sans-IO API

    def receive_datagram(
        self, data: bytes, addr: Address, now: float, *, decoded: Message | None = None
    ) -> None:
        """Process one UDP payload from ``addr`` (a leading non-ESP marker is stripped).

        ``decoded`` is ``data`` (without a non-ESP marker) already decoded by the caller,
        for an IKE_SA_INIT request only: the :class:`~.endpoint.Endpoint` decodes a new
        one whole before it makes any state for it, and decoding the same bytes again
        here was a tenth of the responder's work on that message.
        """
        if self.closed:
            self.stats.dropped_unexpected += 1
            return
        receive_guarded(
            self.stats, self._emit, addr, lambda: self._receive(bytes(data), addr, now, decoded)
        )
        self._pump(now)

    def handle_timer(self, now: float) -> None:
        """Run everything due at ``now``: retransmissions, rekeys, expiries, liveness."""
        if self.closed:
            return
        for ctx in [self._ctx, *self._draining]:
            self._retransmit(ctx, now)
            if self.closed:
                return
        self._draining = [c for c in self._draining if c.drain_until is None or c.drain_until > now]
        if self._half_open_deadline is not None and now >= self._half_open_deadline:
            self._close("negotiation-failed", now)
            return
        due = [a for t, a in self._scheduled if t <= now]
        self._scheduled = [(t, a) for t, a in self._scheduled if t > now]
        for action in due:
            self._actions.append(action)
        if self.established:
            self._lifetime_timers(now)
        self._pump(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Datagrams (UDP payload, destination) queued since the last call.

        Once NAT traversal is on (:attr:`nat_detected`, or the peer wrote to port
        4500) every datagram starts with the 4-byte non-ESP marker and must leave from
        the local port 4500 socket; otherwise from port 500. The caller owns the bytes.
        """
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        """The engine time at which :meth:`handle_timer` must run next, or None."""
        if self.closed:
            return None
        times: list[float] = []
        for ctx in [self._ctx, *self._draining]:
            if ctx.pending is not None:
                times.append(ctx.pending.next_at)
            if ctx.drain_until is not None:
                times.append(ctx.drain_until)
        if self._half_open_deadline is not None:
            times.append(self._half_open_deadline)
        times += [t for t, _ in self._scheduled]
        if self.established:
            times += [t for t in (self._ike_rekey_at, self._ike_expire_at) if t is not None]
            for child in self.children.values():
                if child.expire_at is not None:
                    times.append(child.expire_at)
                if child.rekey_at is not None and child.state is ChildState.INSTALLED:
                    times.append(child.rekey_at)
            if self.config.liveness_interval and self._ctx.pending is None:
                times.append(self._last_inbound + self.config.liveness_interval)
        return min(times) if times else None

    def next_event(self) -> Event | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ actions

    def initiate_child(self, child_config_name: str, now: float) -> None:
        """Negotiate one more child SA from the named ChildConfig (CREATE_CHILD_SA)."""
        cfg = self.config.child(child_config_name)
        self._require_established()
        self._actions.append(lambda t: create_child.start_child(self, cfg, t))
        self._pump(now)

    def rekey_child(self, child_spi: bytes, now: float) -> None:
        """Rekey the child SA whose inbound SPI is ``child_spi`` (make-before-break)."""
        child = self._child_or_raise(child_spi)
        self._require_established()
        if child.state is ChildState.INSTALLED:
            child.rekey_at = None
            self._actions.append(lambda t: create_child.start_child_rekey(self, child, t))
        self._pump(now)

    def rekey_ike(self, now: float) -> None:
        """Rekey the IKE SA itself (new SPIs and keys; the children move over)."""
        self._require_established()
        self._ike_rekey_at = None
        self._actions.append(lambda t: create_child.start_ike_rekey(self, t))
        self._pump(now)

    def delete_child(self, spi: bytes, now: float) -> None:
        """Delete the child SA whose inbound SPI is ``spi`` (INFORMATIONAL Delete)."""
        child = self._child_or_raise(spi)
        self._require_established()
        self._actions.append(
            lambda t: informational.start_delete_children(self, [child], "deleted", t)
        )
        self._pump(now)

    def delete(self, now: float) -> None:
        """Delete the IKE SA and every child (before establishment: just close)."""
        if self.closed:
            return
        if not self.established:
            self._close("deleted", now)
            return
        self._actions.clear()
        self._ctx.pending = None
        informational.start_delete_ike(self, "deleted", now)

    def send_liveness(self, now: float) -> None:
        """Check the peer is alive (empty INFORMATIONAL); PeerDead if it never answers."""
        self._require_established()
        self._actions.append(lambda t: informational.start_liveness(self, t))
        self._pump(now)

    # ------------------------------------------------------------------ for exchanges

    def emit(self, event: Event) -> None:
        """Queue an event for :meth:`next_event`."""
        self._events.append(event)

    _emit = emit

    def random_spi(self, length: int) -> bytes:
        """A fresh non-zero SPI (child SPIs are also unique among our children)."""
        while True:
            spi = _random_spi(self.rng, length)
            if spi not in self.children:
                return spi

    def random_fraction(self) -> float:
        """A number in [0, 1] from the injected rng (jitter, retry delays)."""
        return int.from_bytes(self.rng(2), "big") / 0xFFFF

    def wall_clock(self, now: float) -> datetime:
        """Wall time for certificate validity: the configured epoch plus ``now``."""
        return datetime.fromtimestamp(self.config.wall_clock_epoch + now, tz=UTC)

    def lifetimes(self, lifetime: Lifetime, now: float) -> tuple[float | None, float | None]:
        """(soft, hard) engine times for an SA created at ``now``; soft has jitter."""
        return sa_lifetimes(lifetime, now, self.random_fraction())

    def set_ike_lifetimes(self, now: float) -> None:
        self._ike_rekey_at, self._ike_expire_at = self.lifetimes(self.config.lifetime, now)
        self._half_open_deadline = None

    def enqueue(self, action: Action, *, first: bool = False) -> None:
        """Run ``action(now)`` when no request of ours is outstanding."""
        if first:
            self._actions.appendleft(action)
        else:
            self._actions.append(action)

    def schedule(self, at: float, action: Action) -> None:
        """Queue ``action`` once ``handle_timer`` runs at or after ``at``."""
        self._scheduled.append((at, action))

    def send_request(
        self,
        ctx: SaContext,
        exchange: int,
        payloads: Sequence[Payload],
        on_response: ResponseHandler,
        now: float,
        *,
        kind: str,
        on_timeout: TimeoutHandler | None = None,
        encrypt: bool = True,
    ) -> list[bytes]:
        """Send a request on ``ctx`` with its next message ID; returns the datagrams."""
        if ctx.pending is not None:
            raise LocalProtocolError("a request is already outstanding (window size 1)")
        mid = ctx.next_mid
        ctx.next_mid += 1
        msg = Message(
            ctx.spi_i, ctx.spi_r, exchange, mid, False, ctx.original_initiator, tuple(payloads)
        )
        datagrams = self._encode(ctx, msg, encrypt)
        ctx.pending = Outstanding(
            mid,
            exchange,
            datagrams,
            on_response,
            now + self.config.retransmission.timeout(0),
            on_timeout=on_timeout,
            kind=kind,
        )
        self._output(datagrams, self.peer_addr)
        return datagrams

    def respond(
        self,
        ctx: SaContext,
        request: Message,
        payloads: Sequence[Payload],
        addr: Address,
        *,
        encrypt: bool = True,
    ) -> list[bytes]:
        """Answer ``request`` on ``ctx``; the answer is kept for retransmitted requests."""
        msg = Message(
            ctx.spi_i,
            ctx.spi_r,
            request.exchange,
            request.message_id,
            True,
            ctx.original_initiator,
            tuple(payloads),
        )
        datagrams = self._encode(ctx, msg, encrypt)
        ctx.last_response = (request.message_id, datagrams)
        ctx.peer_mid = request.message_id + 1
        self._output(datagrams, addr)
        return datagrams

    def send_plain(self, msg: Message, addr: Address) -> bytes:
        """Send an unencrypted message that is not cached (stateless IKE_SA_INIT errors)."""
        data = encode_message(msg)
        self._output([data], addr)
        return data

    def pending_kind(self) -> str | None:
        """What our outstanding request on the current context does, if any."""
        return self._ctx.pending.kind if self._ctx.pending is not None else None

    def switch_context(self, new: SaContext, now: float) -> SaContext:
        """Make ``new`` current (IKE SA rekey); the old one drains. Returns the old one."""
        old = self._ctx
        self._ctx = new
        old.drain_until = now + self._give_up_after()
        self._draining.append(old)
        return old

    def drop_context(self, ctx: SaContext) -> None:
        """Forget a draining context whose deletion completed."""
        if ctx in self._draining:
            self._draining.remove(ctx)

    def add_draining(self, ctx: SaContext, now: float) -> None:
        """Keep ``ctx`` answering its peer until deleted (a redundant rekeyed IKE SA)."""
        ctx.drain_until = now + self._give_up_after()
        self._draining.append(ctx)

    def enable_natt(self) -> None:
        """NAT detected: move IKE to port 4500 with the non-ESP marker (RFC 7296 2.23)."""
        self._natt = True
        if self.is_initiator and self.peer_addr[1] != IKE_NATT_PORT:
            self.peer_addr = (self.peer_addr[0], IKE_NATT_PORT)

    def close(self, reason: str, now: float, child_reason: str = "ike-deleted") -> None:
        self._close(reason, now, child_reason)

    def discard(self) -> None:
        """Close without events: a stateless answer (INVALID_KE, NO_PROPOSAL) was sent."""
        self.state = IkeState.CLOSED

    def remove_child(self, child: ChildSa, reason: str) -> None:
        if self.children.pop(child.spi_in, None) is not None:
            self.emit(
                ChildSaDeleted(child.name, child.protocol, child.spi_in, child.spi_out, reason)
            )

    # ------------------------------------------------------------------ internals

    def _require_established(self) -> None:
        if not self.established:
            raise LocalProtocolError(f"the IKE SA is {self.state.value}, not established")

    def _child_or_raise(self, spi: bytes) -> ChildSa:
        child = self.children.get(spi)
        if child is None:
            raise LocalProtocolError(f"no child SA with inbound SPI {spi.hex()}")
        return child

    def _give_up_after(self) -> float:
        r = self.config.retransmission
        return sum(r.timeout(n) for n in range(r.max_tries + 1))

    def _encode(self, ctx: SaContext, msg: Message, encrypt: bool) -> list[bytes]:
        if not encrypt:
            return [encode_message(msg)]
        assert ctx.sk_out is not None
        if self.fragmentation and msg.exchange != ExchangeType.IKE_SA_INIT:
            limit = self.config.max_datagram - (len(NON_ESP_MARKER) if self._natt else 0)
            return protect_fragments(msg, ctx.sk_out, self.rng, limit)
        return [protect(msg, ctx.sk_out, self.rng)]

    def _output(self, datagrams: list[bytes], addr: Address) -> None:
        prefix = NON_ESP_MARKER if self._natt else b""
        for d in datagrams:
            self._outgoing.append((prefix + d, addr))

    def _context_for(self, header: Header) -> SaContext | None:
        for ctx in [self._ctx, *self._draining]:
            if ctx.spi_i != header.spi_i:
                continue
            if ctx.spi_r == header.spi_r:
                return ctx
            if (
                header.exchange == ExchangeType.IKE_SA_INIT
                and ctx is self._ctx
                and (self.state is IkeState.INIT_SENT or header.spi_r == ZERO_SPI)
            ):
                return ctx
        return None

    def _receive(self, data: bytes, addr: Address, now: float, decoded: Message | None) -> None:
        if data[:4] == NON_ESP_MARKER:
            data = data[4:]
            self._natt = True  # the peer moved to port 4500 (RFC 7296 2.23)
        header = decode_header(data)
        ctx = self._context_for(header)
        if ctx is None:
            self.stats.dropped_unexpected += 1
            return
        if header.is_initiator == ctx.original_initiator:
            raise RemoteProtocolError("the I flag says the message is from this side")
        if header.is_response:
            self._on_response(ctx, header, data, now)
        else:
            self._on_request(ctx, header, data, addr, now, decoded)

    def _open(
        self, ctx: SaContext, header: Header, data: bytes, decoded: Message | None = None
    ) -> Message | None:
        if header.exchange == ExchangeType.IKE_SA_INIT:
            return decoded if decoded is not None else decode_message(data)
        if ctx.sk_in is None:
            raise RemoteProtocolError("an encrypted message before keys exist")
        if header.next_payload == PayloadType.SKF:
            return ctx.reassembler.add(data, ctx.sk_in)
        return unprotect(data, ctx.sk_in)

    def _on_response(self, ctx: SaContext, header: Header, data: bytes, now: float) -> None:
        pending = ctx.pending
        if (
            pending is None
            or header.message_id != pending.message_id
            or header.exchange != pending.exchange
        ):
            self.stats.dropped_unexpected += 1
            return
        msg = self._open(ctx, header, data)
        if msg is None:
            return
        ctx.pending = None
        self._last_inbound = now
        if header.exchange == ExchangeType.IKE_SA_INIT:
            self.init.init_r = data
        try:
            pending.on_response(msg, now)
        except KipsecError as exc:
            if header.exchange == ExchangeType.IKE_SA_INIT:
                if not self.closed:
                    ctx.pending = pending  # unauthenticated garbage: wait for the real one
                raise
            # An authenticated answer we cannot use: the exchange is over either way.
            self._emit(NegotiationFailed(header.exchange, f"unusable answer: {exc}"))
            if not self.established:
                self._close("negotiation-failed", now)

    def _on_request(
        self,
        ctx: SaContext,
        header: Header,
        data: bytes,
        addr: Address,
        now: float,
        decoded: Message | None = None,
    ) -> None:
        mid = header.message_id
        cached = ctx.last_response
        if cached is not None and mid == cached[0]:
            self._answer_retransmission(ctx, header, data, cached[1], addr)
            return
        if mid != ctx.peer_mid:
            self.stats.dropped_out_of_window += 1
            return
        allowed = _DRAINING_ALLOWED if ctx is not self._ctx else _REQUESTS_ALLOWED.get(self.state)
        if ctx.deleted or allowed is None or header.exchange not in allowed:
            self.stats.dropped_unexpected += 1
            return
        try:
            msg = self._open(ctx, header, data, decoded)
        except UnsupportedCriticalPayload as exc:
            self._unsupported_critical(ctx, header, exc.payload_type, addr, now)
            return
        if msg is None:
            return
        self._last_inbound = now
        if self.nat_detected and ctx is self._ctx and header.exchange != ExchangeType.IKE_SA_INIT:
            self.peer_addr = addr
        handler = _REQUEST_HANDLERS[header.exchange]
        try:
            handler(self, ctx, msg, data, addr, now)
        except KipsecError:
            if header.exchange == ExchangeType.IKE_SA_INIT or ctx.peer_mid != mid or self.closed:
                raise
            # Authenticated but unusable: answer, so that the peer's window moves on.
            self.respond(ctx, msg, [NotifyPayload(NotifyType.INVALID_SYNTAX)], addr)
            raise

    def _answer_retransmission(
        self, ctx: SaContext, header: Header, data: bytes, answer: list[bytes], addr: Address
    ) -> None:
        if header.exchange != ExchangeType.IKE_SA_INIT:
            if header.next_payload == PayloadType.SKF:
                frag = decode_message(data).get(EncryptedFragment)
                if frag is None or frag.number != 1:
                    return  # RFC 7383 2.6.1: answer once per retransmitted message
            else:
                assert ctx.sk_in is not None
                unprotect(data, ctx.sk_in)  # only an authentic retransmission is answered
        self.stats.answered_from_cache += 1
        self._output(answer, addr)

    def _unsupported_critical(
        self, ctx: SaContext, header: Header, ptype: int, addr: Address, now: float
    ) -> None:
        request = Message(
            header.spi_i,
            header.spi_r,
            header.exchange,
            header.message_id,
            False,
            header.is_initiator,
            (),
        )
        notify = NotifyPayload(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD, data=bytes([ptype & 0xFF]))
        self._emit(ProtocolErrorEvent(f"unsupported critical payload {ptype}", addr))
        if header.exchange == ExchangeType.IKE_SA_INIT:
            ike_sa_init.send_error(self, request, notify, addr)
            self.discard()
            return
        self.respond(ctx, request, [notify], addr)

    def _retransmit(self, ctx: SaContext, now: float) -> None:
        pending = ctx.pending
        if pending is None or now < pending.next_at:
            return
        r = self.config.retransmission
        if pending.tries > r.max_tries:
            ctx.pending = None
            if pending.on_timeout is not None:
                pending.on_timeout(now)
            elif ctx is self._ctx:
                self._emit(PeerDead(self.peer_addr, pending.exchange, pending.tries))
                self._close("peer-dead", now)
            else:
                self._draining.remove(ctx)
            return
        self.stats.retransmissions += 1
        pending.next_at = now + r.timeout(pending.tries)
        pending.tries += 1
        self._output(pending.datagrams, self.peer_addr)

    def peer_dead(self, exchange: int, tries: int, now: float) -> None:
        self._emit(PeerDead(self.peer_addr, exchange, tries))
        self._close("peer-dead", now)

    def _lifetime_timers(self, now: float) -> None:
        if self._ike_expire_at is not None and now >= self._ike_expire_at:
            self._ike_expire_at = None
            self._actions.clear()
            self._ctx.pending = None
            informational.start_delete_ike(self, "expired", now, child_reason="expired")
            return
        if self._ike_rekey_at is not None and now >= self._ike_rekey_at:
            self.rekey_ike(now)
        for child in list(self.children.values()):
            if child.expire_at is not None and now >= child.expire_at:
                child.expire_at = None
                child.rekey_at = None
                self._actions.append(partial(self._expire_child, child))
            elif (
                child.rekey_at is not None
                and now >= child.rekey_at
                and child.state is ChildState.INSTALLED
            ):
                self.rekey_child(child.spi_in, now)
        if (
            self.config.liveness_interval
            and self._ctx.pending is None
            and now >= self._last_inbound + self.config.liveness_interval
        ):
            self._last_inbound = now
            self._actions.append(lambda t: informational.start_liveness(self, t))

    def _expire_child(self, child: ChildSa, now: float) -> None:
        informational.start_delete_children(self, [child], "expired", now, remove_now=True)

    def _pump(self, now: float) -> None:
        while (
            self._actions
            and self.established
            and self._ctx.pending is None
            and not self._ctx.deleted
        ):
            action = self._actions.popleft()
            try:
                action(now)
            except KipsecError as exc:
                self._emit(NegotiationFailed(ExchangeType.CREATE_CHILD_SA, f"not started: {exc}"))

    def _close(self, reason: str, now: float, child_reason: str = "ike-deleted") -> None:
        if self.closed:
            return
        for child in list(self.children.values()):
            self.remove_child(child, child_reason)
        self._emit(IkeSaDeleted(self._ctx.spi_i, self._ctx.spi_r, reason))
        self.state = IkeState.CLOSED
        self._actions.clear()
        self._scheduled.clear()
        self._ctx.pending = None
        self._draining.clear()


def receive_guarded(
    stats: IkeStats, emit: Callable[[Event], None], addr: Address, receive: Callable[[], None]
) -> None:
    """Run ``receive`` on one datagram from ``addr``: what the peer's bytes break is
    counted in ``stats`` and reported as a ProtocolErrorEvent, never raised (the IKEv1
    engine shares this)."""
    stats.datagrams_received += 1
    try:
        receive()
    except IntegrityError as exc:
        stats.dropped_integrity += 1
        emit(ProtocolErrorEvent(f"integrity check failed: {exc}", addr))
    except ParseError as exc:
        stats.dropped_malformed += 1
        emit(ProtocolErrorEvent(f"malformed: {exc}", addr))
    except KipsecError as exc:
        stats.dropped_invalid += 1
        emit(ProtocolErrorEvent(f"invalid: {exc}", addr))
    except Exception as exc:  # peer bytes must never crash the caller; counted as a bug
        stats.internal_errors += 1
        emit(ProtocolErrorEvent(f"internal error: {exc!r}", addr))


def sa_lifetimes(
    lifetime: Lifetime, now: float, fraction: float
) -> tuple[float | None, float | None]:
    """(soft, hard) engine times for an SA created at ``now``; soft lowered by up to
    ``jitter`` times ``fraction`` (a number in [0, 1] from the injected rng)."""
    rekey = None
    if lifetime.rekey_after:
        rekey = now + lifetime.rekey_after * (1 - lifetime.jitter * fraction)
    expire = now + lifetime.expire_after if lifetime.expire_after else None
    return rekey, expire


def random_nonzero(rng: Rng, length: int) -> bytes:
    """``length`` bytes from ``rng`` that are not all zero (SPIs, cookies)."""
    return _random_spi(rng, length)


def _random_spi(rng: Rng, length: int) -> bytes:
    while True:
        spi = rng(length)
        if len(spi) != length:
            raise LocalProtocolError(f"rng returned {len(spi)} bytes, not {length}")
        if any(spi):
            return spi


RequestHandler = Callable[[IkeSa, SaContext, Message, bytes, Address, float], None]

_REQUEST_HANDLERS: dict[int, RequestHandler] = {
    ExchangeType.IKE_SA_INIT: ike_sa_init.handle_request,
    ExchangeType.IKE_AUTH: ike_auth.handle_request,
    ExchangeType.CREATE_CHILD_SA: create_child.handle_request,
    ExchangeType.INFORMATIONAL: informational.handle_request,
}
