"""Routes, rules and links over rtnetlink (``NETLINK_ROUTE``), on the standard ``socket`` module.

Why not pyroute2: the userspace datapath needs eight requests (route replace/delete/dump/
get, rule add/delete/dump, link set/dump), and pyroute2 costs every sidecar start ~160
modules, ~0.3 s and ~10 MiB to make them (``bench/sidecar_startup.py``). Its synchronous
``IPRoute`` also runs an event loop of its own, which forced a dedicated thread. Here a
request is a ``struct`` packing and one ``send``, its answer one ``recv``: synchronous,
well under a millisecond, safe to call from the event loop. Several requests go in one
``send`` (:meth:`RtNetlink.transact`): the kernel handles the messages of one datagram in
order and acknowledges each, so a peer's two routes cost one round trip.

The wire format (``linux/netlink.h``, ``linux/rtnetlink.h``, ``linux/fib_rules.h``,
``linux/if_link.h``): a message is a 16-byte ``nlmsghdr`` (length, type, flags, sequence,
port id), a fixed family header (``rtmsg`` for routes, ``fib_rule_hdr`` for rules — the
same 12-byte layout —, ``ifinfomsg`` for links) and attributes (``rtattr``: 16-bit length
and type, the value, padding to 4 bytes). Replies are parsed by :func:`parse_messages`,
which checks every length against the buffer and raises :class:`NetlinkParseError` on
anything malformed (``tests/fuzz/test_fuzz_rtnetlink.py``).

The kernel datapath's XFRM code keeps pyroute2 (:mod:`.xfrm`); it loads only there.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# linux/netlink.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
# linux/rtnetlink.h
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
RTA_DST, RTA_OIF, RTA_PRIORITY, RTA_METRICS, RTA_TABLE, RTA_MARK = 1, 4, 6, 8, 15, 16
RTAX_MTU = 2
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_TABLE_COMPAT = 252  # in the header when the table id does not fit its byte
# linux/fib_rules.h
FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_FWMASK = 6, 10, 15, 16
FR_ACT_TO_TBL = 1
# linux/if_link.h
IFLA_IFNAME, IFLA_MTU = 3, 4
IFF_UP = 0x1

_NLMSGHDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")  # also fib_rule_hdr: same sizes, other names
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
#: Requests put in one ``send`` at most: each is answered by an acknowledgement of its
#: own, and the kernel charges every one (~1 KiB of buffer each, whatever its length) to
#: the receive buffer until read; more than a couple of hundred overflow the default
#: 208 KiB (ENOBUFS, answers lost).
BATCH_MESSAGES = 64
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # error answers without a copy of the refused request
RECV_BYTES = 1 << 16
TIMEOUT = 10.0


class NetlinkError(OSError):
    """The kernel refused a request; ``errno`` (also ``code``) says why."""

    @property
    def code(self) -> int:
        return int(self.errno or 0)


def error(code: int) -> NetlinkError:
    """The NetlinkError of a positive errno an acknowledgement carried."""
    return NetlinkError(code, os.strerror(code))


class NetlinkParseError(ValueError):
    """A reply is not well-formed netlink (truncated, a length that overruns, ...)."""


def _align(n: int) -> int:
    return (n + 3) & ~3


@dataclass(slots=True)
class Message:
    """One parsed netlink message: its header, its family header's fields and attributes.

    ``fields`` are the unpacked family header (``rtmsg``: family, dst_len, src_len, tos,
    table, protocol, scope, type, flags; ``ifinfomsg``: family, type, index, flags,
    change); ``attrs`` maps attribute type (nested/byte-order bits masked off) to its raw
    value, the first occurrence winning. ``error`` is the errno of an ``NLMSG_ERROR``
    (0: an acknowledgement).
    """

    type: int
    flags: int
    seq: int
    fields: tuple[int, ...] = ()
    attrs: dict[int, bytes] = field(default_factory=dict)
    error: int = 0

    def header(self, kind: int) -> tuple[int, ...]:
        """``fields``, after checking the message is of type ``kind``."""
        if self.type != kind:
            raise NetlinkParseError(f"message type {self.type}, expected {kind}")
        return self.fields

    def u32(self, attr: int) -> int | None:
        value = self.attrs.get(attr)
        if value is None:
            return None
        if len(value) < 4:
            raise NetlinkParseError(f"attribute {attr}: {len(value)} bytes, not a u32")
        return int(_U32.unpack_from(value)[0])

    def string(self, attr: int) -> str | None:
        value = self.attrs.get(attr)
        return None if value is None else value.split(b"\0", 1)[0].decode(errors="replace")


def parse_attrs(data: bytes | memoryview) -> dict[int, bytes]:
    """The ``rtattr`` list in ``data`` as {type: value}; NetlinkParseError if malformed."""
    attrs: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while end - offset >= _RTATTR.size:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > end:
            raise NetlinkParseError(f"attribute length {length} at {offset} overruns {end}")
        attrs.setdefault(kind & 0x3FFF, bytes(data[offset + _RTATTR.size : offset + length]))
        offset += _align(length)
    return attrs


def _family_header(kind: int) -> struct.Struct | None:
    if kind in (RTM_NEWLINK, RTM_NEWLINK + 1, RTM_GETLINK):
        return _IFINFOMSG
    if RTM_NEWROUTE <= kind <= RTM_GETROUTE or RTM_NEWRULE <= kind <= RTM_GETRULE:
        return _RTMSG
    return None


def parse_messages(data: bytes | memoryview) -> list[Message]:
    """Every message in one datagram the kernel sent; NetlinkParseError if malformed."""
    view = memoryview(data)
    messages: list[Message] = []
    offset, end = 0, len(view)
    while end - offset >= _NLMSGHDR.size:
        length, kind, flags, seq, _port = _NLMSGHDR.unpack_from(view, offset)
        if length < _NLMSGHDR.size or offset + length > end:
            raise NetlinkParseError(f"message length {length} at {offset} overruns {end}")
        body = view[offset + _NLMSGHDR.size : offset + length]
        message = Message(kind, flags, seq)
        if kind == NLMSG_ERROR:
            if len(body) < 4:
                raise NetlinkParseError("NLMSG_ERROR without its error code")
            message.error = -struct.unpack_from("=i", body)[0]
        else:
            header = _family_header(kind)
            if header is not None:
                if len(body) < header.size:
                    raise NetlinkParseError(f"message type {kind}: header truncated")
                message.fields = header.unpack_from(body)
                message.attrs = parse_attrs(body[_align(header.size) :])
        messages.append(message)
        offset += _align(length)
    if offset < end and any(view[offset:]):
        raise NetlinkParseError(f"{end - offset} trailing bytes after the last message")
    return messages


def attr(kind: int, value: bytes) -> bytes:
    """One ``rtattr``, padded."""
    length = _RTATTR.size + len(value)
    return _RTATTR.pack(length, kind) + value + b"\0" * (_align(length) - length)


def u32_attr(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def rtmsg(
    family: int,
    *,
    dst_len: int = 0,
    table: int = 0,
    proto: int = 0,
    scope: int = RT_SCOPE_UNIVERSE,
    type: int = 0,
    action: int | None = None,
) -> bytes:
    """An ``rtmsg`` (or, with ``action``, a ``fib_rule_hdr``: its ``scope`` and ``type``
    bytes are then reserved and the action)."""
    header_table = table if table < 256 else RT_TABLE_COMPAT
    if action is not None:
        return _RTMSG.pack(family, 0, 0, 0, header_table, 0, 0, action, 0)
    return _RTMSG.pack(family, dst_len, 0, 0, header_table, proto, scope, type, 0)


def ifinfomsg(index: int = 0, *, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


@dataclass(frozen=True, slots=True)
class Request:
    """One request: message type, flags beyond ``NLM_F_REQUEST``, and its payload."""

    type: int
    flags: int
    payload: bytes


class RtNetlink:
    """A ``NETLINK_ROUTE`` socket in the caller's network namespace."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        try:
            self._sock.bind((0, 0))
            self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self._sock.settimeout(timeout)
        except BaseException:
            self._sock.close()
            raise
        self._seq = int.from_bytes(os.urandom(2), "big") << 8

    def close(self) -> None:
        self._sock.close()

    def _frame(self, request: Request) -> tuple[int, bytes]:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        header = _NLMSGHDR.pack(
            _NLMSGHDR.size + len(request.payload),
            request.type,
            NLM_F_REQUEST | request.flags,
            self._seq,
            0,
        )
        return self._seq, header + request.payload

    def _send(self, data: bytes) -> None:
        try:
            self._sock.send(data)
        except OSError as exc:
            raise NetlinkError(exc.errno or errno.EIO, f"netlink send: {exc}") from None

    def _receive(self) -> list[Message]:
        try:
            data = self._sock.recv(RECV_BYTES)
        except TimeoutError:
            raise NetlinkError(errno.ETIMEDOUT, "no netlink answer") from None
        except OSError as exc:  # ENOBUFS: answers were lost
            raise NetlinkError(exc.errno or errno.EIO, f"netlink receive: {exc}") from None
        return parse_messages(data)

    def transact(self, requests: Iterable[Request]) -> list[int]:
        """Send ``requests`` (acknowledged: ``NLM_F_ACK`` is added), :data:`BATCH_MESSAGES`
        to a ``send``; return each one's errno (0: done), in order.

        Every request is answered even when an earlier one failed: the kernel goes on
        with the next message of the datagram.
        """
        framed = [self._frame(Request(r.type, r.flags | NLM_F_ACK, r.payload)) for r in requests]
        results: dict[int, int] = {}
        for start in range(0, len(framed), BATCH_MESSAGES):
            stop = start + BATCH_MESSAGES
            self._send(b"".join(data for _, data in framed[start:stop]))
            waiting = {seq for seq, _ in framed[start:stop]}
            while waiting:
                for message in self._receive():
                    if message.type == NLMSG_ERROR and message.seq in waiting:
                        waiting.discard(message.seq)
                        results[message.seq] = message.error
        return [results[seq] for seq, _ in framed]

    def call(self, request: Request) -> None:
        """One acknowledged request; NetlinkError if the kernel refused it."""
        (code,) = self.transact([request])
        if code:
            raise error(code)

    def query(self, request: Request) -> list[Message]:
        """The messages answering ``request`` (a dump, or a single get), without the
        ``NLMSG_DONE``; NetlinkError if the kernel refused it."""
        seq, data = self._frame(request)
        self._send(data)
        answers: list[Message] = []
        while True:
            for message in self._receive():
                if message.seq != seq:
                    continue  # a late answer to an earlier request
                if message.type == NLMSG_ERROR:
                    if message.error:
                        raise error(message.error)
                    return answers
                if message.type == NLMSG_DONE:
                    return answers
                answers.append(message)
                if not message.flags & NLM_F_MULTI:
                    return answers

    def dump(self, kind: int, payload: bytes) -> Iterator[Message]:
        return iter(self.query(Request(kind, NLM_F_DUMP, payload)))
