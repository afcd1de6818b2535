"""The daemon's UDP 500 and 4500 sockets, bound to the local addresses and bypass-marked.

Port 500 carries plain IKE. Port 4500 carries three things told apart by their first
bytes (RFC 3948, :func:`~kipsec_sidecar.core.udpencap.classify`): IKE after the non-ESP
marker (NAT traversal), ESP in UDP (handed to the datapath), and one-byte NAT keepalives
(ignored). Garbage is counted and dropped; nothing a peer sends can raise out of here.

The sockets come from :func:`kipsec_sidecar.datapath.sockets.udp_socket`, which sets
SO_MARK: in pod-to-pod tunnel mode the outer destination is the very address the tunnel
protects, and only the mark keeps IKE and ESP from being routed into the TUN device.

Port 4500 is the ESP fast path, so it is not an asyncio transport (which reads one
datagram per event-loop pass): a reader drains it in batches with UDP GRO
(:func:`~kipsec_sidecar.datapath.sockets.receive_batch`), and :attr:`IkeSockets.esp_sender`
offers the datapath ``many(datagrams, dest)`` for UDP GSO sends.

With the kernel datapath (:attr:`IkeSockets.kernel_esp`) the kernel owns ESP: the 4500
socket gets ``UDP_ENCAP_ESPINUDP`` so the kernel decapsulates ESP in UDP before it
reaches the socket (only IKE and keepalives arrive), UDP GRO stays off on it (a
coalesced run would reach the decapsulation as one datagram), and both sockets are
exempted from XFRM policies, or IKE would need the very SA it negotiates.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from ..core.errors import ParseError
from ..core.ike.config import Address
from ..core.udpencap import UdpEncapKind, classify
from ..datapath.base import DatapathError
from ..datapath.sockets import GsoSender, enable_gro, receive_batch, udp_socket
from ..logs import LIMITER

log = logging.getLogger(__name__)

IKE_PORT = 500
NATT_PORT = 4500

#: (datagram, source address) → None; called from the event loop.
Receiver = Callable[[bytes, Address], None]
_NATT_BATCH = 64


def _version(address: str) -> int:
    """The IP version of a textual address (from a socket or the configuration), without
    parsing it: this runs for every ESP datagram sent."""
    return 6 if ":" in address else 4


class _Sendto(Protocol):
    def sendto(self, data: bytes, address: tuple[str, int], /) -> object: ...


class EspSender:
    """The datapath's :data:`~kipsec_sidecar.datapath.base.UdpSender` (from port 4500),
    with ``many`` for a run of datagrams to one address (UDP GSO)."""

    def __init__(self, sockets: IkeSockets) -> None:
        self._sockets = sockets

    def __call__(self, data: bytes, dest: Address) -> None:
        self._sockets.send(data, dest, natt=True)

    def many(self, datagrams: Sequence[bytes], dest: Address) -> None:
        self._sockets.send_esp_many(datagrams, dest)

    def natt_socket(self) -> socket.socket:
        """The one bound 4500 socket (an outbound worker sends from a copy of it)."""
        return self._sockets.natt_socket()


@dataclass(slots=True)
class SocketCounters:
    """What arrived on the sockets, by kind (for logs and the snapshot's drops)."""

    ike: int = 0
    esp: int = 0
    keepalives: int = 0
    malformed: int = 0
    send_errors: int = 0


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None], name: str) -> None:
        self.on_datagram = on_datagram
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable while a peer restarts): the engine's
        # retransmissions and liveness checks decide what they mean.
        LIMITER.log(log, logging.DEBUG, "socket error", {"socket": self.name, "error": str(exc)})


def _factory(receiver: Receiver, name: str) -> Callable[[], _Protocol]:
    return lambda: _Protocol(receiver, name)


