"""AH, the IP Authentication Header (RFC 4302), with HMAC-SHA2 ICVs (RFC 4868).

AH gives integrity and data-origin authentication without confidentiality. Its ICV
covers the IP header too (with the fields routers may change zeroed), so **AH cannot
cross a NAT**: a NAT rewrites the addresses AH authenticates and every packet would
fail the check. For the same reason AH cannot be UDP-encapsulated (RFC 3948 covers ESP
only): :class:`~kipsec_sidecar.core.ipsec_sa.IpsecSa` refuses an AH SA with
``udp_encap=True`` and :func:`encapsulate` refuses it again. Use ESP where a NAT may sit.

The ICV input (RFC 4302 section 3.3.3.1) is:

- IPv4 header with TOS (DSCP+ECN), flags + fragment offset, TTL and header checksum
  zeroed. IPv4 **options are rejected** with ParseError(field="ipv4.options") rather
  than classified option by option (Appendix A1): pod traffic carries none.
- IPv6 fixed header with traffic class, flow label and hop limit zeroed. **Extension
  headers before AH are rejected** with ParseError(field="ipv6.extension"), instead of
  applying the mutable-option and Routing-header rules of Appendix A2; extension
  headers after AH are payload and covered as they are.
- The AH header with the ICV zeroed (the alignment padding after it as sent: zeros).
- The payload, then the ESN high 32 bits when ESN is on (section 2.5.1), not sent.

The AH header is 12 bytes + ICV, padded with zeros to a multiple of 4 bytes (IPv4) or 8
bytes (IPv6); its Payload Length field is that length in 32-bit words minus 2.
Inbound order as in ESP: replay check, ICV check (constant time), window update.
"""

from __future__ import annotations

import hmac
import struct

from .errors import IntegrityError, LocalProtocolError, ParseError
from .esp_ciphers import HmacIcv
from .ip import (
    FRAGMENT_BITS,
    IPV4_MIN_HEADER_LEN,
    IPV6_HEADER_LEN,
    IpProto,
    build_outer,
    l3_info,
    locate_ipsec_header,
    rewrite_ipv4,
)
from .ipsec_sa import IpsecSa, Mode

AH_FIXED_LEN = 12
_FIXED = struct.Struct("!BBHII")
_TUNNEL_NEXT_HEADER = {4: IpProto.IPIP, 6: IpProto.IPV6}
_INNER_VERSION: dict[int, int] = {IpProto.IPIP: 4, IpProto.IPV6: 6}
_ALIGNMENT = {4: 4, 6: 8}


def _icv_of(sa: IpsecSa) -> HmacIcv:
    if sa.ah_icv is None:
        raise LocalProtocolError(f"SA {sa.spi:#010x} is not an AH SA")
    if sa.udp_encap:
        raise LocalProtocolError("AH cannot be UDP-encapsulated: it cannot cross NAT")
    return sa.ah_icv


