"""IKEv2 messages: the 28-byte header and the chain of payloads (RFC 7296 sections 3.1-3.2).

:func:`decode_header` is all the dispatcher needs to route a datagram to its IKE SA;
:func:`decode_message` decodes a plaintext message (IKE_SA_INIT) and leaves an SK or
SKF payload sealed as :class:`~.payloads.EncryptedPayload` /
:class:`~.payloads.EncryptedFragment` for :mod:`.sk` to open. Decoding raises only
:class:`~kipsec_sidecar.core.errors.ParseError` (and its subclasses below).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from ..buffer import Reader, Writer
from ..errors import LocalProtocolError, ParseError
from .constants import IKE_VERSION, HeaderFlag, PayloadType
from .payloads import (
    DECODERS,
    EncryptedFragment,
    EncryptedPayload,
    NotifyPayload,
    Payload,
    UnknownPayload,
    decode_fragment_body,
    encode_body,
    payload_type,
)

HEADER_LEN = 28
GENERIC_HEADER_LEN = 4
SPI_LEN = 8
MAX_MESSAGE_LEN = 0xFFFFFFFF

_CRITICAL = 0x80
# The flag bits as plain ints: ``int & IntFlag`` runs Python-level Flag code, and every
# message asks its header which side and direction it is several times.
_RESPONSE_BIT = int(HeaderFlag.RESPONSE)
_INITIATOR_BIT = int(HeaderFlag.INITIATOR)
# SPIi, SPIr, next payload, version, exchange, flags, message ID, length (section 3.1).
_HEADER = struct.Struct("!8s8sBBBBII")
# Next Payload, C and RESERVED, Payload Length (section 3.2).
_GENERIC_HEADER = struct.Struct("!BBH")
_MAJOR_VERSION = IKE_VERSION >> 4
_ENCRYPTED_TYPES = (PayloadType.SK, PayloadType.SKF)

P = TypeVar("P")


class UnsupportedCriticalPayload(ParseError):
    """An unknown payload with the critical bit set (RFC 7296 section 2.5).

    The engine answers with an UNSUPPORTED_CRITICAL_PAYLOAD notification whose data is
    ``payload_type`` (one octet).
    """

    def __init__(self, payload_type: int) -> None:
        super().__init__(
            f"payload type {payload_type} is critical and not supported", field="payload"
        )
        self.payload_type = payload_type


class InvalidMajorVersion(ParseError):
    """The header's major version is not 2; the engine may answer INVALID_MAJOR_VERSION."""

    def __init__(self, major: int) -> None:
        super().__init__(f"major version {major} is not 2", field="header.version")
        self.major = major


@dataclass(frozen=True, slots=True)
class Header:
    """The IKE header as on the wire (section 3.1); ``length`` is the whole message."""

    spi_i: bytes
    spi_r: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int

    @property
    def is_response(self) -> bool:
        return bool(self.flags & _RESPONSE_BIT)

    @property
    def is_initiator(self) -> bool:
        return bool(self.flags & _INITIATOR_BIT)


class PayloadLookup:
    """Finding payloads by class in ``self.payloads``: shared by the IKEv2 and the
    IKEv1 (:mod:`kipsec_sidecar.core.ikev1.message`) Message classes."""

    __slots__ = ()
    payloads: tuple[object, ...]

    def get(self, cls: type[P]) -> P | None:
        """The first payload of class ``cls``, or None."""
        for payload in self.payloads:
            if isinstance(payload, cls):
                return payload
        return None

    def all(self, cls: type[P]) -> list[P]:
        """Every payload of class ``cls``, in message order."""
        return [p for p in self.payloads if isinstance(p, cls)]


@dataclass(frozen=True, slots=True)
class Message(PayloadLookup):
    """A decoded IKEv2 message: header fields the engine needs and the payloads in order.

    ``is_initiator`` is the header's I flag (sent by the original initiator of the IKE
    SA), ``is_response`` its R flag. For a message opened by :mod:`.sk`, ``payloads``
    are the payloads from inside the SK payload.
    """

    spi_i: bytes
    spi_r: bytes
    exchange: int
    message_id: int
    is_response: bool
    is_initiator: bool
    payloads: tuple[Payload, ...]

    def __post_init__(self) -> None:
        if len(self.spi_i) != SPI_LEN or len(self.spi_r) != SPI_LEN:
            raise LocalProtocolError("IKE SPIs are 8 bytes")
        if not 0 <= self.message_id <= 0xFFFFFFFF:
            raise LocalProtocolError(f"message ID {self.message_id} is not a uint32")
        if not 0 <= self.exchange <= 0xFF:
            raise LocalProtocolError(f"exchange type {self.exchange} is not a uint8")

    @property
    def flags(self) -> int:
        """The header flags byte for this message."""
        return (_RESPONSE_BIT if self.is_response else 0) | (
            _INITIATOR_BIT if self.is_initiator else 0
        )

    def notify(self, notify_type: int) -> NotifyPayload | None:
        """The first Notify payload of ``notify_type``, or None."""
        for payload in self.payloads:
            if isinstance(payload, NotifyPayload) and payload.notify_type == notify_type:
                return payload
        return None


