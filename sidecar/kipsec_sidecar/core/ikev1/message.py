"""ISAKMP messages: the 28-byte header and the payload chain (RFC 2408 sections 3.1-3.2).

The header layout and the generic payload chain are IKEv2's too, so the walking and
the header bytes come from :mod:`kipsec_sidecar.core.ike.message` (``read_header``,
``write_header``, ``payload_spans``); this module adds what differs: version 1.0, the
E/C/A flags, no critical bit, and padding after the last payload of an encrypted
message (RFC 2408 section 3.5).

:func:`decode_message` decodes a message sent in clear; an encrypted one (E flag) is
opened by :func:`.encryption.decrypt_message`, which decodes its plaintext here with
:func:`decode_payloads`. A decoded :class:`Message` keeps each payload's bytes as
received (``raw``), because the HASH payloads of RFC 2409 are computed over payloads
as sent, not as kipsec would re-encode them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from ..errors import LocalProtocolError, ParseError
from ..ike.message import (
    GENERIC_HEADER_LEN,
    HEADER_LEN,
    Header,
    PayloadLookup,
    payload_spans,
    read_header,
    write_header,
)
from .constants import COOKIE_LEN, ISAKMP_VERSION, Flag, PayloadType
from .payloads import (
    NotificationPayload,
    Payload,
    SealedPayload,
    decode_body,
    encode_body,
    payload_type,
)

__all__ = [
    "GENERIC_HEADER_LEN",
    "HEADER_LEN",
    "Header",
    "InvalidMajorVersion",
    "Message",
    "decode_header",
    "decode_message",
    "decode_payloads",
    "encode_header",
    "encode_message",
    "encode_payloads",
]

_MAJOR_VERSION = ISAKMP_VERSION >> 4


class InvalidMajorVersion(ParseError):
    """The header's major version is not 1 (an IKEv2 message on a v1 socket, say)."""

    def __init__(self, major: int) -> None:
        super().__init__(f"major version {major} is not 1", field="header.version")
        self.major = major


@dataclass(frozen=True, slots=True)
class Message(PayloadLookup):
    """An ISAKMP message: header fields and the payloads in order.

    ``flags`` holds COMMIT / AUTH_ONLY as wanted; the ENCRYPTION flag is set by
    :mod:`.encryption` when it seals the message (encoding a message in clear with it
    set is a local error). ``raw`` is filled by the decoder: each payload's bytes as
    received, generic header included; it takes no part in equality.
    """

    cookie_i: bytes
    cookie_r: bytes
    exchange: int
    message_id: int
    payloads: tuple[Payload, ...]
    flags: int = 0
    raw: tuple[bytes, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.cookie_i) != COOKIE_LEN or len(self.cookie_r) != COOKIE_LEN:
            raise LocalProtocolError("ISAKMP cookies are 8 bytes")
        if not 0 <= self.message_id <= 0xFFFFFFFF:
            raise LocalProtocolError(f"message ID {self.message_id} is not a uint32")
        if not 0 <= self.exchange <= 0xFF or not 0 <= self.flags <= 0xFF:
            raise LocalProtocolError("exchange type and flags are one octet each")

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & Flag.ENCRYPTION)

    def notification(self, notify_type: int) -> NotificationPayload | None:
        """The first Notification payload of ``notify_type``, or None."""
        for p in self.all(NotificationPayload):
            if p.notify_type == notify_type:
                return p
        return None

    def raw_after(self, index: int) -> bytes:
        """The received bytes of every payload after payload ``index``: what HASH(1) of
        quick mode and informational exchanges covers when the HASH is payload 0.

        Without ``raw`` (a message built locally) the payloads are encoded afresh.
        """
        if self.raw:
            return b"".join(self.raw[index + 1 :])
        return encode_payloads(self.payloads[index + 1 :])[1]

    def raw_body(self, index: int) -> bytes:
        """The body (generic header stripped) of payload ``index`` as received, e.g. the
        initiator's SA body SAi_b of HASH_I / HASH_R."""
        if self.raw:
            return self.raw[index][GENERIC_HEADER_LEN:]
        return encode_body(self.payloads[index])


