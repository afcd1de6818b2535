"""Plaintext that claims a peer's protected address is dropped in the pod (userspace datapath).

Two sidecars (pa, pb) protect pod-to-pod traffic with an IKE child SA on the userspace
datapath. A third pod (pz, behind pb's node) is the attacker: it forges plain UDP
datagrams whose source is pb's address and sends them to pa. pa's nftables table
``inet kipsec_inbound`` must drop them — only what comes out of the TUN device may carry a
peer's protected addresses — while the same payload sent by pb through the tunnel, and
traffic from addresses no selector covers, still reach pa's application.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kipsec_sidecar.datapath.inbound_filter import TABLE
from support.capture import Capture
from support.netns import WIRE, WIRE_BRIDGE, Topology, wait_for_output
from support.sidecars import Sidecar, peer_entry, wait_mesh, wait_until

pytestmark = pytest.mark.netns

PORT = 7979
LISTEN_SECONDS = 3.0
"""How long pa's application listens; every datagram is sent well within it."""
SPOOFED = b"kipsec-inbound-spoofed-4d21"
TUNNELLED = b"kipsec-inbound-tunnelled-4d21"
CLEAR = b"kipsec-inbound-clear-4d21"

_LISTEN = r"""
import json, socket, sys, time
sock = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
deadline = time.monotonic() + float(sys.argv[3])
print("ready", flush=True)
got = []
while (left := deadline - time.monotonic()) > 0:
    sock.settimeout(left)
    try:
        data, address = sock.recvfrom(65535)
    except TimeoutError:
        break
    got.append([address[0], data.hex()[:200]])
print(json.dumps(got), flush=True)
"""

_SEND = r"""
import socket, sys, time
sock = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    sock.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.1)
"""

_FORGE = r"""
import ipaddress, socket, struct, sys, time
source, destination, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
payload = bytes.fromhex(sys.argv[4])
udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload  # checksum 0: none
header = struct.pack(
    "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
    ipaddress.IPv4Address(source).packed, ipaddress.IPv4Address(destination).packed,
)
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # header included
for _ in range(3):
    sock.sendto(header + udp, (destination, 0))
    time.sleep(0.1)
"""


def receive_while(
    pods: Topology,
    send: list[tuple[str, str, list[str]]],
    *,
    at: tuple[str, str, int] | None = None,
) -> list[tuple[str, bytes]]:
    """(source, payload's first 100 bytes) of every datagram an application receives while
    each (namespace, script, args) of ``send`` runs, within :data:`LISTEN_SECONDS`.

    ``at`` is (namespace, address, port) of the application; by default pa's, :data:`PORT`.
    """
    name, address, port = at or ("pa", pods.address("pa"), PORT)
    listener = pods.popen(
        name,
        [sys.executable, "-c", _LISTEN, address, str(port), str(LISTEN_SECONDS)],
        stdout=subprocess.PIPE,
    )
    assert listener.stdout is not None
    wait_for_output(listener.stdout, b"ready", 5)
    for namespace, script, args in send:
        pods.python(namespace, script, *args)
    out, _ = listener.communicate(timeout=LISTEN_SECONDS + 5)
    return [(source, bytes.fromhex(data)) for source, data in json.loads(out.splitlines()[-1])]


def forged(pods: Topology, payload: bytes) -> tuple[str, str, list[str]]:
    """pz sends ``payload`` to pa with pb's address as the source (plain UDP, no IPsec)."""
    args = [pods.address("pb"), pods.address("pa"), str(PORT), payload.hex()]
    return ("pz", _FORGE, args)


def plain(pods: Topology, sender: str, payload: bytes) -> tuple[str, str, list[str]]:
    """``sender`` sends ``payload`` to pa from an ordinary socket."""
    return (sender, _SEND, [pods.address("pa"), str(PORT), payload.hex()])


def inbound_table(pods: Topology, pod: str) -> str | None:
    """`nft -a list table inet kipsec_inbound` in ``pod`` (counters zeroed), None if absent."""
    result = pods.run(pod, "nft", "-a", "list", "table", "inet", TABLE, check=False)
    if result.returncode != 0:
        return None
    return re.sub(r"packets \d+ bytes \d+", "packets 0 bytes 0", result.stdout)


@pytest.fixture
def attacker(pods: Topology) -> Topology:
    """The two pods plus pz (10.10.2.3), the attacker, on pb's node."""
    pods.add_pod("pz", "b")
    return pods


@pytest.fixture
def mesh(attacker: Topology, tmp_path: Path) -> Iterator[dict[str, Sidecar]]:
    """pa and pb on the userspace datapath with an established child SA."""
    sidecars = {name: Sidecar(attacker, name, tmp_path) for name in ("pa", "pb")}
    sidecars["pa"].write([peer_entry(attacker, "pb")], datapath="userspace")
    sidecars["pb"].write([peer_entry(attacker, "pa")], datapath="userspace")
    for sidecar in sidecars.values():
        sidecar.start()
    try:
        wait_mesh(sidecars)
        yield sidecars
    finally:
        for sidecar in sidecars.values():
            sidecar.stop()


def test_plaintext_forged_from_a_peers_address_is_dropped_and_the_tunnel_delivers(
    mesh: dict[str, Sidecar], attacker: Topology, tmp_path: Path
) -> None:
    with Capture(attacker, WIRE, WIRE_BRIDGE, tmp_path / "wire.pcap") as capture:
        got = receive_while(attacker, [forged(attacker, SPOOFED), plain(attacker, "pb", TUNNELLED)])

    assert capture.summary.contains(SPOOFED), "the forged datagrams never reached pa's node"
    payloads = {payload for _, payload in got}
    assert TUNNELLED in payloads, got
    assert SPOOFED not in payloads, got


