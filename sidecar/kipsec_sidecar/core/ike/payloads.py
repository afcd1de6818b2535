"""IKEv2 payloads (RFC 7296 section 3): one frozen dataclass per payload and its body codec.

A payload object holds only its *body*, the bytes after the 4-byte generic payload
header; chaining (Next Payload, the critical bit, the Payload Length) is done by
:mod:`.message`. Every ``bytes`` field holds raw wire bytes and is owned by the
object (immutable). Decoding raises only
:class:`~kipsec_sidecar.core.errors.ParseError` naming the field at fault; encoding a
value the wire cannot carry raises
:class:`~kipsec_sidecar.core.errors.LocalProtocolError` (a bug on this side).

Encoding is deterministic and ``decode_body(type, encode_body(p)) == p`` for every
payload the constructors accept, which the property tests hold the codec to.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..buffer import Reader, Writer
from ..errors import LocalProtocolError, ParseError
from ..traffic_selectors import TrafficSelector
from .constants import PayloadType, ProtocolId, TransformAttr, TsType

NONCE_MIN_LEN = 16
NONCE_MAX_LEN = 256

# Substructure markers in the "Last Substruc" field (RFC 7296 sections 3.3.1, 3.3.2).
LAST = 0
MORE_PROPOSALS = 2
MORE_TRANSFORMS = 3

_ATTR_FORMAT_TV = 0x8000
_ATTR_TYPE_MASK = 0x7FFF
_CP_ATTR_TYPE_MASK = 0x7FFF

# SPI sizes a proposal may carry, by protocol (RFC 7296 section 3.3.1): an IKE SA
# proposal has none in IKE_SA_INIT and the new 8-byte SPI when rekeying an IKE SA.
PROPOSAL_SPI_SIZES: dict[int, tuple[int, ...]] = {
    ProtocolId.IKE: (0, 8),
    ProtocolId.ESP: (4,),
    ProtocolId.AH: (4,),
}

# SPI sizes a Notify may carry (RFC 7296 section 3.10). The RFC says a notification
# about the IKE SA carries no SPI; some older peers send the 8-byte IKE SPI anyway, and
# since the engine never reads it, it is accepted rather than failing the exchange.
NOTIFY_SPI_SIZES: dict[int, tuple[int, ...]] = {
    ProtocolId.NONE: (0,),
    ProtocolId.IKE: (0, 8),
    ProtocolId.ESP: (0, 4),
    ProtocolId.AH: (0, 4),
}

# SPI size of a Delete payload, by protocol (RFC 7296 section 3.11).
DELETE_SPI_SIZE: dict[int, int] = {
    ProtocolId.IKE: 0,
    ProtocolId.ESP: 4,
    ProtocolId.AH: 4,
}

# Traffic selector type -> (selector length on the wire, address length).
_TS_LAYOUT: dict[int, tuple[int, int]] = {
    TsType.TS_IPV4_ADDR_RANGE: (16, 4),
    TsType.TS_IPV6_ADDR_RANGE: (40, 16),
}
_TS_TYPE_BY_VERSION: dict[int, TsType] = {
    4: TsType.TS_IPV4_ADDR_RANGE,
    6: TsType.TS_IPV6_ADDR_RANGE,
}


def _check_uint(value: int, bits: int, field: str) -> None:
    if not 0 <= value < (1 << bits):
        raise LocalProtocolError(f"{field} {value} does not fit in {bits} bits")


# --- SA


@dataclass(frozen=True, slots=True)
class Transform:
    """One transform of a proposal (RFC 7296 section 3.3.2).

    ``key_length`` is the Key Length attribute in *bits* (attribute 14, TV format), or
    None when the transform carries none. RFC 7296 defines no other attribute; any other
    is kept verbatim in ``other_attributes`` (so a message re-encodes byte for byte) and
    makes the transform unacceptable to the negotiation (section 3.3.6: "a transform
    that contains a Transform Attribute it does not understand").
    """

    type: int
    id: int
    key_length: int | None = None
    other_attributes: bytes = b""

    @property
    def understood(self) -> bool:
        """False when the transform carries an attribute kipsec does not understand."""
        return not self.other_attributes


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposal substructure: its number (1-based), protocol, SPI and transforms.

    ``spi`` is empty for an IKE SA in IKE_SA_INIT, 8 bytes for an IKE SA rekey and 4
    bytes for ESP and AH.
    """

    number: int
    protocol: int
    spi: bytes
    transforms: tuple[Transform, ...]


@dataclass(frozen=True, slots=True)
class SaPayload:
    """Security Association payload: proposals numbered consecutively (section 3.3).

    An initiator's offer starts at 1; a responder returns the one proposal it chose
    with its original number, so the codec only requires consecutive numbers.
    """

    proposals: tuple[Proposal, ...]


# Last Substruc, RESERVED, Transform Length, Transform Type, RESERVED, Transform ID:
# one pack per transform (an IKE_SA_INIT offer carries ten or more).
_TRANSFORM_HEADER = struct.Struct("!BBHBBH")
_KEY_LENGTH_TV = _ATTR_FORMAT_TV | TransformAttr.KEY_LENGTH


def _encode_transform(w: Writer, t: Transform, last: bool) -> None:
    _check_uint(t.type, 8, "transform type")
    _check_uint(t.id, 16, "transform id")
    attrs = t.other_attributes
    if t.key_length is not None:
        _check_uint(t.key_length, 16, "key length")
        attrs = _KEY_LENGTH_TV.to_bytes(2, "big") + t.key_length.to_bytes(2, "big") + attrs
    marker = LAST if last else MORE_TRANSFORMS
    length = (8 + len(attrs)) & 0xFFFF  # as push_uint16 wrote it; the proposal checks its own
    w.push_bytes(_TRANSFORM_HEADER.pack(marker, 0, length, t.type, 0, t.id))
    w.push_bytes(attrs)


def _decode_transform(r: Reader) -> tuple[Transform, bool]:
    """One transform; returns it and whether the marker says more transforms follow."""
    marker = r.pull_uint8("transform.last_substruc")
    if marker not in (LAST, MORE_TRANSFORMS):
        raise ParseError(f"marker {marker} is neither 0 nor 3", field="transform.last_substruc")
    r.pull_uint8("transform.reserved")
    length = r.pull_uint16("transform.length")
    if length < 8:
        raise ParseError(f"length {length} is below 8", field="transform.length")
    body = r.sub(length - 4, "transform.length")
    ttype = body.pull_uint8("transform.type")
    body.pull_uint8("transform.reserved")
    tid = body.pull_uint16("transform.id")
    if body.eof():  # most transforms carry no attribute
        return Transform(ttype, tid), marker == MORE_TRANSFORMS
    key_length: int | None = None
    other = Writer()
    while not body.eof():
        attr = body.pull_uint16("transform.attribute")
        attr_type = attr & _ATTR_TYPE_MASK
        if attr & _ATTR_FORMAT_TV:
            value = body.pull_uint16("transform.attribute.value")
            raw = value.to_bytes(2, "big")
        else:
            value_len = body.pull_uint16("transform.attribute.length")
            raw = value_len.to_bytes(2, "big") + body.pull_bytes(
                value_len, "transform.attribute.value"
            )
            if attr_type == TransformAttr.KEY_LENGTH:
                raise ParseError("Key Length must use the TV format", field="transform.key_length")
        if attr_type != TransformAttr.KEY_LENGTH:
            other.push_uint16(attr)
            other.push_bytes(raw)
            continue
        if key_length is not None:
            raise ParseError("Key Length given twice", field="transform.key_length")
        key_length = value
    return Transform(ttype, tid, key_length, bytes(other)), marker == MORE_TRANSFORMS


def _encode_proposal(w: Writer, p: Proposal, last: bool) -> None:
    _check_uint(p.number, 8, "proposal number")
    _check_uint(p.protocol, 8, "protocol id")
    allowed = PROPOSAL_SPI_SIZES.get(p.protocol)
    if allowed is None or len(p.spi) not in allowed:
        raise LocalProtocolError(
            f"proposal SPI of {len(p.spi)} bytes is not valid for protocol {p.protocol}"
        )
    if len(p.transforms) > 255:
        raise LocalProtocolError("a proposal holds at most 255 transforms")
    transforms = Writer()
    for i, t in enumerate(p.transforms):
        _encode_transform(transforms, t, i == len(p.transforms) - 1)
    w.push_uint8(LAST if last else MORE_PROPOSALS)
    w.push_uint8(0)
    length = 8 + len(p.spi) + len(transforms)
    _check_uint(length, 16, "proposal length")
    w.push_uint16(length)
    w.push_uint8(p.number)
    w.push_uint8(p.protocol)
    w.push_uint8(len(p.spi))
    w.push_uint8(len(p.transforms))
    w.push_bytes(p.spi)
    w.push_bytes(bytes(transforms))


def _decode_proposal(r: Reader) -> tuple[Proposal, bool]:
    marker = r.pull_uint8("proposal.last_substruc")
    if marker not in (LAST, MORE_PROPOSALS):
        raise ParseError(f"marker {marker} is neither 0 nor 2", field="proposal.last_substruc")
    r.pull_uint8("proposal.reserved")
    length = r.pull_uint16("proposal.length")
    if length < 8:
        raise ParseError(f"length {length} is below 8", field="proposal.length")
    body = r.sub(length - 4, "proposal.length")
    number = body.pull_uint8("proposal.number")
    protocol = body.pull_uint8("proposal.protocol")
    spi_size = body.pull_uint8("proposal.spi_size")
    count = body.pull_uint8("proposal.transform_count")
    allowed = PROPOSAL_SPI_SIZES.get(protocol)
    if allowed is None:
        raise ParseError(f"protocol {protocol} is not IKE, AH or ESP", field="proposal.protocol")
    if spi_size not in allowed:
        raise ParseError(
            f"SPI size {spi_size} is not valid for protocol {protocol}", field="proposal.spi_size"
        )
    spi = body.pull_bytes(spi_size, "proposal.spi")
    transforms: list[Transform] = []
    more = count > 0
    while more:
        if len(transforms) == count:
            raise ParseError("more transforms than the count says", field="proposal.transforms")
        transform, more = _decode_transform(body)
        transforms.append(transform)
    if len(transforms) != count:
        raise ParseError(
            f"{len(transforms)} transforms, count says {count}", field="proposal.transforms"
        )
    if not body.eof():
        raise ParseError("trailing bytes after the last transform", field="proposal.length")
    return Proposal(number, protocol, spi, tuple(transforms)), marker == MORE_PROPOSALS


def _encode_sa(p: SaPayload) -> bytes:
    if not p.proposals:
        raise LocalProtocolError("an SA payload needs at least one proposal")
    w = Writer()
    for i, proposal in enumerate(p.proposals):
        if i and proposal.number != p.proposals[i - 1].number + 1:
            raise LocalProtocolError("proposal numbers must be consecutive")
        if proposal.number == 0:
            raise LocalProtocolError("proposal numbers start at 1")
        _encode_proposal(w, proposal, i == len(p.proposals) - 1)
    return bytes(w)


def _decode_sa(r: Reader) -> SaPayload:
    proposals: list[Proposal] = []
    more = True
    while more:
        proposal, more = _decode_proposal(r)
        if proposal.number == 0:
            raise ParseError("proposal number 0", field="proposal.number")
        if proposals and proposal.number != proposals[-1].number + 1:
            raise ParseError(
                f"proposal {proposal.number} follows {proposals[-1].number}",
                field="proposal.number",
            )
        proposals.append(proposal)
    if not r.eof():
        raise ParseError("trailing bytes after the last proposal", field="sa.length")
    return SaPayload(tuple(proposals))


# --- KE, ID, CERT, AUTH, Nonce


@dataclass(frozen=True, slots=True)
class KePayload:
    """Key Exchange payload: DH group number and the public value (section 3.4)."""

    group: int
    data: bytes


@dataclass(frozen=True, slots=True)
class IdiPayload:
    """Initiator identification (section 3.5); ``data`` is the identity as on the wire."""

    id_type: int
    data: bytes

    def body(self) -> bytes:
        """``ID Type | RESERVED(3) | data``: the RestOfIDPayload that AUTH signs (2.15)."""
        return _id_body(self.id_type, self.data)


@dataclass(frozen=True, slots=True)
class IdrPayload:
    """Responder identification (section 3.5); ``data`` is the identity as on the wire."""

    id_type: int
    data: bytes

    def body(self) -> bytes:
        """``ID Type | RESERVED(3) | data``: the RestOfIDPayload that AUTH signs (2.15)."""
        return _id_body(self.id_type, self.data)


def _id_body(id_type: int, data: bytes) -> bytes:
    _check_uint(id_type, 8, "id type")
    return bytes((id_type, 0, 0, 0)) + data


@dataclass(frozen=True, slots=True)
class CertPayload:
    """Certificate payload: encoding (e.g. 4 = X.509 signature, DER) and data (3.6)."""

    encoding: int
    data: bytes


@dataclass(frozen=True, slots=True)
class CertReqPayload:
    """Certificate request: encoding and data, for X.509 a concatenation of 20-byte
    SHA-1 hashes of trusted CA public keys (section 3.7); kept as raw bytes."""

    encoding: int
    data: bytes


@dataclass(frozen=True, slots=True)
class AuthPayload:
    """Authentication payload: method and the signature or MAC (section 3.8)."""

    method: int
    data: bytes


@dataclass(frozen=True, slots=True)
class NoncePayload:
    """Nonce payload: 16 to 256 random bytes (section 3.9), checked on decode and encode."""

    data: bytes


def _encode_ke(p: KePayload) -> bytes:
    _check_uint(p.group, 16, "DH group")
    return p.group.to_bytes(2, "big") + b"\x00\x00" + p.data


def _decode_ke(r: Reader) -> KePayload:
    group = r.pull_uint16("ke.group")
    r.pull_uint16("ke.reserved")
    return KePayload(group, r.pull_rest())


def _decode_id_parts(r: Reader) -> tuple[int, bytes]:
    id_type = r.pull_uint8("id.type")
    r.pull_bytes(3, "id.reserved")
    return id_type, r.pull_rest()


def _decode_idi(r: Reader) -> IdiPayload:
    return IdiPayload(*_decode_id_parts(r))


def _decode_idr(r: Reader) -> IdrPayload:
    return IdrPayload(*_decode_id_parts(r))


def _encode_cert_like(encoding: int, data: bytes) -> bytes:
    _check_uint(encoding, 8, "certificate encoding")
    return bytes((encoding,)) + data


def _decode_cert(r: Reader) -> CertPayload:
    return CertPayload(r.pull_uint8("cert.encoding"), r.pull_rest())


def _decode_certreq(r: Reader) -> CertReqPayload:
    return CertReqPayload(r.pull_uint8("certreq.encoding"), r.pull_rest())


def _encode_auth(p: AuthPayload) -> bytes:
    _check_uint(p.method, 8, "auth method")
    return bytes((p.method, 0, 0, 0)) + p.data


def _decode_auth(r: Reader) -> AuthPayload:
    method = r.pull_uint8("auth.method")
    r.pull_bytes(3, "auth.reserved")
    return AuthPayload(method, r.pull_rest())


def _encode_nonce(p: NoncePayload) -> bytes:
    if not NONCE_MIN_LEN <= len(p.data) <= NONCE_MAX_LEN:
        raise LocalProtocolError(f"a nonce is 16 to 256 bytes, not {len(p.data)}")
    return p.data


def _decode_nonce(r: Reader) -> NoncePayload:
    data = r.pull_rest()
    if not NONCE_MIN_LEN <= len(data) <= NONCE_MAX_LEN:
        raise ParseError(f"{len(data)} bytes, not 16 to 256", field="nonce.length")
    return NoncePayload(data)


# --- Notify, Delete, Vendor ID


@dataclass(frozen=True, slots=True)
class NotifyPayload:
    """Notify payload (section 3.10): ``spi`` is empty unless it names a child SA."""

    notify_type: int
    protocol: int = 0
    spi: bytes = b""
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class DeletePayload:
    """Delete payload (section 3.11): no SPIs for the IKE SA, 4-byte SPIs for ESP/AH."""

    protocol: int
    spis: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class VendorIdPayload:
    """Vendor ID payload (section 3.12): opaque bytes."""

    data: bytes


def _encode_notify(p: NotifyPayload) -> bytes:
    _check_uint(p.notify_type, 16, "notify type")
    allowed = NOTIFY_SPI_SIZES.get(p.protocol)
    if allowed is None or len(p.spi) not in allowed:
        raise LocalProtocolError(
            f"notify SPI of {len(p.spi)} bytes is not valid for protocol {p.protocol}"
        )
    w = Writer()
    w.push_uint8(p.protocol)
    w.push_uint8(len(p.spi))
    w.push_uint16(p.notify_type)
    w.push_bytes(p.spi)
    w.push_bytes(p.data)
    return bytes(w)


def _decode_notify(r: Reader) -> NotifyPayload:
    protocol = r.pull_uint8("notify.protocol")
    spi_size = r.pull_uint8("notify.spi_size")
    notify_type = r.pull_uint16("notify.type")
    allowed = NOTIFY_SPI_SIZES.get(protocol)
    if allowed is None:
        raise ParseError(f"protocol {protocol} is unknown", field="notify.protocol")
    if spi_size not in allowed:
        raise ParseError(
            f"SPI size {spi_size} is not valid for protocol {protocol}", field="notify.spi_size"
        )
    spi = r.pull_bytes(spi_size, "notify.spi")
    return NotifyPayload(notify_type, protocol, spi, r.pull_rest())


def _encode_delete(p: DeletePayload) -> bytes:
    spi_size = DELETE_SPI_SIZE.get(p.protocol)
    if spi_size is None:
        raise LocalProtocolError(f"cannot delete an SA of protocol {p.protocol}")
    if spi_size == 0 and p.spis:
        raise LocalProtocolError("deleting the IKE SA names no SPI")
    if any(len(spi) != spi_size for spi in p.spis):
        raise LocalProtocolError(f"delete SPIs must be {spi_size} bytes")
    _check_uint(len(p.spis), 16, "number of SPIs")
    return bytes((p.protocol, spi_size)) + len(p.spis).to_bytes(2, "big") + b"".join(p.spis)


def _decode_delete(r: Reader) -> DeletePayload:
    protocol = r.pull_uint8("delete.protocol")
    spi_size = r.pull_uint8("delete.spi_size")
    count = r.pull_uint16("delete.spi_count")
    expected = DELETE_SPI_SIZE.get(protocol)
    if expected is None:
        raise ParseError(f"protocol {protocol} is not IKE, AH or ESP", field="delete.protocol")
    if spi_size != expected:
        raise ParseError(
            f"SPI size {spi_size} is not {expected} for protocol {protocol}",
            field="delete.spi_size",
        )
    if expected == 0 and count:
        raise ParseError("deleting the IKE SA names no SPI", field="delete.spi_count")
    if r.remaining() != count * spi_size:
        raise ParseError(
            f"{r.remaining()} bytes of SPIs, count says {count}", field="delete.spi_count"
        )
    spis = tuple(r.pull_bytes(spi_size, "delete.spi") for _ in range(count))
    return DeletePayload(protocol, spis)


# --- TS


@dataclass(frozen=True, slots=True)
class TsiPayload:
    """Initiator traffic selectors (section 3.13); IPv4 and IPv6 address ranges."""

    selectors: tuple[TrafficSelector, ...]


@dataclass(frozen=True, slots=True)
class TsrPayload:
    """Responder traffic selectors (section 3.13); IPv4 and IPv6 address ranges."""

    selectors: tuple[TrafficSelector, ...]


def _encode_ts(selectors: tuple[TrafficSelector, ...]) -> bytes:
    if len(selectors) > 255:
        raise LocalProtocolError("a TS payload holds at most 255 selectors")
    w = Writer()
    w.push_uint8(len(selectors))
    w.push_bytes(b"\x00\x00\x00")
    for ts in selectors:
        ts_type = _TS_TYPE_BY_VERSION[ts.version]
        w.push_uint8(ts_type)
        w.push_uint8(ts.protocol)
        w.push_uint16(_TS_LAYOUT[ts_type][0])
        w.push_uint16(ts.start_port)
        w.push_uint16(ts.end_port)
        w.push_bytes(ts.start_addr.packed)
        w.push_bytes(ts.end_addr.packed)
    return bytes(w)


def _decode_selector(r: Reader) -> TrafficSelector:
    ts_type = r.pull_uint8("ts.type")
    layout = _TS_LAYOUT.get(ts_type)
    if layout is None:
        raise ParseError(f"traffic selector type {ts_type} is not supported", field="ts.type")
    protocol = r.pull_uint8("ts.protocol")
    length = r.pull_uint16("ts.length")
    wire_len, addr_len = layout
    if length != wire_len:
        raise ParseError(f"length {length} is not {wire_len}", field="ts.length")
    start_port = r.pull_uint16("ts.start_port")
    end_port = r.pull_uint16("ts.end_port")
    start_raw = r.pull_bytes(addr_len, "ts.start_addr")
    end_raw = r.pull_bytes(addr_len, "ts.end_addr")
    if start_port > end_port:
        # Includes the OPAQUE port encoding (65535-0) of RFC 7296 section 3.13.1,
        # which the policy database cannot express.
        raise ParseError(f"port range {start_port}-{end_port} is empty", field="ts.ports")
    if start_raw > end_raw:
        raise ParseError("address range is empty", field="ts.addresses")
    start = ipaddress.ip_address(start_raw)
    end = ipaddress.ip_address(end_raw)
    return TrafficSelector(start, end, protocol, start_port, end_port)


def _decode_selectors(r: Reader) -> tuple[TrafficSelector, ...]:
    count = r.pull_uint8("ts.count")
    r.pull_bytes(3, "ts.reserved")
    selectors = tuple(_decode_selector(r) for _ in range(count))
    if not r.eof():
        raise ParseError("trailing bytes after the last selector", field="ts.count")
    return selectors


def _decode_tsi(r: Reader) -> TsiPayload:
    return TsiPayload(_decode_selectors(r))


def _decode_tsr(r: Reader) -> TsrPayload:
    return TsrPayload(_decode_selectors(r))


# --- CP


@dataclass(frozen=True, slots=True)
class CpPayload:
    """Configuration payload (section 3.15): type and (attribute type, value) pairs.

    Attribute types are 15-bit; kipsec assigns no addresses, the payload is decoded so
    that a peer's request can be answered or ignored knowingly.
    """

    cfg_type: int
    attributes: tuple[tuple[int, bytes], ...]


def _encode_cp(p: CpPayload) -> bytes:
    _check_uint(p.cfg_type, 8, "CFG type")
    w = Writer()
    w.push_uint8(p.cfg_type)
    w.push_bytes(b"\x00\x00\x00")
    for attr_type, value in p.attributes:
        _check_uint(attr_type, 15, "CP attribute type")
        _check_uint(len(value), 16, "CP attribute length")
        w.push_uint16(attr_type)
        w.push_uint16(len(value))
        w.push_bytes(value)
    return bytes(w)


def _decode_cp(r: Reader) -> CpPayload:
    cfg_type = r.pull_uint8("cp.type")
    r.pull_bytes(3, "cp.reserved")
    attributes: list[tuple[int, bytes]] = []
    while not r.eof():
        attr_type = r.pull_uint16("cp.attribute.type") & _CP_ATTR_TYPE_MASK
        length = r.pull_uint16("cp.attribute.length")
        attributes.append((attr_type, r.pull_bytes(length, "cp.attribute.value")))
    return CpPayload(cfg_type, tuple(attributes))


# --- VID, unknown, SK, SKF


@dataclass(frozen=True, slots=True)
class UnknownPayload:
    """A payload type kipsec does not implement, kept as raw body bytes.

    Only non-critical ones reach the engine (which ignores them, RFC 7296 section
    2.5); a critical one makes the decoder raise ``UnsupportedCriticalPayload``.
    """

    payload_type: int
    critical: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class EncryptedPayload:
    """An SK payload as seen before decryption (section 3.14).

    ``first_inner`` is its Next Payload field: the type of the first payload inside.
    ``data`` is everything after the generic header: IV, ciphertext and ICV.
    Produced by :func:`.message.decode_message` for dispatch; :mod:`.sk` opens it.
    """

    first_inner: int
    data: bytes


@dataclass(frozen=True, slots=True)
class EncryptedFragment:
    """An SKF payload (RFC 7383 section 2.5): fragment ``number`` of ``total`` (1-based).

    ``first_inner`` is the first inner payload type in fragment 1 and 0 in the others.
    ``data`` is everything after the Total Fragments field: IV, ciphertext and ICV.
    """

    number: int
    total: int
    first_inner: int
    data: bytes


def _decode_vendor_id(r: Reader) -> VendorIdPayload:
    return VendorIdPayload(r.pull_rest())


def _encode_fragment(p: EncryptedFragment) -> bytes:
    if not 1 <= p.number <= p.total <= 0xFFFF:
        raise LocalProtocolError(f"fragment {p.number} of {p.total} is out of range")
    return p.number.to_bytes(2, "big") + p.total.to_bytes(2, "big") + p.data


def decode_fragment_body(first_inner: int, r: Reader) -> EncryptedFragment:
    """The SKF body after its generic header; numbers are checked (1 <= number <= total)."""
    number = r.pull_uint16("skf.fragment_number")
    total = r.pull_uint16("skf.total_fragments")
    if number == 0 or number > total:
        raise ParseError(f"fragment {number} of {total}", field="skf.fragment_number")
    return EncryptedFragment(number, total, first_inner, r.pull_rest())


Payload = (
    SaPayload
    | KePayload
    | IdiPayload
    | IdrPayload
    | CertPayload
    | CertReqPayload
    | AuthPayload
    | NoncePayload
    | NotifyPayload
    | DeletePayload
    | VendorIdPayload
    | TsiPayload
    | TsrPayload
    | CpPayload
    | UnknownPayload
    | EncryptedPayload
    | EncryptedFragment
)
"""Every payload object the codec produces or accepts."""

PAYLOAD_TYPE: dict[type, PayloadType] = {
    SaPayload: PayloadType.SA,
    KePayload: PayloadType.KE,
    IdiPayload: PayloadType.IDi,
    IdrPayload: PayloadType.IDr,
    CertPayload: PayloadType.CERT,
    CertReqPayload: PayloadType.CERTREQ,
    AuthPayload: PayloadType.AUTH,
    NoncePayload: PayloadType.NONCE,
    NotifyPayload: PayloadType.NOTIFY,
    DeletePayload: PayloadType.DELETE,
    VendorIdPayload: PayloadType.VENDOR_ID,
    TsiPayload: PayloadType.TSi,
    TsrPayload: PayloadType.TSr,
    CpPayload: PayloadType.CP,
    EncryptedPayload: PayloadType.SK,
    EncryptedFragment: PayloadType.SKF,
}


def _encode_id(p: IdiPayload | IdrPayload) -> bytes:
    return p.body()


def _encode_cert(p: CertPayload | CertReqPayload) -> bytes:
    return _encode_cert_like(p.encoding, p.data)


def _encode_raw(p: VendorIdPayload | UnknownPayload | EncryptedPayload) -> bytes:
    return p.data


def _encode_tsx(p: TsiPayload | TsrPayload) -> bytes:
    return _encode_ts(p.selectors)


# Body encoders, by class. SK, SKF, Vendor ID and unknown bodies are raw bytes.
_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    SaPayload: _encode_sa,
    KePayload: _encode_ke,
    IdiPayload: _encode_id,
    IdrPayload: _encode_id,
    CertPayload: _encode_cert,
    CertReqPayload: _encode_cert,
    AuthPayload: _encode_auth,
    NoncePayload: _encode_nonce,
    NotifyPayload: _encode_notify,
    DeletePayload: _encode_delete,
    VendorIdPayload: _encode_raw,
    TsiPayload: _encode_tsx,
    TsrPayload: _encode_tsx,
    CpPayload: _encode_cp,
    UnknownPayload: _encode_raw,
    EncryptedPayload: _encode_raw,
    EncryptedFragment: _encode_fragment,
}

