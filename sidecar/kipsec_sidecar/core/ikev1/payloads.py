"""ISAKMP payloads (RFC 2408 section 3, RFC 2407 section 4.6, RFC 3947 section 3-4):
one frozen dataclass per payload and its body codec.

As in :mod:`kipsec_sidecar.core.ike.payloads`, a payload object holds only its body
(the bytes after the 4-byte generic header); :mod:`.message` chains them. The CERT,
CERTREQ and Vendor ID bodies are laid out exactly as in IKEv2, so their IKEv2
classes and codecs (:class:`~kipsec_sidecar.core.ike.payloads.CertPayload`,
``CertReqPayload``, ``VendorIdPayload``) serve here unchanged, and an unknown payload
type is kept as an IKEv2 ``UnknownPayload`` (IKEv1 has no critical bit: it is always
clear). Decoding raises only :class:`~kipsec_sidecar.core.errors.ParseError` naming
the field; encoding a value the wire cannot carry raises
:class:`~kipsec_sidecar.core.errors.LocalProtocolError`.

Attributes keep their wire format: an ``int`` value is a basic (TV) attribute, a
``bytes`` value a variable (TLV) one, so a received SA payload re-encodes byte for byte
(the HASH_I/HASH_R of main mode cover the initiator's SA body as sent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..buffer import Reader, Writer
from ..errors import LocalProtocolError, ParseError
from ..ike import payloads as v2
from ..ike.constants import PayloadType as V2PayloadType
from .constants import DOI_IPSEC, SIT_IDENTITY_ONLY, IdType, PayloadType, ProtocolId

NONCE_MIN_LEN = 8  # RFC 2409 section 5: "between 8 and 256 bytes inclusive"
NONCE_MAX_LEN = 256

_LAST = 0
_ATTR_TV = 0x8000
_ATTR_TYPE_MASK = 0x7FFF

# SPI sizes by protocol: a proposal (RFC 2408 3.5: an ISAKMP proposal's SPI is ignored,
# sizes 0 and 16 are seen, 8 by some), a Notification (RFC 2408 3.14; DPD and
# INITIAL-CONTACT carry CKY-I | CKY-R, RFC 3706 section 5.1), a Delete (RFC 2408 3.15).
PROPOSAL_SPI_SIZES: dict[int, tuple[int, ...]] = {
    ProtocolId.ISAKMP: (0, 8, 16),
    ProtocolId.AH: (4,),
    ProtocolId.ESP: (4,),
    ProtocolId.IPCOMP: (2, 4),
}
NOTIFY_SPI_SIZES: dict[int, tuple[int, ...]] = {
    0: (0,),
    ProtocolId.ISAKMP: (0, 8, 16),
    ProtocolId.AH: (0, 4),
    ProtocolId.ESP: (0, 4),
    ProtocolId.IPCOMP: (0, 2, 4),
}
DELETE_SPI_SIZE: dict[int, int] = {
    ProtocolId.ISAKMP: 16,
    ProtocolId.AH: 4,
    ProtocolId.ESP: 4,
    ProtocolId.IPCOMP: 2,
}
_NAT_OA_ADDRESS_LEN: dict[int, int] = {IdType.IPV4_ADDR: 4, IdType.IPV6_ADDR: 16}


def _pull_spi_size(r: Reader, table: dict[int, tuple[int, ...]], protocol: int, what: str) -> int:
    """The SPI size octet, checked against what ``table`` allows for ``protocol``."""
    size = r.pull_uint8(f"{what}.spi_size")
    if protocol not in table:
        raise ParseError(f"protocol {protocol} is unknown", field=f"{what}.protocol")
    if size not in table[protocol]:
        raise ParseError(f"SPI size {size} for protocol {protocol}", field=f"{what}.spi_size")
    return size


def _check_uint(value: int, bits: int, field: str) -> None:
    if not 0 <= value < (1 << bits):
        raise LocalProtocolError(f"{field} {value} does not fit in {bits} bits")


# --- SA, proposals, transforms, attributes


@dataclass(frozen=True, slots=True)
class Attribute:
    """A data attribute (RFC 2408 section 3.3): ``int`` value = basic (TV, 16 bits),
    ``bytes`` value = variable (TLV)."""

    type: int
    value: int | bytes

    @property
    def as_int(self) -> int:
        """The value as an unsigned integer (a TLV value is big-endian, e.g. a life
        duration of 4 bytes)."""
        if isinstance(self.value, int):
            return self.value
        return int.from_bytes(self.value, "big")


@dataclass(frozen=True, slots=True)
class Transform:
    """A transform payload (RFC 2408 section 3.6): number, transform ID, attributes."""

    number: int
    transform_id: int
    attributes: tuple[Attribute, ...] = ()

    def get(self, attr_type: int) -> Attribute | None:
        """The first attribute of ``attr_type``, or None."""
        for attr in self.attributes:
            if attr.type == attr_type:
                return attr
        return None


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposal payload (RFC 2408 section 3.5). Proposals with the same number in one
    SA payload are one offer combining several protocols (ESP and AH, section 4.2)."""

    number: int
    protocol: int
    spi: bytes
    transforms: tuple[Transform, ...]