def encode_header(msg: Message, next_payload: int, length: int) -> bytes:
    """The 28-byte header of ``msg`` with the given first payload type and total length."""
    return write_header(
        Header(msg.spi_i, msg.spi_r, next_payload, msg.exchange, msg.flags, msg.message_id, length),
        IKE_VERSION,
    )


def write_header(header: Header, version: int) -> bytes:
    """The 28 header bytes of ``header`` with the version octet ``version``.

    The layout is ISAKMP's (RFC 2408 section 3.1), which IKEv2 kept: IKEv1 (version
    0x10) writes its header through here too.
    """
    if not HEADER_LEN <= header.length <= MAX_MESSAGE_LEN:
        raise LocalProtocolError(f"message length {header.length} is out of range")
    w = Writer()
    w.push_bytes(header.spi_i)
    w.push_bytes(header.spi_r)
    w.push_uint8(header.next_payload)
    w.push_uint8(version)
    w.push_uint8(header.exchange)
    w.push_uint8(header.flags)
    w.push_uint32(header.message_id)
    w.push_uint32(header.length)
    return bytes(w)


def decode_header(data: bytes) -> Header:
    """Parse and check the header of the datagram ``data`` (without a non-ESP marker).

    Checks: at least 28 bytes, major version 2 (any minor; InvalidMajorVersion),
    a non-zero initiator SPI, and a Length field equal to ``len(data)``.
    """
    header, version = read_header(data)
    if version >> 4 != _MAJOR_VERSION:
        raise InvalidMajorVersion(version >> 4)
    return header


def read_header(data: bytes) -> tuple[Header, int]:
    """The ISAKMP-layout header of ``data`` and its version octet, with the checks every
    version shares: 28 bytes, a non-zero initiator SPI (cookie), and a Length field
    equal to ``len(data)``. The caller checks the version (IKEv1 reads through here too).
    """
    if len(data) >= HEADER_LEN:  # one unpack; the checks below are the same either way
        fields = _HEADER.unpack_from(data)
        spi_i, spi_r, next_payload, version, exchange, flags, message_id, length = fields
    else:  # too short: the pulls name the field that is missing
        r = Reader(data)
        spi_i = r.pull_bytes(SPI_LEN, "header.spi_i")
        spi_r = r.pull_bytes(SPI_LEN, "header.spi_r")
        next_payload = r.pull_uint8("header.next_payload")
        version = r.pull_uint8("header.version")
        exchange = r.pull_uint8("header.exchange")
        flags = r.pull_uint8("header.flags")
        message_id = r.pull_uint32("header.message_id")
        length = r.pull_uint32("header.length")
    if spi_i == bytes(SPI_LEN):
        raise ParseError("the initiator SPI is zero", field="header.spi_i")
    if length != len(data):
        raise ParseError(
            f"length field {length} but the datagram has {len(data)} bytes", field="header.length"
        )
    return Header(spi_i, spi_r, next_payload, exchange, flags, message_id, length), version


def payload_bodies(header: Header, data: bytes) -> list[tuple[int, bytes]]:
    """(type, body) of each payload of ``data`` in order, read from the generic payload
    headers only: nothing inside a payload is decoded.

    The cheap look at an IKE_SA_INIT request that the :class:`~.endpoint.Endpoint` takes
    before it spends anything on it (a COOKIE check needs the first payload and the
    nonce). Raises ParseError when the chain does not fill ``data`` exactly.
    """
    spans, end = payload_spans(header.next_payload, data, HEADER_LEN)
    if end != len(data):
        raise ParseError("bytes after the last payload", field="payload.length")
    return [(kind, data[start + GENERIC_HEADER_LEN : stop]) for kind, start, stop in spans]


def payload_spans(first: int, data: bytes, offset: int) -> tuple[list[tuple[int, int, int]], int]:
    """Walk a payload chain of type ``first`` starting at ``offset`` by its generic headers.

    Returns (type, start, end) of each payload, generic header included, and the offset
    where the chain ended. Nothing inside a payload is read. Raises ParseError when a
    length runs past ``data``; bytes after the chain are the caller's to judge (IKEv1
    pads its encrypted messages after the last payload, RFC 2408 section 3.5).
    """
    spans: list[tuple[int, int, int]] = []
    kind = first
    while kind != PayloadType.NONE:
        if offset + GENERIC_HEADER_LEN > len(data):
            raise ParseError("payload header past the end", field=f"payload[{len(spans)}].length")
        length = int.from_bytes(data[offset + 2 : offset + 4], "big")
        if length < GENERIC_HEADER_LEN or offset + length > len(data):
            raise ParseError(
                f"payload length {length} out of range", field=f"payload[{len(spans)}].length"
            )
        spans.append((kind, offset, offset + length))
        kind, offset = data[offset], offset + length
    return spans, offset


