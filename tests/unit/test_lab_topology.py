"""Lab addresses and names: per-node blocks, reuse, limits, collision-free names."""

from __future__ import annotations

import pytest

from kipsec_lab.topology import Addresses, AddressesExhausted, Names


def addresses(cidr: str = "10.213.0.0/16", nodes: int = 2) -> Addresses:
    return Addresses.parse(cidr, nodes)


def test_the_gateway_is_the_first_address_of_the_cidr() -> None:
    assert str(addresses().gateway) == "10.213.0.1"


def test_each_node_hands_out_from_its_own_block() -> None:
    pool = addresses()
    assert str(pool.allocate(0)) == "10.213.1.2"
    assert str(pool.allocate(1)) == "10.213.2.2"
    assert str(pool.allocate(0)) == "10.213.1.3"


def test_a_released_address_is_reused() -> None:
    pool = addresses()
    first = pool.allocate(0)
    pool.allocate(0)
    pool.release(str(first))
    assert pool.allocate(0) == first


def test_a_full_block_says_so() -> None:
    pool = addresses()
    for _ in range(253):
        pool.allocate(0)
    with pytest.raises(AddressesExhausted, match="node 0"):
        pool.allocate(0)


@pytest.mark.parametrize(("cidr", "nodes", "field"), [
    ("10.213.0.0/24", 1, "cidr"), ("10.213.0.0/22", 4, "nodes"), ("10.213.0.0/16", 0, "nodes"),
])  # fmt: skip
def test_bad_sizes_are_refused_naming_the_field(cidr: str, nodes: int, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        addresses(cidr, nodes)


def test_an_ipv6_cidr_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"cidr: .* is IPv6"):
        addresses("fd00::/48")


def test_names_belong_to_their_lab_only() -> None:
    names = Names("kl1")
    assert names.owns(names.control)
    assert names.owns(names.pod_netns("demo", "cache-0"))
    assert not names.owns(Names("kl10").pod_netns("demo", "cache-0"))
    assert not Names("kl10").owns(names.control)


def test_veth_names_fit_the_interface_name_limit() -> None:
    assert len(Names.veth("a-very-long-namespace-name", "a-very-long-pod-name-0")) <= 15
