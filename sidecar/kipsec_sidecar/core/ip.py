"""IPv4 and IPv6 headers: parse, build, checksum, and the 5-tuple a policy lookup needs.

The datapath sees whole IP packets as ``bytes``. These functions read them without
copying more than the header, and raise only :class:`~kipsec_sidecar.core.errors.ParseError`
on malformed input (a truncated header, a length field that lies, an extension-header
chain that is too long), never ``IndexError`` or ``struct.error``.

The per-packet path (:func:`l3_info`, :func:`build_outer`) reads and writes with
precompiled ``struct`` formats after explicit length checks instead of going through
``buffer.Reader`` field by field: profiling showed the Reader calls and address objects
taking most of the ESP datapath's time. :func:`parse_ip` still gives a typed header with
address objects for everything that is not per-packet.

IPv6 extension headers are walked up to :data:`MAX_EXTENSION_HEADERS` deep, so a hostile
chain cannot make a lookup loop for long.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from .errors import ParseError
from .traffic_selectors import IPAddress

IPV4_MIN_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
MAX_EXTENSION_HEADERS = 8
DEFAULT_TTL = 64

IPV4_FLAG_DF = 0x4000
IPV4_FLAG_MF = 0x2000
IPV4_FRAGMENT_OFFSET_MASK = 0x1FFF
FRAGMENT_BITS = IPV4_FLAG_MF | IPV4_FRAGMENT_OFFSET_MASK  # any of them set: a fragment


class IpProto(IntEnum):
    """IANA protocol numbers the cores care about (IPv4 protocol / IPv6 next header)."""

    HOPOPT = 0
    ICMP = 1
    IPIP = 4  # IPv4 encapsulated: the next header of a tunnel-mode ESP/AH carrying IPv4
    TCP = 6
    UDP = 17
    IPV6 = 41  # IPv6 encapsulated
    ROUTING = 43
    FRAGMENT = 44
    ESP = 50
    AH = 51
    ICMPV6 = 58
    NONE = 59  # "no next header": an ESP dummy packet (RFC 4303 section 2.6)
    DSTOPTS = 60
    SCTP = 132
    MOBILITY = 135
    UDPLITE = 136


# Extension headers whose length is (8 * (hdr_ext_len + 1)) bytes.
_GENERIC_EXTENSIONS = frozenset({IpProto.HOPOPT, IpProto.ROUTING, IpProto.DSTOPTS})
_WALKED_EXTENSIONS = _GENERIC_EXTENSIONS | {IpProto.FRAGMENT, IpProto.AH}
# Upper-layer protocols whose first four bytes are the source and destination port.
_PORT_PROTOCOLS = frozenset({IpProto.TCP, IpProto.UDP, IpProto.SCTP, IpProto.UDPLITE})
_ICMP_PROTOCOLS = frozenset({IpProto.ICMP, IpProto.ICMPV6})


@dataclass(frozen=True, slots=True)
class IPv4Header:
    """A parsed IPv4 header; ``header_len`` includes options (``options`` holds them)."""

    tos: int
    total_length: int
    identification: int
    flags_fragment: int  # the 16-bit field: 3 flag bits then the 13-bit offset
    ttl: int
    protocol: int
    checksum: int
    src: ipaddress.IPv4Address
    dst: ipaddress.IPv4Address
    options: bytes

    version = 4

    @property
    def header_len(self) -> int:
        return IPV4_MIN_HEADER_LEN + len(self.options)

    @property
    def is_fragment(self) -> bool:
        """True for any fragment of a datagram (MF set or a non-zero offset)."""
        return bool(self.flags_fragment & (IPV4_FLAG_MF | IPV4_FRAGMENT_OFFSET_MASK))


@dataclass(frozen=True, slots=True)
class IPv6Header:
    """A parsed IPv6 fixed header (extension headers are walked separately)."""

    traffic_class: int
    flow_label: int
    payload_length: int
    next_header: int
    hop_limit: int
    src: ipaddress.IPv6Address
    dst: ipaddress.IPv6Address

    version = 6
    header_len = IPV6_HEADER_LEN

    @property
    def total_length(self) -> int:
        return IPV6_HEADER_LEN + self.payload_length


IPHeader = IPv4Header | IPv6Header


@dataclass(frozen=True, slots=True)
class ExtensionChain:
    """Where an IPv6 packet's upper layer starts, found by walking its extension headers.

    ``protocol`` is the upper-layer protocol (or ESP/AH/NONE, which end the walk);
    ``offset`` is where that protocol's header starts in the packet; ``nh_offset`` is the
    byte holding the Next Header value that names it (6 for the fixed header), so a
    transport-mode encapsulator can rewrite it. ``fragment_offset`` is non-zero when a
    Fragment header says this is not the first fragment (then there are no ports).
    """

    protocol: int
    offset: int
    nh_offset: int
    fragmented: bool
    fragment_offset: int


@dataclass(frozen=True, slots=True)
class FiveTuple:
    """The selector fields of a packet, as an SPD lookup needs them.

    ``src_port``/``dst_port`` are None for protocols without ports and for non-first
    fragments. For ICMP and ICMPv6 both carry ``type << 8 | code``, the packing RFC 4301
    section 4.4.1.1 and RFC 7296 section 3.13.1 use for ICMP selectors.
    """

    src: IPAddress
    dst: IPAddress
    protocol: int
    src_port: int | None
    dst_port: int | None


def ipv4_checksum(header: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``header``; 0 when computed over a valid header."""
    if len(header) == IPV4_MIN_HEADER_LEN:
        total: int = sum(_WORDS_20.unpack(header))
    else:
        if len(header) % 2:
            header += b"\x00"
        total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_version(data: bytes) -> int:
    """The version nibble of a packet; ParseError when empty or neither 4 nor 6."""
    if not data:
        raise ParseError("empty packet", field="ip.version")
    version = data[0] >> 4
    if version not in (4, 6):
        raise ParseError(f"IP version {version} is neither 4 nor 6", field="ip.version")
    return version


