"""Quick mode client IDs convert to and from the shared TrafficSelector."""

from __future__ import annotations

import ipaddress

import pytest

from kipsec_sidecar.core.errors import LocalProtocolError, ParseError
from kipsec_sidecar.core.ikev1.constants import IdType
from kipsec_sidecar.core.ikev1.identity import id_selector, selector_id
from kipsec_sidecar.core.ikev1.payloads import IdPayload
from kipsec_sidecar.core.traffic_selectors import TrafficSelector

CASES = [
    (TrafficSelector.host("10.0.0.5"), IdType.IPV4_ADDR),
    (TrafficSelector.from_network("10.1.0.0/16"), IdType.IPV4_ADDR_SUBNET),
    (TrafficSelector.from_network("fd00:1::/64", 17, 500, 500), IdType.IPV6_ADDR_SUBNET),
    (TrafficSelector.host("2001:db8::1", 6), IdType.IPV6_ADDR),
    (
        TrafficSelector(ipaddress.ip_address("10.0.0.3"), ipaddress.ip_address("10.0.0.9")),
        IdType.IPV4_ADDR_RANGE,
    ),
]


@pytest.mark.parametrize(("ts", "id_type"), CASES, ids=[str(c[0]) for c in CASES])
def test_selectors_round_trip_through_client_ids(ts: TrafficSelector, id_type: int) -> None:
    payload = selector_id(ts)
    assert payload.id_type == id_type
    assert id_selector(payload) == ts


def test_a_subnet_id_is_address_and_mask() -> None:
    payload = selector_id(TrafficSelector.from_network("192.168.8.0/22", 17, 53, 53))
    assert payload.data == bytes([192, 168, 8, 0, 255, 255, 252, 0])
    assert (payload.protocol, payload.port) == (17, 53)


def test_a_port_range_cannot_be_named() -> None:
    with pytest.raises(LocalProtocolError):
        selector_id(TrafficSelector.from_network("10.0.0.0/8", 6, 1000, 2000))


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (IdPayload(IdType.FQDN, b"gw.example"), "id.type"),
        (IdPayload(IdType.IPV4_ADDR, b"\x01\x02\x03"), "id.data"),
        (IdPayload(IdType.IPV4_ADDR_SUBNET, bytes([10, 0, 0, 0, 255, 0, 255, 0])), "id.mask"),
        (IdPayload(IdType.IPV4_ADDR_RANGE, bytes([10, 0, 0, 9, 10, 0, 0, 1])), "id.range"),
    ],
)
def test_bad_client_ids_name_the_field(payload: IdPayload, field: str) -> None:
    with pytest.raises(ParseError) as info:
        id_selector(payload)
    assert info.value.field == field