def ah_length(icv_len: int, ip_version: int) -> int:
    """Bytes of AH header (fixed part + ICV + padding) for an ICV length and IP version."""
    align = _ALIGNMENT[ip_version]
    return -(-(AH_FIXED_LEN + icv_len) // align) * align


def zero_mutable(header: bytes) -> bytes:
    """The IP header as the ICV sees it: mutable fields zeroed, options/extensions refused.

    ``header`` is exactly the IPv4 header (20 bytes) or the IPv6 fixed header (40).
    """
    if header[0] >> 4 == 4:
        if len(header) != IPV4_MIN_HEADER_LEN:
            raise ParseError("AH does not support IPv4 options", field="ipv4.options")
        return b"".join(
            (
                header[:1],
                b"\x00",
                header[2:6],
                b"\x00\x00\x00",
                header[9:10],
                b"\x00\x00",
                header[12:20],
            )
        )
    if len(header) != IPV6_HEADER_LEN:
        raise ParseError(
            "AH does not support IPv6 extension headers before it", field="ipv6.extension"
        )
    return b"\x60\x00\x00\x00" + header[4:7] + b"\x00" + header[8:40]


def _ah_header(next_header: int, length: int, spi: int, seq: int) -> bytes:
    return _FIXED.pack(next_header, length // 4 - 2, 0, spi, seq)


def _sign(icv: HmacIcv, sa: IpsecSa, ip_header: bytes, next_header: int, payload: bytes) -> bytes:
    """Assemble IP header | AH (with its ICV) | payload for an already final IP header."""
    version = ip_header[0] >> 4
    length = ah_length(icv.icv_len, version)
    seq = sa.next_sequence()
    fixed = _ah_header(next_header, length, sa.spi, seq & 0xFFFFFFFF)
    zeros = bytes(length - AH_FIXED_LEN)
    seq_high = (seq >> 32).to_bytes(4, "big") if sa.esn else b""
    value = icv.compute(zero_mutable(ip_header), fixed, zeros, payload, seq_high)
    sa.count(len(payload))
    return b"".join((ip_header, fixed, value, zeros[icv.icv_len :], payload))


def encapsulate(sa: IpsecSa, packet: bytes) -> bytes:
    """Authenticate one IP packet with AH in the SA's mode; returns the packet to send.

    Raises SequenceExhausted / LifetimeExpired from the SA, ParseError for a malformed
    packet or one with IPv4 options / IPv6 extension headers (see the module docstring).
    """
    icv = _icv_of(sa)
    version, hlen, total, protocol, tos, frag = l3_info(packet)
    packet = packet[:total]
    if sa.mode is Mode.TUNNEL:
        length = ah_length(icv.icv_len, sa.src.version)
        outer = build_outer(
            sa.src_packed,
            sa.dst_packed,
            IpProto.AH,
            length + len(packet),
            tos=tos,
            identification=sa.next_seq,
        )
        return _sign(icv, sa, outer, _TUNNEL_NEXT_HEADER[version], packet)
    length = ah_length(icv.icv_len, version)
    if version == 4:
        if frag & FRAGMENT_BITS:
            raise ParseError("fragmented packet: reassemble first", field="ipv4.fragment")
        if hlen != IPV4_MIN_HEADER_LEN:
            raise ParseError("AH does not support IPv4 options", field="ipv4.options")
        payload = packet[IPV4_MIN_HEADER_LEN:]
        header = rewrite_ipv4(
            packet[:IPV4_MIN_HEADER_LEN],
            protocol=IpProto.AH,
            total_length=IPV4_MIN_HEADER_LEN + length + len(payload),
        )
        return _sign(icv, sa, header, protocol, payload)
    _refuse_ipv6_extensions(protocol)
    payload = packet[IPV6_HEADER_LEN:]
    header = _ipv6_fixed(packet[:IPV6_HEADER_LEN], IpProto.AH, length + len(payload))
    return _sign(icv, sa, header, protocol, payload)


def decapsulate(sa: IpsecSa, data: bytes) -> bytes:
    """Verify and strip AH from one received packet; returns the inner/original packet."""
    icv = _icv_of(sa)
    sa.ensure_usable()
    start, _, end = locate_ipsec_header(data, IpProto.AH)
    version = data[0] >> 4
    if start + AH_FIXED_LEN > end:
        raise ParseError("truncated AH header", field="ah")
    next_header, plen, _, spi, seq_low = _FIXED.unpack_from(data, start)
    length = (plen + 2) * 4
    if length < AH_FIXED_LEN + icv.icv_len or start + length > end:
        raise ParseError(f"AH length {length} is inconsistent", field="ah.payload_length")
    if length % _ALIGNMENT[version]:
        raise ParseError(f"AH length {length} is misaligned for IPv{version}", field="ah")
    if spi != sa.spi:
        raise ParseError(f"SPI {spi:#010x} is not this SA's {sa.spi:#010x}", field="ah.spi")
    ip_header = zero_mutable(data[:start])
    seq = sa.replay.check(seq_low)
    seq_high = (seq >> 32).to_bytes(4, "big") if sa.esn else b""
    icv_end = start + AH_FIXED_LEN + icv.icv_len
    payload = data[start + length : end]
    expected = icv.compute(
        ip_header,
        data[start : start + AH_FIXED_LEN],
        bytes(icv.icv_len),
        data[icv_end : start + length],
        payload,
        seq_high,
    )
    if not hmac.compare_digest(expected, data[start + AH_FIXED_LEN : icv_end]):
        raise IntegrityError("AH ICV did not verify")
    sa.replay.accept(seq)
    sa.count(len(payload))
    if sa.mode is Mode.TUNNEL:
        want = _INNER_VERSION.get(next_header)
        if want is None:
            raise ParseError(
                f"next header {next_header} is not an IP packet in tunnel mode",
                field="ah.next_header",
            )
        inner_version, _, inner_total, _, _, _ = l3_info(payload)
        if inner_version != want:
            raise ParseError("next header and inner IP version disagree", field="ah.next_header")
        return payload[:inner_total]
    if version == 4:
        header = rewrite_ipv4(data[:start], protocol=next_header, total_length=start + len(payload))
        return header + payload
    return _ipv6_fixed(data[:start], next_header, len(payload)) + payload


def _refuse_ipv6_extensions(next_header: int) -> None:
    if next_header in (
        IpProto.HOPOPT,
        IpProto.ROUTING,
        IpProto.DSTOPTS,
        IpProto.FRAGMENT,
    ):
        raise ParseError(
            "AH does not support IPv6 extension headers before it", field="ipv6.extension"
        )


def _ipv6_fixed(header: bytes, next_header: int, payload_len: int) -> bytes:
    if payload_len > 0xFFFF:
        raise ParseError(f"payload of {payload_len} bytes exceeds 65535", field="ipv6.payload")
    return header[:4] + payload_len.to_bytes(2, "big") + bytes((next_header,)) + header[7:40]