_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6_FIRST = struct.Struct("!IHBB")
_IPV4_HEAD = struct.Struct("!BBHHHBB")  # the 10 bytes before the checksum
_WORDS_20 = struct.Struct("!10H")


def l3_info(data: bytes) -> tuple[int, int, int, int, int, int]:
    """The per-packet fast path: (version, header length, total length, protocol, tos, frag).

    For IPv6, header length is the fixed 40 bytes, protocol is the fixed header's Next
    Header, tos is the traffic class and frag is 0. Builds no objects, so the datapath
    can afford it on every packet; :func:`parse_ip` gives the full, typed header.
    Raises ParseError like :func:`parse_ip` on a truncated header or a lying length.
    """
    if len(data) >= IPV4_MIN_HEADER_LEN and data[0] >> 4 == 4:
        ver_ihl, tos, total, _, frag, _, proto, _, _, _ = _IPV4.unpack_from(data)
        ihl = (ver_ihl & 0x0F) * 4
        if ihl < IPV4_MIN_HEADER_LEN:
            raise ParseError(f"header length {ihl} is below 20", field="ipv4.ihl")
        if not ihl <= total <= len(data):
            raise ParseError(
                f"total length {total} does not fit header {ihl} and packet {len(data)}",
                field="ipv4.total_length",
            )
        return 4, ihl, total, proto, tos, frag
    if len(data) >= IPV6_HEADER_LEN and data[0] >> 4 == 6:
        first, plen, nh, _ = _IPV6_FIRST.unpack_from(data)
        if IPV6_HEADER_LEN + plen > len(data):
            raise ParseError(
                f"payload length {plen} exceeds the {len(data) - IPV6_HEADER_LEN} bytes present",
                field="ipv6.payload_length",
            )
        return 6, IPV6_HEADER_LEN, IPV6_HEADER_LEN + plen, nh, (first >> 20) & 0xFF, 0
    ip_version(data)
    raise ParseError(f"{len(data)} bytes is shorter than an IP header", field="ip.header")


