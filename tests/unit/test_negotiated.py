"""From a negotiated child SA to the two datapath SAs: the selectors travel with them."""

from __future__ import annotations

import ipaddress
import os

import pytest

from kipsec_sidecar.core.errors import LocalProtocolError
from kipsec_sidecar.core.ike.constants import EncrId, ProtocolId
from kipsec_sidecar.core.ike.events import ChildSaEstablished
from kipsec_sidecar.core.negotiated import sa_pair
from kipsec_sidecar.core.traffic_selectors import TrafficSelector

LOCAL = (TrafficSelector.from_network("10.0.1.5/32", protocol=17, start_port=53, end_port=53),)
REMOTE = (TrafficSelector.from_network("10.0.2.0/24"),)


def child() -> ChildSaEstablished:
    return ChildSaEstablished(
        name="web",
        protocol=int(ProtocolId.ESP),
        mode="tunnel",
        spi_in=bytes.fromhex("0000a001"),
        spi_out=bytes.fromhex("0000b002"),
        encr_id=int(EncrId.AES_GCM_16),
        encr_key_bits=256,
        integ_id=None,
        esn=False,
        local_ts=LOCAL,
        remote_ts=REMOTE,
        rekey_at=None,
        expire_at=None,
        initiator=True,
        remote_addr=("192.0.2.2", 4500),
        nat_detected=False,
        encr_key_in=os.urandom(36),
        encr_key_out=os.urandom(36),
    )


def test_both_directions_carry_the_negotiated_selectors_from_this_sides_view() -> None:
    pair = sa_pair(child(), "192.0.2.1", "192.0.2.2")

    assert (pair.inbound.local_ts, pair.inbound.remote_ts) == (LOCAL, REMOTE)
    assert (pair.outbound.local_ts, pair.outbound.remote_ts) == (LOCAL, REMOTE)


def test_both_directions_share_the_endpoints_parsed_once() -> None:
    """sa_pair parses each endpoint once (as_address) and gives both SAs the same object."""
    pair = sa_pair(child(), "192.0.2.1", "192.0.2.2")

    local, remote = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
    assert (pair.inbound.src, pair.inbound.dst) == (remote, local)
    assert (pair.outbound.src, pair.outbound.dst) == (local, remote)
    assert pair.inbound.dst is pair.outbound.src and pair.inbound.src is pair.outbound.dst
    assert pair.outbound.dst_packed == remote.packed
    given = sa_pair(child(), local, remote)
    assert given.inbound.dst is local and given.outbound.dst is remote


def test_an_endpoint_that_is_not_an_address_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="not an IP address"):
        sa_pair(child(), "192.0.2.1", "gateway.example")