@dataclass(frozen=True, slots=True)
class SaPayload:
    """SA payload (RFC 2408 section 3.4) of the IPsec DOI with SIT_IDENTITY_ONLY, the
    only situation kipsec speaks (labelled situations are refused when parsed)."""

    proposals: tuple[Proposal, ...]
    doi: int = DOI_IPSEC
    situation: int = SIT_IDENTITY_ONLY


def encode_attributes(attributes: tuple[Attribute, ...]) -> bytes:
    """Attributes in wire format: TV for ``int`` values, TLV for ``bytes`` values."""
    w = Writer()
    for attr in attributes:
        _check_uint(attr.type, 15, "attribute type")
        if isinstance(attr.value, int):
            _check_uint(attr.value, 16, "basic attribute value")
            w.push_uint16(_ATTR_TV | attr.type)
            w.push_uint16(attr.value)
        else:
            _check_uint(len(attr.value), 16, "variable attribute length")
            w.push_uint16(attr.type)
            w.push_uint16(len(attr.value))
            w.push_bytes(attr.value)
    return bytes(w)


def decode_attributes(r: Reader, field: str) -> tuple[Attribute, ...]:
    """Every attribute up to the end of ``r``."""
    out: list[Attribute] = []
    while not r.eof():
        word = r.pull_uint16(f"{field}.attribute.type")
        if word & _ATTR_TV:
            out.append(Attribute(word & _ATTR_TYPE_MASK, r.pull_uint16(f"{field}.attribute.value")))
        else:
            length = r.pull_uint16(f"{field}.attribute.length")
            out.append(Attribute(word, r.pull_bytes(length, f"{field}.attribute.value")))
    return tuple(out)


def _substructure(w: Writer, more: int, last: bool, body: bytes, what: str) -> None:
    length = 4 + len(body)
    _check_uint(length, 16, f"{what} length")
    w.push_uint8(_LAST if last else more)
    w.push_uint8(0)
    w.push_uint16(length)
    w.push_bytes(body)


def _pull_substructure(r: Reader, more: int, field: str) -> tuple[Reader, bool]:
    """The body of one proposal or transform and whether another one follows."""
    marker = r.pull_uint8(f"{field}.next_payload")
    if marker not in (_LAST, more):
        raise ParseError(f"next payload {marker} is neither 0 nor {more}", field=f"{field}.next")
    r.pull_uint8(f"{field}.reserved")
    length = r.pull_uint16(f"{field}.length")
    if length < 4:
        raise ParseError(f"length {length} is below 4", field=f"{field}.length")
    return r.sub(length - 4, f"{field}.length"), marker == more


def _encode_transform(t: Transform) -> bytes:
    _check_uint(t.number, 8, "transform number")
    _check_uint(t.transform_id, 8, "transform id")
    return bytes((t.number, t.transform_id, 0, 0)) + encode_attributes(t.attributes)


