"""The namespace topology fixture: nodes and pods reach each other, captures see the wire,
and everything is torn down whatever happens in the test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from support.capture import Capture, classify
from support.netns import (
    PREFIX,
    WIRE,
    WIRE_BRIDGE,
    CommandFailed,
    Topology,
    host_command,
    list_namespaces,
    namespace_pids,
    sweep_stale,
    udp_roundtrip,
)

MARKER = b"kipsec-plaintext-marker-7f3a"


def two_nodes_two_pods(topo: Topology) -> None:
    topo.add_node("a")
    topo.add_node("b")
    topo.add_pod("pa", "a")
    topo.add_pod("pb", "b")


@pytest.mark.netns
def test_addresses_follow_the_node_and_pod_plan(topology: Topology) -> None:
    two_nodes_two_pods(topology)
    assert topology.address("a") == "192.0.2.11"
    assert topology.address("b") == "192.0.2.12"
    assert str(topology.node("b").pod_cidr) == "10.10.2.0/24"
    assert topology.address("pa") == "10.10.1.2"
    assert topology.address("pb") == "10.10.2.2"
    links = topology.run("pa", "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
    assert "10.10.1.2/32" in links


@pytest.mark.netns
def test_pods_on_different_nodes_ping_each_other(topology: Topology) -> None:
    two_nodes_two_pods(topology)
    topology.ping("pa", "pb", count=2)
    topology.ping("pb", "pa", count=2)


@pytest.mark.netns
def test_udp_message_crosses_nodes_pod_to_pod(topology: Topology) -> None:
    two_nodes_two_pods(topology)
    assert udp_roundtrip(topology, "pa", "pb", MARKER) == MARKER


@pytest.mark.netns
def test_capture_on_the_wire_sees_plain_pod_traffic(topology: Topology, tmp_path: Path) -> None:
    two_nodes_two_pods(topology)
    with Capture(topology, WIRE, WIRE_BRIDGE, tmp_path / "wire.pcap") as capture:
        udp_roundtrip(topology, "pa", "pb", MARKER)
    summary = capture.summary
    assert summary.contains(MARKER), summary.describe()
    carriers = summary.with_marker(MARKER)
    assert {(p.src, p.dst) for p in carriers} >= {("10.10.1.2", "10.10.2.2")}
    assert summary.kinds["udp"] >= 2
    assert 7777 in summary.udp_ports
    assert summary.unexpected(), "plain UDP must count as unexpected between IPsec peers"


@pytest.mark.netns
def test_without_pod_routes_pods_on_different_nodes_are_unreachable(
    gateway_topology: Topology,
) -> None:
    two_nodes_two_pods(gateway_topology)
    gateway_topology.ping("pa", "a")
    with pytest.raises(CommandFailed):
        gateway_topology.ping("pa", "pb", timeout=1)


@pytest.mark.netns
def test_pod_address_outside_its_node_cidr_is_refused(topology: Topology) -> None:
    topology.add_node("a")
    with pytest.raises(ValueError, match="not usable"):
        topology.add_pod("pa", "a", "10.10.9.2")


@pytest.mark.netns
def test_command_that_outlives_its_timeout_is_stopped(topology: Topology) -> None:
    topology.add_node("a")
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out"):
        topology.run("a", "sleep", "30", timeout=0.5)
    assert time.monotonic() - started < 5


@pytest.mark.netns
def test_namespaces_are_deleted_when_the_body_raises(_swept: list[str]) -> None:
    created: list[str] = []
    with pytest.raises(RuntimeError, match="test body failed"), Topology() as topo:
        two_nodes_two_pods(topo)
        created = topo.namespaces
        assert set(created) <= set(list_namespaces())
        raise RuntimeError("test body failed")
    assert len(created) == 5
    assert not set(created) & set(list_namespaces())


@pytest.mark.netns
def test_processes_in_the_namespaces_are_killed_on_close(_swept: list[str]) -> None:
    with Topology() as topo:
        topo.add_node("a")
        tracked = topo.popen("a", ["sleep", "300"])
        topo.run("a", "sh", "-c", "setsid sleep 301 >/dev/null 2>&1 < /dev/null &")
        stray = [pid for pid in namespace_pids(topo.namespace("a")) if pid != tracked.pid]
        assert stray, "the detached sleep should be running in the namespace"
    assert tracked.poll() is not None
    time.sleep(0.1)
    for pid in stray:
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=10)  # fmt: skip
    return int(proc.stdout)


@pytest.mark.netns
def test_sweeper_deletes_namespaces_of_dead_runs_only(topology: Topology) -> None:
    topology.add_node("a")
    stale = f"{PREFIX}-{_dead_pid()}-1-a"
    host_command(["ip", "netns", "add", stale])
    try:
        swept = sweep_stale()
    finally:
        host_command(["ip", "netns", "delete", stale], check=False)
    assert stale in swept
    assert stale not in list_namespaces()
    assert topology.namespace("a") in list_namespaces()


ETHER = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
"""Explicit MACs: a bare ``Ether()`` makes scapy ARP for the destination on the host."""


def _frame(payload: bytes, sport: int, dport: int) -> bytes:
    packet = ETHER / IP(src="192.0.2.11", dst="192.0.2.12") / UDP(sport=sport, dport=dport)
    return bytes(packet / payload)


@pytest.mark.parametrize(
    ("payload", "sport", "dport", "kind"),
    [
        (b"\x00\x00\x00\x00" + b"ike-message", 4500, 4500, "ike"),
        (b"\x12\x34\x56\x78" + b"\x00" * 20, 4500, 4500, "esp-in-udp"),
        (b"\xff", 4500, 4500, "nat-keepalive"),
        (b"\x00" * 28, 500, 500, "ike"),
        (MARKER, 40000, 7777, "udp"),
    ],
)
def test_capture_classifies_udp_by_port_and_non_esp_marker(
    payload: bytes, sport: int, dport: int, kind: str
) -> None:
    packet = classify(_frame(payload, sport, dport))
    assert (packet.kind, packet.protocol, packet.sport, packet.dport) == (kind, 17, sport, dport)


def test_capture_classifies_raw_esp_by_ip_protocol() -> None:
    frame = bytes(ETHER / IP(src="192.0.2.11", dst="192.0.2.12", proto=50) / (b"\x01" * 24))
    assert classify(frame).kind == "esp"
