"""AH (RFC 4302): round trips, mutable fields, alignment, ESN, refusal of NAT/UDP encap."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from kipsec_sidecar.core import ah
from kipsec_sidecar.core.errors import (
    IntegrityError,
    LocalProtocolError,
    ParseError,
    RefusedAlgorithm,
    ReplayError,
)
from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.core.ip import IpProto, build_ipv4, build_ipv6, parse_ip
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode

INTEGS = {
    IntegId.HMAC_SHA2_256_128: 32,
    IntegId.HMAC_SHA2_384_192: 48,
    IntegId.HMAC_SHA2_512_256: 64,
}
ADDRS = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
INNER = {4: ("10.1.0.5", "10.2.0.7"), 6: ("fd00:1::5", "fd00:2::7")}
LAYOUTS = [
    (Mode.TUNNEL, 4, 4),
    (Mode.TUNNEL, 6, 4),
    (Mode.TUNNEL, 4, 6),
    (Mode.TUNNEL, 6, 6),
    (Mode.TRANSPORT, 4, 4),
    (Mode.TRANSPORT, 6, 6),
]


def udp_packet(src: str, dst: str, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 4000, 5000, 8 + len(payload), 0) + payload
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if isinstance(a, ipaddress.IPv4Address) and isinstance(b, ipaddress.IPv4Address):
        return build_ipv4(a, b, IpProto.UDP, len(udp), tos=0x28) + udp
    assert isinstance(a, ipaddress.IPv6Address) and isinstance(b, ipaddress.IPv6Address)
    return build_ipv6(a, b, IpProto.UDP, len(udp), traffic_class=0x28) + udp


def make_sa(
    integ: IntegId = IntegId.HMAC_SHA2_256_128,
    mode: Mode = Mode.TUNNEL,
    family: int = 4,
    *,
    esn: bool = False,
) -> IpsecSa:
    return IpsecSa(
        spi=0xA0A0,
        src=ADDRS[family][0],
        dst=ADDRS[family][1],
        protocol=ProtocolId.AH,
        mode=mode,
        integ_id=integ,
        integ_key=bytes(range(INTEGS[integ])),
        esn=esn,
    )


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize(("mode", "inner", "outer"), LAYOUTS, ids=lambda v: str(v))
@pytest.mark.parametrize("integ", list(INTEGS), ids=lambda i: i.name)
def test_round_trip_restores_the_packet(
    integ: IntegId, mode: Mode, inner: int, outer: int, esn: bool
) -> None:
    tx, rx = make_sa(integ, mode, outer, esn=esn), make_sa(integ, mode, outer, esn=esn)
    src, dst = INNER[inner] if mode is Mode.TUNNEL else ADDRS[outer]
    for size in (0, 5, 1000):
        packet = udp_packet(src, dst, bytes(size))
        wire = ah.encapsulate(tx, packet)
        assert parse_ip(wire).version == outer
        assert ah.decapsulate(rx, wire) == packet


@pytest.mark.parametrize("integ", list(INTEGS), ids=lambda i: i.name)
@pytest.mark.parametrize("family", [4, 6])
def test_ah_length_is_aligned_and_payload_length_field_matches(integ: IntegId, family: int) -> None:
    tx = make_sa(integ, Mode.TRANSPORT, family)
    packet = udp_packet(*ADDRS[family], b"x")
    wire = ah.encapsulate(tx, packet)
    start = 20 if family == 4 else 40
    length = (wire[start + 1] + 2) * 4
    assert length == ah.ah_length(INTEGS[integ] // 2, family)
    assert length % (4 if family == 4 else 8) == 0
    assert wire[start] == IpProto.UDP and wire[start + length :] == packet[start:]


@pytest.mark.parametrize(
    ("integ", "family", "length", "payload_length"),
    [
        (IntegId.HMAC_SHA2_256_128, 4, 28, 5),  # strongSwan's kernel states: 28 bytes
        (IntegId.HMAC_SHA2_384_192, 4, 36, 7),
        (IntegId.HMAC_SHA2_512_256, 4, 44, 9),
        (IntegId.HMAC_SHA2_256_128, 6, 32, 6),
        (IntegId.HMAC_SHA2_384_192, 6, 40, 8),
        (IntegId.HMAC_SHA2_512_256, 6, 48, 10),
    ],
)
def test_ah_is_padded_to_32_bits_over_ipv4_and_64_over_ipv6(
    integ: IntegId, family: int, length: int, payload_length: int
) -> None:
    """RFC 4302 section 3.3.3.2.1, in both tunnel layouts with that outer family: the
    lengths Linux uses with ``align4`` (IPv4) and always (IPv6), and strongSwan."""
    for mode, inner in ((Mode.TRANSPORT, family), (Mode.TUNNEL, 10 - family)):
        src, dst = ADDRS[family] if mode is Mode.TRANSPORT else INNER[inner]
        packet = udp_packet(src, dst, b"x")
        wire = ah.encapsulate(make_sa(integ, mode, family), packet)
        start = 20 if family == 4 else 40
        carried = packet if mode is Mode.TUNNEL else packet[start:]
        assert wire[start + 1] == payload_length
        assert len(wire) == start + length + len(carried)


def test_mutable_ipv4_fields_may_change_in_transit() -> None:
    tx, rx = make_sa(), make_sa()
    wire = bytearray(ah.encapsulate(tx, udp_packet(*INNER[4], b"x")))
    wire[1] = 0xFF  # DSCP/ECN remarked
    wire[6] = 0x40  # DF set by a router
    wire[8] = 3  # TTL decremented
    wire[10:12] = b"\x12\x34"  # checksum recomputed
    ah.decapsulate(rx, bytes(wire))


def test_mutable_ipv6_fields_may_change_in_transit() -> None:
    tx, rx = make_sa(family=6), make_sa(family=6)
    wire = bytearray(ah.encapsulate(tx, udp_packet(*INNER[6], b"x")))
    wire[0:4] = b"\x6f\xf1\x23\x45"  # traffic class and flow label
    wire[7] = 1  # hop limit
    ah.decapsulate(rx, bytes(wire))


@pytest.mark.parametrize("offset", [12, 16, 9, 2])  # source, destination, protocol, length
def test_immutable_ipv4_fields_are_authenticated(offset: int) -> None:
    tx, rx = make_sa(), make_sa()
    wire = bytearray(ah.encapsulate(tx, udp_packet(*INNER[4], b"x")))
    wire[offset] ^= 0x01
    with pytest.raises((IntegrityError, ParseError)):
        ah.decapsulate(rx, bytes(wire))


def test_address_rewrite_by_a_nat_breaks_ah() -> None:
    tx, rx = make_sa(mode=Mode.TRANSPORT), make_sa(mode=Mode.TRANSPORT)
    wire = bytearray(ah.encapsulate(tx, udp_packet(*ADDRS[4], b"x")))
    wire[12:16] = bytes((198, 51, 100, 9))
    with pytest.raises(IntegrityError):
        ah.decapsulate(rx, bytes(wire))


def test_tampered_payload_fails_and_does_not_move_the_window() -> None:
    tx, rx = make_sa(), make_sa()
    wire = bytearray(ah.encapsulate(tx, udp_packet(*INNER[4], b"hello")))
    wire[-1] ^= 0x01
    with pytest.raises(IntegrityError):
        ah.decapsulate(rx, bytes(wire))
    assert rx.replay.top == 0


def test_replayed_packet_is_rejected() -> None:
    tx, rx = make_sa(), make_sa()
    wire = ah.encapsulate(tx, udp_packet(*INNER[4], b"x"))
    ah.decapsulate(rx, wire)
    with pytest.raises(ReplayError):
        ah.decapsulate(rx, wire)


def test_esn_high_bits_are_covered_by_the_icv() -> None:
    tx, rx = make_sa(esn=True), make_sa(esn=True)
    tx.next_seq = 0x1_00000005
    wire = ah.encapsulate(tx, udp_packet(*INNER[4], b"x"))
    with pytest.raises(IntegrityError):  # receiver infers high half 0
        ah.decapsulate(rx, wire)
    rx.replay.accept(0x1_00000001)
    assert ah.decapsulate(rx, wire) == udp_packet(*INNER[4], b"x")


def test_ipv4_options_are_rejected() -> None:
    tx = make_sa(mode=Mode.TRANSPORT)
    base = udp_packet(*ADDRS[4], b"x")
    with_options = bytearray(b"\x46" + base[1:20] + b"\x01\x01\x01\x00" + base[20:])
    with_options[2:4] = (len(with_options)).to_bytes(2, "big")
    with pytest.raises(ParseError, match="options"):
        ah.encapsulate(tx, bytes(with_options))


def test_ipv6_extension_headers_before_ah_are_rejected() -> None:
    tx = make_sa(mode=Mode.TRANSPORT, family=6)
    hbh = bytes((IpProto.UDP, 0, 1, 4, 0, 0, 0, 0))
    src, dst = (ipaddress.IPv6Address(a) for a in ADDRS[6])
    packet = build_ipv6(src, dst, IpProto.HOPOPT, 8 + 8) + hbh + bytes(8)
    with pytest.raises(ParseError, match="extension"):
        ah.encapsulate(tx, packet)


def test_ah_with_udp_encapsulation_is_refused_because_it_cannot_cross_nat() -> None:
    with pytest.raises(LocalProtocolError, match="NAT"):
        IpsecSa(
            spi=0xA0A0,
            src="192.0.2.1",
            dst="192.0.2.2",
            protocol=ProtocolId.AH,
            mode=Mode.TUNNEL,
            integ_id=IntegId.HMAC_SHA2_256_128,
            integ_key=bytes(32),
            udp_encap=True,
        )


def test_ah_module_docstring_says_it_cannot_cross_nat() -> None:
    assert ah.__doc__ is not None
    assert "AH cannot cross a NAT" in " ".join(ah.__doc__.replace("*", "").split())


def test_ah_with_md5_is_refused() -> None:
    with pytest.raises(RefusedAlgorithm, match="MD5"):
        IpsecSa(
            spi=0xA0A0,
            src="192.0.2.1",
            dst="192.0.2.2",
            protocol=ProtocolId.AH,
            mode=Mode.TUNNEL,
            integ_id=IntegId.HMAC_MD5_96,
            integ_key=bytes(16),
        )


def test_ah_with_an_encryption_transform_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="ESP"):
        IpsecSa(
            spi=0xA0A0,
            src="192.0.2.1",
            dst="192.0.2.2",
            protocol=ProtocolId.AH,
            mode=Mode.TUNNEL,
            encr_id=EncrId.AES_CBC,
            integ_id=IntegId.HMAC_SHA2_256_128,
            integ_key=bytes(32),
        )


def test_ah_without_integrity_is_refused() -> None:
    with pytest.raises(RefusedAlgorithm):
        IpsecSa(
            spi=0xA0A0,
            src="192.0.2.1",
            dst="192.0.2.2",
            protocol=ProtocolId.AH,
            mode=Mode.TUNNEL,
        )
