"""Service ClusterIPs translated in the pod: traffic to a Service backed by a peer is
protected, the reply comes back from the ClusterIP, and the translation follows reloads.

The "ClusterIP" (10.96.0.10) exists nowhere in the topology: no node routes it and no
kube-proxy rewrites it, so a connection to it can only succeed through the sidecar's
translation in the client pod's own namespace.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kipsec_sidecar.daemon.service_nat import TABLE
from support.capture import Capture
from support.netns import (
    WIRE,
    WIRE_BRIDGE,
    CommandFailed,
    Topology,
    stop_process,
    wait_for_output,
)
from support.sidecars import MARKER, Sidecar, peer_entry, tcp_roundtrip, wait_mesh

pytestmark = pytest.mark.netns

CLUSTER_IP = "10.96.0.10"
SERVICE_PORT = 80
TARGET_PORT = 7070

_CONNECT = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
except OSError as exc:
    sys.exit(f"connect failed: {exc!r}")
"""


_LISTEN = r"""
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    server.accept()[0].close()
"""


def api_service(topology: Topology, *backends: str) -> dict[str, Any]:
    """The `services` entry: CLUSTER_IP:80/TCP → each backend pod's address, port 7070."""
    return {
        "name": "shop/api",
        "clusterIPs": [CLUSTER_IP],
        "ports": [
            {
                "port": SERVICE_PORT,
                "protocol": "TCP",
                "endpoints": [
                    {"address": topology.address(b), "targetPort": TARGET_PORT} for b in backends
                ],
            }
        ],
    }


def nat_table(topology: Topology, pod: str) -> str | None:
    """`nft list table inet kipsec_svc` in the pod, None when there is no such table."""
    result = topology.run(pod, "nft", "list", "table", "inet", TABLE, check=False)
    return result.stdout if result.returncode == 0 else None


@pytest.fixture
def client(pods: Topology, tmp_path: Path) -> Iterator[Sidecar]:
    """pa (the client, with the Service) and pb (serving it), peers, established.

    The configuration file is not polled: the test reloads explicitly, so the reload's
    answer is the one that applied the change.
    """
    a, b = Sidecar(pods, "pa", tmp_path), Sidecar(pods, "pb", tmp_path)
    a.write([peer_entry(pods, "pb")], services=[api_service(pods, "pb")])
    b.write([peer_entry(pods, "pa")])
    a.start(config_poll_interval=0)
    b.start()
    try:
        wait_mesh({"pa": a, "pb": b})
        yield a
    finally:
        for sidecar in (a, b):
            sidecar.stop()


def test_traffic_to_a_cluster_ip_is_carried_encrypted_to_the_peer_and_answered(
    client: Sidecar, pods: Topology, tmp_path: Path
) -> None:
    with Capture(pods, WIRE, WIRE_BRIDGE, tmp_path / "wire.pcap") as capture:
        tcp_roundtrip(pods, "pa", "pb", TARGET_PORT, connect_to=(CLUSTER_IP, SERVICE_PORT))
    summary = capture.summary
    assert not summary.contains(MARKER), summary.describe()
    assert not summary.unexpected(), summary.describe()
    assert summary.kinds["esp-in-udp"] > 0, summary.describe()
    assert client.peer("pb")["children"][0]["packets_out"] > 0


def test_a_reload_without_the_service_stops_the_translation_and_touches_no_peer(
    client: Sidecar, pods: Topology
) -> None:
    server = pods.popen(
        "pb",
        [sys.executable, "-c", _LISTEN, pods.address("pb"), str(TARGET_PORT)],
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None
    wait_for_output(server.stdout, b"ready", 5)
    pods.python("pa", _CONNECT, CLUSTER_IP, str(SERVICE_PORT), timeout=10)
    spis = client.spis("pb")
    client.write([peer_entry(pods, "pb")])

    answer = client.control("reload")

    assert "services updated (0)" in str(answer)
    assert nat_table(pods, "pa") is None
    with pytest.raises(CommandFailed):
        pods.python("pa", _CONNECT, CLUSTER_IP, str(SERVICE_PORT), timeout=10)
    assert client.spis("pb") == spis
    stop_process(server)


def test_the_table_is_removed_at_stop(client: Sidecar, pods: Topology) -> None:
    assert f"dnat ip to {pods.address('pb')}:{TARGET_PORT}" in (nat_table(pods, "pa") or "")

    client.stop()

    assert nat_table(pods, "pa") is None


def test_a_stale_table_of_a_crashed_run_is_replaced_at_start(
    pods: Topology, tmp_path: Path
) -> None:
    stale = (
        f"table inet {TABLE} {{\n chain output {{\n"
        "  type nat hook output priority -100; policy accept;\n"
        f"  ip daddr {CLUSTER_IP} tcp dport 80 dnat ip to 10.10.9.9:1\n }}\n}}\n"
    )
    pods.run("pa", "nft", "-f", "-", input=stale)
    a = Sidecar(pods, "pa", tmp_path)
    a.write([peer_entry(pods, "pb", start="onDemand")])

    a.start()
    try:
        assert nat_table(pods, "pa") is None
    finally:
        a.stop()
