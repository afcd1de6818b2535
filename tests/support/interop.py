"""Checks shared by the strongSwan interop tests (IKEv2 and IKEv1): traffic crosses the
wire only encrypted, and kipsec's installed child SAs mirror charon's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.capture import Capture
from support.netns import WIRE, WIRE_BRIDGE, Topology, udp_roundtrip
from support.sidecars import MARKER, Sidecar, peer_entry, ping_marked
from support.strongswan import Charon


def assert_traffic_both_ways_only_encrypted(topo: Topology, path: Path) -> None:
    with Capture(topo, WIRE, WIRE_BRIDGE, path) as capture:
        ping_marked(topo, "pa", "pb")
        ping_marked(topo, "pb", "pa")
        assert udp_roundtrip(topo, "pa", "pb", MARKER) == MARKER
        assert udp_roundtrip(topo, "pb", "pa", MARKER, port=7778) == MARKER
    summary = capture.summary
    assert summary.kinds["esp-in-udp"] >= 8, summary.describe()
    assert not summary.unexpected(), summary.describe()
    assert not summary.contains(MARKER), summary.describe()
    assert not summary.contains(MARKER[:16]), summary.describe()


def charon_child_spis(charon: Charon) -> set[tuple[str, str]]:
    """(spi_in, spi_out) of charon's INSTALLED CHILD_SAs."""
    return {
        (c.spi_in, c.spi_out)
        for sa in charon.list_sas()
        for c in sa.children
        if c.state == "INSTALLED"
    }


def kipsec_installed_spis(sidecar: Sidecar) -> set[tuple[str, str]]:
    return {(c["spi_in"], c["spi_out"]) for c in sidecar.installed("b")}


def mirrored(sidecar: Sidecar, charon: Charon) -> bool:
    """kipsec's installed child SAs are exactly charon's, seen from the other side."""
    ours = kipsec_installed_spis(sidecar)
    theirs = {(spi_out, spi_in) for spi_in, spi_out in charon_child_spis(charon)}
    return bool(ours) and ours == theirs


def add_gateway_nodes(topo: Topology) -> None:
    """Nodes a and b with pods pa and pb: kipsec gateways a, charon gateways b."""
    for node, pod in (("a", "pa"), ("b", "pb")):
        topo.add_node(node)
        topo.add_pod(pod, node)


def gateway_peer(topo: Topology, **options: Any) -> dict[str, Any]:
    """kipsec's peer entry for charon on b, protecting pod CIDR a to pod CIDR b."""
    return peer_entry(
        topo,
        "b",
        trafficSelectors={
            "local": [str(topo.node("a").pod_cidr)],
            "remote": [str(topo.node("b").pod_cidr)],
        },
        **options,
    )
