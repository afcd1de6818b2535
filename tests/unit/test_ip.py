"""IPv4/IPv6 header parsing and building, extension-header walk and 5-tuple extraction."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from kipsec_sidecar.core import ip
from kipsec_sidecar.core.errors import ParseError
from kipsec_sidecar.core.ip import IpProto

V4A, V4B = ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.2")
V6A, V6B = ipaddress.IPv6Address("fd00::1"), ipaddress.IPv6Address("fd00::2")

# The worked example of the IPv4 header checksum (Wikipedia, "IPv4 header checksum").
KNOWN_V4 = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def test_ipv4_checksum_of_a_known_header() -> None:
    assert ip.ipv4_checksum(KNOWN_V4) == 0xB861


def test_built_ipv4_header_checksums_to_zero_and_parses_back() -> None:
    header = ip.build_ipv4(V4A, V4B, IpProto.UDP, 8, tos=0xB8, identification=7)
    assert len(header) == 20 and ip.ipv4_checksum(header) == 0
    parsed = ip.parse_ipv4(header + udp(1, 2))
    assert (parsed.src, parsed.dst, parsed.protocol, parsed.tos) == (V4A, V4B, 17, 0xB8)
    assert parsed.total_length == 28 and parsed.identification == 7 and not parsed.is_fragment


def test_built_ipv6_header_parses_back() -> None:
    packet = ip.build_ipv6(V6A, V6B, IpProto.TCP, 4, traffic_class=0x2E, flow_label=0x12345)
    parsed = ip.parse_ipv6(packet + b"abcd")
    assert (parsed.traffic_class, parsed.flow_label, parsed.payload_length) == (0x2E, 0x12345, 4)
    assert (parsed.next_header, parsed.hop_limit, parsed.src, parsed.dst) == (6, 64, V6A, V6B)


def test_ipv4_total_length_beyond_the_data_is_a_parse_error() -> None:
    header = ip.build_ipv4(V4A, V4B, IpProto.UDP, 100)
    with pytest.raises(ParseError, match="total_length"):
        ip.parse_ipv4(header + bytes(10))


def test_ipv4_header_length_below_twenty_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="ihl"):
        ip.parse_ipv4(b"\x44" + ip.build_ipv4(V4A, V4B, 17, 0)[1:])


def test_ipv6_payload_length_beyond_the_data_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="payload_length"):
        ip.parse_ipv6(ip.build_ipv6(V6A, V6B, IpProto.UDP, 8))


@pytest.mark.parametrize("data", [b"", b"\x50" + bytes(30), b"\x45\x00"])
def test_unknown_version_or_truncation_is_a_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        ip.parse_ip(data)


def test_five_tuple_of_ipv4_udp() -> None:
    packet = ip.build_ipv4(V4A, V4B, IpProto.UDP, 8) + udp(1234, 53)
    assert ip.five_tuple(packet) == ip.FiveTuple(V4A, V4B, IpProto.UDP, 1234, 53)


def test_five_tuple_of_udp_lite_has_its_ports() -> None:
    # UDP-Lite (RFC 3828) starts with the same ports; selectors may name them.
    packet = ip.build_ipv4(V4A, V4B, IpProto.UDPLITE, 8) + udp(5004, 5006)
    assert ip.five_tuple(packet) == ip.FiveTuple(V4A, V4B, IpProto.UDPLITE, 5004, 5006)


def test_five_tuple_of_ipv4_icmp_packs_type_and_code() -> None:
    icmp = bytes((8, 0, 0, 0, 0, 1, 0, 1))  # echo request
    packet = ip.build_ipv4(V4A, V4B, IpProto.ICMP, len(icmp)) + icmp
    assert ip.five_tuple(packet) == ip.FiveTuple(V4A, V4B, IpProto.ICMP, 0x0800, 0x0800)


def test_non_first_ipv4_fragment_has_no_ports() -> None:
    packet = ip.build_ipv4(V4A, V4B, IpProto.UDP, 8, flags_fragment=185) + udp(1, 2)
    assert ip.five_tuple(packet).src_port is None


def test_truncated_transport_header_gives_no_ports() -> None:
    packet = ip.build_ipv4(V4A, V4B, IpProto.TCP, 2) + b"\x00\x50"
    assert ip.five_tuple(packet).dst_port is None


def test_five_tuple_of_ipv6_walks_extension_headers() -> None:
    hbh = bytes((IpProto.DSTOPTS, 0, 1, 4, 0, 0, 0, 0))
    dst_opts = bytes((IpProto.TCP, 0, 1, 4, 0, 0, 0, 0))
    tcp = struct.pack("!HH", 443, 55000) + bytes(16)
    packet = ip.build_ipv6(V6A, V6B, IpProto.HOPOPT, 16 + len(tcp)) + hbh + dst_opts + tcp
    assert ip.five_tuple(packet) == ip.FiveTuple(V6A, V6B, IpProto.TCP, 443, 55000)


def test_ipv6_non_first_fragment_has_no_ports() -> None:
    frag = bytes((IpProto.UDP, 0)) + (8 << 3).to_bytes(2, "big") + bytes(4)
    packet = ip.build_ipv6(V6A, V6B, IpProto.FRAGMENT, 16) + frag + udp(1, 2)
    assert ip.five_tuple(packet) == ip.FiveTuple(V6A, V6B, IpProto.UDP, None, None)


def test_icmpv6_type_and_code() -> None:
    icmp = bytes((128, 0, 0, 0))
    packet = ip.build_ipv6(V6A, V6B, IpProto.ICMPV6, 4) + icmp
    assert ip.five_tuple(packet).src_port == 128 << 8


def test_extension_chain_longer_than_the_bound_is_refused() -> None:
    ext = bytes((IpProto.DSTOPTS, 0, 1, 4, 0, 0, 0, 0))
    count = ip.MAX_EXTENSION_HEADERS + 1
    packet = ip.build_ipv6(V6A, V6B, IpProto.DSTOPTS, 8 * count) + ext * count
    with pytest.raises(ParseError, match="extension"):
        ip.five_tuple(packet)


def test_extension_header_overrunning_the_packet_is_refused() -> None:
    ext = bytes((IpProto.UDP, 5, 1, 4, 0, 0, 0, 0))  # claims 48 bytes
    packet = ip.build_ipv6(V6A, V6B, IpProto.HOPOPT, 8) + ext
    with pytest.raises(ParseError):
        ip.five_tuple(packet)


def test_ipsec_goes_after_routing_and_its_destination_options() -> None:
    dst1 = bytes((IpProto.ROUTING, 0, 1, 4, 0, 0, 0, 0))
    routing = bytes((IpProto.DSTOPTS, 0, 0, 0, 0, 0, 0, 0))
    dst2 = bytes((IpProto.UDP, 0, 1, 4, 0, 0, 0, 0))
    body = dst1 + routing + dst2 + udp(1, 2)
    packet = ip.build_ipv6(V6A, V6B, IpProto.DSTOPTS, len(body)) + body
    header = ip.parse_ipv6(packet)
    assert ip.ipv6_ipsec_insertion_point(packet, header) == (56, 48, IpProto.DSTOPTS)


def test_rewrite_ipv4_keeps_the_checksum_valid() -> None:
    header = ip.build_ipv4(V4A, V4B, IpProto.UDP, 8)
    rewritten = ip.rewrite_ipv4(header, protocol=IpProto.ESP, total_length=100)
    assert rewritten[9] == 50 and ip.ipv4_checksum(rewritten) == 0
    assert ip.parse_ipv4(rewritten + bytes(80)).total_length == 100