def parse_ipv4(data: bytes) -> IPv4Header:
    """Parse an IPv4 header and check its lengths against ``data`` (checksum not verified).

    ``total_length`` may be shorter than ``data`` (link-layer padding) but never longer.
    """
    if not data or data[0] >> 4 != 4:
        raise ParseError(
            f"version {data[0] >> 4 if data else None}, expected 4", field="ipv4.version"
        )
    if len(data) < IPV4_MIN_HEADER_LEN:
        raise ParseError(f"{len(data)} bytes is shorter than 20", field="ipv4.header")
    _, ihl, total, protocol, tos, frag = l3_info(data)
    _, _, _, ident, _, ttl, _, checksum, src, dst = _IPV4.unpack_from(data)
    return IPv4Header(
        tos,
        total,
        ident,
        frag,
        ttl,
        protocol,
        checksum,
        ipaddress.IPv4Address(src),
        ipaddress.IPv4Address(dst),
        data[IPV4_MIN_HEADER_LEN:ihl],
    )


def parse_ipv6(data: bytes) -> IPv6Header:
    """Parse the IPv6 fixed header; ``payload_length`` must fit in ``data``.

    A zero payload length with a Hop-by-Hop jumbo option (RFC 2675) is not supported.
    """
    if not data or data[0] >> 4 != 6:
        raise ParseError(
            f"version {data[0] >> 4 if data else None}, expected 6", field="ipv6.version"
        )
    if len(data) < IPV6_HEADER_LEN:
        raise ParseError(f"{len(data)} bytes is shorter than 40", field="ipv6.header")
    _, _, total, next_header, traffic_class, _ = l3_info(data)
    first, _, _, hop_limit = _IPV6_FIRST.unpack_from(data)
    return IPv6Header(
        traffic_class,
        first & 0xFFFFF,
        total - IPV6_HEADER_LEN,
        next_header,
        hop_limit,
        ipaddress.IPv6Address(data[8:24]),
        ipaddress.IPv6Address(data[24:40]),
    )


def parse_ip(data: bytes) -> IPHeader:
    """Parse an IPv4 or IPv6 header, chosen by the version nibble."""
    return parse_ipv4(data) if ip_version(data) == 4 else parse_ipv6(data)


def build_ipv4(
    src: ipaddress.IPv4Address,
    dst: ipaddress.IPv4Address,
    protocol: int,
    payload_len: int,
    *,
    tos: int = 0,
    identification: int = 0,
    flags_fragment: int = 0,
    ttl: int = DEFAULT_TTL,
) -> bytes:
    """A 20-byte IPv4 header (no options) with a correct checksum."""
    total = IPV4_MIN_HEADER_LEN + payload_len
    if total > 0xFFFF:
        raise ParseError(f"packet of {total} bytes exceeds 65535", field="ipv4.total_length")
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        tos & 0xFF,
        total,
        identification & 0xFFFF,
        flags_fragment & 0xFFFF,
        ttl & 0xFF,
        protocol,
        0,
        src.packed,
        dst.packed,
    )
    checksum = ipv4_checksum(header)
    return header[:10] + checksum.to_bytes(2, "big") + header[12:]


def rewrite_ipv4(header: bytes, *, protocol: int, total_length: int) -> bytes:
    """A copy of an IPv4 header (with options) with new protocol and length, checksum fixed."""
    if total_length > 0xFFFF:
        raise ParseError(f"packet of {total_length} bytes exceeds 65535", field="ipv4.total_length")
    out = bytearray(header)
    out[2:4] = total_length.to_bytes(2, "big")
    out[9] = protocol
    out[10:12] = b"\x00\x00"
    out[10:12] = ipv4_checksum(bytes(out)).to_bytes(2, "big")
    return bytes(out)


def build_ipv6(
    src: ipaddress.IPv6Address,
    dst: ipaddress.IPv6Address,
    next_header: int,
    payload_len: int,
    *,
    traffic_class: int = 0,
    flow_label: int = 0,
    hop_limit: int = DEFAULT_TTL,
) -> bytes:
    """A 40-byte IPv6 fixed header."""
    if payload_len > 0xFFFF:
        raise ParseError(
            f"payload of {payload_len} bytes exceeds 65535", field="ipv6.payload_length"
        )
    first = (6 << 28) | ((traffic_class & 0xFF) << 20) | (flow_label & 0xFFFFF)
    return struct.pack(
        "!IHBB16s16s", first, payload_len, next_header, hop_limit, src.packed, dst.packed
    )