def _decode_transform(r: Reader) -> Transform:
    number = r.pull_uint8("transform.number")
    transform_id = r.pull_uint8("transform.id")
    r.pull_uint16("transform.reserved")
    return Transform(number, transform_id, decode_attributes(r, "transform"))


def _encode_proposal(p: Proposal) -> bytes:
    _check_uint(p.number, 8, "proposal number")
    allowed = PROPOSAL_SPI_SIZES.get(p.protocol)
    if allowed is None or len(p.spi) not in allowed:
        raise LocalProtocolError(f"a {len(p.spi)}-byte SPI is not valid for protocol {p.protocol}")
    if not 0 < len(p.transforms) <= 255:
        raise LocalProtocolError("a proposal holds 1 to 255 transforms")
    w = Writer()
    w.push_bytes(bytes((p.number, p.protocol, len(p.spi), len(p.transforms))))
    w.push_bytes(p.spi)
    for i, t in enumerate(p.transforms):
        _substructure(
            w, PayloadType.TRANSFORM, i == len(p.transforms) - 1, _encode_transform(t), "transform"
        )
    return bytes(w)


def _decode_proposal(r: Reader) -> Proposal:
    number = r.pull_uint8("proposal.number")
    protocol = r.pull_uint8("proposal.protocol")
    spi_size = _pull_spi_size(r, PROPOSAL_SPI_SIZES, protocol, "proposal")
    count = r.pull_uint8("proposal.transform_count")
    spi = r.pull_bytes(spi_size, "proposal.spi")
    transforms: list[Transform] = []
    more = True
    while more:
        if len(transforms) == count:
            raise ParseError(f"more transforms than the count {count}", field="proposal.transforms")
        body, more = _pull_substructure(r, PayloadType.TRANSFORM, "transform")
        transforms.append(_decode_transform(body))
    if len(transforms) != count or not r.eof():
        raise ParseError(
            f"{len(transforms)} transforms, count says {count}", field="proposal.transforms"
        )
    return Proposal(number, protocol, spi, tuple(transforms))


def _encode_sa(p: SaPayload) -> bytes:
    if not p.proposals:
        raise LocalProtocolError("an SA payload needs at least one proposal")
    _check_uint(p.doi, 32, "DOI")
    _check_uint(p.situation, 32, "situation")
    w = Writer()
    w.push_uint32(p.doi)
    w.push_uint32(p.situation)
    previous = 0
    for i, proposal in enumerate(p.proposals):
        if proposal.number < previous or proposal.number == 0:
            raise LocalProtocolError("proposal numbers start at 1 and never decrease")
        previous = proposal.number
        last = i == len(p.proposals) - 1
        _substructure(w, PayloadType.PROPOSAL, last, _encode_proposal(proposal), "proposal")
    return bytes(w)


def _decode_sa(r: Reader) -> SaPayload:
    doi = r.pull_uint32("sa.doi")
    if doi != DOI_IPSEC:
        raise ParseError(f"DOI {doi} is not the IPsec DOI", field="sa.doi")
    situation = r.pull_uint32("sa.situation")
    if situation != SIT_IDENTITY_ONLY:
        raise ParseError(f"situation {situation} is not SIT_IDENTITY_ONLY", field="sa.situation")
    proposals: list[Proposal] = []
    more = True
    while more:
        body, more = _pull_substructure(r, PayloadType.PROPOSAL, "proposal")
        proposal = _decode_proposal(body)
        if proposal.number == 0 or (proposals and proposal.number < proposals[-1].number):
            raise ParseError(
                f"proposal number {proposal.number} out of order", field="proposal.number"
            )
        proposals.append(proposal)
    if not r.eof():
        raise ParseError("bytes after the last proposal", field="sa.length")
    return SaPayload(tuple(proposals), doi, situation)


# --- KE, ID, HASH, SIG, Nonce, NAT-D, NAT-OA


