"""The IKEv1 ISAKMP SA state machine (RFC 2408/2409), sans-IO like the IKEv2 engine.

One :class:`IsakmpSa` per ISAKMP SA and the IPsec SAs its quick modes made. It has the
same calling convention as :class:`~kipsec_sidecar.core.ike.engine.IkeSa` — fed
datagrams and timer ticks with the caller's ``now``, answering with datagrams, one timer
and the same events (:mod:`kipsec_sidecar.core.ike.events`) — so that the daemon and the
datapaths treat an IKEv1 peer like an IKEv2 one. Randomness comes from the injected
``rng`` only.

This module holds what the exchanges share: routing a datagram by exchange type and
message ID, the IV chains, retransmission with back-off, answering a retransmitted
message from the answer it got (RFC 2408 practice: a duplicate is recognised by its
bytes), the timers and closing. The exchanges live in :mod:`.main_mode`,
:mod:`.quick_mode` and :mod:`.informational`.

Re-authentication: IKEv1 cannot rekey an ISAKMP SA, and its IPsec SAs are not bound to
the ISAKMP SA that made them. Before the soft lifetime ends (or on :meth:`rekey_ike`) a
new main mode runs beside the old ISAKMP SA, without INITIAL-CONTACT; once it is
established it takes the IPsec SAs over (:meth:`IsakmpSa.take_over`) and the old one,
now ``replaced``, is deleted. When the peer re-authenticates, its new main mode (again
without INITIAL-CONTACT) is a new responder SA that takes the children over the same
way; the old one waits for the peer's Delete. A new main mode *with* INITIAL-CONTACT
says the peer kept no state (RFC 2407 section 4.6.3.3): the SAs established before it
with the same peer identity are deleted. The SAs of one node see each other through
the ``siblings`` lookup their endpoint gives them. A re-authentication starts on the
port the ISAKMP SA uses (4500 with the non-ESP marker once NAT-T moved it there, RFC
3947 section 4). One that fails is retried with back-off
(:class:`~kipsec_sidecar.core.backoff.Backoff`) until the hard lifetime.

IPsec SAs outlive their ISAKMP SA: when it expires, or the peer deletes it alone (a
Delete for its cookies, none for the IPsec SAs), and no other ISAKMP SA with the peer
can take them, it becomes ``detached`` — keyless, sending and accepting nothing — and
holds them until their own lifetime. A new main mode (a re-authentication of the
detached SA) takes them over: at once when liveness checks are configured (and its
going unanswered makes the peer dead), else when the first of them is due for a rekey.
The side that started it then rekeys them all at once: a peer may have dropped its
half (strongSwan does when told its ISAKMP SA is deleted), and a quick mode gives
both ends the same new pair either way.

Anything the peer sends that is malformed, tampered or unexpected is dropped and counted
in :attr:`IsakmpSa.stats` with a :class:`~kipsec_sidecar.core.ike.events.ProtocolErrorEvent`;
nothing the peer sends makes these methods raise. IKEv1 has no MAC on its messages: a
tampered encrypted message shows up as a payload chain that does not parse (counted as
``dropped_malformed``) or as a HASH payload that does not match (``dropped_integrity``).
A wrong pre-shared key looks the same, so in main mode under PSK an encrypted message
that does not open counts as a HASH mismatch (:func:`.main_mode.unreadable`).
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from ..backoff import Backoff
from ..errors import KipsecError, LocalProtocolError, ParseError
from ..ike.child_sa import ChildSa, ChildState
from ..ike.config import Address, IkeConfig, Lifetime
from ..ike.constants import IKE_NATT_PORT, NON_ESP_MARKER
from ..ike.engine import IkeStats, random_nonzero, receive_guarded, sa_lifetimes
from ..ike.events import (
    ChildSaDeleted,
    Event,
    IkeSaDeleted,
    IkeSaRekeyed,
    PeerDead,
    ProtocolErrorEvent,
)
from ..ike.message import Header
from . import informational, main_mode, quick_mode
from .constants import COOKIE_LEN, ExchangeType, Flag
from .encryption import decrypt_message, encrypt_message, last_block
from .message import Message, decode_header, decode_message, encode_message

Rng = Callable[[int], bytes]
ZERO_COOKIE = bytes(COOKIE_LEN)
Action = Callable[[float], None]
Siblings = Callable[[], Iterable["IsakmpSa"]]
#: Seconds an ISAKMP SA whose main mode never completes is kept (a half-open responder).
MAIN_MODE_KEY = -1
#: Seconds an ISAKMP SA the peer re-authenticated waits for the peer's Delete before we
#: delete it: strongSwan as responder deletes the old one about 10 s after, but as the
#: initiator of a re-authentication it keeps it (REKEYING) and leaves that to the peer.
PEER_REAUTH_GRACE = 10.0


class Phase1State(Enum):
    """Where main mode is (quick modes have their own records)."""

    MM_SENT_SA = "mm-sent-sa"  #: initiator: message 1 sent
    MM_SENT_KE = "mm-sent-ke"  #: initiator: message 3 sent
    MM_SENT_ID = "mm-sent-id"  #: initiator: message 5 sent
    RESPONDER_NEW = "responder-new"  #: responder: waiting for message 1
    MM_ANSWERED_SA = "mm-answered-sa"  #: responder: message 2 sent
    MM_ANSWERED_KE = "mm-answered-ke"  #: responder: message 4 sent
    ESTABLISHED = "established"
    #: A newer ISAKMP SA with the same peer took the IPsec SAs over (re-authentication):
    #: keyed still, for exchanges in flight and the Delete, until it is deleted.
    REPLACED = "replaced"
    #: The ISAKMP SA expired or the peer deleted it alone, and no other one with the
    #: peer could take its IPsec SAs: keyless (nothing sent or accepted), it holds them
    #: until their own lifetime or until a new main mode takes them over.
    DETACHED = "detached"
    CLOSED = "closed"


@dataclass(slots=True)
class Retransmit:
    """A message of ours resent unchanged until the peer's next message arrives."""

    datagrams: list[bytes]
    next_at: float
    tries: int = 1
    on_timeout: Callable[[float], None] | None = None


