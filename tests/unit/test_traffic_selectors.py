"""Traffic selectors: matching packets, intersection and RFC 7296 §2.9 narrowing."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kipsec_sidecar.core.errors import LocalProtocolError
from kipsec_sidecar.core.traffic_selectors import TrafficSelector, narrow

TCP, UDP = 6, 17


def test_network_selector_covers_its_block_only() -> None:
    ts = TrafficSelector.from_network("10.1.0.0/24")
    assert ts.contains_packet(ipaddress.ip_address("10.1.0.7"), TCP, 443)
    assert not ts.contains_packet(ipaddress.ip_address("10.1.1.7"), TCP, 443)


def test_protocol_and_port_restrict_matches() -> None:
    ts = TrafficSelector.from_network("10.1.0.0/24", TCP, 80, 80)
    addr = ipaddress.ip_address("10.1.0.7")
    assert ts.contains_packet(addr, TCP, 80)
    assert not ts.contains_packet(addr, UDP, 80)
    assert not ts.contains_packet(addr, TCP, 81)


def test_portless_packet_matches_only_port_unrestricted_selector() -> None:
    addr = ipaddress.ip_address("10.1.0.7")
    assert TrafficSelector.from_network("10.1.0.0/24").contains_packet(addr, 1, None)
    assert not TrafficSelector.from_network("10.1.0.0/24", 1, 8, 8).contains_packet(addr, 1, None)


def test_ipv6_selector_never_matches_ipv4_packet() -> None:
    ts = TrafficSelector.from_network("::/0")
    assert not ts.contains_packet(ipaddress.ip_address("10.0.0.1"), TCP, 1)


def test_intersection_narrows_addresses_protocol_and_ports() -> None:
    wide = TrafficSelector.from_network("10.0.0.0/8")
    narrow_ts = TrafficSelector.from_network("10.2.0.0/16", UDP, 4000, 5000)
    assert wide.intersect(narrow_ts) == narrow_ts
    assert wide.covers(narrow_ts)
    assert not narrow_ts.covers(wide)


def test_disjoint_selectors_do_not_intersect() -> None:
    a = TrafficSelector.from_network("10.0.0.0/24", TCP)
    assert a.intersect(TrafficSelector.from_network("10.0.1.0/24")) is None
    assert a.intersect(TrafficSelector.from_network("10.0.0.0/24", UDP)) is None
    assert a.intersect(TrafficSelector.from_network("fd00::/8")) is None


def test_narrowing_returns_every_overlap_and_nothing_for_disjoint() -> None:
    proposed = [TrafficSelector.from_network("10.0.0.0/16")]
    allowed = [
        TrafficSelector.from_network("10.0.1.0/24"),
        TrafficSelector.from_network("10.0.2.0/24"),
        TrafficSelector.from_network("192.168.0.0/16"),
    ]
    assert narrow(proposed, allowed) == allowed[:2]
    assert narrow(proposed, allowed[2:]) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {
            "start_addr": ipaddress.ip_address("10.0.0.2"),
            "end_addr": ipaddress.ip_address("10.0.0.1"),
        },
        {"start_addr": ipaddress.ip_address("10.0.0.1"), "end_addr": ipaddress.ip_address("::1")},
        {
            "start_addr": ipaddress.ip_address("10.0.0.1"),
            "end_addr": ipaddress.ip_address("10.0.0.1"),
            "protocol": 256,
        },
        {
            "start_addr": ipaddress.ip_address("10.0.0.1"),
            "end_addr": ipaddress.ip_address("10.0.0.1"),
            "start_port": 9,
            "end_port": 8,
        },
    ],
)
def test_invalid_selector_is_a_local_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        TrafficSelector(**kwargs)  # type: ignore[arg-type]


ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


@st.composite
def selectors(draw: st.DrawFn) -> TrafficSelector:
    a, b = sorted((draw(ipv4), draw(ipv4)))
    p1, p2 = sorted((draw(st.integers(0, 65535)), draw(st.integers(0, 65535))))
    return TrafficSelector(a, b, draw(st.sampled_from([0, TCP, UDP])), p1, p2)


@given(selectors(), selectors())
def test_intersection_is_symmetric_and_inside_both(a: TrafficSelector, b: TrafficSelector) -> None:
    inter = a.intersect(b)
    assert inter == b.intersect(a)
    if inter is not None:
        assert a.covers(inter) and b.covers(inter)