@dataclass(frozen=True, slots=True)
class KePayload:
    """Key Exchange payload (RFC 2408 section 3.7): the DH public value only (the group
    was negotiated in the SA payload)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class IdPayload:
    """Identification payload (RFC 2408 3.8, RFC 2407 4.6.2): type, the IPsec DOI's
    protocol and port (non-zero only in quick mode client IDs) and the identity data."""

    id_type: int
    data: bytes
    protocol: int = 0
    port: int = 0

    def body(self) -> bytes:
        """The payload body, ``IDii_b`` / ``IDir_b`` in the HASH_I / HASH_R formulas."""
        _check_uint(self.id_type, 8, "id type")
        _check_uint(self.protocol, 8, "id protocol")
        _check_uint(self.port, 16, "id port")
        return bytes((self.id_type, self.protocol)) + self.port.to_bytes(2, "big") + self.data


@dataclass(frozen=True, slots=True)
class HashPayload:
    """Hash payload (RFC 2408 section 3.11): HASH_I, HASH_R, HASH(1..3)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SigPayload:
    """Signature payload (RFC 2408 section 3.12): the signature over HASH_I / HASH_R."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NoncePayload:
    """Nonce payload (RFC 2408 3.13): 8 to 256 bytes (RFC 2409 section 5), checked on
    decode. Under public-key encryption its body is ciphertext: see SealedPayload."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NatDPayload:
    """NAT-D payload (RFC 3947 section 3.2): HASH(CKY-I | CKY-R | IP | Port)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NatOaPayload:
    """NAT-OA payload (RFC 3947 section 5.2): the original address, ID_IPV4_ADDR (4
    bytes) or ID_IPV6_ADDR (16 bytes)."""

    id_type: int
    address: bytes


def _decode_ke(r: Reader) -> KePayload:
    data = r.pull_rest()
    if not data:
        raise ParseError("empty key exchange data", field="ke.data")
    return KePayload(data)


def _decode_id(r: Reader) -> IdPayload:
    id_type = r.pull_uint8("id.type")
    protocol = r.pull_uint8("id.protocol")
    port = r.pull_uint16("id.port")
    return IdPayload(id_type, r.pull_rest(), protocol, port)


def _decode_hash(r: Reader) -> HashPayload:
    data = r.pull_rest()
    if not data:
        raise ParseError("empty hash", field="hash.data")
    return HashPayload(data)


def _decode_sig(r: Reader) -> SigPayload:
    data = r.pull_rest()
    if not data:
        raise ParseError("empty signature", field="sig.data")
    return SigPayload(data)


def _decode_nonce(r: Reader) -> NoncePayload:
    data = r.pull_rest()
    if not NONCE_MIN_LEN <= len(data) <= NONCE_MAX_LEN:
        raise ParseError(f"{len(data)} bytes, not 8 to 256", field="nonce.length")
    return NoncePayload(data)


def _decode_nat_d(r: Reader) -> NatDPayload:
    data = r.pull_rest()
    if not data:
        raise ParseError("empty NAT-D hash", field="nat_d.data")
    return NatDPayload(data)


def _encode_nat_oa(p: NatOaPayload) -> bytes:
    if _NAT_OA_ADDRESS_LEN.get(p.id_type) != len(p.address):
        raise LocalProtocolError(f"NAT-OA of type {p.id_type} with {len(p.address)} bytes")
    return bytes((p.id_type, 0, 0, 0)) + p.address


def _decode_nat_oa(r: Reader) -> NatOaPayload:
    id_type = r.pull_uint8("nat_oa.type")
    r.pull_bytes(3, "nat_oa.reserved")
    expected = _NAT_OA_ADDRESS_LEN.get(id_type)
    if expected is None:
        raise ParseError(f"ID type {id_type} is not an address", field="nat_oa.type")
    address = r.pull_bytes(expected, "nat_oa.address")
    return NatOaPayload(id_type, address)


@dataclass(frozen=True, slots=True)
class SealedPayload:
    """A payload whose body is ciphertext: the Nonce, ID, KE and CERT payloads of main
    mode with public-key encryption (RFC 2409 sections 5.2 and 5.3).

    :func:`.message.decode_payloads` returns one for each type the caller names as
    sealed; :mod:`.pubkey` opens it and decodes the plaintext with :func:`decode_body`.
    """

    payload_type: int
    data: bytes


# --- Notification, Delete


@dataclass(frozen=True, slots=True)
class NotificationPayload:
    """Notification payload (RFC 2408 section 3.14). ``spi`` is CKY-I | CKY-R for DPD and
    INITIAL-CONTACT (RFC 3706), an IPsec SPI for RESPONDER-LIFETIME, else often empty."""

    notify_type: int
    protocol: int = ProtocolId.ISAKMP
    spi: bytes = b""
    data: bytes = b""
    doi: int = DOI_IPSEC


@dataclass(frozen=True, slots=True)
class DeletePayload:
    """Delete payload (RFC 2408 section 3.15): 16-byte cookie pairs for the ISAKMP SA,
    4-byte SPIs for ESP and AH."""

    protocol: int
    spis: tuple[bytes, ...]
    doi: int = DOI_IPSEC


def _encode_notification(p: NotificationPayload) -> bytes:
    _check_uint(p.doi, 32, "DOI")
    _check_uint(p.notify_type, 16, "notify type")
    allowed = NOTIFY_SPI_SIZES.get(p.protocol)
    if allowed is None or len(p.spi) not in allowed:
        raise LocalProtocolError(f"a {len(p.spi)}-byte notify SPI for protocol {p.protocol}")
    w = Writer()
    w.push_uint32(p.doi)
    w.push_bytes(bytes((p.protocol, len(p.spi))))
    w.push_uint16(p.notify_type)
    w.push_bytes(p.spi + p.data)
    return bytes(w)


def _decode_notification(r: Reader) -> NotificationPayload:
    doi = r.pull_uint32("notification.doi")
    protocol = r.pull_uint8("notification.protocol")
    spi_size = _pull_spi_size(r, NOTIFY_SPI_SIZES, protocol, "notification")
    notify_type = r.pull_uint16("notification.type")
    spi = r.pull_bytes(spi_size, "notification.spi")
    return NotificationPayload(notify_type, protocol, spi, r.pull_rest(), doi)


def _encode_delete(p: DeletePayload) -> bytes:
    _check_uint(p.doi, 32, "DOI")
    size = DELETE_SPI_SIZE.get(p.protocol)
    if size is None:
        raise LocalProtocolError(f"cannot delete an SA of protocol {p.protocol}")
    if not p.spis or any(len(spi) != size for spi in p.spis):
        raise LocalProtocolError(f"a Delete names one or more {size}-byte SPIs")
    _check_uint(len(p.spis), 16, "number of SPIs")
    w = Writer()
    w.push_uint32(p.doi)
    w.push_bytes(bytes((p.protocol, size)))
    w.push_uint16(len(p.spis))
    w.push_bytes(b"".join(p.spis))
    return bytes(w)


def _decode_delete(r: Reader) -> DeletePayload:
    doi = r.pull_uint32("delete.doi")
    protocol = r.pull_uint8("delete.protocol")
    spi_size = r.pull_uint8("delete.spi_size")
    count = r.pull_uint16("delete.spi_count")
    expected = DELETE_SPI_SIZE.get(protocol)
    if expected is None:
        raise ParseError(f"protocol {protocol} is unknown", field="delete.protocol")
    if spi_size != expected:
        raise ParseError(f"SPI size {spi_size}, not {expected}", field="delete.spi_size")
    if count == 0 or r.remaining() != count * spi_size:
        raise ParseError(f"{r.remaining()} bytes for {count} SPIs", field="delete.spi_count")
    return DeletePayload(
        protocol, tuple(r.pull_bytes(spi_size, "delete.spi") for _ in range(count)), doi
    )


Payload = (
    SaPayload
    | KePayload
    | IdPayload
    | v2.CertPayload
    | v2.CertReqPayload
    | HashPayload
    | SigPayload
    | NoncePayload
    | NotificationPayload
    | DeletePayload
    | v2.VendorIdPayload
    | NatDPayload
    | NatOaPayload
    | SealedPayload
    | v2.UnknownPayload
)
"""Every payload object the IKEv1 codec produces or accepts."""


def _raw(p: KePayload | HashPayload | SigPayload | NoncePayload | NatDPayload) -> bytes:
    return p.data


def _v2_body(p: v2.CertPayload | v2.CertReqPayload | v2.VendorIdPayload) -> bytes:
    return v2.encode_body(p)


def _id_body(p: IdPayload) -> bytes:
    return p.body()


# Payload class -> (payload type, body encoder). SealedPayload and UnknownPayload carry
# their own type number.
_CODEC: dict[type, tuple[int, Callable[[Any], bytes]]] = {
    SaPayload: (PayloadType.SA, _encode_sa),
    KePayload: (PayloadType.KE, _raw),
    IdPayload: (PayloadType.ID, _id_body),
    v2.CertPayload: (PayloadType.CERT, _v2_body),
    v2.CertReqPayload: (PayloadType.CERTREQ, _v2_body),
    HashPayload: (PayloadType.HASH, _raw),
    SigPayload: (PayloadType.SIG, _raw),
    NoncePayload: (PayloadType.NONCE, _raw),
    NotificationPayload: (PayloadType.NOTIFICATION, _encode_notification),
    DeletePayload: (PayloadType.DELETE, _encode_delete),
    v2.VendorIdPayload: (PayloadType.VENDOR_ID, _v2_body),
    NatDPayload: (PayloadType.NAT_D, _raw),
    NatOaPayload: (PayloadType.NAT_OA, _encode_nat_oa),
}

# Body decoders by payload type; CERT, CERTREQ and Vendor ID are IKEv2's.
DECODERS: dict[int, Callable[[Reader], Payload]] = {
    PayloadType.SA: _decode_sa,
    PayloadType.KE: _decode_ke,
    PayloadType.ID: _decode_id,
    PayloadType.CERT: v2.DECODERS[V2PayloadType.CERT],  # type: ignore[dict-item]
    PayloadType.CERTREQ: v2.DECODERS[V2PayloadType.CERTREQ],  # type: ignore[dict-item]
    PayloadType.HASH: _decode_hash,
    PayloadType.SIG: _decode_sig,
    PayloadType.NONCE: _decode_nonce,
    PayloadType.NOTIFICATION: _decode_notification,
    PayloadType.DELETE: _decode_delete,
    PayloadType.VENDOR_ID: v2.DECODERS[V2PayloadType.VENDOR_ID],  # type: ignore[dict-item]
    PayloadType.NAT_D: _decode_nat_d,
    PayloadType.NAT_OA: _decode_nat_oa,
    PayloadType.NAT_D_DRAFT: _decode_nat_d,
    PayloadType.NAT_OA_DRAFT: _decode_nat_oa,
}


def payload_type(payload: Payload) -> int:
    """The Payload Type number of ``payload`` (its own field when sealed or unknown)."""
    if isinstance(payload, v2.UnknownPayload | SealedPayload):
        return payload.payload_type
    return _CODEC[type(payload)][0]


def encode_body(payload: Payload) -> bytes:
    """The payload's body, without the generic header; LocalProtocolError if unencodable."""
    if isinstance(payload, v2.UnknownPayload | SealedPayload):
        return payload.data
    entry = _CODEC.get(type(payload))
    if entry is None:
        raise LocalProtocolError(f"{type(payload).__name__} is not an ISAKMP payload")
    return entry[1](payload)


def decode_body(ptype: int, body: bytes) -> Payload:
    """Decode the body of payload type ``ptype``: an unknown type becomes an
    ``UnknownPayload``; a known one must fill ``body`` exactly (ParseError)."""
    decoder = DECODERS.get(ptype)
    if decoder is None:
        return v2.UnknownPayload(ptype, False, body)
    r = Reader(body)
    payload = decoder(r)
    if not r.eof():
        raise ParseError("trailing bytes in the payload body", field=f"payload {ptype}")
    return payload