def encode_header(msg: Message, next_payload: int, length: int, flags: int) -> bytes:
    """The 28-byte ISAKMP header of ``msg`` with the given first payload, length and flags."""
    header = Header(
        msg.cookie_i, msg.cookie_r, next_payload, msg.exchange, flags, msg.message_id, length
    )
    return write_header(header, ISAKMP_VERSION)


def decode_header(data: bytes) -> Header:
    """Parse and check the header of ``data`` (a whole datagram, no non-ESP marker).

    Checks: 28 bytes at least, major version 1 (InvalidMajorVersion; any minor), a
    non-zero initiator cookie and a Length equal to ``len(data)``. The returned Header
    is IKEv2's dataclass: ``spi_i``/``spi_r`` are the cookies; its ``is_response`` and
    ``is_initiator`` mean nothing in IKEv1 (read ``flags`` against :class:`Flag`).
    """
    header, version = read_header(data)
    if version >> 4 != _MAJOR_VERSION:
        raise InvalidMajorVersion(version >> 4)
    return header


def encode_payloads(payloads: Iterable[Payload]) -> tuple[int, bytes]:
    """Chain ``payloads``: (type of the first, or 0; the bytes of the chain)."""
    items = list(payloads)
    out = bytearray()
    for i, payload in enumerate(items):
        next_type = payload_type(items[i + 1]) if i + 1 < len(items) else PayloadType.NONE
        body = encode_body(payload)
        length = GENERIC_HEADER_LEN + len(body)
        if length > 0xFFFF:
            raise LocalProtocolError(f"{type(payload).__name__} of {length} bytes is too long")
        out += bytes((next_type, 0)) + length.to_bytes(2, "big") + body
    return (payload_type(items[0]) if items else PayloadType.NONE), bytes(out)


def decode_payloads(
    first: int,
    data: bytes,
    *,
    padded: bool = False,
    sealed: Collection[int] = (),
) -> tuple[tuple[Payload, ...], tuple[bytes, ...]]:
    """Decode the chain starting with type ``first``; returns (payloads, raw bytes of each).

    ``padded``: bytes after the last payload are padding (the plaintext of an encrypted
    message) instead of an error. ``sealed``: payload types whose bodies are ciphertext
    (public-key encryption), returned as SealedPayload for :mod:`.pubkey` to open.
    Raises only ParseError.
    """
    spans, end = payload_spans(first, data, 0)
    if end != len(data) and not padded:
        raise ParseError(f"{len(data) - end} bytes after the last payload", field="payloads")
    payloads: list[Payload] = []
    raw: list[bytes] = []
    for index, (kind, start, stop) in enumerate(spans):
        body = data[start + GENERIC_HEADER_LEN : stop]
        try:
            payload = SealedPayload(kind, body) if kind in sealed else decode_body(kind, body)
        except ParseError as exc:
            raise ParseError(str(exc), field=f"payload[{index}].{exc.field}") from exc
        payloads.append(payload)
        raw.append(data[start:stop])
    return tuple(payloads), tuple(raw)


def encode_message(msg: Message) -> bytes:
    """The whole datagram for ``msg`` sent in clear, Length filled in."""
    if msg.encrypted:
        raise LocalProtocolError("an encrypted message is sealed by encryption.encrypt_message")
    first, body = encode_payloads(msg.payloads)
    return encode_header(msg, first, HEADER_LEN + len(body), msg.flags) + body


def decode_message(data: bytes, *, sealed: Collection[int] = ()) -> Message:
    """Decode a datagram sent in clear; see :func:`decode_header` for the header checks.

    An encrypted datagram (E flag) raises ParseError naming ``header.flags``: it must go
    through :func:`.encryption.decrypt_message` with the SA's key and IV.
    """
    header = decode_header(data)
    if header.flags & Flag.ENCRYPTION:
        raise ParseError("the message is encrypted", field="header.flags")
    payloads, raw = decode_payloads(header.next_payload, data[HEADER_LEN:], sealed=sealed)
    return message_from_header(header, payloads, raw)


def message_from_header(
    header: Header, payloads: tuple[Payload, ...], raw: tuple[bytes, ...]
) -> Message:
    """A :class:`Message` with the header's cookies, exchange, message ID and flags."""
    return Message(
        header.spi_i, header.spi_r, header.exchange, header.message_id, payloads, header.flags, raw
    )
