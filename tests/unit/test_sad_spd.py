"""SA database (lookup by SPI/destination/protocol, make-before-break rekey) and SPD."""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest

from kipsec_sidecar.core import ah, esp
from kipsec_sidecar.core.errors import LocalProtocolError, ParseError
from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.core.ip import FiveTuple, IpProto, build_ipv4, build_ipv6
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode
from kipsec_sidecar.core.sad import SecurityAssociationDatabase
from kipsec_sidecar.core.spd import (
    Action,
    Direction,
    Policy,
    SecurityPolicyDatabase,
    selectors_allow,
)
from kipsec_sidecar.core.traffic_selectors import TrafficSelector


def esp_sa(spi: int, dst: str = "192.0.2.2", src: str = "192.0.2.1") -> IpsecSa:
    return IpsecSa(
        spi=spi,
        src=src,
        dst=dst,
        protocol=ProtocolId.ESP,
        mode=Mode.TUNNEL,
        encr_id=EncrId.AES_GCM_16,
        encr_key=bytes(20),
    )


def ah_sa(spi: int, dst: str = "192.0.2.2", src: str = "192.0.2.1") -> IpsecSa:
    return IpsecSa(
        spi=spi,
        src=src,
        dst=dst,
        protocol=ProtocolId.AH,
        mode=Mode.TUNNEL,
        integ_id=IntegId.HMAC_SHA2_256_128,
        integ_key=bytes(32),
    )


def inner() -> bytes:
    udp = struct.pack("!HHHH", 1, 2, 8, 0)
    return (
        build_ipv4(ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.2"), 17, 8)
        + udp
    )


def test_add_and_get_by_spi_destination_protocol() -> None:
    sad = SecurityAssociationDatabase()
    sa = esp_sa(0x1000)
    sad.add(sa)
    assert sad.get(0x1000, ipaddress.ip_address("192.0.2.2"), ProtocolId.ESP) is sa
    assert sad.get(0x1000, ipaddress.ip_address("192.0.2.2"), ProtocolId.AH) is None
    assert sad.get(0x1000, ipaddress.ip_address("192.0.2.3"), ProtocolId.ESP) is None


def test_duplicate_key_is_refused() -> None:
    sad = SecurityAssociationDatabase()
    sad.add(esp_sa(0x1000))
    with pytest.raises(LocalProtocolError, match="exists"):
        sad.add(esp_sa(0x1000))


def test_same_spi_for_another_protocol_or_destination_is_distinct() -> None:
    sad = SecurityAssociationDatabase()
    sad.add(esp_sa(0x1000))
    sad.add(ah_sa(0x1000))
    sad.add(esp_sa(0x1000, dst="192.0.2.9"))
    assert len(sad) == 3


def test_lookup_packet_finds_esp_and_ah_sas() -> None:
    sad = SecurityAssociationDatabase()
    e, a = esp_sa(0x1000), ah_sa(0x2000)
    sad.add(e)
    sad.add(a)
    assert sad.lookup_packet(esp.encapsulate(esp_sa(0x1000), inner(), os.urandom)) is e
    assert sad.lookup_packet(ah.encapsulate(ah_sa(0x2000), inner())) is a
    assert sad.lookup_packet(esp.encapsulate(esp_sa(0x3000), inner(), os.urandom)) is None


def test_lookup_packet_with_ipv6_ah() -> None:
    sad = SecurityAssociationDatabase()
    sa = ah_sa(0x2000, dst="2001:db8::2", src="2001:db8::1")
    sad.add(sa)
    wire = ah.encapsulate(ah_sa(0x2000, dst="2001:db8::2", src="2001:db8::1"), inner())
    assert sad.lookup_packet(wire) is sa


def test_lookup_packet_of_plain_udp_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="neither ESP nor AH"):
        SecurityAssociationDatabase().lookup_packet(inner())


def test_lookup_udp_encapsulated_esp() -> None:
    sad = SecurityAssociationDatabase()
    sa = esp_sa(0x1000)
    sad.add(sa)
    payload = esp.seal(esp_sa(0x1000), IpProto.IPIP, inner(), os.urandom)
    assert sad.lookup_udp_esp(payload, ipaddress.ip_address("192.0.2.2")) is sa


