"""Netlink on the standard ``socket`` module: framing, replies, acknowledgements.

The generic half of kipsec's own netlink code, shared by its two families:
:mod:`.rtnetlink` (``NETLINK_ROUTE``: the userspace datapath's routes, rules and link)
and :mod:`.xfrm_wire` (``NETLINK_XFRM``: the capability probe's throwaway states). A
request is a ``struct`` packing and one ``send``, its answer one ``recv``: synchronous,
well under a millisecond, safe to call from the event loop, and no pyroute2 (~226
modules, ~13 MiB and ~0.2 s of CPU to import; ``bench/sidecar_startup.py``).

The wire format (``linux/netlink.h``): a message is a 16-byte ``nlmsghdr`` (length,
type, flags, sequence, port id), a fixed family header and attributes (``rtattr``/
``nlattr``: 16-bit length and type, the value, padding to 4 bytes). An acknowledgement
is an ``NLMSG_ERROR`` with errno 0; a refusal carries the negative errno and, with
``NETLINK_EXT_ACK``, the kernel's explanation (``NLMSGERR_ATTR_MSG``, e.g. "Requested
type not found"), which :class:`NetlinkError` keeps as ``kernel_message``. Replies are
parsed by :func:`parse_messages`, which checks every length against the buffer and
raises :class:`NetlinkParseError` on anything malformed (``tests/fuzz/test_fuzz_rtnetlink.py``).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

# linux/netlink.h
NETLINK_ROUTE = 0
NETLINK_XFRM = 6
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_CAPPED = 0x100  # in an NLMSG_ERROR: the refused request is cut to its header
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR: extended-ack attributes follow
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # error answers without a copy of the refused request
NETLINK_EXT_ACK = 11  # error answers with the kernel's explanation
CLONE_NEWNET = 0x40000000

_NLMSGHDR = struct.Struct("=IHHII")
_RTATTR = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")
_U32 = struct.Struct("=I")
#: Requests put in one ``send`` at most: each is answered by an acknowledgement of its
#: own, and the kernel charges every one (~1 KiB of buffer each, whatever its length) to
#: the receive buffer until read; more than a couple of hundred overflow the default
#: 208 KiB (ENOBUFS, answers lost).
BATCH_MESSAGES = 64
RECV_BYTES = 1 << 16
TIMEOUT = 10.0


class NetlinkError(OSError):
    """The kernel refused a request; ``errno`` (also ``code``) says why, and
    ``kernel_message`` is the kernel's extended-ack text when it gave one."""

    kernel_message: str | None = None

    @property
    def code(self) -> int:
        return int(self.errno or 0)


class NetlinkTimeout(NetlinkError, TimeoutError):
    """No answer within the socket's timeout (errno ETIMEDOUT; also a TimeoutError)."""


def error(code: int, kernel_message: str | None = None) -> NetlinkError:
    """The NetlinkError of a positive errno an acknowledgement carried."""
    exc = NetlinkError(code, os.strerror(code))
    exc.kernel_message = kernel_message
    return exc


class NetlinkParseError(ValueError):
    """A reply is not well-formed netlink (truncated, a length that overruns, ...)."""


def align(n: int) -> int:
    """``n`` rounded up to netlink's 4-byte alignment."""
    return (n + 3) & ~3


#: Which fixed header follows the ``nlmsghdr`` of a message type (None: none parsed).
FamilyHeaders = Callable[[int], struct.Struct | None]


def no_family_header(kind: int) -> struct.Struct | None:
    return None


@dataclass(slots=True)
class Message:
    """One parsed netlink message: its header, its family header's fields and attributes.

    ``fields`` are the unpacked family header (see :data:`FamilyHeaders`); ``attrs``
    maps attribute type (nested/byte-order bits masked off) to its raw value, the first
    occurrence winning. ``error`` is the errno of an ``NLMSG_ERROR`` (0: an
    acknowledgement) and ``ack_message`` the kernel's extended-ack text, if any.
    """

    type: int
    flags: int
    seq: int
    fields: tuple[int, ...] = ()
    attrs: dict[int, bytes] = field(default_factory=dict)
    error: int = 0
    ack_message: str | None = None

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
        offset += align(length)
    return attrs


def ack_message(flags: int, body: bytes | memoryview) -> str | None:
    """The ``NLMSGERR_ATTR_MSG`` of an ``NLMSG_ERROR`` body (after its ``nlmsghdr``), or
    None: the extended-ack attributes follow the error code and the refused request
    (only its header when ``NLM_F_CAPPED``)."""
    if not flags & NLM_F_ACK_TLVS:
        return None
    pos = _ERRNO.size
    if flags & NLM_F_CAPPED:
        pos += _NLMSGHDR.size
    elif len(body) >= pos + _NLMSGHDR.size:
        pos += align(_U32.unpack_from(body, pos)[0])  # the copied request's own length
    else:
        return None
    if pos > len(body):
        return None
    value = parse_attrs(body[pos:]).get(NLMSGERR_ATTR_MSG)
    return None if value is None else value.rstrip(b"\0").decode(errors="replace")


def parse_messages(
    data: bytes | memoryview, headers: FamilyHeaders = no_family_header
) -> list[Message]:
    """Every message in one datagram the kernel sent; NetlinkParseError if malformed.
    ``headers`` names the family header of each message type (its attributes follow)."""
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
            if len(body) < _ERRNO.size:
                raise NetlinkParseError("NLMSG_ERROR without its error code")
            message.error = -_ERRNO.unpack_from(body)[0]
            if message.error:
                message.ack_message = ack_message(flags, body)
        else:
            header = headers(kind)
            if header is not None:
                if len(body) < header.size:
                    raise NetlinkParseError(f"message type {kind}: header truncated")
                message.fields = header.unpack_from(body)
                message.attrs = parse_attrs(body[align(header.size) :])
        messages.append(message)
        offset += align(length)
    if offset < end and any(view[offset:]):
        raise NetlinkParseError(f"{end - offset} trailing bytes after the last message")
    return messages


