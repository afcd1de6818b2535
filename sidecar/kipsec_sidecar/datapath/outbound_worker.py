"""The outbound worker process of a two-worker userspace datapath (see :mod:`.split`).

Run by the daemon, never by hand::

    python -m kipsec_sidecar.datapath.outbound_worker TUN_FD UDP_FD CONTROL_FD OFFLOAD GSO

It inherits the TUN device's descriptor, the daemon's marked UDP 4500 socket and its end
of the control socket pair (:mod:`.worker_wire`). It reads what the pod sends into the
device, seals it on the peer's outbound SA with the same code as the single-process
datapath (:meth:`UserspaceDatapath.serve_outbound`) and sends ESP in UDP from the 4500
socket. It owns no inbound SA, route or rule: the daemon keeps those, so a dead worker
leaves the device open and routed (its packets are dropped in the device's queue), never
sent in the clear.

**Sequence numbers** are leased: the worker may use an outbound SA's numbers up to
``lease_end`` only, which the daemon recorded before it granted them; it asks for the
next lease when half is left (every :data:`TICK` seconds it looks). An SA whose lease ran
out before the answer came queues its packets as for a missing SA (the single-process
code: ``sa_expired``) and the answer flushes them. A successor worker resumes after the
last lease, so no number is sent twice per SA even when a worker dies mid-lease.

Every :data:`TICK` the worker also reports its counters since the last report (inner
packets and bytes, errors) and, per outbound SA, its next sequence number, packets and
bytes, which the daemon adds to its own (lifetimes and metrics stay in one place).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from dataclasses import asdict, fields
from typing import Any

from ..core.errors import SequenceExhausted
from ..core.ipsec_sa import IpsecSa
from . import worker_wire as wire
from .base import DatapathStats, UdpAddress
from .sockets import GsoSender
from .tun import TunDevice
from .userspace import UserspaceDatapath, UserspaceOptions

log = logging.getLogger(__name__)

#: Seconds between lease checks and counter reports.
TICK = 0.05


class LeasedSa(IpsecSa):
    """An outbound SA that may use sequence numbers up to ``lease_end`` only."""

    __slots__ = ("lease_end",)

    def __init__(self, lease_end: int, next_seq: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lease_end = lease_end
        self.next_seq = next_seq

    def next_sequence(self) -> int:
        if self.next_seq > self.lease_end:
            raise SequenceExhausted(f"SA {self.spi:#010x}: sequence lease ends at {self.lease_end}")
        return super().next_sequence()


class Worker:
    """The worker's side of the control channel around an outbound-only datapath."""

    def __init__(self, tun_fd: int, udp_fd: int, control_fd: int, *, offload: bool, gso: bool):
        self.control = socket.socket(fileno=control_fd)
        self.control.setblocking(False)
        self.udp = socket.socket(fileno=udp_fd)
        self.udp.setblocking(False)
        self.tun = TunDevice("worker", fds=[tun_fd], vnet_hdr=offload)
        self.offload = offload
        self.datapath = UserspaceDatapath(
            udp_sender=self._send,
            on_acquire=self._on_acquire,
            options=UserspaceOptions(offload=offload),
            udp_batch_sender=GsoSender(self.udp) if gso else None,
        )
        self.sas: dict[str, LeasedSa] = {}
        self.asked: set[tuple[str, int]] = set()
        self.done = asyncio.Event()

    def _send(self, data: bytes, address: UdpAddress) -> None:
        self.udp.sendto(data, address)

    def _tell(self, message: wire.Message) -> None:
        try:
            wire.send(self.control, message)
        except OSError:
            self.done.set()  # the daemon is gone: stop

    def _on_acquire(self, peer: str) -> None:
        sa = self.sas.get(peer)
        if sa is not None:
            self._ask_lease(peer, sa)
        else:
            self._tell({"op": "acquire", "peer": peer})

    def _ask_lease(self, peer: str, sa: LeasedSa) -> None:
        key = (peer, sa.spi)
        if key not in self.asked:
            self.asked.add(key)
            self._tell({"op": "lease", "peer": peer, "spi": sa.spi})

    def _on_control(self) -> None:
        while True:
            try:
                data = self.control.recv(wire.MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.done.set()
                return
            self._handle(wire.decode(data))

    def _handle(self, message: wire.Message) -> None:
        op = message["op"]
        datapath = self.datapath
        if op == "add_peer":
            datapath.add_outbound_peer(message["policy"])
        elif op == "remove_peer":
            self.sas.pop(message["peer"], None)
            datapath.remove_peer(message["peer"])
        elif op == "set_outbound":
            peer = message["peer"]
            sa = LeasedSa(message["lease_end"], message["next_seq"], **message["sa"])
            sa.packets, sa.bytes = message["packets"], message["bytes"]
            self.sas[peer] = sa
            datapath.set_outbound(peer, sa, remote_port=message["remote_port"])
        elif op == "lease":
            peer = message["peer"]
            leased = self.sas.get(peer)
            self.asked.discard((peer, message["spi"]))
            if leased is not None and leased.spi == message["spi"]:
                leased.lease_end = message["lease_end"]
                if datapath.outbound_sa(peer) is None:
                    datapath.set_outbound(peer, leased, remote_port=message.get("remote_port"))
        elif op == "clear_outbound":
            self.sas.pop(message["peer"], None)
            datapath.clear_outbound(message["peer"])
        elif op == "discard_queued":
            datapath.discard_queued(message["peer"])
        elif op == "close":
            self.done.set()
        if "id" in message:
            self._tell({"op": "ack", "id": message["id"]})

    def _tick(self) -> None:
        """Ask for leases running low; report the counters since the last report."""
        for peer, sa in self.sas.items():
            if sa.lease_end - sa.next_seq < wire.LEASE // 2:
                self._ask_lease(peer, sa)
        stats = self.datapath.stats
        report = asdict(stats)
        if any(report.values()):
            for item in fields(DatapathStats):
                value = getattr(stats, item.name)
                if isinstance(value, dict):
                    value.clear()
                else:
                    setattr(stats, item.name, 0)
        sas = {peer: (sa.spi, sa.next_seq, sa.packets, sa.bytes) for peer, sa in self.sas.items()}
        self._tell({"op": "stats", "stats": report, "sas": sas})

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # What the daemon sent while this process started (peers, SAs) comes first.
        self._on_control()
        loop.add_reader(self.control.fileno(), self._on_control)
        self.datapath.serve_outbound(self.tun, offload=self.offload)
        self._tell({"op": "ready"})
        while not self.done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), TICK)
            self._tick()
        loop.remove_reader(self.control.fileno())
        for fd in self.tun.fds:
            loop.remove_reader(fd)
        self.tun.close()


def main(argv: list[str]) -> None:
    tun_fd, udp_fd, control_fd, offload, gso = (int(a) for a in argv[1:6])
    worker = Worker(tun_fd, udp_fd, control_fd, offload=bool(offload), gso=bool(gso))
    asyncio.run(worker.run())


if __name__ == "__main__":
    main(sys.argv)