def test_remove_and_iterate() -> None:
    sad = SecurityAssociationDatabase()
    a, b = esp_sa(0x1000), esp_sa(0x1001)
    sad.add(a)
    sad.add(b)
    assert sad.remove(a) is a
    assert list(sad) == [b] and a not in sad and b in sad
    with pytest.raises(LocalProtocolError):
        sad.remove(a)


def test_rekey_is_make_before_break() -> None:
    sad = SecurityAssociationDatabase()
    old, new = esp_sa(0x1000), esp_sa(0x1001)
    sad.add(old)
    sad.replace(old, new)
    dst = ipaddress.ip_address("192.0.2.2")
    assert sad.get(0x1000, dst, ProtocolId.ESP) is old
    assert sad.get(0x1001, dst, ProtocolId.ESP) is new
    assert sad.current(old) is new
    sad.remove(old)
    assert sad.current(new) is new and len(sad) == 1


def test_successive_rekeys_follow_the_chain() -> None:
    sad = SecurityAssociationDatabase()
    a, b, c = esp_sa(0x1000), esp_sa(0x1001), esp_sa(0x1002)
    sad.add(a)
    sad.replace(a, b)
    sad.replace(b, c)
    assert sad.current(a) is c


def test_replacing_an_absent_sa_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        SecurityAssociationDatabase().replace(esp_sa(0x1000), esp_sa(0x1001))


# --- SPD -------------------------------------------------------------------------------

POD_A = TrafficSelector.from_network("10.0.1.0/24")
POD_B = TrafficSelector.from_network("10.0.2.0/24")


def packet(src: str, dst: str, proto: int = 6, sport: int = 40000, dport: int = 443) -> FiveTuple:
    return FiveTuple(ipaddress.ip_address(src), ipaddress.ip_address(dst), proto, sport, dport)


def test_unmatched_traffic_is_discarded_when_fail_closed() -> None:
    spd = SecurityPolicyDatabase()
    decision = spd.decide(packet("10.9.0.1", "10.9.0.2"), Direction.OUT)
    assert decision.action is Action.DISCARD and decision.policy is None


def test_unmatched_traffic_is_bypassed_when_fail_open() -> None:
    spd = SecurityPolicyDatabase(fail_closed=False)
    assert spd.decide(packet("10.9.0.1", "10.9.0.2"), Direction.OUT).action is Action.BYPASS


def test_outbound_matches_local_on_source_and_inbound_on_destination() -> None:
    spd = SecurityPolicyDatabase()
    out = Policy(POD_A, POD_B, Direction.OUT, Action.PROTECT, sa_ref="peer-b")
    inb = Policy(POD_A, POD_B, Direction.IN, Action.PROTECT, sa_ref="peer-b")
    spd.add(out)
    spd.add(inb)
    assert spd.lookup(packet("10.0.1.5", "10.0.2.7"), Direction.OUT) is out
    assert spd.lookup(packet("10.0.2.7", "10.0.1.5"), Direction.IN) is inb
    assert spd.lookup(packet("10.0.2.7", "10.0.1.5"), Direction.OUT) is None


def test_first_match_by_priority_then_order() -> None:
    spd = SecurityPolicyDatabase()
    broad = Policy(POD_A, POD_B, Direction.OUT, Action.PROTECT, priority=10, sa_ref="b")
    dns = Policy(
        POD_A,
        TrafficSelector.from_network("10.0.2.0/24", protocol=17, start_port=53, end_port=53),
        Direction.OUT,
        Action.BYPASS,
        priority=5,
    )
    later_same_priority = Policy(POD_A, POD_B, Direction.OUT, Action.DISCARD, priority=10)
    spd.add(broad)
    spd.add(dns)
    spd.add(later_same_priority)
    assert spd.lookup(packet("10.0.1.5", "10.0.2.7", 17, 5353, 53), Direction.OUT) is dns
    assert spd.lookup(packet("10.0.1.5", "10.0.2.7", 6), Direction.OUT) is broad
    assert list(spd) == [dns, broad, later_same_priority]