class IkeSockets:
    """UDP ``ike_port`` and ``natt_port`` on every local address, marked with ``mark``.

    ``on_ike`` gets IKE datagrams from both ports (the non-ESP marker left in place; the
    endpoint strips it); ``on_esp`` gets ESP-in-UDP datagrams from the 4500 socket, and
    ``on_esp_batch`` is called after each read of that socket that handed ESP over.
    """

    def __init__(
        self,
        addresses: Iterable[str],
        mark: int,
        *,
        on_ike: Receiver,
        on_esp: Receiver,
        on_esp_batch: Callable[[], None] | None = None,
        ike_port: int = IKE_PORT,
        natt_port: int = NATT_PORT,
    ) -> None:
        self.addresses = list(addresses)
        self.mark = mark
        self.on_ike = on_ike
        self.on_esp = on_esp
        self.on_esp_batch = on_esp_batch
        self.ike_port = ike_port
        self.natt_port = natt_port
        self.counters = SocketCounters()
        #: Set before :meth:`open` when the kernel datapath carries ESP (see the module doc).
        self.kernel_esp = False
        self._transports: dict[tuple[str, int], _Sendto] = {}
        self._natt: dict[str, tuple[socket.socket, GsoSender]] = {}
        #: The GSO sender of the first 4500 socket of each IP version: the ESP fast path
        #: picks it without parsing the destination (``ipaddress`` costs more per packet
        #: than the send; bench/sidecar_throughput.py's RTT).
        self._esp_senders: dict[int, GsoSender] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.esp_sender = EspSender(self)

    async def open(self) -> None:
        """Bind every socket; raises DatapathError naming the port that failed."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self.kernel_esp:
            # Only the kernel datapath needs these: its module loads XFRM netlink (pyroute2).
            from ..datapath.kernel import bypass_policies, enable_udp_encap
        try:
            for address in self.addresses:
                sock = udp_socket(address, self.ike_port, self.mark)
                if self.kernel_esp:
                    bypass_policies(sock)
                transport, _ = await loop.create_datagram_endpoint(
                    _factory(self._ike_datagram, f"udp/{self.ike_port}"), sock=sock
                )
                self._transports[(address, self.ike_port)] = transport
                natt = udp_socket(address, self.natt_port, self.mark)
                if self.kernel_esp:
                    bypass_policies(natt)
                    enable_udp_encap(natt)
                else:
                    enable_gro(natt)
                self._natt[address] = (natt, GsoSender(natt))
                self._esp_senders.setdefault(_version(address), self._natt[address][1])
                self._transports[(address, self.natt_port)] = natt
                loop.add_reader(natt.fileno(), self._natt_readable, natt)
        except BaseException:
            self.close()
            raise
        log.info(
            "IKE sockets bound",
            extra={"addresses": self.addresses, "ports": [self.ike_port, self.natt_port]},
        )

    def close(self) -> None:
        for key, transport in self._transports.items():
            if key[1] != self.natt_port or key[0] not in self._natt:
                cast(asyncio.DatagramTransport, transport).close()
        for natt, _ in self._natt.values():
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(natt.fileno())
            natt.close()
        self._natt.clear()
        self._esp_senders.clear()
        self._transports.clear()

    def natt_socket(self) -> socket.socket:
        """The 4500 socket when there is exactly one local address (after :meth:`open`);
        DatapathError otherwise (the two-worker datapath sends from one socket)."""
        if len(self._natt) != 1:
            raise DatapathError(
                f"datapathWorkers: 2 needs exactly one local address, not {len(self._natt)}"
            )
        return next(iter(self._natt.values()))[0]

    def send(self, data: bytes, dest: Address, *, natt: bool, local: str | None = None) -> None:
        """Send from the 4500 (``natt``) or 500 socket of ``local`` (or any of its family)."""
        port = self.natt_port if natt else self.ike_port
        transport = self._transport_for(dest[0], port, local)
        if transport is None:
            self.counters.send_errors += 1
            LIMITER.log(
                log, logging.WARNING, "no socket for destination", {"dest": dest[0], "port": port}
            )
            return
        try:
            transport.sendto(data, dest)
        except OSError as exc:  # a closed transport or an unroutable destination
            self.counters.send_errors += 1
            LIMITER.log(log, logging.DEBUG, "send failed", {"dest": dest[0], "error": str(exc)})

    def send_esp(self, data: bytes, dest: Address) -> None:
        """The datapath's :data:`~kipsec_sidecar.datapath.base.UdpSender`: from port 4500."""
        self.send(data, dest, natt=True)

    def send_esp_many(self, datagrams: Sequence[bytes], dest: Address) -> None:
        """Several ESP datagrams to ``dest`` from a 4500 socket of its family (UDP GSO).

        Raises OSError when the send fails (the datapath counts it per batch)."""
        sender = self._esp_senders.get(_version(dest[0]))
        if sender is None:
            self.counters.send_errors += 1
            raise OSError(f"no UDP {self.natt_port} socket for {dest[0]}")
        sender(datagrams, dest)

    def _natt_readable(self, sock: socket.socket) -> None:
        """Drain up to a batch of datagrams (GRO runs split) and dispatch each."""
        try:
            batch = receive_batch(sock, _NATT_BATCH)
        except OSError as exc:  # e.g. an ICMP error queued on the socket
            LIMITER.log(
                log,
                logging.DEBUG,
                "socket error",
                {"socket": f"udp/{self.natt_port}", "error": str(exc)},
            )
            return
        esp = self.counters.esp
        for data, source in batch:
            self._natt_datagram(data, (str(source[0]), int(source[1])))
        if self.on_esp_batch is not None and self.counters.esp != esp:
            self.on_esp_batch()

    def _transport_for(self, dest: str, port: int, local: str | None) -> _Sendto | None:
        if local is not None and (local, port) in self._transports:
            return self._transports[(local, port)]
        version = _version(dest)
        for (address, bound), transport in self._transports.items():
            if bound == port and _version(address) == version:
                return transport
        return None

    def _ike_datagram(self, data: bytes, source: Address) -> None:
        self.counters.ike += 1
        self.on_ike(data, source)

    def _natt_datagram(self, data: bytes, source: Address) -> None:
        try:
            kind = classify(data)
        except ParseError:
            self.counters.malformed += 1
            return
        if kind is UdpEncapKind.KEEPALIVE:
            self.counters.keepalives += 1
        elif kind is UdpEncapKind.IKE:
            self.counters.ike += 1
            self.on_ike(data, source)
        else:
            self.counters.esp += 1
            self.on_esp(data, source)


__all__ = ["IKE_PORT", "NATT_PORT", "EspSender", "IkeSockets", "Receiver", "SocketCounters"]