def attr(kind: int, value: bytes) -> bytes:
    """One ``rtattr``, padded."""
    length = _RTATTR.size + len(value)
    return _RTATTR.pack(length, kind) + value + b"\0" * (align(length) - length)


def u32_attr(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def frame(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    """One message: its ``nlmsghdr`` (port id 0: the kernel's) and ``payload``."""
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), kind, flags, seq, 0) + payload


@dataclass(frozen=True, slots=True)
class Request:
    """One request: message type, flags beyond ``NLM_F_REQUEST``, and its payload."""

    type: int
    flags: int
    payload: bytes


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    import ctypes  # only here: a socket in another namespace is for tests and tools

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def netns_socket(netns: str, family: int, type: int, proto: int) -> socket.socket:
    """A socket created in the network namespace ``netns`` (a name under /run/netns, or
    a path); the caller's namespace is untouched.

    ``setns`` moves only the calling thread, so a short-lived thread enters the
    namespace, creates the socket (which keeps its namespace for life) and ends. A
    missing namespace is an OSError (ENOENT), never created.
    """
    path = Path(netns) if "/" in netns else Path("/run/netns") / netns
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def create() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            made.append(socket.socket(family, type, proto))
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=create, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


class NetlinkSocket:
    """A netlink socket of ``protocol`` (``NETLINK_ROUTE``, ``NETLINK_XFRM``) for
    acknowledged requests and queries, in the caller's network namespace or ``netns``.

    ``headers`` names the family header of the replies it parses. OSError from the
    constructor when the socket cannot be made or set up (no such namespace, ...).
    """

    def __init__(
        self,
        protocol: int,
        *,
        netns: str | None = None,
        timeout: float = TIMEOUT,
        headers: FamilyHeaders = no_family_header,
    ) -> None:
        kind = socket.SOCK_RAW | socket.SOCK_CLOEXEC
        if netns is None:
            self._sock = socket.socket(socket.AF_NETLINK, kind, protocol)
        else:
            self._sock = netns_socket(netns, socket.AF_NETLINK, kind, protocol)
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self._sock.bind((0, 0))
            self._sock.settimeout(timeout)
        except BaseException:
            self._sock.close()
            raise
        self._headers = headers
        self._seq = int.from_bytes(os.urandom(2), "big") << 8

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _frame(self, request: Request) -> tuple[int, bytes]:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq, frame(
            request.type, NLM_F_REQUEST | request.flags, self._seq, request.payload
        )

    def _send(self, data: bytes) -> None:
        try:
            self._sock.send(data)
        except OSError as exc:
            raise NetlinkError(exc.errno or errno.EIO, f"netlink send: {exc}") from None

    def _receive(self) -> list[Message]:
        try:
            data = self._sock.recv(RECV_BYTES)
        except TimeoutError:
            raise NetlinkTimeout(errno.ETIMEDOUT, "no netlink answer") from None
        except OSError as exc:  # ENOBUFS: answers were lost
            raise NetlinkError(exc.errno or errno.EIO, f"netlink receive: {exc}") from None
        return parse_messages(data, self._headers)

    def acknowledge(self, requests: Iterable[Request]) -> list[Message]:
        """Send ``requests`` (acknowledged: ``NLM_F_ACK`` is added), :data:`BATCH_MESSAGES`
        to a ``send``; return each one's ``NLMSG_ERROR`` answer, in order.

        Every request is answered even when an earlier one failed: the kernel goes on
        with the next message of the datagram.
        """
        framed = [self._frame(Request(r.type, r.flags | NLM_F_ACK, r.payload)) for r in requests]
        results: dict[int, Message] = {}
        for start in range(0, len(framed), BATCH_MESSAGES):
            stop = start + BATCH_MESSAGES
            self._send(b"".join(data for _, data in framed[start:stop]))
            waiting = {seq for seq, _ in framed[start:stop]}
            while waiting:
                for message in self._receive():
                    if message.type == NLMSG_ERROR and message.seq in waiting:
                        waiting.discard(message.seq)
                        results[message.seq] = message
        return [results[seq] for seq, _ in framed]

    def transact(self, requests: Iterable[Request]) -> list[int]:
        """Like :meth:`acknowledge`, each request's errno (0: done)."""
        return [message.error for message in self.acknowledge(requests)]

    def call(self, request: Request) -> None:
        """One acknowledged request; NetlinkError if the kernel refused it (with the
        kernel's extended-ack text), NetlinkTimeout if it did not answer."""
        (answer,) = self.acknowledge([request])
        if answer.error:
            raise error(answer.error, answer.ack_message)

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
                        raise error(message.error, message.ack_message)
                    return answers
                if message.type == NLMSG_DONE:
                    return answers
                answers.append(message)
                if not message.flags & NLM_F_MULTI:
                    return answers


__all__ = [
    "BATCH_MESSAGES",
    "Message",
    "NetlinkError",
    "NetlinkParseError",
    "NetlinkSocket",
    "NetlinkTimeout",
    "Request",
    "ack_message",
    "align",
    "attr",
    "error",
    "frame",
    "netns_socket",
    "parse_attrs",
    "parse_messages",
    "u32_attr",
]