# Body decoders of the payloads kipsec implements, by payload type number. SK and SKF
# are not here: their Next Payload field means something else, message.py handles them.
DECODERS: dict[int, Callable[[Reader], Payload]] = {
    PayloadType.SA: _decode_sa,
    PayloadType.KE: _decode_ke,
    PayloadType.IDi: _decode_idi,
    PayloadType.IDr: _decode_idr,
    PayloadType.CERT: _decode_cert,
    PayloadType.CERTREQ: _decode_certreq,
    PayloadType.AUTH: _decode_auth,
    PayloadType.NONCE: _decode_nonce,
    PayloadType.NOTIFY: _decode_notify,
    PayloadType.DELETE: _decode_delete,
    PayloadType.VENDOR_ID: _decode_vendor_id,
    PayloadType.TSi: _decode_tsi,
    PayloadType.TSr: _decode_tsr,
    PayloadType.CP: _decode_cp,
}


def payload_type(payload: Payload) -> int:
    """The Payload Type number of ``payload`` (its own field for an UnknownPayload)."""
    if isinstance(payload, UnknownPayload):
        return payload.payload_type
    return PAYLOAD_TYPE[type(payload)]


def encode_body(payload: Payload) -> bytes:
    """The payload's body, without the generic header; LocalProtocolError if unencodable."""
    encoder = _ENCODERS.get(type(payload))
    if encoder is None:
        raise LocalProtocolError(f"{type(payload).__name__} is not an IKEv2 payload")
    return encoder(payload)


def decode_body(ptype: int, body: bytes) -> Payload:
    """Decode the body of a payload kipsec implements; ParseError if malformed.

    An unimplemented ``ptype`` is a LocalProtocolError: the caller (message.py)
    decides what unknown types become, before calling this.
    """
    decoder = DECODERS.get(ptype)
    if decoder is None:
        raise LocalProtocolError(f"payload type {ptype} has no decoder")
    r = Reader(body)
    payload = decoder(r)
    if not r.eof():
        raise ParseError("trailing bytes", field=f"payload {ptype}")
    return payload
