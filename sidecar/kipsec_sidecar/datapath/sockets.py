"""The sidecar's own sockets, marked so their packets bypass the tunnel.

Pod-to-pod tunnel mode protects traffic to the peer's pod address and sends the
protected packets to that same address. Policy routing (:mod:`.routing`) sends
everything to a protected prefix into the TUN device, except packets carrying the socket
mark: :data:`socket.SO_MARK` set here on the IKE/NAT-T UDP sockets and on the raw ESP/AH
sockets makes the kernel route them through the main table. Setting SO_MARK needs
CAP_NET_ADMIN (the sidecar has it for the TUN device anyway).

- :func:`udp_socket`: UDP 500 or 4500 (RFC 3948: ESP in UDP, IKE after the non-ESP
  marker), non-blocking. The daemon owns it and hands ESP datagrams to the datapath.
- :func:`raw_socket`: IP protocol 50 (ESP) or 51 (AH) for ``encapsulation: raw``. It
  receives every ESP/AH packet addressed to the namespace (IPv4: with the IP header),
  and sends whole packets the datapath built, header included (``IP_HDRINCL``; IPv6 raw
  sockets of protocol ``IPPROTO_RAW`` imply it). Needs CAP_NET_RAW: without it
  :class:`DatapathError` says so and suggests ``encapsulation: udp``.
- Batching on the 4500 socket (Linux UDP GSO/GRO): :class:`GsoSender` sends many
  equal-sized ESP datagrams to one peer in one ``sendmsg`` (``UDP_SEGMENT``; the kernel
  cuts them apart), and :func:`enable_gro` + :func:`receive_batch` let one ``recvmsg``
  return a run of coalesced datagrams (``UDP_GRO``) that :func:`receive_batch` splits
  again. Each datagram stays a separate UDP packet on the wire: peers see no difference.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Sequence

from .base import DatapathError

IPPROTO_ESP = 50
IPPROTO_AH = 51
_PROTOCOL_NAMES = {IPPROTO_ESP: "ESP", IPPROTO_AH: "AH"}
SOCKET_BUFFER = 4 * 1024 * 1024
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
#: The kernel's limit on segments per GSO send (UDP_MAX_SEGMENTS).
GSO_MAX_SEGMENTS = 64
#: Payload bytes one UDP GSO send may carry over IPv4 (65535 - IP - UDP headers).
GSO_MAX_BYTES = 65535 - 20 - 8
_GRO_BUFFER = 65535
SO_SNDBUFFORCE = 32  # not exported by Python's socket module
SO_RCVBUFFORCE = 33
_U16_NATIVE = struct.Struct("=H")
_INT_NATIVE = struct.Struct("=i")


def _set_mark(sock: socket.socket, mark: int, what: str) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    except PermissionError:
        sock.close()
        raise DatapathError(
            f"{what}: setting the bypass socket mark {mark:#x} needs CAP_NET_ADMIN"
        ) from None


def _grow_buffers(sock: socket.socket) -> None:
    """Ask for large socket buffers so bursts are not dropped.

    ``SO_*BUFFORCE`` first (the sidecar has CAP_NET_ADMIN for the mark anyway; it lifts
    the net.core.{r,w}mem_max cap that is only 208 KiB by default), else the capped
    request.
    """
    for force, option in (
        (SO_RCVBUFFORCE, socket.SO_RCVBUF),
        (SO_SNDBUFFORCE, socket.SO_SNDBUF),
    ):
        for name in (force, option):
            try:
                sock.setsockopt(socket.SOL_SOCKET, name, SOCKET_BUFFER)
            except OSError:
                continue
            break


def udp_socket(address: str, port: int, mark: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``(address, port)`` carrying the bypass mark.

    ``address`` may be ``"0.0.0.0"`` or ``"::"``; raises DatapathError naming the port when
    it is taken or the mark cannot be set.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    _set_mark(sock, mark, f"UDP port {port}")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _grow_buffers(sock)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise DatapathError(f"UDP port {port} on {address}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def raw_socket(protocol: int, family: int, mark: int) -> socket.socket:
    """A non-blocking raw socket for IP protocol ``protocol`` (50 or 51), bypass-marked.

    IPv4: receives ESP/AH with the IP header and sends packets with their header
    (``IP_HDRINCL``). IPv6: receives the ESP/AH header onwards (the kernel strips the
    IPv6 header); send with :func:`raw_send_socket`.
    """
    name = _PROTOCOL_NAMES.get(protocol, str(protocol))
    try:
        sock = socket.socket(family, socket.SOCK_RAW, protocol)
    except PermissionError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise DatapathError(
                f"raw {name} sockets (IP protocol {protocol}) need the CAP_NET_RAW "
                "capability; grant it or use encapsulation: udp (ESP in UDP 4500)"
            ) from None
        raise
    _set_mark(sock, mark, f"raw {name} socket")
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    _grow_buffers(sock)
    sock.setblocking(False)
    return sock


def raw_send_socket(family: int, mark: int) -> socket.socket:
    """An IPv6 ``IPPROTO_RAW`` socket: sends whole packets, header included, marked."""
    try:
        sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        raise DatapathError(
            "raw IPv6 sockets need the CAP_NET_RAW capability; grant it or use "
            "encapsulation: udp (ESP in UDP 4500)"
        ) from None
    _set_mark(sock, mark, "raw IPv6 send socket")
    _grow_buffers(sock)
    sock.setblocking(False)
    return sock


def enable_gro(sock: socket.socket) -> bool:
    """Turn on UDP GRO on ``sock``: reads may then hold several datagrams (read them with
    :func:`receive_batch`). False when the kernel refuses (then nothing changed)."""
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def receive_batch(sock: socket.socket, limit: int) -> list[tuple[bytes, tuple[str, int]]]:
    """Up to ``limit`` reads from a non-blocking UDP socket, GRO runs split back into
    the datagrams they were (the ``UDP_GRO`` control message says their size; all but
    the last of a run have it). Stops early when the socket is empty; OSErrors other
    than "would block" propagate."""
    out: list[tuple[bytes, tuple[str, int]]] = []
    space = socket.CMSG_SPACE(_INT_NATIVE.size)
    for _ in range(limit):
        try:
            data, ancdata, _, source = sock.recvmsg(_GRO_BUFFER, space)
        except BlockingIOError:
            break
        size = 0
        for level, kind, value in ancdata:
            if level == SOL_UDP and kind == UDP_GRO and len(value) >= _INT_NATIVE.size:
                size = _INT_NATIVE.unpack_from(value)[0]
        if size <= 0 or size >= len(data):
            out.append((data, source))
            continue
        address = (source[0], source[1])
        out.extend((data[i : i + size], address) for i in range(0, len(data), size))
    return out


class GsoSender:
    """Sends runs of datagrams to one address with UDP GSO from ``sock`` (bypass-marked).

    ``__call__(datagrams, address)`` sends each run of equal-sized datagrams (the last
    of a run may be shorter) as one ``sendmsg`` carrying ``UDP_SEGMENT``; a run of one
    goes with ``sendto``. When the kernel refuses GSO (EINVAL/EIO/ENOPROTOOPT, e.g. a
    device without checksum offload) it falls back to one ``sendto`` per datagram from
    then on. OSErrors of the send itself propagate with the number of datagrams sent
    before it in ``sent``.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.gso = True
        self.sent = 0

    def __call__(self, datagrams: Sequence[bytes], address: tuple[str, int]) -> None:
        self.sent = 0
        sock = self.sock
        if len(datagrams) == 1:  # a lone packet (a ping, an ACK): what a run of one does
            sock.sendto(datagrams[0], address)
            self.sent = 1
            return
        if not self.gso:
            for datagram in datagrams:
                sock.sendto(datagram, address)
                self.sent += 1
            return
        count = len(datagrams)
        start = 0
        while start < count:
            size = len(datagrams[start])
            end = start + 1
            total = size
            while (
                end < count
                and end - start < GSO_MAX_SEGMENTS
                and total + len(datagrams[end]) <= GSO_MAX_BYTES
                and len(datagrams[end]) <= size
            ):
                total += len(datagrams[end])
                end += 1
                if len(datagrams[end - 1]) < size:
                    break
            if end - start == 1:
                sock.sendto(datagrams[start], address)
            else:
                try:
                    sock.sendmsg(
                        [b"".join(datagrams[start:end])],
                        [(SOL_UDP, UDP_SEGMENT, _U16_NATIVE.pack(size))],
                        0,
                        address,
                    )
                except OSError as exc:
                    if exc.errno not in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT):
                        raise
                    self.gso = False
                    for datagram in datagrams[start:]:
                        sock.sendto(datagram, address)
                        self.sent += 1
                    return
            self.sent += end - start
            start = end
