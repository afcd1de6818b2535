"""NAT traversal end to end: a pod whose node masquerades its traffic, and a peer that answers.

Node a SNATs everything its pod pa sends towards the other node to its own segment
address, and (``masquerade to :40000-40100``) to a source port it picks, so port 4500
on pa becomes some port in that range on the wire. pa's sidecar initiates; pb's sidecar
answers, and its peer entry for pa names the NAT's address (node a), with pa's pod
address as the protected remote selector. NAT detection (RFC 7296 section 2.23) must
move IKE to port 4500 after IKE_SA_INIT and put ESP into UDP (RFC 3948); pb must send
ESP to the port pa's IKE came from, not to 4500; pa, behind the NAT, keeps the mapping
alive with one-byte keepalives (``natTraversal.keepalive``, 1 s here).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether

from support.capture import Capture, CapturedPacket
from support.netns import WIRE, WIRE_BRIDGE, Topology, udp_roundtrip
from support.sidecars import (
    MARKER,
    Sidecar,
    established,
    peer_entry,
    ping_marked,
    tcp_roundtrip,
    wait_until,
)

pytestmark = pytest.mark.netns

NAT_PORTS = range(40000, 40101)
IKE_SA_INIT = 34


@pytest.fixture
def natted(topology: Topology) -> Topology:
    """pa behind node a (masquerading to ports 40000-40100), pb behind node b (no NAT)."""
    for node, pod in (("a", "pa"), ("b", "pb")):
        topology.add_node(node)
        topology.add_pod(pod, node)
    topology.masquerade("a", ports=f"{NAT_PORTS[0]}-{NAT_PORTS[-1]}")
    return topology


def _start_pair(topo: Topology, workdir: Path) -> tuple[Sidecar, Sidecar]:
    """pb (responder, peer pa at the NAT's address), then pa (onStart initiator)."""
    a, b = Sidecar(topo, "pa", workdir), Sidecar(topo, "pb", workdir)
    nat_traversal = {"natTraversal": {"keepalive": "1s"}}
    b.write(
        [
            peer_entry(
                topo,
                "pa",
                address=topo.address("a"),  # the NAT: all pb ever sees of pa
                start="onDemand",  # pb cannot reach pa first through a NAT
                trafficSelectors={
                    "local": [topo.address("pb")],
                    "remote": [topo.address("pa")],
                },
            )
        ],
        **nat_traversal,
    )
    a.write([peer_entry(topo, "pb")], **nat_traversal)
    b.start()
    a.start()
    try:
        wait_until(
            "pa and pb established through the NAT",
            lambda: established(a, "pb")() and established(b, "pa")(),
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- pa ---\n{a.tail(15)}\n--- pb ---\n{b.tail(15)}") from None
    return a, b


@pytest.fixture
def pair(natted: Topology, tmp_path: Path) -> Iterator[tuple[Sidecar, Sidecar]]:
    a = b = None
    try:
        a, b = _start_pair(natted, tmp_path)
        yield a, b
    finally:
        for sidecar in (a, b):
            if sidecar is not None:
                sidecar.stop()


def _udp_payload(packet: CapturedPacket) -> bytes:
    return bytes(Ether(packet.data)[UDP].payload)


def _ike_exchange(packet: CapturedPacket) -> int:
    """The exchange type of an IKE message on port 500 (header byte 18)."""
    return _udp_payload(packet)[18]


def test_natted_initiator_carries_traffic_both_ways_in_udp_4500_to_the_mapped_port(
    natted: Topology, tmp_path: Path
) -> None:
    nat, pod, peer = natted.address("a"), natted.address("pa"), natted.address("pb")
    with Capture(natted, WIRE, WIRE_BRIDGE, tmp_path / "wire.pcap") as capture:
        a, b = _start_pair(natted, tmp_path)
        try:
            ping_marked(natted, "pa", "pb")
            ping_marked(natted, "pb", "pa")
            assert udp_roundtrip(natted, "pa", "pb", MARKER) == MARKER
            assert udp_roundtrip(natted, "pb", "pa", MARKER, port=7778) == MARKER
            tcp_roundtrip(natted, "pa", "pb")
            tcp_roundtrip(natted, "pb", "pa", port=7071)
        finally:
            a_view, b_view = a.peer("pb"), b.peer("pa")
            a.stop()
            b.stop()
    summary = capture.summary
    assert not summary.contains(MARKER), summary.describe()
    assert not summary.unexpected(), summary.describe()
    ip_packets = [p for p in summary.packets if p.src is not None]
    assert all(pod not in (p.src, p.dst) for p in ip_packets), "the NAT did not translate pa"

    # Only IKE_SA_INIT uses port 500; everything after it is UDP 4500 at pb's end.
    on_500 = [p for p in ip_packets if 500 in (p.sport, p.dport)]
    assert on_500 and all(_ike_exchange(p) == IKE_SA_INIT for p in on_500), summary.describe()
    rest = [p for p in ip_packets if p not in on_500]
    from_nat = [p for p in rest if p.src == nat]
    to_nat = [p for p in rest if p.dst == nat]
    assert len(from_nat) + len(to_nat) == len(rest), summary.describe()
    assert {(p.protocol, p.dport) for p in from_nat} == {(17, 4500)}, summary.describe()
    assert {(p.protocol, p.sport) for p in to_nat} == {(17, 4500)}, summary.describe()
    # pa's port 4500 was mapped to one port of the range, and pb answers to that port.
    mapped = {p.sport for p in from_nat}
    assert len(mapped) == 1 and mapped <= set(NAT_PORTS), mapped
    assert {p.dport for p in to_nat} == mapped, summary.describe()
    esp = summary.of_kind("esp-in-udp")
    assert any(p.src == nat for p in esp) and any(p.src == peer for p in esp), summary.describe()

    # Both sides saw the NAT; pb talks to the NAT's address at the mapped port.
    assert a_view["ike_sa"]["nat_detected"] and b_view["ike_sa"]["nat_detected"]
    assert b_view["ike_sa"]["remote_addr"] == f"{nat}:{mapped.pop()}"
    assert a_view["ike_sa"]["remote_addr"] == f"{peer}:4500"
    child: dict[str, Any] = b_view["children"][0]
    assert child["packets_in"] > 0 and child["packets_out"] > 0


def test_the_side_behind_the_nat_sends_keepalives_at_the_configured_interval(
    pair: tuple[Sidecar, Sidecar], natted: Topology, tmp_path: Path
) -> None:
    nat, peer = natted.address("a"), natted.address("pb")
    with Capture(natted, WIRE, WIRE_BRIDGE, tmp_path / "idle.pcap", bpf="udp") as capture:
        time.sleep(3.5)  # idle: no traffic, no liveness probe (30 s), only keepalives
    keepalives = capture.summary.of_kind("nat-keepalive")
    from_nat = [p for p in keepalives if p.src == nat and p.dst == peer and p.dport == 4500]
    assert 2 <= len(from_nat) <= 5, capture.summary.describe()
    assert all(_udp_payload(p) == b"\xff" for p in from_nat)
    assert len(from_nat) == len(keepalives), "only the side behind the NAT sends keepalives"
    a, _ = pair
    assert established(a, "pb")()