def test_port_restricted_selector_does_not_match_a_portless_packet() -> None:
    spd = SecurityPolicyDatabase()
    web = TrafficSelector.from_network("10.0.2.0/24", protocol=6, start_port=443, end_port=443)
    spd.add(Policy(POD_A, web, Direction.OUT, Action.BYPASS))
    fragment = FiveTuple(
        ipaddress.ip_address("10.0.1.5"), ipaddress.ip_address("10.0.2.7"), 6, None, None
    )
    assert spd.decide(fragment, Direction.OUT).action is Action.DISCARD


def test_decide_packet_reads_raw_bytes() -> None:
    spd = SecurityPolicyDatabase()
    any_v4 = TrafficSelector.from_network("10.0.0.0/16")
    policy = Policy(any_v4, any_v4, Direction.OUT, Action.PROTECT, sa_ref="x")
    spd.add(policy)
    decision = spd.decide_packet(inner(), Direction.OUT)
    assert decision == spd.decide(packet("10.0.0.1", "10.0.0.2", 17, 1, 2), Direction.OUT)
    assert decision.policy is policy


def test_remove_policy() -> None:
    spd = SecurityPolicyDatabase()
    policy = Policy(POD_A, POD_B, Direction.OUT, Action.BYPASS)
    spd.add(policy)
    spd.remove(policy)
    assert len(spd) == 0
    with pytest.raises(LocalProtocolError):
        spd.remove(policy)


def test_protect_policy_needs_an_sa_reference() -> None:
    with pytest.raises(LocalProtocolError, match="sa_ref"):
        Policy(POD_A, POD_B, Direction.OUT, Action.PROTECT)


def test_policy_cannot_mix_families() -> None:
    with pytest.raises(LocalProtocolError, match="mixes"):
        Policy(POD_A, TrafficSelector.from_network("fd00::/64"), Direction.OUT, Action.BYPASS)


def test_ipv6_packets_do_not_match_ipv4_policies() -> None:
    spd = SecurityPolicyDatabase()
    spd.add(Policy(POD_A, POD_B, Direction.OUT, Action.BYPASS))
    v6 = build_ipv6(
        ipaddress.IPv6Address("fd00::1"), ipaddress.IPv6Address("fd00::2"), IpProto.UDP, 8
    ) + struct.pack("!HHHH", 1, 2, 8, 0)
    assert spd.decide_packet(v6, Direction.OUT).action is Action.DISCARD


# --- inbound selector check after decryption (RFC 4301 section 5.2 step 4) ---------------

WEB_B = TrafficSelector.from_network("10.0.2.0/24", protocol=6, start_port=443, end_port=443)


def test_inbound_packet_inside_the_selectors_is_allowed() -> None:
    assert selectors_allow(
        packet("10.0.2.7", "10.0.1.5", 6, 443, 40000), [POD_A], [WEB_B], Direction.IN
    )


@pytest.mark.parametrize(
    "outside",
    [
        pytest.param(packet("10.0.3.7", "10.0.1.5", 6, 443, 40000), id="source-not-remote"),
        pytest.param(packet("10.0.2.7", "10.0.9.5", 6, 443, 40000), id="destination-not-local"),
        pytest.param(packet("10.0.2.7", "10.0.1.5", 6, 8443, 40000), id="port-out-of-range"),
        pytest.param(packet("10.0.2.7", "10.0.1.5", 17, 443, 40000), id="other-protocol"),
    ],
)
def test_inbound_packet_outside_the_selectors_is_refused(outside: FiveTuple) -> None:
    assert not selectors_allow(outside, [POD_A], [WEB_B], Direction.IN)


def test_any_local_and_any_remote_selector_of_the_lists_may_match() -> None:
    pod_c = TrafficSelector.from_network("10.0.3.0/24")
    pod_d = TrafficSelector.from_network("fd00::/64")
    assert selectors_allow(
        packet("10.0.3.7", "10.0.1.5", 17, 1, 2), [pod_d, POD_A], [WEB_B, pod_c], Direction.IN
    )


def test_outbound_direction_reads_the_source_as_local() -> None:
    reply = packet("10.0.1.5", "10.0.2.7", 6, 40000, 443)
    assert selectors_allow(reply, [POD_A], [WEB_B], Direction.OUT)
    assert not selectors_allow(reply, [POD_A], [WEB_B], Direction.IN)