@dataclass(slots=True)
class Answered:
    """The last message received in one exchange and what we answered (for duplicates)."""

    digest: bytes
    answer: list[bytes] = field(default_factory=list)


class IsakmpSa:
    """One ISAKMP SA and its IPsec SAs. Build it with :meth:`initiator` or :meth:`responder`.

    Thread of use: as :class:`~kipsec_sidecar.core.ike.engine.IkeSa`. Actions
    (:meth:`initiate_child`, :meth:`rekey_child`, :meth:`delete_child`, :meth:`delete`)
    are queued until main mode is done; a misuse raises LocalProtocolError.
    """

    version = 1

    def __init__(
        self,
        config: IkeConfig,
        peer_addr: Address,
        *,
        initiator: bool,
        rng: Rng,
        now: float,
        cookie_i: bytes,
        cookie_r: bytes,
        reauth_of: IsakmpSa | None = None,
    ) -> None:
        self.config = config
        self.peer_addr: Address = peer_addr
        self.is_initiator = initiator
        self.rng = rng
        self.stats = IkeStats()
        self.state = Phase1State.MM_SENT_SA if initiator else Phase1State.RESPONDER_NEW
        self.children: dict[bytes, ChildSa] = {}
        self.cookie_i = cookie_i
        self.cookie_r = cookie_r
        self.nat_local = False
        self.nat_remote = False
        self.remote_identity: str | None = None
        self.peer_dpd = False  #: the peer announced RFC 3706 DPD support
        self.peer_natt = False  #: the peer announced RFC 3947 NAT-T support
        self.p1 = main_mode.Phase1()
        self.quick: dict[int, quick_mode.QuickExchange] = {}
        self._events: deque[Event] = deque()
        self._outgoing: list[tuple[bytes, Address]] = []
        self._actions: deque[Action] = deque()
        self._scheduled: list[tuple[float, Action]] = []
        self._candidate_iv: tuple[int, bytes] = (MAIN_MODE_KEY, b"")
        self._retransmit: dict[int, Retransmit] = {}
        self._answered: dict[int, Answered] = {}
        # A re-authentication starts where the ISAKMP SA it replaces runs: on port 4500
        # with the non-ESP marker once NAT-T moved it there (RFC 3947 section 4).
        self._natt = reauth_of is not None and reauth_of.natt
        self._last_inbound = now
        self._half_open_deadline: float | None = now + self.give_up_after()
        self._expire_at: float | None = None
        self.dpd_seq = int.from_bytes(rng(4), "big") & 0x7FFFFFFF
        self.dpd_outstanding: int | None = None
        self.started_at = now
        self.established_at: float | None = None
        self.reauth_of = reauth_of  #: the ISAKMP SA this main mode re-authenticates
        self.successor: IsakmpSa | None = None  #: who took our IPsec SAs over
        self.initial_contact = False  #: the peer's main mode carried INITIAL-CONTACT
        self.siblings: Siblings = lambda: ()  #: the other ISAKMP SAs of our endpoint
        self._spawned: list[IsakmpSa] = []
        self._reauth: IsakmpSa | None = None
        self._reauth_at: float | None = None
        self._reauth_backoff = Backoff(rng=self.random_fraction)
        self._retire_at: float | None = None

    # ------------------------------------------------------------------ constructors

    @classmethod
    def initiator(
        cls,
        config: IkeConfig,
        peer_addr: Address,
        *,
        rng: Rng = os.urandom,
        now: float = 0.0,
        reauth_of: IsakmpSa | None = None,
    ) -> IsakmpSa:
        """Start main mode towards ``peer_addr``: message 1 is ready to send.

        ``reauth_of``: the established ISAKMP SA this one re-authenticates (no
        INITIAL-CONTACT; its IPsec SAs move over once this one is established)."""
        sa = cls(
            config,
            peer_addr,
            initiator=True,
            rng=rng,
            now=now,
            cookie_i=random_nonzero(rng, COOKIE_LEN),
            cookie_r=ZERO_COOKIE,
            reauth_of=reauth_of,
        )
        main_mode.start(sa, now)
        return sa

    @classmethod
    def responder(
        cls,
        config: IkeConfig,
        peer_addr: Address,
        cookie_i: bytes,
        *,
        rng: Rng = os.urandom,
        now: float = 0.0,
    ) -> IsakmpSa:
        """A responder for the main mode message 1 from ``peer_addr`` with ``cookie_i``."""
        return cls(
            config,
            peer_addr,
            initiator=False,
            rng=rng,
            now=now,
            cookie_i=cookie_i,
            cookie_r=random_nonzero(rng, COOKIE_LEN),
        )

    # ------------------------------------------------------------------ public state

    @property
    def spi_i(self) -> bytes:
        return self.cookie_i

    @property
    def spi_r(self) -> bytes:
        return self.cookie_r

    @property
    def original_initiator(self) -> bool:
        return self.is_initiator

    @property
    def established(self) -> bool:
        return self.state is Phase1State.ESTABLISHED

    @property
    def closed(self) -> bool:
        return self.state is Phase1State.CLOSED

    @property
    def detached(self) -> bool:
        """The ISAKMP SA is gone; only its IPsec SAs live on (see :meth:`detach`)."""
        return self.state is Phase1State.DETACHED

    @property
    def keyed(self) -> bool:
        """Main mode is done and the keys are usable (established, or replaced and
        finishing its exchanges)."""
        return self.state in (Phase1State.ESTABLISHED, Phase1State.REPLACED)

    @property
    def half_open(self) -> bool:
        return self.state in (
            Phase1State.RESPONDER_NEW,
            Phase1State.MM_ANSWERED_SA,
            Phase1State.MM_ANSWERED_KE,
        )

    @property
    def nat_detected(self) -> bool:
        return self.nat_local or self.nat_remote

    @property
    def local_addr(self) -> Address:
        """Our address and the port we send from: 4500 once on NAT-T (a
        re-authentication's main mode starts there), for the NAT-D hashes."""
        host, port = self.config.local_addr
        return (host, IKE_NATT_PORT if self._natt else port)

    @property
    def natt(self) -> bool:
        """IKE runs on port 4500 with the non-ESP marker (RFC 3947 section 4)."""
        return self._natt

    def local_spis(self) -> list[bytes]:
        return [self.cookie_i if self.is_initiator else self.cookie_r]

    def child_by_spi(self, spi_in: bytes) -> ChildSa | None:
        return self.children.get(spi_in)

    def pending_kind(self) -> str | None:
        return "quick" if any(k != MAIN_MODE_KEY for k in self._retransmit) else None

    # ------------------------------------------------------------------ sans-IO API

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Process one UDP payload from ``addr`` (a leading non-ESP marker is stripped)."""
        if self.closed or self.detached:
            self.stats.dropped_unexpected += 1
            return
        # Without a MAC, a wrong key or a tampered ciphertext decrypts to garbage: a
        # ParseError, counted as malformed (in main mode under PSK, as a HASH mismatch).
        receive_guarded(self.stats, self.emit, addr, lambda: self._receive(bytes(data), addr, now))
        self._pump(now)

    def handle_timer(self, now: float) -> None:
        """Retransmissions, lifetimes, liveness: everything due at ``now``."""
        if self.closed:
            return
        for key, pending in list(self._retransmit.items()):
            if now < pending.next_at or self._retransmit.get(key) is not pending:
                continue
            r = self.config.retransmission
            if pending.tries > r.max_tries:
                del self._retransmit[key]
                if pending.on_timeout is not None:
                    pending.on_timeout(now)
                elif not main_mode.timed_out(self, now):  # main mode: nothing came back
                    self.emit(PeerDead(self.peer_addr, ExchangeType.MAIN, pending.tries))
                    self.close("peer-dead", now)
                if self.closed:
                    return
                continue
            self.stats.retransmissions += 1
            pending.next_at = now + r.timeout(pending.tries)
            pending.tries += 1
            self._output(pending.datagrams)
        if self._half_open_deadline is not None and now >= self._half_open_deadline:
            if not main_mode.timed_out(self, now):
                self.close("negotiation-failed", now)
            return
        due = [a for t, a in self._scheduled if t <= now]
        self._scheduled = [(t, a) for t, a in self._scheduled if t > now]
        self._actions.extend(due)
        if self.established:
            self._lifetime_timers(now)
        elif self.detached:
            self._detached_timers(now)
            if self.closed:
                return
        elif self._retire_at is not None and now >= self._retire_at and not self.quick:
            informational.send_delete_isakmp(self, now)
            self.close("reauthenticated", now)
            return
        self._pump(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        if self.closed:
            return None
        times = [p.next_at for p in self._retransmit.values()]
        times += [t for t, _ in self._scheduled]
        if self._half_open_deadline is not None:
            times.append(self._half_open_deadline)
        if self._retire_at is not None:
            times.append(self._retire_at)
        if self.established or self.detached:
            if self._expire_at is not None:
                times.append(self._expire_at)
            if self._reauth_at is not None:
                times.append(self._reauth_at)
            for child in self.children.values():
                if child.expire_at is not None:
                    times.append(child.expire_at)
                if child.rekey_at is not None and child.state is ChildState.INSTALLED:
                    times.append(child.rekey_at)
        if self.established and self.config.liveness_interval and self.dpd_outstanding is None:
            times.append(self._last_inbound + self.config.liveness_interval)
        return min(times) if times else None

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ actions

    def initiate_child(self, child_config_name: str, now: float) -> None:
        """Negotiate one more pair of IPsec SAs from the named ChildConfig (quick mode)."""
        cfg = self.config.child(child_config_name)
        self._require_established()
        self._actions.append(lambda t: quick_mode.start(self, cfg, t))
        self._pump(now)

    def rekey_child(self, child_spi: bytes, now: float) -> None:
        """A new quick mode for the child ``child_spi``; the old one is deleted after it."""
        child = self._child_or_raise(child_spi)
        if self.detached and child.state is ChildState.INSTALLED:
            child.rekey_at = None  # the new main mode's SA runs it (replaced_by)
            self.rekey_ike(now)
            return
        self._require_established()
        if child.state is ChildState.INSTALLED:
            child.rekey_at = None
            self._actions.append(lambda t: quick_mode.start(self, child.config, t, rekey=child))
        self._pump(now)

    def renew_credentials(self, config: IkeConfig) -> None:
        """``config``: this SA's link with renewed credentials (our key and certificate,
        the trust anchors, the peer's certificate: the daemon's credentials-only reload).
        What was negotiated stays; the main modes this SA starts from now on (its
        re-authentication, and its retries) authenticate with them, as a new SA would.
        Without this, a re-authentication after a renewal of either end would offer
        the replaced certificate or, under public-key encryption, encrypt to the peer's
        replaced key and fail to open what the peer encrypts to our new one."""
        self.config = config

    def rekey_ike(self, now: float) -> None:
        """Re-authenticate: IKEv1 has no rekey of the ISAKMP SA, so a new main mode runs
        beside this one and takes its IPsec SAs over once established (traffic keeps
        flowing on them); this one is deleted then. A second call while that main mode
        runs does nothing. A detached SA (its ISAKMP SA gone) re-establishes this way.

        The new main mode goes to the peer's current address and port (4500 if NAT-T
        moved us there, with the non-ESP marker: a NAT keeps no mapping for port 500)."""
        if not self.detached:
            self._require_established()
        self._reauth_at = None
        if self._reauth is not None and not self._reauth.closed:
            return
        self._reauth = IsakmpSa.initiator(
            self.config, self.peer_addr, rng=self.rng, now=now, reauth_of=self
        )
        self._reauth.siblings = self.siblings
        self._spawned.append(self._reauth)

    def take_spawned(self) -> list[IsakmpSa]:
        """ISAKMP SAs this one started (re-authentication) for the endpoint to route."""
        out, self._spawned = self._spawned, []
        return out

    def delete_child(self, spi: bytes, now: float) -> None:
        """Delete the child ``spi``: Delete notification for its SPI, then remove it."""
        child = self._child_or_raise(spi)
        self._require_established()
        informational.send_delete_child(self, child, now)
        self.remove_child(child, "deleted")
        self._pump(now)

    def delete(self, now: float, reason: str = "deleted") -> None:
        """Delete the IPsec SAs and the ISAKMP SA (Delete notifications; no answer waited)."""
        if self.closed:
            return
        if self.keyed:
            for child in list(self.children.values()):
                informational.send_delete_child(self, child, now)
            informational.send_delete_isakmp(self, now)
        self.close(reason, now)

    def send_liveness(self, now: float) -> None:
        """A DPD R-U-THERE (RFC 3706); PeerDead if the peer never acknowledges."""
        self._require_established()
        informational.send_dpd(self, now)

    # ------------------------------------------------------------------ for exchanges

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def random_spi(self, length: int) -> bytes:
        while True:
            spi = random_nonzero(self.rng, length)
            if spi not in self.children and int.from_bytes(spi, "big") > 255:
                return spi  # SPIs 1-255 are reserved (RFC 4303 section 2.1)

    def random_fraction(self) -> float:
        return int.from_bytes(self.rng(2), "big") / 0xFFFF

    def lifetimes(self, lifetime: Lifetime, now: float) -> tuple[float | None, float | None]:
        """(soft, hard) engine times for an SA created at ``now``; soft has jitter."""
        return sa_lifetimes(lifetime, now, self.random_fraction())

    def wall_clock(self, now: float) -> datetime:
        """Wall time for certificate validity: the configured epoch plus ``now``."""
        return datetime.fromtimestamp(self.config.wall_clock_epoch + now, tz=UTC)

    def schedule(self, at: float, action: Action) -> None:
        """Queue ``action`` once ``handle_timer`` runs at or after ``at``."""
        self._scheduled.append((at, action))

    def peer_dead_in_quick_mode(self, now: float) -> None:
        """Our quick mode went unanswered through the whole retransmission schedule."""
        self.emit(
            PeerDead(self.peer_addr, ExchangeType.QUICK, self.config.retransmission.max_tries + 1)
        )
        self.close("peer-dead", now)

    def give_up_after(self) -> float:
        r = self.config.retransmission
        return sum(r.timeout(n) for n in range(r.max_tries + 1))

    def set_established(self, now: float) -> None:
        self.state = Phase1State.ESTABLISHED
        self.established_at = now
        self._half_open_deadline = None
        self._reauth_at, self._expire_at = self.lifetimes(self.config.lifetime, now)

    def take_over(self, now: float) -> None:
        """Just established: settle the other ISAKMP SAs with the same peer.

        With INITIAL-CONTACT the peer holds nothing from before (it restarted): the SAs
        established before this main mode began are deleted (RFC 2407 section
        4.6.3.3; a Delete still goes out, in case the peer does hold them after all).
        Without it, a re-authentication (ours, or the peer's as responder) takes their
        IPsec SAs over. Two re-authentications that crossed (each side started one)
        keep the one with the lower cookie pair, which both sides compute alike; its
        loser is deleted by its initiator. A fresh initiation of ours leaves
        duplicates to the daemon."""
        older = self._older_siblings()
        if self.initial_contact:
            for other in older:
                other.delete(now, "initial-contact")
            return
        if not self.reauthenticates:
            return
        for other in older:
            other.replaced_by(self, now, delete_now=self.is_initiator)
        crossing = [
            s for s in self._same_peer() if s.established and s.reauthenticates and s not in older
        ]
        for other in crossing:
            keep, lose = sorted((self, other), key=lambda sa: sa.cookie_i + sa.cookie_r)
            lose.replaced_by(keep, now, delete_now=lose.is_initiator)
            if lose is self:
                return

    @property
    def reauthenticates(self) -> bool:
        """This main mode replaces an ISAKMP SA with the same peer: ours, or the peer's
        without INITIAL-CONTACT (RFC 2407: a peer with no SAs left sends it)."""
        return self.reauth_of is not None or not (self.is_initiator or self.initial_contact)

    def replaced_by(self, successor: IsakmpSa, now: float, *, delete_now: bool) -> None:
        """``successor`` takes our IPsec SAs over. We are deleted when our exchanges in
        flight are done: at once if ``delete_now`` (our re-authentication), else after
        waiting for the peer's own Delete."""
        was_detached = self.detached
        self.state = Phase1State.REPLACED
        self.successor = successor
        self._reauth_at = self._expire_at = None
        if self.dpd_outstanding is not None:
            self.forget_exchange(self.dpd_outstanding)
            self.dpd_outstanding = None
        # A rekey queued here and not started yet dies with our queue: the successor
        # runs it instead (its quick mode starts at the successor's next timer).
        # Pairs a detached SA held may be gone at the peer (strongSwan drops its IPsec
        # SAs with an ISAKMP SA we deleted): the side that re-established rekeys them at
        # once, so both ends surely hold the new pair (make-before-break if the peer
        # still had the old one, a fresh pair if not).
        renew = was_detached and successor.is_initiator
        started = {id(ex.rekey) for ex in self.quick.values() if ex.rekey is not None}
        for child in self.children.values():
            if (
                child.state is ChildState.INSTALLED
                and (renew or (child.rekey_at is None and child.config.lifetime.rekey_after))
                and id(child) not in started
            ):
                child.rekey_at = now
        successor.adopt(self)
        successor.emit(
            IkeSaRekeyed(self.cookie_i, self.cookie_r, successor.cookie_i, successor.cookie_r)
        )
        if was_detached:  # its Delete went out when it detached, or came from the peer
            self.close("reauthenticated", now)
            return
        self._retire_at = now if delete_now else now + PEER_REAUTH_GRACE

    def adopt(self, other: IsakmpSa) -> None:
        """Take ``other``'s IPsec SAs and their pending timed actions (a rekeyed pair's
        Delete): they do not depend on the ISAKMP SA that made them (RFC 2409 s. 5.5)."""
        self.children.update(other.children)
        other.children.clear()
        self._scheduled += other._scheduled
        other._scheduled = []

    def current(self) -> IsakmpSa:
        """The ISAKMP SA that holds what this one held (itself unless replaced)."""
        sa = self
        while sa.successor is not None:
            sa = sa.successor
        return sa

    def heir(self) -> IsakmpSa | None:
        """Another established ISAKMP SA with the same peer identity (for our IPsec SAs
        when the peer deletes this one without deleting them)."""
        return next((s for s in self._same_peer() if s.established), None)

    def send(
        self,
        msg: Message,
        now: float,
        *,
        key: int,
        encrypt: bool,
        retransmit: bool,
        on_timeout: Callable[[float], None] | None = None,
    ) -> list[bytes]:
        """Send ``msg`` (sealed with the exchange's IV chain when ``encrypt``).

        ``key`` names the exchange (:data:`MAIN_MODE_KEY` or the message ID):
        ``retransmit`` resends it until :meth:`received` runs for that exchange.
        """
        if self.detached:
            return []  # no ISAKMP SA to send with (a rekeyed pair's Delete, say)
        data = self.seal(msg, key) if encrypt else encode_message(msg)
        datagrams = [data]
        answered = self._answered.get(key)
        if answered is not None:
            answered.answer = datagrams
        if retransmit:
            self._retransmit[key] = Retransmit(
                datagrams,
                now + self.config.retransmission.timeout(0),
                on_timeout=on_timeout,
            )
        else:
            self._retransmit.pop(key, None)
        self._output(datagrams)
        return datagrams

    def seal(self, msg: Message, key: int) -> bytes:
        iv = self.iv_for(key, msg.message_id)
        data, next_iv = encrypt_message(msg, self.p1.enc_key, iv)
        self.p1.ivs[key] = next_iv
        if key == MAIN_MODE_KEY:
            self.p1.last_phase1_iv = next_iv
        return data

    def iv_for(self, key: int, message_id: int) -> bytes:
        """The current IV of exchange ``key`` (RFC 2409 Appendix B)."""
        found = self.p1.ivs.get(key)
        if found is not None:
            return found
        return main_mode.phase2_iv_for(self, message_id)

    def open(self, data: bytes, header: Header, key: int, sealed: Collection[int] = ()) -> Message:
        """Decrypt (or decode) ``data``; the IV chain moves only with :meth:`accept_iv`.

        ``sealed``: payload types of a clear message whose bodies are ciphertext
        (public-key encryption, main mode messages 3 and 4)."""
        if not header.flags & Flag.ENCRYPTION:
            return decode_message(data, sealed=sealed)
        if not self.p1.enc_key:
            raise ParseError("an encrypted message before keys exist", field="header.flags")
        # CBC chains over the ciphertext: the last block is the next IV even when the
        # message does not open (a refusal of it is sealed under that IV, _fail).
        self._candidate_iv = (key, last_block(data))
        msg, _ = decrypt_message(data, self.p1.enc_key, self.iv_for(key, header.message_id))
        return msg

    def accept_iv(self) -> None:
        """The last opened message was authentic: its last block is the next IV."""
        key, iv = self._candidate_iv
        self.p1.ivs[key] = iv
        if key == MAIN_MODE_KEY:
            self.p1.last_phase1_iv = iv

    def forget_exchange(self, key: int) -> None:
        """A phase 2 exchange is over: drop its IV and retransmission (keep its answer)."""
        self.p1.ivs.pop(key, None)
        self._retransmit.pop(key, None)

    def received(self, key: int, data: bytes) -> None:
        """``data`` is the peer's newest message of exchange ``key``: stop resending ours
        and remember it, so that a copy of it is answered with what we send next."""
        self._retransmit.pop(key, None)
        self._answered[key] = Answered(_digest(data))

    def reauth_failed(self, now: float, reason: str) -> None:
        """Our re-authentication's main mode ended without an ISAKMP SA (refused,
        failed, unanswered): try again with back-off while this SA lasts (the IKEv1
        counterpart of a retried IKEv2 rekey). A detached SA with liveness checks
        configured takes an unanswered one as the dead peer detection it stands for."""
        if self.detached and reason == "peer-dead" and self.config.liveness_interval:
            self.close("peer-dead", now)
            return
        if not (self.established or self.detached):
            return
        at = now + self._reauth_backoff.next_delay()
        if self._expire_at is None or at < self._expire_at:
            self._reauth_at = at

    def end_isakmp_sa(self, reason: str, now: float, child_reason: str = "ike-deleted") -> None:
        """The ISAKMP SA ends (``expired``, or ``deleted-by-peer`` alone) but not its
        IPsec SAs (RFC 2409 section 5.5): another established ISAKMP SA with the peer
        takes them (a re-authentication crossing ours), else we keep them detached;
        with none, this SA closes."""
        heir = self.heir() if self.children else None
        if heir is not None:
            heir.adopt(self)
        elif self.children and self.established:
            self.detach(now)
            return
        self.close(reason, now, child_reason)

    def detach(self, now: float) -> None:
        """The ISAKMP SA is gone (expired, or deleted alone by the peer) and no other
        one with the peer can take our IPsec SAs: keep them, keyless, until their own
        lifetime (RFC 2409 section 5.5: they are not bound to the ISAKMP SA) or until
        a new main mode takes them over — at once with liveness checks configured."""
        self.state = Phase1State.DETACHED
        self._expire_at = None
        self._reauth_at = now if self.config.liveness_interval else None
        self._actions.clear()
        self._retransmit.clear()
        self.dpd_outstanding = None
        for ex in self.quick.values():  # exchanges in flight die with the keys
            if ex.rekey is not None and ex.rekey.state is ChildState.REKEYING:
                ex.rekey.state = ChildState.INSTALLED
        self.quick.clear()
        for child in self.children.values():
            if child.state is ChildState.INSTALLED and child.rekey_at is None:
                child.rekey_at = now if child.config.lifetime.rekey_after else None

    def close(self, reason: str, now: float, child_reason: str = "ike-deleted") -> None:
        if self.closed:
            return
        if self.reauth_of is not None and self.established_at is None:
            self.reauth_of.reauth_failed(now, reason)
        for child in list(self.children.values()):
            self.remove_child(child, child_reason)
        self.emit(IkeSaDeleted(self.cookie_i, self.cookie_r, reason))
        self.state = Phase1State.CLOSED
        self._actions.clear()
        self._retransmit.clear()
        self._scheduled.clear()

    def discard(self) -> None:
        """Close without events (a refused message 1 that created no state worth a report)."""
        self.state = Phase1State.CLOSED

    def remove_child(self, child: ChildSa, reason: str) -> None:
        if self.children.pop(child.spi_in, None) is not None:
            self.emit(
                ChildSaDeleted(child.name, child.protocol, child.spi_in, child.spi_out, reason)
            )

    def enable_natt(self) -> None:
        """NAT traversal: IKE moves to port 4500 with the non-ESP marker (RFC 3947 s. 4)."""
        if self._natt:
            return  # a re-authentication started there: the peer's port is the right one
        self._natt = True
        if self.is_initiator and self.peer_addr[1] != IKE_NATT_PORT:
            self.peer_addr = (self.peer_addr[0], IKE_NATT_PORT)

    def touch(self, now: float) -> None:
        """An authentic message arrived: the peer is alive (an R-U-THERE stops)."""
        self._last_inbound = now
        if self.dpd_outstanding is not None:
            self.forget_exchange(self.dpd_outstanding)
            self.dpd_outstanding = None

    # ------------------------------------------------------------------ internals

    def _same_peer(self) -> list[IsakmpSa]:
        found = [*self.siblings(), *([self.reauth_of] if self.reauth_of else [])]
        return [
            s
            for s in dict.fromkeys(found)
            if s is not self
            and not s.closed
            and s.peer_addr[0] == self.peer_addr[0]
            and s.remote_identity == self.remote_identity
        ]

    def _older_siblings(self) -> list[IsakmpSa]:
        return [
            s
            for s in self._same_peer()
            if (s.established or s.detached)
            and s.established_at is not None
            and s.established_at < self.started_at
        ]

    def _require_established(self) -> None:
        if not self.established:
            raise LocalProtocolError(f"the ISAKMP SA is {self.state.value}, not established")

    def _child_or_raise(self, spi: bytes) -> ChildSa:
        child = self.children.get(spi)
        if child is None:
            raise LocalProtocolError(f"no child SA with inbound SPI {spi.hex()}")
        return child

    def _output(self, datagrams: list[bytes]) -> None:
        prefix = NON_ESP_MARKER if self._natt else b""
        for d in datagrams:
            self._outgoing.append((prefix + d, self.peer_addr))

    def _receive(self, data: bytes, addr: Address, now: float) -> None:
        if data[:4] == NON_ESP_MARKER:
            data = data[4:]
            self._natt = True  # the peer floated to port 4500 (RFC 3947 section 4)
            self.peer_addr = addr
        header = decode_header(data)
        if header.spi_i != self.cookie_i:
            self.stats.dropped_unexpected += 1
            return
        if header.spi_r != self.cookie_r and not self._first_exchange(header):
            self.stats.dropped_unexpected += 1
            return
        key = MAIN_MODE_KEY if header.exchange == ExchangeType.MAIN else header.message_id
        answered = self._answered.get(key)
        if answered is not None and answered.digest == _digest(data):
            if answered.answer:
                self.stats.answered_from_cache += 1
                self._output(answered.answer)
            return
        if self._natt and self.established:
            self.peer_addr = addr
        match header.exchange:
            case ExchangeType.MAIN:
                main_mode.handle(self, header, data, addr, now)
            case ExchangeType.QUICK:
                quick_mode.handle(self, header, data, now)
            case ExchangeType.INFORMATIONAL:
                informational.handle(self, header, data, now)
            case ExchangeType.AGGRESSIVE:
                self.stats.dropped_invalid += 1
                self.emit(ProtocolErrorEvent("aggressive mode is refused", addr))
            case _:
                self.stats.dropped_unexpected += 1
        if self.successor is not None and self.children:
            self.current().adopt(self)  # a quick mode that ended here after the switch

    def _first_exchange(self, header: Header) -> bool:
        """Main mode message 2 (or a refusal of message 1) while we do not know CKY-R
        yet, or message 1 and its copies."""
        if self.is_initiator:
            return self.state is Phase1State.MM_SENT_SA and header.exchange in (
                ExchangeType.MAIN,
                ExchangeType.INFORMATIONAL,
            )
        return header.exchange == ExchangeType.MAIN and header.spi_r == ZERO_COOKIE

    def _lifetime_timers(self, now: float) -> None:
        if self._expire_at is not None and now >= self._expire_at:
            self._expire_at = None
            informational.send_delete_isakmp(self, now)  # the ISAKMP SA alone
            self.end_isakmp_sa("expired", now, child_reason="expired")
            return
        if self._reauth_at is not None and now >= self._reauth_at:
            self.rekey_ike(now)
        for child in list(self.children.values()):
            if child.expire_at is not None and now >= child.expire_at:
                informational.send_delete_child(self, child, now)
                self.remove_child(child, "expired")
            elif (
                child.rekey_at is not None
                and now >= child.rekey_at
                and child.state is ChildState.INSTALLED
            ):
                self.rekey_child(child.spi_in, now)
        if (
            self.config.liveness_interval
            and self.dpd_outstanding is None
            and now >= self._last_inbound + self.config.liveness_interval
        ):
            informational.send_dpd(self, now)

    def _detached_timers(self, now: float) -> None:
        """Lifetimes of the IPsec SAs a detached SA holds: expired ones go (there is
        no ISAKMP SA to send their Delete with), one due for a rekey starts the new
        main mode whose SA will run it; with none left the SA closes. Timed actions
        due (a rekeyed pair's drop) run here: no exchange waits for them."""
        while self._actions:
            self._actions.popleft()(now)
        for child in list(self.children.values()):
            if child.expire_at is not None and now >= child.expire_at:
                self.remove_child(child, "expired")
            elif (
                child.rekey_at is not None
                and now >= child.rekey_at
                and child.state is ChildState.INSTALLED
            ):
                child.rekey_at = None  # the successor rekeys it (replaced_by)
                self._reauth_at = now
        if not self.children:
            self.close("expired", now, child_reason="expired")
        elif self._reauth_at is not None and now >= self._reauth_at:
            self.rekey_ike(now)

    def _pump(self, now: float) -> None:
        while self._actions and self.established and self.pending_kind() is None:
            action = self._actions.popleft()
            try:
                action(now)
            except KipsecError as exc:
                self.emit(ProtocolErrorEvent(f"not started: {exc}", self.peer_addr))


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
