"""The sidecar daemon: sockets, the IKE endpoint, the datapath and the peers, on one loop.

Everything runs on the asyncio event loop thread, so no state here needs a lock. The
shape is the aioquic pump: after every datagram, timer or action the daemon calls
:meth:`Sidecar.pump`, which sends what the endpoint wants sent, applies the events it
reported to the datapath, and re-arms the one timer at ``endpoint.get_timer()``. Engine
time is ``loop.time()``; each IkeConfig's ``wall_clock_epoch`` maps it to wall time.

Event → datapath (see :mod:`.peers` for the make-before-break order):

- ``ChildSaEstablished``: install the inbound SA; move outbound now unless we are the
  responder of a rekey (then when the old child is deleted).
- ``ChildSaDeleted``: move outbound off it, remove its inbound SA; with no child left,
  clear outbound (fail closed) and follow the peer's reconnect mode (:mod:`.actions`:
  ``closeAction`` when the peer deleted it).
- ``IkeSaDeleted`` (after ``PeerDead``, ``AuthenticationFailedEvent``,
  ``NegotiationFailed`` or a DELETE): the peer is ``down`` with ``last_error``; its
  reconnect mode becomes ``closeAction`` (deleted by the peer) or ``dpdAction`` (dead):
  restart re-initiates with exponential backoff (about 1 s first, as onStart peers
  always did), onDemand waits for traffic, none waits for the peer or the operator.

``terminate`` holds a peer down (no initiation of ours, its traffic dropped) until
``initiate`` or a reload. ``initiate``, ``rekey`` and ``terminate`` can wait for the
exchange's outcome (:func:`.actions.wait_outcome`).

With the kernel datapath, the kernel's XFRM events come back here: ACQUIRE (protected
traffic and no SA) through the datapath's acquire callback, like the userspace
datapath's; a soft EXPIRE (a byte/packet soft limit in the kernel) rekeys the child and
a hard one deletes it through the engine. The engine's timers own the time lifetimes;
the kernel only holds a longer hard one as a safety net for a crashed daemon.

Logs name events, peers and SPIs; never keys, PSKs or nonces. A line that a datagram can
cause (a refused IKE_SA_INIT, a dropped IKE message, a datapath failure on one packet)
goes through :data:`~kipsec_sidecar.logs.LIMITER`, whose summaries housekeeping flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import sys
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Literal, TypeGuard

from .. import __version__
from ..config.errors import ConfigError
from ..config.load import load_config
from ..config.model import SidecarConfig, implied_action
from ..config.to_core import PeerPlan, to_core, with_byte_limit
from ..core.errors import KipsecError
from ..core.ike.config import Address, IkeConfig
from ..core.ike.constants import NON_ESP_MARKER, ProtocolId
from ..core.ike.events import (
    AuthenticationFailedEvent,
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaRekeyed,
    Event,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
    NegotiationFailed,
    PeerDead,
    ProtocolErrorEvent,
)
from ..core.ike_versions import (
    AnySa,
    VersionedEndpoint,
    authenticating,
    awaiting_first_answer,
    detached,
    quick_mode_under_way,
    renew_credentials,
)
from ..core.negotiated import sa_pair
from ..core.udpencap import build_keepalive
from ..datapath.base import Datapath, DatapathError, PeerPolicy
from ..handshake_failures import REASONS as FAILURE_REASONS
from ..handshake_failures import failure_reason
from ..logs import LIMITER
from ..state import (
    ControlError,
    ControlTimeout,
    RekeyKind,
    SidecarSnapshot,
)
from . import service_nat
from .actions import (
    Outcome,
    WaitCommand,
    initiates_on_traffic,
    reconnect_after_loss,
    retries,
    wait_outcome,
)
from .config_watch import ConfigWatch, Digest
from .datapath_choice import DatapathChoice
from .manual import ROTATION_GRACE, manual_child, rotation_kind
from .peers import (
    ClearOutbound,
    DatapathOp,
    InstalledChild,
    InstallInbound,
    ManualRotation,
    Peer,
    RemoveInbound,
    SetOutbound,
    deletes_redundant,
    redundant_ike_sa,
    without_keys,
)
from .reload import (
    diff,
    fingerprint,
    negotiated_under,
    restart_needed,
    retire_key,
    retired_key,
)
from .snapshot import peer_view
from .sockets import IkeSockets

if TYPE_CHECKING:
    from ..datapath.kernel import KernelDatapath

log = logging.getLogger(__name__)

#: Builds the datapath: (config, peer plans, UDP-4500 sender, acquire callback).
DatapathFactory = Callable[
    [SidecarConfig, tuple[PeerPlan, ...], Callable[[bytes, Address], None], Callable[[str], None]],
    Datapath,
]

#: Seconds SIGTERM waits for the peers to answer our DELETEs.
SHUTDOWN_WAIT = 1.0
#: Seconds between checks of SA byte/packet limits and manual-key rotations.
HOUSEKEEPING_INTERVAL = 1.0
#: Default seconds between checks of the configuration file's mtime (0: never; SIGHUP
#: and the control interface's ``reload`` still work).
CONFIG_POLL_INTERVAL = 1.0
#: Bound on pump rounds per call (events may trigger actions that make more datagrams).
MAX_PUMP_ROUNDS = 64
#: Reasons of an IkeSaDeleted that we caused on purpose (no failure, no retry).
_OWN_DELETES = frozenset({"deleted"})
#: ChildSaDeleted reasons for a child that has a successor (make-before-break).
_REPLACED = frozenset({"rekeyed", "redundant"})
#: Seconds a replaced child's inbound SA is still accepted after its deletion.
INBOUND_GRACE = 1.0


class Sidecar:
    """One running sidecar; implements :class:`kipsec_sidecar.state.Controller`.

    Build it inside the running event loop (it reads the loop's clock) with a loaded
    configuration and a datapath factory, then ``await start()``;
    ``await stop()`` deletes every IKE SA (bounded wait for the answers), closes the
    datapath (removing every device, route and rule it made) and the sockets.
    """

    def __init__(
        self,
        config_path: str,
        config: SidecarConfig,
        *,
        datapath_factory: DatapathFactory,
        datapath_choice: DatapathChoice,
        ike_port: int = 500,
        natt_port: int = 4500,
        mark: int,
        rotation_grace: float = ROTATION_GRACE,
        inbound_grace: float = INBOUND_GRACE,
        config_poll_interval: float = CONFIG_POLL_INTERVAL,
        shutdown_wait: float = SHUTDOWN_WAIT,
        loaded: Digest | None = None,
    ) -> None:
        self.config_path = config_path
        self.config_poll_interval = config_poll_interval
        self.shutdown_wait = shutdown_wait
        self.config = config
        self.choice = datapath_choice
        self.rotation_grace = rotation_grace
        self.inbound_grace = inbound_grace
        self.loop = asyncio.get_running_loop()
        # wall = epoch + loop.time(); computed once so reloads produce identical plans.
        self.epoch = time.time() - self.loop.time()
        self.started_at = time.time()
        self.peers: dict[str, Peer] = {}
        self.handshakes: dict[str, int] = {"success": 0, "failure": 0}
        self.handshake_failures: dict[str, int] = dict.fromkeys(FAILURE_REASONS, 0)
        self._failure_causes: dict[AnySa, str] = {}
        """Per IKE SA, the cause its latest failure event gave (see handshake_failures)."""
        self.rekeys: dict[str, int] = {"child": 0, "ike": 0}
        self.auth_failures = 0
        self.ike_malformed = 0
        self.datapath_errors: dict[str, int] = {}
        self._owners: dict[AnySa, Peer] = {}
        self._stale: set[AnySa] = set()
        """Responder IKE SAs set up under a configuration a reload replaced since: being
        deleted, never adopted (:meth:`_owner`)."""
        self._completing: dict[AnySa, bool] = {}
        """IKE SAs let go of while authenticating (:meth:`_let_go`: a reload removed their
        peer, ``terminate``, a stop): deleted with a DELETE once they complete
        (:meth:`_delete_completed`; True once it is sent), their events dropped until
        they are gone (:meth:`_forget`)."""
        self._retries: dict[Peer, asyncio.TimerHandle] = {}
        self._waiters: dict[str, list[tuple[WaitCommand, asyncio.Future[Outcome]]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._hurry = asyncio.Event()
        # ``loaded``: the files' digest taken before ``config`` was read (see ConfigWatch).
        self.watch = ConfigWatch(config_path)
        self.watch.applied(config, loaded or self.watch.begin())
        self.identity_pending: Callable[[SidecarConfig], str | None] | None = None
        """Set by the daemon: asked with each new document before it is applied; a reason
        (the pod's operator-issued certificate does not exist yet, and an enrollment now
        runs for it) holds the document back until the enrollment reloads. Without it a
        document that first names ``source: operator`` after start could never load."""
        self.endpoint = VersionedEndpoint(self._responder_config, now=self.loop.time())
        self.service_nat = service_nat.ServiceNat()
        self.sockets = IkeSockets(
            config.local.addresses,
            mark,
            on_ike=self._ike_datagram,
            on_esp=self._esp_datagram,
            on_esp_batch=self._esp_batch_done,
            ike_port=ike_port,
            natt_port=natt_port,
        )
        # Reads the auth material; ConfigError names the field when a file is unusable.
        self._plans = to_core(config, wall_clock_epoch=self.epoch)
        self.datapath = datapath_factory(
            config, self._plans, self.sockets.esp_sender, self._acquire
        )
        if _is_kernel(self.datapath):
            self.datapath.attach(on_expire=self._kernel_expire, local_port=natt_port)
            self.sockets.kernel_esp = True

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind the sockets, start the datapath, add every peer, initiate onStart peers.

        Raises ConfigError (auth material unreadable) or DatapathError; the caller
        turns them into a non-zero exit after :meth:`stop`.
        """
        await self.sockets.open()
        await self.datapath.start()
        self.service_nat.apply(self.config.services)  # also replaces a crashed run's table
        for plan in self._plans:
            self._add_peer(plan)
        self.datapath.drop_stale()
        self._tasks = [
            asyncio.create_task(self._housekeep(), name="kipsec-housekeeping"),
            asyncio.create_task(self._keepalives(), name="kipsec-nat-keepalives"),
        ]
        if self.config_poll_interval > 0:
            self._tasks.append(asyncio.create_task(self._watch_config(), name="kipsec-config"))
        self.pump()
        log.info(
            "sidecar started",
            extra={
                "version": __version__,
                "datapath": self.datapath.name,
                "datapath_reason": self.choice.reason,
                "peers": len(self.peers),
            },
        )

    def follow(self, config_path: str) -> None:
        """Read the configuration from ``config_path`` from now on (configuration
        delivery switches between the operator's copy and the mounted Secret); the next
        check of the files reloads it, which changes no peer when the contents agree."""
        self.config_path = config_path
        self.watch.path = config_path

    def hurry(self) -> None:
        """Stop waiting for DELETE answers (a second stop signal): :meth:`stop` goes
        straight on to remove the datapath's state. Callable before or during stop."""
        self._hurry.set()

    async def stop(self) -> None:
        """DELETE every IKE SA, wait up to ``shutdown_wait`` s for the answers (less after
        :meth:`hurry`), then remove every device, route and rule and close the sockets.
        An IKE SA whose IKE_AUTH is in flight is let complete within that wait and then
        deleted (:meth:`_let_go`); if the wait ends first it is closed without a DELETE."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        # Before the first await: an answer that lands meanwhile finds the SAs let go.
        live = [sa for sa in self._owners if not sa.closed]
        for peer in {self._owners[sa] for sa in live}:
            self._let_go(peer, [sa for sa in live if self._owners[sa] is peer])
        self.pump()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        deadline = self.loop.time() + self.shutdown_wait
        while (
            any(not sa.closed for sa in live)
            and self.loop.time() < deadline
            and not self._hurry.is_set()
        ):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), 0.02)
        # The bound holds: an SA still authenticating when the wait ends (or on hurry)
        # is closed without a DELETE, as it would have been at once before it was given
        # the chance to complete; the peer may keep it until its dead-peer detection.
        now = self.loop.time()
        for sa, deleting in list(self._completing.items()):
            if not deleting and not sa.closed:
                sa.delete(now)
        log.info(
            "IKE SAs deleted",
            extra={
                "deleted": len(live),
                "unanswered": sum(not sa.closed for sa in live),
                "hurried": self._hurry.is_set(),
            },
        )
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self.service_nat.remove()
            await self.datapath.close(fail_closed=self.config.fail_closed_on_exit)
        finally:
            self.sockets.close()
        log.info("sidecar stopped")

    # ------------------------------------------------------------------ the pump

    def pump(self) -> None:
        """Apply queued events, then send queued datagrams; re-arm the timer.

        Events go first because a message may let the peer use an SA at once: the
        CREATE_CHILD_SA response makes the initiator send on the new child, the DELETE of
        the replaced child makes the responder move its outbound traffic. The inbound SA
        must be in the datapath before that message leaves; with the kernel datapath the
        peer's first packets arrive in softirq context, not behind this loop, and found
        no state (one ping in ~300 was lost during a rekey in the VM).
        """
        for _ in range(MAX_PUMP_ROUNDS):
            moved = False
            while (item := self.endpoint.next_event()) is not None:
                moved = True
                sa, event = item
                try:
                    self._apply(sa, event)
                except Exception:  # one bad event must not stop the daemon
                    log.exception("applying an IKE event failed", extra={"ike_event": _name(event)})
            datagrams = self.endpoint.datagrams_to_send(self.loop.time())
            for data, addr in datagrams:
                self.sockets.send(
                    data, addr, natt=data[:4] == NON_ESP_MARKER, local=self._local_for(addr[0])
                )
            if not (moved or datagrams):
                break
        self._arm_timer()

    def _arm_timer(self) -> None:
        when = self.endpoint.get_timer()
        if when == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None and not self._stopping_done():
            self._timer = self.loop.call_at(max(when, self.loop.time()), self._on_timer)

    def _stopping_done(self) -> bool:
        return self._stopping and not any(not sa.closed for sa in self._owners)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.endpoint.handle_timer(self.loop.time())
        self.pump()

    def _ike_datagram(self, data: bytes, source: Address) -> None:
        self.endpoint.receive_datagram(data, source, self.loop.time())
        self.pump()

    def _esp_datagram(self, data: bytes, source: Address) -> None:
        try:
            self.datapath.receive_encapsulated(data, source)
        except Exception:  # the datapath counts its own drops; this is a bug guard
            self._count_error("receive")
            LIMITER.log(
                log,
                logging.ERROR,
                "datapath failed on an ESP datagram",
                {"source": source[0]},
                exc_info=True,
            )

    def _esp_batch_done(self) -> None:
        try:
            self.datapath.flush_received()
        except Exception:  # as for _esp_datagram: a bug guard, the datapath counts drops
            self._count_error("receive")
            LIMITER.log(log, logging.ERROR, "datapath failed to deliver", {}, exc_info=True)

    def _local_for(self, remote: str) -> str | None:
        for peer in self.peers.values():
            if peer.plan.address == remote:
                return peer.plan.local_address
        return None

    # ------------------------------------------------------------------ peers

    def _responder_config(self, addr: Address) -> IkeConfig | None:
        """The IKE configuration for an IKE_SA_INIT from ``addr``; None refuses it."""
        if self._stopping:
            return None
        peer = self._peer_by_address(addr[0])
        if peer is None or peer.plan.ike is None:
            LIMITER.log(
                log,
                logging.INFO,
                "IKE_SA_INIT from an unknown address refused",
                {"source": addr[0]},
            )
            return None
        return peer.plan.ike

    def _peer_by_address(self, address: str) -> Peer | None:
        wanted = _ip(address)
        if wanted is None:
            return None
        for peer in self.peers.values():
            if _ip(peer.plan.address) == wanted:
                return peer
        return None

    def _add_peer(self, plan: PeerPlan, fp: str | None = None) -> Peer:
        peer = Peer(plan=plan, known_fingerprint=fp, reconnect=implied_action(plan.start))
        self.peers[plan.name] = peer
        self.datapath.add_peer(_policy(plan))
        log.info(
            "peer added",
            extra={"peer": plan.name, "address": plan.address, "keying": plan.keying},
        )
        for warning in plan.warnings:
            log.warning(warning, extra={"peer": plan.name})
        if plan.keying == "manual":
            self._apply_ops(peer, peer.children.established(manual_child(plan)))
        elif plan.start == "onStart":
            self._initiate(peer)
        return peer

    def _refresh_peer(self, peer: Peer, plan: PeerPlan, fp: str) -> None:
        """Credentials only: ``plan`` in force for what starts from now on, new SAs and
        the IKEv1 re-authentications of the live ones. A private key the renewal
        replaced still decrypts IKEv1 public-key encryption for a grace
        (:func:`~.reload.retire_key`) and is dropped, everywhere, when it ends."""
        now = self.loop.time()
        before = retired_key(peer.plan)
        assert plan.ike is not None and peer.plan.ike is not None  # credentials_only
        ike = retire_key(peer.plan.ike, plan.ike, now)
        after = ike.auth.retired_key
        if before is not None and before is not after:
            before.drop()
        if after is not None and after is not before:
            self.loop.call_at(after.until, after.drop)
        # The retired key is not part of the fingerprint (reload.IGNORED_FIELDS).
        peer.use(dataclasses.replace(plan, ike=ike), fp)
        for sa in peer.live_sas():
            renew_credentials(sa, ike)

    def _remove_peer(self, name: str) -> None:
        peer = self.peers.pop(name)
        peer.retired = True
        retired = retired_key(peer.plan)
        if retired is not None:  # a new identity, or no peer: no one encrypts to it
            retired.drop()
        handle = self._retries.pop(peer, None)
        if handle is not None:
            handle.cancel()
        self._let_go(peer, peer.live_sas())
        peer.children.clear()
        self.datapath.remove_peer(name)
        log.info("peer removed", extra={"peer": name})

    def _let_go(self, peer: Peer, sas: list[AnySa]) -> None:
        """Delete ``sas`` (a reload removed ``peer``, ``terminate``, a stop), except those
        whose IKE_AUTH (IKEv1: main mode message 5) is out: the peer may have established
        such an SA as responder already, and closing it here, without a DELETE, would
        leave it an orphan IKE SA and child. It completes or fails on its own
        (retransmitted up to the limit); completed, it is deleted with a DELETE
        (:meth:`_delete_completed`), its child never installed."""
        now = self.loop.time()
        for sa in sas:
            if sa in self._completing:
                continue  # let go of already (terminate, then a stop)
            if authenticating(sa):
                self._completing[sa] = False
                log.info(
                    "IKE SA in flight: deleted once it completes",
                    extra={"peer": peer.name, "spi_i": sa.spi_i.hex()},
                )
            else:
                sa.delete(now)

    def _initiate(self, peer: Peer) -> None:
        """Start an IKE SA (or the missing child) with ``peer`` unless one is under way."""
        if peer.retired or self._stopping or peer.plan.ike is None:
            return
        handle = self._retries.pop(peer, None)
        if handle is not None:
            handle.cancel()
        peer.retry_at = None
        now = self.loop.time()
        live = [sa for sa in peer.live_sas() if sa not in self._completing]  # let go of
        established = [sa for sa in live if sa.established]
        if established and not peer.children.children:
            sa = established[-1]
            if not sa.children:
                sa.initiate_child(peer.plan.name, now)
                log.info("child SA initiated", extra={"peer": peer.name})
            return
        if live:
            return
        sa = self.endpoint.initiate(peer.plan.ike, (peer.plan.address, peer.plan.port), now)
        peer.ike_sas.append(sa)
        self._owners[sa] = peer
        log.info("IKE SA initiated", extra={"peer": peer.name, "spi_i": sa.spi_i.hex()})

    def _release(self, peer: Peer) -> None:
        """A reload ends a ``terminate``: the peer follows its configuration again."""
        peer.operator_stopped = peer.declined = False
        peer.reconnect = implied_action(peer.plan.start)
        log.info("terminated peer released by the reload", extra={"peer": peer.name})
        if peer.plan.start == "onStart":
            self._initiate(peer)

    def _schedule_retry(self, peer: Peer) -> None:
        """Re-initiate after the next backoff delay (about 1 s after an established SA
        was lost), if the peer's reconnect mode is restart."""
        if (
            peer.retired
            or self._stopping
            or not retries(peer.reconnect, peer.operator_stopped)
            or peer in self._retries
        ):
            return
        delay = peer.backoff.next_delay()
        peer.retry_at = self.loop.time() + delay
        self._retries[peer] = self.loop.call_later(delay, self._retry, peer)
        log.info("re-initiation scheduled", extra={"peer": peer.name, "delay": round(delay, 2)})

    def _retry(self, peer: Peer) -> None:
        self._retries.pop(peer, None)
        peer.retry_at = None
        self._initiate(peer)
        self.pump()

    def _acquire(self, name: str) -> None:
        """Datapath: traffic for ``name`` and no outbound SA (on-demand initiation).

        A peer that must not initiate on traffic (``start: none``, close or dead-peer
        action none, held by ``terminate``) has its queued packets dropped instead.
        """
        peer = self.peers.get(name)
        if peer is None or peer.plan.keying != "ike":
            return
        if not initiates_on_traffic(peer.reconnect, peer.operator_stopped):
            if not peer.declined:
                peer.declined = True
                log.info(
                    "traffic for a peer without SA: dropped (it does not initiate on traffic)",
                    extra={
                        "peer": name,
                        "terminated": peer.operator_stopped,
                        "reconnect": peer.reconnect,
                    },
                )
            self.datapath.discard_queued(name)
            return
        log.info("traffic for a peer without SA: initiating", extra={"peer": name})
        self._initiate(peer)
        self.pump()

    def _kernel_expire(self, name: str, spi: int, hard: bool) -> None:
        """Kernel datapath: an SA of ``name`` reached a byte/packet limit in the kernel.

        Soft: rekey its child (make-before-break, as for the userspace soft limits).
        Hard: the kernel already removed the state; delete the child through the engine
        so the peer and the datapath agree, and re-initiate onStart peers (a deleted
        child is not retried by itself; onDemand peers wait for traffic, i.e. ACQUIRE).
        """
        peer = self.peers.get(name)
        if peer is None or self._stopping:
            return
        wanted = spi.to_bytes(4, "big")
        now = self.loop.time()
        for sa in peer.live_sas():
            if not sa.established:
                continue
            for spi_in, child in list(sa.children.items()):
                if wanted not in (child.spi_in, child.spi_out):
                    continue
                fields = {"peer": name, "spi": f"{spi:08x}", "hard": hard}
                try:
                    if hard:
                        log.warning("kernel SA expired: deleting the child SA", extra=fields)
                        sa.delete_child(spi_in, now)
                        self._schedule_retry(peer)
                    elif child.state.value == "installed":
                        log.info("kernel SA soft limit reached: rekeying", extra=fields)
                        sa.rekey_child(spi_in, now)
                except KipsecError as exc:
                    log.warning("kernel EXPIRE not applied", extra=fields | {"error": str(exc)})
                self.pump()
                return
        log.info(
            "kernel EXPIRE for an SA the engine no longer has",
            extra={"peer": name, "spi": f"{spi:08x}", "hard": hard},
        )

    # ------------------------------------------------------------------ events

    def _owner(self, sa: AnySa) -> Peer | None:
        """The peer ``sa`` belongs to; a responder's SA is adopted at its first event by
        the peer at its address, unless it was set up under terms a reload replaced."""
        peer = self._owners.get(sa)
        if peer is None and sa not in self._stale:
            peer = self._peer_by_address(sa.peer_addr[0])
            if peer is not None and not negotiated_under(peer.plan, sa.config):
                self._delete_stale(peer, sa)
                return None
            if peer is not None:
                peer.ike_sas.append(sa)
                self._owners[sa] = peer
        return peer

    def _delete_stale(self, peer: Peer, sa: AnySa) -> None:
        """``sa`` answered the peer's IKE_SA_INIT before a reload replaced the peer: it
        completes under the old terms (its first child refused, or one the new
        configuration does not want). Delete it (a DELETE once established), so that the
        IKE SA negotiated under the new terms is the one that stays: the one an onStart
        peer's reload started, which adopting ``sa`` would have abandoned as a
        duplicate, or the peer's, whose own reconnect mode answers the DELETE."""
        self._stale.add(sa)
        sa.delete(self.loop.time())
        log.info(
            "IKE SA set up under a replaced configuration deleted",
            extra={"peer": peer.name, "spi_i": sa.spi_i.hex()},
        )

    def _delete_completed(self, peer: Peer, sa: AnySa) -> None:
        """``sa`` was authenticating when we let go of it (:meth:`_let_go`: a reload
        removed or replaced ``peer``, ``terminate``, a stop): once it is established
        (IKEv1: and the quick mode its initiator started at once is over, so the Delete
        names that quick mode's IPsec SAs too), delete it with a DELETE, which the peer,
        holding it as responder, sees. A failure or timeout closes it without help (an
        IkeSaDeleted)."""
        if self._completing[sa] or not sa.established or quick_mode_under_way(sa):
            return
        self._completing[sa] = True
        sa.delete(self.loop.time())
        log.info(
            "IKE SA in flight completed: deleted",
            extra={"peer": peer.name, "spi_i": sa.spi_i.hex()},
        )

    def _apply(self, sa: AnySa, event: Event) -> None:
        peer = self._owner(sa)
        fields: dict[str, object] = {"ike_event": _name(event), "peer": peer.name if peer else None}
        if peer is not None and sa in self._completing and not isinstance(event, IkeSaDeleted):
            self._delete_completed(peer, sa)  # let go of: its child is never installed
            return
        if peer is None or peer.retired:
            LIMITER.log(log, logging.INFO, "IKE event for a removed peer", fields)
            if isinstance(event, IkeSaDeleted):
                self._forget(sa)
            return
        if (cause := failure_reason(event, self._failure_causes.get(sa))) is not None:
            self._failure_causes[sa] = cause
        match event:
            case IkeSaEstablished():
                peer.established[sa] = event
                peer.established_at[sa] = time.time()
                peer.last_error = peer.last_failure = None
                peer.backoff.reset()
                self.handshakes["success"] += 1
                log.info(
                    "IKE SA established",
                    extra=fields
                    | {
                        "spi_i": event.spi_i.hex(),
                        "spi_r": event.spi_r.hex(),
                        "initiator": event.initiator,
                        "remote_id": event.remote_id,
                        "nat": event.nat_detected,
                    },
                )
                self._resolve_duplicates(peer, sa, event)
            case ChildSaEstablished():
                self._child_established(peer, event, fields)
            case ChildSaDeleted():
                self._child_deleted(peer, sa, event, fields)
            case ChildSaRekeyed():
                log.info(
                    "child SA rekeyed",
                    extra=fields
                    | {"old_spi_in": event.old_spi_in.hex(), "new_spi_in": event.new_spi_in.hex()},
                )
            case IkeSaRekeyed():
                self.rekeys["ike"] += 1
                log.info(
                    "IKE SA rekeyed",
                    extra=fields | {"spi_i": event.new_spi_i.hex(), "spi_r": event.new_spi_r.hex()},
                )
            case IkeSaDeleted():
                self._ike_deleted(peer, sa, event, fields)
            case PeerDead():
                peer.last_failure, peer.last_error = cause, "PEER_DEAD"
                log.warning("peer dead", extra=fields | {"tries": event.tries})
            case AuthenticationFailedEvent():
                self.auth_failures += 1
                peer.last_error = f"AUTHENTICATION_FAILED ({event.reason})"
                peer.last_failure = cause
                log.warning(
                    "authentication failed",
                    extra=fields | {"reason": event.reason, "by_peer": event.by_peer},
                )
            case NegotiationFailed():
                # IKEv1 reports a main mode that failed to authenticate with this event
                # too (after AuthenticationFailedEvent), its reason saying more: it
                # keeps the name of the failure (see failure_reason)
                failed = "AUTHENTICATION" if cause == "authentication_failed" else "NEGOTIATION"
                peer.last_failure, peer.last_error = cause, f"{failed}_FAILED ({event.reason})"
                log.warning(
                    "negotiation failed",
                    extra=fields | {"reason": event.reason, "child": event.child},
                )
            case ProtocolErrorEvent():
                self.ike_malformed += 1
                LIMITER.log(
                    log, logging.INFO, "IKE message dropped", fields | {"reason": event.reason}
                )
        self._settle(peer, event)

    def _settle(self, peer: Peer, event: Event) -> None:
        """Finish the ``--wait`` of control commands that ``event`` completes or fails."""
        waiters = self._waiters.get(peer.name)
        if not waiters:
            return
        down = not peer.live_sas()
        for command, future in list(waiters):
            outcome = wait_outcome(command, event, peer_down=down)
            if outcome is not None and not future.done():
                future.set_result(outcome)

    def _resolve_duplicates(self, peer: Peer, sa: AnySa, event: IkeSaEstablished) -> None:
        """Both sides initiated, or the peer restarted: keep one IKE SA (see peers.py)."""
        now = self.loop.time()
        local, remote = peer.plan.local_address, peer.plan.address
        for other in peer.live_sas():
            if other is sa or other in peer.planned_deletes or other in self._completing:
                continue
            if other.established:
                loser = redundant_ike_sa(local, remote, other, sa, newer=sa)
                if deletes_redundant(loser, other, sa):
                    peer.planned_deletes.add(loser)
                    loser.delete(now)
                    log.info(
                        "duplicate IKE SA deleted",
                        extra={"peer": peer.name, "spi_i": loser.spi_i.hex()},
                    )
                else:
                    peer.outlived.add(loser)
            elif other.is_initiator and not event.initiator and awaiting_first_answer(other):
                # Still at its first message (IKE_SA_INIT; IKEv1 main mode message 1),
                # the peer holds at most a half-open responder that times out:
                # abandoning ours is always safe. Past that (IKE_AUTH
                # sent), the peer may already have established it as responder; closing
                # it here without a DELETE would leave the peer an orphan IKE SA and
                # child SA. Let it complete: the rule for two established SAs above
                # then deletes the loser with a DELETE both sides see.
                peer.planned_deletes.add(other)
                other.delete(now)  # not established yet: closes locally
                log.info("own IKE SA abandoned: the peer's SA won", extra={"peer": peer.name})

    def _child_established(
        self, peer: Peer, event: ChildSaEstablished, fields: dict[str, object]
    ) -> None:
        plan = peer.plan
        encapsulation: Literal["udp", "raw"] = (
            "udp"
            if plan.encapsulation == "udp" or (plan.encapsulation == "auto" and event.nat_detected)
            else "raw"
        )
        try:
            pair = sa_pair(event, plan.local_address, event.remote_addr[0])
        except KipsecError as exc:
            self._count_error("install")
            log.error("child SA not installable", extra=fields | {"error": str(exc)})
            return
        for ipsec in (pair.inbound, pair.outbound):
            ipsec.udp_encap = encapsulation == "udp" and ipsec.protocol == ProtocolId.ESP
            ipsec.lifetime = with_byte_limit(plan.sa_lifetime, event.max_bytes)
        # Behind a NAT, ESP goes where the peer's IKE comes from: a masquerading NAT may
        # have mapped its port 4500 to any port (RFC 3948 section 2.1).
        remote_port = (
            event.remote_addr[1] if encapsulation == "udp" and event.nat_detected else None
        )
        child = InstalledChild(
            event=without_keys(event),
            inbound=pair.inbound,
            outbound=pair.outbound,
            encapsulation=encapsulation,
            installed_at=time.time(),
            rekey_at=None if event.rekey_at is None else event.rekey_at + self.epoch,
            expire_at=None if event.expire_at is None else event.expire_at + self.epoch,
            remote_port=remote_port,
        )
        if event.replaces is not None:
            self.rekeys["child"] += 1
        self._apply_ops(peer, peer.children.established(child))
        peer.last_error = peer.last_failure = None
        peer.reconnect = implied_action(plan.start)
        peer.declined = False
        log.info(
            "child SA installed",
            extra=fields
            | {
                "spi_in": event.spi_in.hex(),
                "spi_out": event.spi_out.hex(),
                "replaces": event.replaces.hex() if event.replaces else None,
                "initiator": event.initiator,
                "outbound": peer.children.outbound == event.spi_in,
                "encapsulation": encapsulation,
                "remote_port": remote_port,
            },
        )

    def _child_deleted(
        self, peer: Peer, sa: AnySa, event: ChildSaDeleted, fields: dict[str, object]
    ) -> None:
        had = bool(peer.children.children)
        ops = peer.children.deleted(event.spi_in)
        if event.reason in _REPLACED:
            # The peer stopped using it, but its last packets may still sit in the 4500
            # socket queue behind the IKE message that ended it (two sockets, no order
            # between them): accept them for a moment longer.
            late: list[DatapathOp] = [op for op in ops if isinstance(op, RemoveInbound)]
            ops = [op for op in ops if not isinstance(op, RemoveInbound)]
            self.loop.call_later(self.inbound_grace, self._apply_late, peer, late)
        self._apply_ops(peer, ops)
        log.info(
            "child SA removed",
            extra=fields
            | {
                "spi_in": event.spi_in.hex(),
                "spi_out": event.spi_out.hex(),
                "reason": event.reason,
            },
        )
        if had and not peer.children.children:
            log.warning("no child SA left: outbound fails closed", extra=fields)
            if event.reason not in ("ike-deleted", "deleted") and not sa.closed:
                self._lost(peer, event.reason)

    def _apply_late(self, peer: Peer, ops: list[DatapathOp]) -> None:
        if not peer.retired and not self._stopping:
            self._apply_ops(peer, ops)

    def _ike_deleted(
        self, peer: Peer, sa: AnySa, event: IkeSaDeleted, fields: dict[str, object]
    ) -> None:
        planned = sa in peer.planned_deletes
        was_established = sa in peer.established
        cause = self._failure_causes.get(sa, "other")
        self._forget(sa)
        log.info("IKE SA deleted", extra=fields | {"reason": event.reason, "planned": planned})
        if planned or peer.live_sas():
            return
        if not was_established and event.reason != "deleted":
            self.handshakes["failure"] += 1
            self.handshake_failures[cause] += 1
        if event.reason in _OWN_DELETES:
            return  # terminate, reload or shutdown: no retry
        if peer.last_error is None:
            peer.last_error = event.reason.upper().replace("-", "_")
            peer.last_failure = cause
        self._apply_ops(peer, peer.children.clear() if peer.children.children else [])
        self.datapath.clear_outbound(peer.name)
        self._lost(peer, event.reason, established=was_established)

    def _lost(self, peer: Peer, reason: str, *, established: bool = True) -> None:
        """The peer's last SA went away for ``reason``: follow its close/dead-peer action."""
        before = peer.reconnect
        plan = peer.plan
        peer.reconnect = reconnect_after_loss(
            reason, before, plan.close_action, plan.dpd_action, established=established
        )
        if peer.reconnect != before:
            log.info(
                "peer reconnect mode changed",
                extra={"peer": peer.name, "reason": reason, "reconnect": peer.reconnect},
            )
        self._schedule_retry(peer)

    def _forget(self, sa: AnySa) -> None:
        self._failure_causes.pop(sa, None)
        self._stale.discard(sa)
        self._completing.pop(sa, None)
        peer = self._owners.pop(sa, None)
        if peer is None:
            return
        if sa in peer.ike_sas:
            peer.ike_sas.remove(sa)
        peer.established.pop(sa, None)
        peer.established_at.pop(sa, None)
        peer.planned_deletes.discard(sa)
        peer.outlived.discard(sa)

    def _apply_ops(self, peer: Peer, ops: list[DatapathOp]) -> None:
        for op in ops:
            try:
                match op:
                    case InstallInbound(sa=ipsec, remote_port=port):
                        self.datapath.install_inbound(peer.name, ipsec, remote_port=port)
                    case SetOutbound(sa=ipsec, remote_port=None):
                        self.datapath.set_outbound(peer.name, ipsec)
                    case SetOutbound(sa=ipsec, remote_port=port):
                        self.datapath.set_outbound(peer.name, ipsec, remote_port=port)
                    case RemoveInbound(spi=spi):
                        self.datapath.remove_inbound(peer.name, spi)
                    case ClearOutbound():
                        self.datapath.clear_outbound(peer.name)
            except (DatapathError, KipsecError, KeyError) as exc:
                self._count_error(type(op).__name__)
                log.error(
                    "datapath operation failed",
                    extra={"peer": peer.name, "operation": type(op).__name__, "error": str(exc)},
                )

    def _count_error(self, kind: str) -> None:
        self.datapath_errors[kind] = self.datapath_errors.get(kind, 0) + 1

    # ------------------------------------------------------------------ housekeeping

    async def _housekeep(self) -> None:
        """Once a second: byte/packet soft limits, manual-key rotations."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            try:
                self._check_volume_limits()
                self._check_rotations()
                self.pump()
                LIMITER.flush()
            except Exception:  # keep the daemon alive; the log says what broke
                log.exception("housekeeping failed")

    async def _watch_config(self) -> None:
        """Every ``config_poll_interval`` s: reload when the document or a file it names
        holds something else than what is applied (see :mod:`.config_watch`)."""
        while True:
            await asyncio.sleep(self.config_poll_interval)
            try:
                if self.watch.changed() is not None:
                    log.info("configuration file changed: reloading")
                    with contextlib.suppress(ControlError):
                        await self.reload()
            except Exception:
                log.exception("configuration watch failed")

    async def _keepalives(self) -> None:
        """NAT keepalives every ``natTraversal.keepalive`` s (read each round, so a reload
        changes the interval); 0 disables them until a reload sets an interval again."""
        while True:
            interval = self.config.nat_traversal.keepalive
            await asyncio.sleep(interval if interval > 0 else HOUSEKEEPING_INTERVAL)
            if interval > 0:
                try:
                    self._send_keepalives()
                except Exception:
                    log.exception("sending NAT keepalives failed")

    def _check_volume_limits(self) -> None:
        now = self.loop.time()
        for peer in self.peers.values():
            current = peer.children.current()
            sa = peer.preferred_sa()
            if current is None or sa is None or not sa.established:
                continue
            if current.state != "installed":
                continue
            if current.outbound.soft_limit_reached or current.inbound.soft_limit_reached:
                engine_child = sa.child_by_spi(current.spi_in)
                if engine_child is not None and engine_child.state.value == "installed":
                    log.info("byte/packet soft limit reached: rekeying", extra={"peer": peer.name})
                    sa.rekey_child(current.spi_in, now)

    def _send_keepalives(self) -> None:
        """One 0xFF byte (RFC 3948 section 2.3) to each peer of an IKE SA that found this
        side behind a NAT, from port 4500, to keep the NAT's mapping alive."""
        for peer in self.peers.values():
            for sa in peer.live_sas():
                info = peer.established.get(sa)
                if info is not None and info.nat_local:
                    self.sockets.send(
                        build_keepalive(), sa.peer_addr, natt=True, local=peer.plan.local_address
                    )

    # ------------------------------------------------------------------ Controller

    def _peer(self, name: str) -> Peer:
        peer = self.peers.get(name)
        if peer is None:
            raise ControlError(f"no peer named {name!r} in the configuration")
        return peer

    def _waiter(self, peer: Peer, command: WaitCommand) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = self.loop.create_future()
        self._waiters.setdefault(peer.name, []).append((command, future))
        return future

    async def _wait(
        self, peer: Peer, command: WaitCommand, future: asyncio.Future[Outcome], wait: float
    ) -> None:
        """Wait up to ``wait`` s for ``future``; ControlError with the reason on failure,
        :class:`ControlTimeout` when no outcome came in time."""
        try:
            async with asyncio.timeout(wait):
                outcome = await future
        except TimeoutError:
            raise ControlTimeout(
                f"{command} of peer {peer.name!r}: timeout: no outcome within {wait:g} s"
                + (f" (last error: {peer.last_error})" if peer.last_error else "")
            ) from None
        finally:
            waiters = self._waiters.get(peer.name, [])
            if (command, future) in waiters:
                waiters.remove((command, future))
            if not waiters:
                self._waiters.pop(peer.name, None)
        if not outcome.ok:
            raise ControlError(f"{command} of peer {peer.name!r} failed: {outcome.reason}")

    async def initiate(self, peer: str, wait: float | None = None) -> None:
        target = self._peer(peer)
        if target.plan.keying != "ike":
            raise ControlError(f"peer {peer!r} is manually keyed: there is nothing to initiate")
        target.operator_stopped = False
        target.declined = False
        if wait is not None and target.state == "established":
            return
        future = self._waiter(target, "initiate") if wait is not None else None
        self._initiate(target)
        self.pump()
        if future is not None and wait is not None:
            await self._wait(target, "initiate", future, wait)

    async def rekey(self, peer: str, kind: RekeyKind, wait: float | None = None) -> None:
        target = self._peer(peer)
        sa = target.preferred_sa()
        if sa is None or not (sa.established or detached(sa)):  # detached: a new main mode
            raise ControlError(f"peer {peer!r} has no established IKE SA to rekey")
        now = self.loop.time()
        try:
            if kind == "ike":
                sa.rekey_ike(now)
            elif kind == "child":
                spis = [spi for spi, c in sa.children.items() if c.state.value == "installed"]
                if not spis:
                    raise ControlError(f"peer {peer!r} has no installed child SA to rekey")
                for spi in spis:
                    sa.rekey_child(spi, now)
            else:
                raise ControlError(f"rekey kind must be 'child' or 'ike', not {kind!r}")
        except KipsecError as exc:
            raise ControlError(f"rekey of peer {peer!r} refused: {exc}") from None
        log.info("rekey requested", extra={"peer": peer, "kind": kind})
        command: WaitCommand = "rekey-ike" if kind == "ike" else "rekey-child"
        future = self._waiter(target, command) if wait is not None else None
        self.pump()
        if future is not None and wait is not None:
            await self._wait(target, command, future, wait)

    async def terminate(self, peer: str, wait: float | None = None) -> None:
        target = self._peer(peer)
        if target.plan.keying != "ike":
            raise ControlError(f"peer {peer!r} is manually keyed: remove it from the configuration")
        target.operator_stopped = True
        handle = self._retries.pop(target, None)
        if handle is not None:
            handle.cancel()
        target.retry_at = None
        live = target.live_sas()
        self._let_go(target, live)
        log.info("terminate requested", extra={"peer": peer})
        future = self._waiter(target, "terminate") if wait is not None and live else None
        self.pump()
        if future is not None and wait is not None:
            await self._wait(target, "terminate", future, wait)

    async def reload(self) -> list[str]:
        before = self.watch.begin()
        config: SidecarConfig | None = None
        try:
            config = load_config(self.config_path)
            pending = self.identity_pending(config) if self.identity_pending else None
            if pending is None:
                plans = to_core(config, wall_clock_epoch=self.epoch)
        except ConfigError as exc:
            self.watch.refused(before, config)
            log.error("configuration not reloaded", extra={"error": str(exc)})
            raise ControlError(f"configuration not reloaded: {exc}") from None
        if pending is not None:
            self.watch.refused(before, config)
            log.info("configuration held back", extra={"reason": pending})
            raise ControlError(f"configuration not applied yet: {pending}")
        self.watch.applied(config, before)
        by_name = {plan.name: plan for plan in plans}
        new_fps = {plan.name: fingerprint(plan) for plan in plans}
        changes = diff({name: p.fingerprint for name, p in self.peers.items()}, new_fps)
        changes = changes.refreshing({n: p.plan for n, p in self.peers.items()}, by_name)
        lines = changes.lines()
        stale = restart_needed(self.config, config)
        for name in changes.remove:
            self._remove_peer(name)
        for name in changes.replace:
            old = self.peers[name]
            new_plan = by_name[name]
            if (
                new_plan.keying == "manual"
                and old.plan.keying == "manual"
                and rotation_kind(old.plan, new_plan, old.fingerprint, new_fps[name]) == "rotate"
            ):
                self._rotate_manual(old, new_plan, new_fps[name])
            else:
                self._remove_peer(name)
                self._add_peer(new_plan, new_fps[name])
        for name in changes.refresh:
            # Only the certificate credentials changed (a renewal, a CA rotation): the
            # IKE SA, its rekeys and the child SAs stay; new IKE_AUTH uses the new plan.
            self._refresh_peer(self.peers[name], by_name[name], new_fps[name])
        for name in changes.add:
            self._add_peer(by_name[name], new_fps[name])
        for peer in self.peers.values():
            if peer.operator_stopped:
                self._release(peer)
        lines += self._apply_services(config)
        if stale:
            lines.append("not applied until restart: " + ", ".join(stale))
        self.config = config
        # Keep document order for the snapshot.
        self.peers = {name: self.peers[name] for name in by_name if name in self.peers}
        log.info("configuration reloaded", extra={"changes": lines or ["none"]})
        self.pump()
        return lines

    def _apply_services(self, config: SidecarConfig) -> list[str]:
        """Replace the Service translation if it changed (no peer is touched); the reload
        answer's line, if any.

        On failure the previous translation stays in force (nft's transaction is all or
        nothing; the next reload tries again) and the error is logged and answered, not
        raised: the peers' part of the reload has been applied already.
        """
        try:
            if not self.service_nat.apply(config.services):
                return []
        except DatapathError as exc:
            self._count_error("services")
            log.error("services not applied", extra={"error": str(exc)})
            return [f"services not applied: {exc}"]
        log.info("services applied", extra={"services": len(config.services)})
        return [f"services updated ({len(config.services)})"]

    def _rotate_manual(self, peer: Peer, plan: PeerPlan, fp: str) -> None:
        """New SPI pair for a manual peer: new inbound now, outbound and cleanup later."""
        if peer.rotation is not None:
            self._switch_manual(peer)  # a rotation of a rotation: finish the first
        old = peer.children.current()
        peer.use(plan, fp)
        new = manual_child(plan, replaces=old.spi_in if old is not None else None)
        self._apply_ops(peer, peer.children.established(new))
        if old is not None and peer.children.outbound == old.spi_in:
            peer.rotation = ManualRotation(old.spi_in, new, self.loop.time() + self.rotation_grace)
        log.info(
            "manual SAs rotating",
            extra={
                "peer": peer.name,
                "spi_in": new.event.spi_in.hex(),
                "spi_out": new.event.spi_out.hex(),
                "grace": self.rotation_grace,
            },
        )

    def _check_rotations(self) -> None:
        now = self.loop.time()
        for peer in self.peers.values():
            rotation = peer.rotation
            if rotation is not None and (rotation.new.inbound.packets or now >= rotation.switch_at):
                self._switch_manual(peer)

    def _switch_manual(self, peer: Peer) -> None:
        """Move a rotating manual peer's outbound to the new pair; drop the old one later."""
        rotation = peer.rotation
        if rotation is None:
            return
        peer.rotation = None
        peer.children.mark_deleting(rotation.old_spi_in)
        ops = peer.children.deleted(rotation.old_spi_in)
        late: list[DatapathOp] = [op for op in ops if isinstance(op, RemoveInbound)]
        self._apply_ops(peer, [op for op in ops if not isinstance(op, RemoveInbound)])
        self.loop.call_later(self.rotation_grace, self._apply_late, peer, late)
        log.info(
            "manual SAs switched",
            extra={"peer": peer.name, "old_spi_in": rotation.old_spi_in.hex()},
        )

    def snapshot(self) -> SidecarSnapshot:
        stats = self.datapath.stats
        drops = {
            "replay": sum(stats.replay_drops.values()),
            "integrity": sum(stats.integrity_drops.values()),
            "no_sa": sum(stats.no_sa_drops.values()) + stats.unknown_spi,
            "malformed": self.ike_malformed
            + self.endpoint.dropped
            + self.sockets.counters.malformed,
        }
        errors = dict(stats.errors)
        for kind, count in self.datapath_errors.items():
            errors[kind] = errors.get(kind, 0) + count
        return SidecarSnapshot(
            version=__version__,
            datapath=self.datapath.name,
            datapath_reason=self.choice.reason,
            started_at=self.started_at,
            peers=tuple(peer_view(peer) for peer in self.peers.values()),
            handshakes=dict(self.handshakes),
            handshake_failures=dict(self.handshake_failures),
            rekeys=dict(self.rekeys),
            auth_failures=self.auth_failures,
            drops=drops,
            datapath_errors=errors,
            datapath_failed=bool(getattr(self.datapath, "failed", False)),
            config_generation=self.watch.generation,
            config_digest=(self.watch.current.document if self.watch.current else None) or "",
            ike_half_open=self.endpoint.half_open_count,
            ike_cookies_sent=self.endpoint.cookies_sent,
            ike_refused=dict(self.endpoint.refused),
            log_suppressed=LIMITER.suppressed,
        )


# --- helpers -------------------------------------------------------------------------------


def _is_kernel(datapath: Datapath) -> TypeGuard[KernelDatapath]:
    """Whether ``datapath`` is the kernel one, without importing it on the userspace
    path (its XFRM netlink code loads pyroute2): no instance exists unless its module
    was loaded."""
    kernel = sys.modules.get("kipsec_sidecar.datapath.kernel")
    return kernel is not None and isinstance(datapath, kernel.KernelDatapath)


@lru_cache(maxsize=4096)
def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``address`` parsed (None when it is not an IP address), cached: every IKE_SA_INIT
    and the first event of each responder SA compare an address with every peer's, and
    parsing each peer's every time cost ~10 us per peer per message."""
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _name(event: Event) -> str:
    return type(event).__name__


def _policy(plan: PeerPlan) -> PeerPolicy:
    local = ipaddress.ip_address(plan.local_address)
    return PeerPolicy(
        peer=plan.name,
        remote_addr=ipaddress.ip_address(plan.address),
        local_ts=plan.local_ts,
        remote_ts=plan.remote_ts,
        mode=plan.mode,
        protocol=ProtocolId.ESP if plan.protocol == "esp" else ProtocolId.AH,
        encapsulation="udp" if plan.encapsulation == "udp" else "raw",
        local_addr=None if local.is_unspecified else local,
        child_lifetime=plan.ike.children[0].lifetime.expire_after if plan.ike else None,
    )


__all__ = [
    "CONFIG_POLL_INTERVAL",
    "HOUSEKEEPING_INTERVAL",
    "SHUTDOWN_WAIT",
    "DatapathFactory",
    "Sidecar",
]