def test_traffic_no_selector_covers_still_flows_in_clear(
    mesh: dict[str, Sidecar], attacker: Topology
) -> None:
    got = receive_while(attacker, [plain(attacker, "pz", CLEAR)])

    assert (attacker.address("pz"), CLEAR) in got


def test_a_peer_without_an_sa_is_already_dropped(attacker: Topology, tmp_path: Path) -> None:
    a = Sidecar(attacker, "pa", tmp_path)
    a.write([peer_entry(attacker, "pb")], datapath="userspace")  # pb runs no sidecar
    a.start()

    got = receive_while(attacker, [forged(attacker, SPOOFED)])

    assert a.installed("pb") == []
    assert got == []
    a.stop()


def test_a_rekey_leaves_the_table_alone(mesh: dict[str, Sidecar], attacker: Topology) -> None:
    before = inbound_table(attacker, "pa")
    spis = mesh["pa"].spis("pb")

    mesh["pa"].control("rekey", peer="pb", kind="child")
    wait_until("child rekeyed", lambda: not spis & mesh["pa"].spis("pb"))

    assert before is not None and 'drop comment "pb"' in before
    assert inbound_table(attacker, "pa") == before


def test_a_reload_that_replaces_the_peer_with_the_same_selectors_leaves_the_table_alone(
    mesh: dict[str, Sidecar], attacker: Topology
) -> None:
    before = inbound_table(attacker, "pa")
    mesh["pa"].write([peer_entry(attacker, "pb", start="onDemand")], datapath="userspace")

    assert mesh["pa"].control("reload") == ["replaced peer pb (configuration changed)"]

    got = receive_while(attacker, [forged(attacker, SPOOFED)])
    assert got == []
    assert before is not None and inbound_table(attacker, "pa") == before


def test_a_reload_without_the_peer_removes_its_rules(
    mesh: dict[str, Sidecar], attacker: Topology
) -> None:
    mesh["pa"].write([], datapath="userspace")

    mesh["pa"].control("reload")

    wait_until("table gone", lambda: inbound_table(attacker, "pa") is None)
    got = receive_while(attacker, [forged(attacker, SPOOFED)])
    assert (attacker.address("pb"), SPOOFED) in got


def test_start_replaces_a_stale_table_and_stop_removes_it(
    attacker: Topology, tmp_path: Path
) -> None:
    attacker.run("pa", "nft", "add", "table", "inet", TABLE)
    attacker.run("pa", "nft", "add", "chain", "inet", TABLE, "stale")
    a = Sidecar(attacker, "pa", tmp_path)
    a.write([peer_entry(attacker, "pb")], datapath="userspace")

    a.start()
    table = inbound_table(attacker, "pa") or ""
    a.stop()

    assert "stale" not in table
    assert f"ip saddr {attacker.address('pb')} ip daddr {attacker.address('pa')} drop" in table
    assert inbound_table(attacker, "pa") is None


# --- IPv6: neighbour discovery and fragments ------------------------------------------------

NODE_A6 = "fd00:6b70::11"
NODE_B6 = "fd00:6b70::12"

_INSTALL = r"""
import ipaddress, sys
from kipsec_sidecar.core.ike.constants import ProtocolId
from kipsec_sidecar.core.traffic_selectors import TrafficSelector
from kipsec_sidecar.datapath.base import PeerPolicy
from kipsec_sidecar.datapath.inbound_filter import InboundFilter
local, remote = sys.argv[1], sys.argv[2]
policy = PeerPolicy(
    "b", ipaddress.ip_address(remote), (TrafficSelector.host(local),),
    (TrafficSelector.host(remote),), "transport", ProtocolId.ESP,
)
InboundFilter("kipsec0").sync([policy])
"""


@pytest.fixture
def link6(_swept: list[str]) -> Iterator[Topology]:
    """Nodes a and b on one IPv6 link; a drops clear text from b (the filter alone)."""
    with Topology(ipv6=True) as topo:
        topo.add_node("a")
        topo.add_node("b")
        topo.ip("a", f"addr add {NODE_A6}/64 dev eth0 nodad")
        topo.ip("b", f"addr add {NODE_B6}/64 dev eth0 nodad")
        topo.python("a", _INSTALL, NODE_A6, NODE_B6)
        yield topo


def test_ipv6_clear_text_from_the_peer_is_dropped(link6: Topology) -> None:
    send = ("b", _SEND, [NODE_A6, str(PORT), CLEAR.hex()])

    assert receive_while(link6, [send], at=("a", NODE_A6, PORT)) == []


def test_ipv6_neighbour_discovery_with_the_peer_still_works(link6: Topology) -> None:
    # a must resolve b: b's neighbour advertisement comes from b's protected address.
    send = ("a", _SEND, [NODE_B6, str(PORT), CLEAR.hex()])

    got = receive_while(link6, [send], at=("b", NODE_B6, PORT))

    assert (NODE_A6, CLEAR) in got


def test_ipv6_fragments_to_the_nat_t_port_are_reassembled_and_accepted(link6: Topology) -> None:
    # 3000 bytes leave b as IPv6 fragments; the non-first ones carry no UDP header.
    big = CLEAR * 110
    send = ("b", _SEND, [NODE_A6, "4500", big.hex()])

    got = receive_while(link6, [send], at=("a", NODE_A6, 4500))

    assert (NODE_B6, big[:100]) in got