def walk_ipv6_extensions(
    data: bytes, header: IPv6Header, stop_at: int | None = None
) -> ExtensionChain:
    """Follow the Next Header chain of an IPv6 packet to its upper layer.

    Stops at the first header that is not Hop-by-Hop, Routing, Destination Options,
    Fragment or AH (so ESP, whose payload is opaque, ends the walk too), or at
    ``stop_at`` (AH processing stops at AH). Raises ParseError when a header is
    truncated or the chain exceeds :data:`MAX_EXTENSION_HEADERS`.
    """
    end = IPV6_HEADER_LEN + header.payload_length
    nh = header.next_header
    nh_offset = 6
    offset = IPV6_HEADER_LEN
    fragmented = False
    fragment_offset = 0
    for _ in range(MAX_EXTENSION_HEADERS):
        if nh == stop_at:
            break
        if nh in _GENERIC_EXTENSIONS:
            length = _ext_length(data, offset, end, 8, 8, "ipv6.extension")
        elif nh == IpProto.FRAGMENT:
            length = 8
            if offset + length > end:
                raise ParseError("truncated fragment header", field="ipv6.fragment")
            fragmented = True
            fragment_offset = int.from_bytes(data[offset + 2 : offset + 4], "big") >> 3
        elif nh == IpProto.AH:
            length = _ext_length(data, offset, end, 4, 8, "ipv6.ah")
        else:
            return ExtensionChain(nh, offset, nh_offset, fragmented, fragment_offset)
        nh_offset = offset
        nh = data[offset]
        offset += length
        if fragment_offset:
            # Non-first fragment: what follows is the middle of a datagram, not a header.
            break
    else:
        if nh not in _WALKED_EXTENSIONS or nh == stop_at:
            return ExtensionChain(nh, offset, nh_offset, fragmented, fragment_offset)
        raise ParseError(
            f"more than {MAX_EXTENSION_HEADERS} extension headers", field="ipv6.extension"
        )
    return ExtensionChain(nh, offset, nh_offset, fragmented, fragment_offset)


def _ext_length(data: bytes, offset: int, end: int, unit: int, base: int, field: str) -> int:
    """Length of an extension header whose second byte counts ``unit``-byte words."""
    if offset + 2 > end:
        raise ParseError("truncated extension header", field=field)
    length = (data[offset + 1] + 1) * unit if unit == 8 else (data[offset + 1] + 2) * unit
    if length < base or offset + length > end:
        raise ParseError(f"extension header of {length} bytes overruns the packet", field=field)
    return length


def upper_layer(data: bytes) -> tuple[IPHeader, int, int, bool]:
    """(header, upper-layer protocol, its offset, ports-readable) for any IP packet."""
    header = parse_ip(data)
    if isinstance(header, IPv4Header):
        first_fragment = not header.flags_fragment & IPV4_FRAGMENT_OFFSET_MASK
        return header, header.protocol, header.header_len, first_fragment
    chain = walk_ipv6_extensions(data, header)
    return header, chain.protocol, chain.offset, chain.fragment_offset == 0


def five_tuple(data: bytes) -> FiveTuple:
    """Extract (src, dst, protocol, ports) from a packet for an SPD lookup.

    Ports are None when the protocol has none, when the packet is a non-first fragment,
    or when the transport header is too short to hold them (a truncated first fragment
    must not be mistaken for port 0).
    """
    header, protocol, offset, first = upper_layer(data)
    end = header.total_length
    src_port: int | None = None
    dst_port: int | None = None
    if first and protocol in _PORT_PROTOCOLS and offset + 4 <= end:
        src_port = int.from_bytes(data[offset : offset + 2], "big")
        dst_port = int.from_bytes(data[offset + 2 : offset + 4], "big")
    elif first and protocol in _ICMP_PROTOCOLS and offset + 2 <= end:
        src_port = dst_port = int.from_bytes(data[offset : offset + 2], "big")
    return FiveTuple(header.src, header.dst, protocol, src_port, dst_port)