def encode_payloads(payloads: Iterable[Payload]) -> tuple[int, bytes]:
    """Chain ``payloads``: returns (type of the first, or 0 if none; the bytes).

    An SK or SKF payload must be the last one; its Next Payload field carries its
    ``first_inner`` type. Known payloads are sent with the critical bit clear; an
    :class:`UnknownPayload` keeps its own.
    """
    items = list(payloads)
    types = [payload_type(payload) for payload in items]
    w = Writer()
    for i, payload in enumerate(items):
        last = i == len(items) - 1
        if isinstance(payload, EncryptedPayload | EncryptedFragment):
            if not last:
                raise LocalProtocolError("an SK or SKF payload must be the last payload")
            next_type = payload.first_inner
        else:
            next_type = types[i + 1] if not last else PayloadType.NONE
        body = encode_body(payload)
        length = GENERIC_HEADER_LEN + len(body)
        if length > 0xFFFF:
            raise LocalProtocolError(f"{type(payload).__name__} of {length} bytes is too long")
        critical = isinstance(payload, UnknownPayload) and payload.critical
        w.push_bytes(_GENERIC_HEADER.pack(next_type & 0xFF, _CRITICAL if critical else 0, length))
        w.push_bytes(body)
    first = types[0] if items else PayloadType.NONE
    return first, bytes(w)


def decode_payloads(first: int, data: bytes) -> tuple[Payload, ...]:
    """Decode a payload chain starting with type ``first`` that must fill ``data`` exactly.

    Unknown non-critical payloads become :class:`UnknownPayload`; an unknown critical
    one raises :class:`UnsupportedCriticalPayload`. An SK or SKF payload must be the
    last and is returned sealed.
    """
    r = Reader(data)
    out: list[Payload] = []
    ptype = first
    while ptype != PayloadType.NONE:
        field = f"payload[{len(out)}]"
        if r.remaining() >= GENERIC_HEADER_LEN:  # the pulls' field names only when short
            next_type, flags, length = r.pull_uint8(), r.pull_uint8(), r.pull_uint16()
        else:
            next_type = r.pull_uint8(f"{field}.next_payload")
            flags = r.pull_uint8(f"{field}.critical")
            length = r.pull_uint16(f"{field}.length")
        critical = bool(flags & _CRITICAL)
        if length < GENERIC_HEADER_LEN:
            raise ParseError(f"payload length {length} is below 4", field=f"{field}.length")
        body = r.pull_bytes(length - GENERIC_HEADER_LEN, f"{field}.length")
        if ptype in _ENCRYPTED_TYPES:
            if not r.eof():
                raise ParseError("an SK or SKF payload must be the last payload", field=field)
            out.append(_decode_encrypted(ptype, next_type, body))
            return tuple(out)
        if ptype in DECODERS:
            out.append(_decode_known(ptype, body, field))
        elif critical:
            raise UnsupportedCriticalPayload(ptype)
        else:
            out.append(UnknownPayload(ptype, critical, body))
        ptype = next_type
    if not r.eof():
        raise ParseError(f"{r.remaining()} bytes after the last payload", field="payloads")
    return tuple(out)


def _decode_known(ptype: int, body: bytes, field: str) -> Payload:
    r = Reader(body)
    payload = DECODERS[ptype](r)
    if not r.eof():
        raise ParseError("trailing bytes in the payload body", field=field)
    return payload


def _decode_encrypted(ptype: int, first_inner: int, body: bytes) -> Payload:
    if ptype == PayloadType.SK:
        return EncryptedPayload(first_inner, body)
    return decode_fragment_body(first_inner, Reader(body))


def encode_message(msg: Message) -> bytes:
    """The whole datagram for ``msg`` sent in clear (IKE_SA_INIT), Length filled in."""
    first, body = encode_payloads(msg.payloads)
    return encode_header(msg, first, HEADER_LEN + len(body)) + body


def decode_message(data: bytes) -> Message:
    """Decode a datagram (without non-ESP marker); see :func:`decode_header` for checks."""
    header = decode_header(data)
    payloads = decode_payloads(header.next_payload, data[HEADER_LEN:])
    return message_from_header(header, payloads)


def message_from_header(header: Header, payloads: tuple[Payload, ...]) -> Message:
    """A :class:`Message` with the header's SPIs, exchange, ID and flags."""
    return Message(
        spi_i=header.spi_i,
        spi_r=header.spi_r,
        exchange=header.exchange,
        message_id=header.message_id,
        is_response=header.is_response,
        is_initiator=header.is_initiator,
        payloads=payloads,
    )
