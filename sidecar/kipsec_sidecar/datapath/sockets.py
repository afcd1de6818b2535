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
"""

from __future__ import annotations

import errno
import socket

from .base import DatapathError

IPPROTO_ESP = 50
IPPROTO_AH = 51
_PROTOCOL_NAMES = {IPPROTO_ESP: "ESP", IPPROTO_AH: "AH"}
SOCKET_BUFFER = 4 * 1024 * 1024


def _set_mark(sock: socket.socket, mark: int, what: str) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    except PermissionError:
        sock.close()
        raise DatapathError(
            f"{what}: setting the bypass socket mark {mark:#x} needs CAP_NET_ADMIN"
        ) from None


def _grow_buffers(sock: socket.socket) -> None:
    """Ask for large socket buffers so bursts are not dropped (the kernel caps them at
    net.core.{r,w}mem_max; SO_*BUFFORCE would need CAP_NET_ADMIN and is not forced)."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            continue


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
