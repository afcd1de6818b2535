"""The two-worker userspace datapath: outbound in a worker process, inbound in the daemon.

``datapath: {workers: 2}`` (see docs/sidecar-config.md). One Python thread carries the
single-process datapath, so its ceiling is one core. This splits it by direction:

- the **outbound worker** (:mod:`.outbound_worker`, a child process) reads the TUN
  device, seals and sends ESP in UDP from the daemon's 4500 socket;
- the **daemon** keeps everything else: IKE, routes and rules, the inbound SAs and their
  replay windows, decryption and TUN writes (:class:`UserspaceDatapath` as it is).

Why by direction and not per queue with one SA per worker: every SA is then used in
exactly one process — each outbound SA's sequence numbers in the worker, each inbound
SA's replay window in the daemon — with any peer, strongSwan included, and with no
change to IKE. A multi-queue device with a worker per queue needs, for parallel
outbound, one outbound SA per worker (RFC 9611 per-resource SAs, which the peer must
support); sharing one SA across workers by handing out blocks of sequence numbers
reorders them on the wire by up to a block, past a strict peer's replay window
(strongSwan's default is 32 packets), so it would lose packets. And the kernel hashes
one flow to one queue: a single TCP stream would still use one worker.

Correctness rules this module keeps:

- **Sequence numbers** are leased to the worker (:data:`.worker_wire.LEASE` at a time);
  this side records each lease's end before granting it. A restarted worker resumes the
  SA after the last lease, so a number is never used twice, even when a worker dies
  mid-lease (some are skipped, which receivers accept).
- **Make-before-break**: ``set_outbound`` and ``clear_outbound`` wait (bounded) for the
  worker's acknowledgement, so when the daemon sends the DELETE of a rekeyed SA the
  worker has switched; a worker that is starting reads every pending message before its
  first packet.
- **Lifetimes**: the worker reports per-SA packets and bytes every
  :data:`.outbound_worker.TICK`; they land in the daemon's :class:`IpsecSa`, where the
  engine looks for soft and hard limits. A lease never reaches past the hard packet
  limit; a hard byte limit may be passed by one report interval of traffic.
- **A dead worker** fails closed: the daemon still holds the device and its routes, so
  the pod's packets stay in the device (dropped when its queue is full) and nothing
  leaves in clear. The daemon notices at once (the control socket closes), counts
  ``errors["worker_died"]``, logs, and starts a new worker with the peers and outbound
  SAs (after their last lease); until it has imported the datapath (~2 s on the loaded
  2-core development VM; ~42 MiB RSS, mostly pyroute2 that ``.userspace`` imports) the
  peers' outbound traffic is held. After :data:`MAX_RESTARTS` deaths within
  :data:`RESTART_WINDOW` seconds it stops restarting: :attr:`SplitDatapath.failed` is
  set (readiness fails) and traffic stays blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from ..core.ipsec_sa import IpsecSa
from . import worker_wire as wire
from .base import AcquireCallback, DatapathError, PeerPolicy, UdpSender
from .userspace import UdpBatchSender, UserspaceDatapath, UserspaceOptions

log = logging.getLogger(__name__)

#: Seconds to wait for a worker's acknowledgement of an SA change, and for its start.
ACK_TIMEOUT = 2.0
START_TIMEOUT = 60.0
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


class SplitDatapath(UserspaceDatapath):
    """:class:`UserspaceDatapath` with its outbound half in a worker process.

    ``udp_socket`` is the daemon's marked 4500 socket (the worker sends from a copy of
    it), or a function returning it at :meth:`start` (the daemon binds its sockets
    after it builds the datapath); ``gso`` sends the worker's datagrams with UDP GSO.
    """

    def __init__(
        self,
        *,
        udp_sender: UdpSender,
        udp_socket: socket.socket | Callable[[], socket.socket],
        on_acquire: AcquireCallback,
        options: UserspaceOptions | None = None,
        udp_batch_sender: UdpBatchSender | None = None,
        gso: bool = True,
    ) -> None:
        super().__init__(
            udp_sender=udp_sender,
            on_acquire=on_acquire,
            options=options,
            udp_batch_sender=udp_batch_sender,
        )
        self._udp_socket_source = udp_socket
        self._udp_socket: socket.socket | None = None
        self._gso = gso
        self._control: socket.socket | None = None
        self._worker: subprocess.Popen[bytes] | None = None
        self._worker_ready = False
        self._lease_end: dict[tuple[str, int], int] = {}
        self._message_id = 0
        self._deaths: list[float] = []
        self._closing = False
        #: set when the worker died too often: traffic stays blocked, readiness fails
        self.failed = False
        self.restarts = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        source = self._udp_socket_source
        self._udp_socket = source if isinstance(source, socket.socket) else source()
        await super().start()
        assert self._tun is not None and self._loop is not None
        for fd in self._tun.fds:
            self._loop.remove_reader(fd)  # the worker reads the device
        self._spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._worker_ready:
            if self._control is None or time.monotonic() > deadline:
                await self.close()
                raise DatapathError("the outbound worker did not start")
            await asyncio.sleep(0.02)

    @property
    def worker_pid(self) -> int | None:
        """The running worker's process id (tests kill it)."""
        return None if self._worker is None else self._worker.pid

    @property
    def worker_ready(self) -> bool:
        return self._worker_ready

    def _spawn(self) -> None:
        """Start a worker and send it every peer and outbound SA (non-blocking)."""
        assert self._tun is not None and self._loop is not None and self._udp_socket is not None
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        tun_fd, udp_fd = self._tun.fd, self._udp_socket.fileno()
        args = [tun_fd, udp_fd, theirs.fileno(), int(self.offload), int(self._gso)]
        try:
            self._worker = subprocess.Popen(  # noqa: S603 - our own module, fds only
                [sys.executable, "-m", "kipsec_sidecar.datapath.outbound_worker"]
                + [str(a) for a in args],
                pass_fds=(tun_fd, udp_fd, theirs.fileno()),
                # Not in the daemon's process group: a terminal's Ctrl-C or a group
                # SIGTERM reaches the daemon, which stops the worker in order; the worker
                # also exits by itself when the daemon is gone (its control socket closes).
                start_new_session=True,
            )
        except OSError as exc:
            mine.close()
            raise DatapathError(f"outbound worker: {exc}") from None
        finally:
            theirs.close()
        self._control = mine
        self._worker_ready = False
        mine.setblocking(False)
        self._loop.add_reader(mine.fileno(), self._on_control)
        for name, peer in self._peers.items():
            self._tell({"op": "add_peer", "policy": peer.policy})
            if peer.outbound is not None:
                self._send_outbound(name, peer.outbound, resume=True)

    async def close(self, *, fail_closed: bool = False) -> None:
        self._closing = True
        self._stop_worker()
        await super().close(fail_closed=fail_closed)

    def _stop_worker(self) -> None:
        control, worker = self._control, self._worker
        self._control = None
        if control is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(control.fileno())
            with contextlib.suppress(OSError):
                wire.send(control, {"op": "close"})
            control.close()
        if worker is not None:
            try:
                worker.wait(timeout=5)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=5)
            self._worker = None

    # -- the control channel -------------------------------------------------------------

    def _tell(self, message: wire.Message) -> None:
        if self._control is None:
            return
        try:
            wire.send(self._control, message)
        except OSError:
            self._worker_died()

    def _request(self, message: wire.Message) -> None:
        """Send a message and wait (bounded) for the worker's acknowledgement, handling
        what it says meanwhile; a worker still starting reads it before any packet."""
        self._message_id += 1
        message["id"] = self._message_id
        self._tell(message)
        control = self._control
        if control is None or not self._worker_ready:
            return
        deadline = time.monotonic() + ACK_TIMEOUT
        while self._control is control:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.error(
                    "outbound worker did not acknowledge an SA change",
                    extra={"event": "datapath.worker_slow", "op": message["op"]},
                )
                return
            ready, _, _ = select.select([control], [], [], remaining)
            if ready and self._receive_one(control, want=message["id"]):
                return

    def _on_control(self) -> None:
        control = self._control
        while control is not None and self._control is control:
            if not self._receive_one(control, want=None):
                return

    def _receive_one(self, control: socket.socket, want: int | None) -> bool:
        """Handle one message; True when it is the acknowledgement ``want`` (or, with
        ``want`` None, when more may be waiting)."""
        try:
            data = control.recv(wire.MAX_MESSAGE)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._worker_died()
            return False
        message = wire.decode(data)
        op = message["op"]
        if op == "ack":
            return want is None or message["id"] == want
        if op == "stats":
            self._merge(message)
        elif op == "lease":
            self._grant(message["peer"], message["spi"])
        elif op == "acquire":
            self._acquire(message["peer"])
        elif op == "ready":
            self._worker_ready = True
        return want is None

    def _worker_died(self) -> None:
        if self._closing or self._control is None:
            return
        control, worker = self._control, self._worker
        self._control = None
        self._worker_ready = False
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(control.fileno())
        control.close()
        code = None
        if worker is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = worker.wait(timeout=1)
            self._worker = None
        self.stats.errors["worker_died"] = self.stats.errors.get("worker_died", 0) + 1
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < RESTART_WINDOW] + [now]
        if len(self._deaths) > MAX_RESTARTS:
            self.failed = True
            log.error(
                "outbound worker keeps dying; traffic stays blocked",
                extra={"event": "datapath.worker_failed", "exit_code": code},
            )
            return
        log.error(
            "outbound worker died; starting a new one (traffic was blocked meanwhile)",
            extra={"event": "datapath.worker_died", "exit_code": code},
        )
        self.restarts += 1
        self._spawn()

    # -- leases and counters ---------------------------------------------------------------

    def _send_outbound(self, peer: str, sa: IpsecSa, *, resume: bool = False) -> None:
        """Give the worker ``sa`` with a fresh lease (after the last one when resuming)."""
        key = (peer, sa.spi)
        start = sa.next_seq
        if resume and key in self._lease_end:
            start = max(start, self._lease_end[key] + 1)
            sa.next_seq = start
        end = self._lease_for(sa, start)
        # The peer's earlier outbound SAs are done with: only this one's lease matters.
        self._lease_end = {k: v for k, v in self._lease_end.items() if k[0] != peer}
        self._lease_end[key] = end
        state = self._peers[peer]
        message: dict[str, Any] = {
            "op": "set_outbound",
            "peer": peer,
            "sa": wire.sa_fields(sa),
            "next_seq": start,
            "lease_end": end,
            # A successor worker goes on counting where the SA's lifetime counters are.
            "packets": sa.packets,
            "bytes": sa.bytes,
            "remote_port": state.dest[1],
        }
        if resume:
            self._tell(message)
        else:
            self._request(message)

    @staticmethod
    def _lease_for(sa: IpsecSa, start: int) -> int:
        end = min(start - 1 + wire.LEASE, sa.seq_max)
        hard = sa.lifetime.hard_packets
        if hard is not None:
            end = min(end, start - 1 + max(0, hard - sa.packets))
        return end

    def _grant(self, peer: str, spi: int) -> None:
        state = self._peers.get(peer)
        sa = None if state is None else state.outbound
        key = (peer, spi)
        if sa is None or sa.spi != spi or key not in self._lease_end:
            return  # replaced meanwhile: the worker has (or will get) the new one
        if sa.hard_limit_reached:
            self._acquire(peer)
            return
        end = self._lease_for(sa, self._lease_end[key] + 1)
        if end <= self._lease_end[key]:
            self._acquire(peer)
            return
        self._lease_end[key] = end
        assert state is not None
        port = state.dest[1]
        self._tell({"op": "lease", "peer": peer, "spi": spi, "lease_end": end, "remote_port": port})

    def _acquire(self, peer: str) -> None:
        state = self._peers.get(peer)
        if state is None or state.pending_acquire:
            return
        state.pending_acquire = True
        try:
            self._on_acquire(peer)
        except Exception:
            log.exception("acquire callback failed", extra={"event": "datapath.acquire_error"})

    def _merge(self, message: wire.Message) -> None:
        """Add the worker's counters since its last report to this side's."""
        stats = self.stats
        for name, value in message["stats"].items():
            mine = getattr(stats, name)
            if isinstance(value, dict):
                for key, amount in value.items():
                    mine[key] = mine.get(key, 0) + amount
            elif value:
                setattr(stats, name, mine + value)
        for peer, (spi, next_seq, packets, size) in message["sas"].items():
            state = self._peers.get(peer)
            sa = None if state is None else state.outbound
            if sa is not None and sa.spi == spi:
                sa.next_seq = max(sa.next_seq, next_seq)
                sa.packets = packets
                sa.bytes = size

    # -- what the worker must know -------------------------------------------------------

    def add_peer(self, policy: PeerPolicy) -> None:
        if policy.encapsulation != "udp":
            raise DatapathError(
                f"peer {policy.peer}: the two-worker datapath carries ESP in UDP only; "
                "use encapsulation: udp, or datapath workers: 1"
            )
        super().add_peer(policy)
        self._tell({"op": "add_peer", "policy": policy})

    def remove_peer(self, peer: str) -> None:
        super().remove_peer(peer)
        self._lease_end = {k: v for k, v in self._lease_end.items() if k[0] != peer}
        self._tell({"op": "remove_peer", "peer": peer})

    def set_outbound(self, peer: str, sa: IpsecSa, *, remote_port: int | None = None) -> None:
        super().set_outbound(peer, sa, remote_port=remote_port)
        self._send_outbound(peer, sa)

    def clear_outbound(self, peer: str) -> None:
        super().clear_outbound(peer)
        if peer in self._peers:
            self._request({"op": "clear_outbound", "peer": peer})

    def discard_queued(self, peer: str) -> None:
        super().discard_queued(peer)
        self._tell({"op": "discard_queued", "peer": peer})