def ipv6_ipsec_insertion_point(data: bytes, header: IPv6Header) -> tuple[int, int, int]:
    """Where transport-mode ESP/AH goes in an IPv6 packet: (offset, nh_offset, next header).

    After Hop-by-Hop and Routing headers, and after Destination Options that precede a
    Routing header (they are read by intermediate nodes); before everything else (RFC
    4303 section 3.1.1, RFC 4302 section 3.1.1). Fragments are refused: IPsec applies
    to whole datagrams.
    """
    end = IPV6_HEADER_LEN + header.payload_length
    nh = header.next_header
    nh_offset = 6
    offset = IPV6_HEADER_LEN
    for _ in range(MAX_EXTENSION_HEADERS):
        if nh == IpProto.FRAGMENT:
            raise ParseError("fragmented packet: reassemble first", field="ipv6.fragment")
        if nh in (IpProto.HOPOPT, IpProto.ROUTING):
            length = _ext_length(data, offset, end, 8, 8, "ipv6.extension")
        elif nh == IpProto.DSTOPTS:
            length = _ext_length(data, offset, end, 8, 8, "ipv6.extension")
            if offset + length >= end or data[offset] != IpProto.ROUTING:
                return offset, nh_offset, nh
        else:
            return offset, nh_offset, nh
        nh_offset = offset
        nh = data[offset]
        offset += length
    raise ParseError(f"more than {MAX_EXTENSION_HEADERS} extension headers", field="ipv6.extension")


def build_outer(
    src: bytes,
    dst: bytes,
    protocol: int,
    payload_len: int,
    *,
    tos: int = 0,
    identification: int = 0,
) -> bytes:
    """A tunnel-mode outer header from packed addresses (4 bytes: IPv4, 16: IPv6).

    The per-packet path: the SA keeps its addresses packed so no address object is
    built here. ``tos`` (DSCP and ECN) is copied from the inner header by the caller,
    as RFC 4301 section 5.1.2.1 and RFC 6040 normal mode suggest. The IPv4 header has
    no options, DF clear and TTL 64; the IPv6 one flow label 0 and hop limit 64.
    """
    if len(src) == 4 and len(dst) == 4:
        total = IPV4_MIN_HEADER_LEN + payload_len
        if total > 0xFFFF:
            raise ParseError(f"packet of {total} bytes exceeds 65535", field="ipv4.total_length")
        head = _IPV4_HEAD.pack(
            0x45, tos & 0xFF, total, identification & 0xFFFF, 0, DEFAULT_TTL, protocol
        )
        addrs = src + dst
        return head + ipv4_checksum(head + b"\x00\x00" + addrs).to_bytes(2, "big") + addrs
    if len(src) == 16 and len(dst) == 16:
        if payload_len > 0xFFFF:
            raise ParseError(
                f"payload of {payload_len} bytes exceeds 65535", field="ipv6.payload_length"
            )
        first = (6 << 28) | ((tos & 0xFF) << 20)
        return _IPV6_FIRST.pack(first, payload_len, protocol, DEFAULT_TTL) + src + dst
    raise ParseError("outer addresses mix IPv4 and IPv6", field="ip.outer")


def locate_ipsec_header(data: bytes, protocol: int) -> tuple[int, int, int]:
    """Find the ESP or AH header in a received packet: (start, nh_offset, end).

    ``nh_offset`` is the byte naming ``protocol`` (IPv4: the protocol field, 9). Raises
    ParseError when the packet is fragmented (reassembly happens before IPsec) or does
    not carry ``protocol`` where expected.
    """
    version, hlen, total, proto, _, frag = l3_info(data)
    if version == 4:
        if frag & FRAGMENT_BITS:
            raise ParseError("fragmented packet: reassemble first", field="ipv4.fragment")
        if proto != protocol:
            raise ParseError(f"protocol {proto}, expected {protocol}", field="ipv4")
        return hlen, 9, total
    if proto == protocol:
        return IPV6_HEADER_LEN, 6, total
    header = parse_ipv6(data)
    chain = walk_ipv6_extensions(data, header, stop_at=protocol)
    if chain.fragmented:
        raise ParseError("fragmented packet: reassemble first", field="ipv6.fragment")
    if chain.protocol != protocol:
        raise ParseError(f"next header {chain.protocol}, expected {protocol}", field="ipv6")
    return chain.offset, chain.nh_offset, header.total_length
