"""The userspace datapath between two pods on two nodes, with manual SAs and real packets.

Each pod runs :mod:`support.userspace_harness` (the datapath plus a stand-in for the
daemon's UDP 4500 socket) in its own namespace; the SAs are built directly with
``IpsecSa`` (one key per direction, SPIs swapped). Captures on the node segment check
what the wire carries. No IKE is involved.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether

from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.core.traffic_selectors import TrafficSelector
from kipsec_sidecar.datapath.base import DatapathError, PeerPolicy
from kipsec_sidecar.datapath.routing import DEFAULT_ROUTE_PROTO, DEFAULT_RULE_PRIORITY
from kipsec_sidecar.datapath.routing import DEFAULT_TABLE as TABLE
from kipsec_sidecar.datapath.userspace import UserspaceDatapath
from support.capture import Capture, CaptureSummary
from support.netns import (
    WIRE,
    WIRE_BRIDGE,
    CommandFailed,
    Topology,
    stop_process,
    tcp_throughput,
    udp_roundtrip,
    wait_for_output,
)
from support.userspace_harness import Harness

pytestmark = pytest.mark.netns

MARKER = b"kipsec-userspace-marker-51c9"
PEER = "p"
SPI_A_TO_B = 0x0000A001
SPI_B_TO_A = 0x0000B002
KEYS = {
    "esp": ({"encr_id": int(EncrId.AES_GCM_16)}, "encr_key", 36),
    "ah": ({"integ_id": int(IntegId.HMAC_SHA2_256_128)}, "integ_key", 32),
}


def _spec(
    me: str,
    peer: str,
    keys: dict[str, str],
    *,
    mode: str = "tunnel",
    protocol: str = "esp",
    encapsulation: str = "udp",
    outbound_at_start: bool = True,
    in_selectors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A harness spec for the pod at ``me`` talking to the pod at ``peer``.

    ``in_selectors`` (``local_ts``/``remote_ts``) gives the inbound SA selectors of its own,
    as a responder's narrowing does."""
    algorithms, key_field, _ = KEYS[protocol]

    def sa(spi: int, src: str, dst: str) -> dict[str, Any]:
        return {"spi": spi, "src": src, "dst": dst, **algorithms, key_field: keys[f"{src}>{dst}"]}

    first = me < peer  # the pod with the lower address sends on SPI_A_TO_B
    out_spi, in_spi = (SPI_A_TO_B, SPI_B_TO_A) if first else (SPI_B_TO_A, SPI_A_TO_B)
    return {
        "local_addr": me,
        "peer": {
            "name": PEER,
            "remote_addr": peer,
            "local_ts": [f"{me}/32"],
            "remote_ts": [f"{peer}/32"],
            "mode": mode,
            "protocol": protocol,
            "encapsulation": encapsulation,
        },
        "out": sa(out_spi, me, peer),
        "in": {**sa(in_spi, peer, me), **(in_selectors or {})},
        "outbound_at_start": outbound_at_start,
    }


def _pods(topology: Topology) -> tuple[str, str]:
    topology.add_node("a")
    topology.add_node("b")
    topology.add_pod("pa", "a")
    topology.add_pod("pb", "b")
    return topology.address("pa"), topology.address("pb")


def _start_pair(
    topology: Topology, *, a_options: dict[str, Any] | None = None, **options: Any
) -> tuple[Harness, Harness]:
    """Both pods' datapaths with matching SAs (``a_options`` override pod pa's only)."""
    a, b = _pods(topology)
    protocol = options.get("protocol", "esp")
    size = KEYS[protocol][2]
    keys = {f"{a}>{b}": os.urandom(size).hex(), f"{b}>{a}": os.urandom(size).hex()}
    ha = Harness(topology, "pa", _spec(a, b, keys, **{**options, **(a_options or {})}))
    hb = Harness(topology, "pb", _spec(b, a, keys, **options))
    return ha, hb


def _wire(topology: Topology, tmp_path: Path, name: str = "wire") -> Capture:
    return Capture(topology, WIRE, WIRE_BRIDGE, tmp_path / f"{name}.pcap")


def _assert_only(summary: CaptureSummary, kind: str) -> None:
    assert summary.kinds[kind] > 0, summary.describe()
    assert not summary.unexpected({kind, "arp", "igmp"}), summary.describe()


def _own_kernel_state(topology: Topology, pod: str) -> dict[str, str]:
    """What of the datapath's kinds of state exists in ``pod`` now, as text."""

    def own_rules(*family: str) -> str:
        listing = topology.run(pod, "ip", *family, "rule").stdout
        prefixes = (f"{DEFAULT_RULE_PRIORITY}:", f"{DEFAULT_RULE_PRIORITY + 1}:")
        return "\n".join(line for line in listing.splitlines() if line.startswith(prefixes))

    return {
        "rules": own_rules(),
        "rules6": own_rules("-6"),
        "routes": topology.run(pod, "ip", "route", "show", "table", str(TABLE)).stdout.strip(),
        "device": topology.run(pod, "ip", "-o", "link", "show", "kipsec0", check=False).stdout,
        "nft": topology.run(pod, "nft", "list", "table", "inet", "kipsec", check=False).stdout,
    }


# -- carrying traffic ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_esp_in_udp_carries_ping_and_udp_both_ways_and_the_wire_sees_only_udp_4500(
    topology: Topology, tmp_path: Path, mode: str
) -> None:
    ha, hb = _start_pair(topology, mode=mode)
    with _wire(topology, tmp_path) as capture:
        topology.ping("pa", "pb", count=2)
        topology.ping("pb", "pa", count=2)
        assert udp_roundtrip(topology, "pa", "pb", MARKER) == MARKER
        assert udp_roundtrip(topology, "pb", "pa", MARKER, port=7778) == MARKER
    summary = capture.summary
    _assert_only(summary, "esp-in-udp")
    assert not summary.contains(MARKER), summary.describe()
    pods = {topology.address("pa"), topology.address("pb")}
    for packet in summary.of_kind("esp-in-udp"):
        assert {packet.src, packet.dst} == pods
        assert packet.sport == packet.dport == 4500
    for harness in (ha, hb):
        stats = harness.stats()["stats"]
        assert stats["packets_out"][PEER] >= 4 and stats["packets_in"][PEER] >= 4
        assert not stats["errors"], stats


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_raw_esp_carries_traffic_as_ip_protocol_50(
    topology: Topology, tmp_path: Path, mode: str
) -> None:
    _start_pair(topology, mode=mode, encapsulation="raw")
    with _wire(topology, tmp_path) as capture:
        topology.ping("pa", "pb", count=2)
        assert udp_roundtrip(topology, "pb", "pa", MARKER) == MARKER
    _assert_only(capture.summary, "esp")
    assert not capture.summary.contains(MARKER), capture.summary.describe()


@pytest.mark.parametrize("mode", ["transport", "tunnel"])
def test_ah_carries_traffic_as_ip_protocol_51_authenticated_not_encrypted(
    topology: Topology, tmp_path: Path, mode: str
) -> None:
    _start_pair(topology, mode=mode, protocol="ah", encapsulation="raw")
    with _wire(topology, tmp_path) as capture:
        topology.ping("pa", "pb", count=2)
        assert udp_roundtrip(topology, "pa", "pb", MARKER) == MARKER
    summary = capture.summary
    _assert_only(summary, "ah")
    # AH gives integrity only: the marker is visible, but only inside AH packets.
    assert summary.with_marker(MARKER)
    assert {p.kind for p in summary.with_marker(MARKER)} == {"ah"}


def test_ah_with_udp_encapsulation_is_refused_when_the_peer_is_added() -> None:
    datapath = UserspaceDatapath(udp_sender=lambda data, addr: None, on_acquire=lambda peer: None)
    policy = PeerPolicy(
        peer=PEER,
        remote_addr=TrafficSelector.host("10.10.2.2").start_addr,
        local_ts=(TrafficSelector.host("10.10.1.2"),),
        remote_ts=(TrafficSelector.host("10.10.2.2"),),
        mode="transport",
        protocol=ProtocolId.AH,
        encapsulation="udp",
    )
    with pytest.raises(DatapathError, match="AH cannot be UDP-encapsulated"):
        datapath.add_peer(policy)


def test_raw_sockets_without_cap_net_raw_fail_naming_the_capability(topology: Topology) -> None:
    topology.add_node("a")
    code = (
        "import socket\n"
        "from kipsec_sidecar.datapath.base import DatapathError\n"
        "from kipsec_sidecar.datapath.sockets import raw_socket\n"
        "try:\n"
        "    raw_socket(50, socket.AF_INET, 0x6b70)\n"
        "except DatapathError as exc:\n"
        "    print(exc)\n"
    )
    repo = Path(__file__).resolve().parents[2]
    result = topology.run(
        "a",
        *("setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw"),
        *(sys.executable, "-c", code),
        env={**os.environ, "PYTHONPATH": str(repo / "sidecar")},
    )
    assert "CAP_NET_RAW" in result.stdout
    assert "encapsulation: udp" in result.stdout


# -- fail closed -----------------------------------------------------------------------


def test_without_an_outbound_sa_a_ping_gets_no_reply_and_nothing_leaves_in_the_clear(
    topology: Topology, tmp_path: Path
) -> None:
    ha, _ = _start_pair(topology, a_options={"outbound_at_start": False})
    with _wire(topology, tmp_path) as capture:
        with pytest.raises(CommandFailed):
            topology.ping("pa", "pb", count=1, timeout=1.5)
        topology.python(
            "pa",
            "import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.sendto(sys.argv[2].encode(), (sys.argv[1], 7777))\n",
            topology.address("pb"),
            MARKER.decode(),
        )
    summary = capture.summary
    assert not summary.contains(MARKER), summary.describe()
    assert not summary.unexpected(), summary.describe()
    answer = ha.stats()
    assert answer["stats"]["queued"][PEER] >= 2
    assert answer["acquires"] == [PEER], "the daemon is asked for an SA exactly once"


_RECEIVER = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.settimeout(float(sys.argv[4]))
print("ready", flush=True)
got = []
try:
    while len(got) < int(sys.argv[3]):
        got.append(sock.recv(65535).decode())
finally:
    print("got " + " ".join(got), flush=True)
"""


def test_packets_sent_before_the_sa_exists_are_delivered_in_order_once_it_is_set(
    topology: Topology,
) -> None:
    ha, _ = _start_pair(topology, a_options={"outbound_at_start": False})
    count = 5
    receiver = topology.popen(
        "pb",
        [sys.executable, "-c", _RECEIVER, topology.address("pb"), "7000", str(count), "8"],
        stdout=subprocess.PIPE,
    )
    assert receiver.stdout is not None
    wait_for_output(receiver.stdout, b"ready", 5)
    topology.python(
        "pa",
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for i in range(int(sys.argv[2])):\n"
        "    s.sendto(f'm{i}'.encode(), (sys.argv[1], 7000))\n",
        topology.address("pb"),
        str(count),
    )
    queued = ha.stats()
    assert queued["stats"]["queued"] == {PEER: count}
    assert queued["stats"].get("packets_out", {}) == {}
    assert queued["acquires"] == [PEER]
    ha.request("set_outbound")
    out = wait_for_output(receiver.stdout, b"got", 8)
    out += receiver.stdout.readline()
    assert out.split(b"got", 1)[1].split() == [f"m{i}".encode() for i in range(count)]
    assert ha.stats()["stats"]["packets_out"] == {PEER: count}
    stop_process(receiver)


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.05)


def test_after_the_datapath_is_killed_traffic_to_the_peer_is_blackholed_not_sent_in_clear(
    topology: Topology, tmp_path: Path
) -> None:
    ha, _ = _start_pair(topology)
    topology.ping("pa", "pb")
    os.kill(ha.proc.pid, signal.SIGKILL)  # the TUN descriptor closes with the process
    ha.proc.wait(timeout=5)
    _wait_for(lambda: not _own_kernel_state(topology, "pa")["device"], 3, "kipsec0 must disappear")
    with _wire(topology, tmp_path) as capture:
        with pytest.raises(CommandFailed):
            topology.ping("pa", "pb", count=1, timeout=1.5)
        topology.python(
            "pa",
            "import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "try:\n"
            "    s.sendto(sys.argv[2].encode(), (sys.argv[1], 7777))\n"
            "except OSError as exc:\n"
            "    print(exc)\n",
            topology.address("pb"),
            MARKER.decode(),
        )
    summary = capture.summary
    assert not summary.contains(MARKER), summary.describe()
    assert not summary.unexpected(), summary.describe()
    state = _own_kernel_state(topology, "pa")
    assert f"blackhole {topology.address('pb')}" in state["routes"]
    assert state["rules"].count("\n") == 1, state["rules"]  # both rules survived


# -- integrity and replay --------------------------------------------------------------


def _esp_payloads_to(summary: CaptureSummary, dst: str) -> list[bytes]:
    payloads = []
    for packet in summary.of_kind("esp-in-udp"):
        if packet.dst == dst:
            payloads.append(bytes(Ether(packet.data)[UDP].payload))
    return payloads


def test_tampered_and_replayed_esp_is_dropped_and_counted_and_traffic_still_flows(
    topology: Topology, tmp_path: Path
) -> None:
    _, hb = _start_pair(topology)
    pb = topology.address("pb")
    with _wire(topology, tmp_path) as capture:
        assert udp_roundtrip(topology, "pa", "pb", MARKER) == MARKER
    recorded = _esp_payloads_to(capture.summary, pb)[0]
    # A fresh sequence number (else the replay check would catch it first), one bit of the
    # ICV flipped.
    fresh = (int.from_bytes(recorded[4:8], "big") + 100).to_bytes(4, "big")
    tampered = recorded[:4] + fresh + recorded[8:-1] + bytes([recorded[-1] ^ 0x01])
    topology.python(
        "a",
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for data in sys.argv[2:]:\n"
        "    s.sendto(bytes.fromhex(data), (sys.argv[1], 4500))\n",
        pb,
        recorded.hex(),
        tampered.hex(),
    )

    def counted() -> bool:
        stats = hb.stats()["stats"]
        return bool(stats["replay_drops"].get(PEER) and stats["integrity_drops"].get(PEER))

    _wait_for(counted, 3, "one replay and one integrity drop must be counted")
    stats = hb.stats()["stats"]
    assert stats["replay_drops"] == {PEER: 1}
    assert stats["integrity_drops"] == {PEER: 1}
    assert udp_roundtrip(topology, "pa", "pb", MARKER, port=7790) == MARKER


def test_inner_packets_outside_the_sas_own_selectors_are_dropped_and_counted(
    topology: Topology,
) -> None:
    only_udp_7777 = {"protocol": 17, "start_port": 7777, "end_port": 7777}
    narrowed = {  # pa's inbound SA: from pb, to pa's UDP port 7777 only (pods' addresses)
        "local_ts": [{"network": "10.10.1.2/32", **only_udp_7777}],
        "remote_ts": [{"network": "10.10.2.2/32"}],
    }
    ha, _ = _start_pair(topology, a_options={"in_selectors": narrowed})

    assert udp_roundtrip(topology, "pb", "pa", MARKER, port=7777) == MARKER
    with pytest.raises(CommandFailed):
        udp_roundtrip(topology, "pb", "pa", MARKER, port=7790, timeout=2)

    assert ha.stats()["stats"]["errors"].get("selector", 0) > 0


# -- lifecycle -------------------------------------------------------------------------


def test_close_leaves_no_device_route_rule_or_nft_table_behind(topology: Topology) -> None:
    ha, _ = _start_pair(topology)
    before = _own_kernel_state(topology, "pa")
    assert all(before.values()), before
    assert ha.close() == {"closed": True}
    after = _own_kernel_state(topology, "pa")
    assert after == {"rules": "", "rules6": "", "routes": "", "device": "", "nft": ""}


def test_start_removes_the_state_of_an_earlier_run_and_nothing_else(topology: Topology) -> None:
    a, b = _pods(topology)
    prio = DEFAULT_RULE_PRIORITY
    # An earlier run's leftovers, and look-alikes that belong to someone else.
    topology.ip(
        "pa",
        f"rule add priority {prio} fwmark {TABLE:#x} lookup main",
        f"rule add priority {prio + 1} lookup {TABLE}",
        f"route add blackhole 10.10.9.0/24 table {TABLE} proto {DEFAULT_ROUTE_PROTO} metric 1000",
        f"rule add priority {prio + 1} lookup 100",
        f"route add blackhole 10.10.8.0/24 table {TABLE} proto static",
    )
    topology.run("pa", "nft", "add", "table", "inet", "kipsec")
    topology.run("pa", "nft", "add", "chain", "inet", "kipsec", "stale")
    keys = {f"{a}>{b}": os.urandom(36).hex(), f"{b}>{a}": os.urandom(36).hex()}
    Harness(topology, "pa", _spec(a, b, keys))
    Harness(topology, "pb", _spec(b, a, keys))
    state = _own_kernel_state(topology, "pa")
    # Ours once each (the stale copies are gone); the foreign rule stays.
    assert sorted(state["rules"].splitlines()) == [
        f"{prio}:\tfrom all fwmark {TABLE:#x} lookup main",
        f"{prio + 1}:\tfrom all lookup 100",
        f"{prio + 1}:\tfrom all lookup {TABLE}",
    ]
    assert "10.10.9.0/24" not in state["routes"]
    assert "blackhole 10.10.8.0/24 proto static" in state["routes"]
    assert "stale" not in state["nft"]
    topology.ping("pa", "pb")


# -- MTU -------------------------------------------------------------------------------


def test_tun_mtu_is_the_path_mtu_minus_the_overhead_and_a_bulk_tcp_transfer_completes(
    topology: Topology,
) -> None:
    ha, _ = _start_pair(topology)
    # veth MTU 1500; AES-GCM-16 tunnel mode in UDP over IPv4: 20 + 8 + 8 + 8 + 16 = 60
    # bytes, plus the ESP trailer padded to 4 bytes: ceil4(n + 2) <= 1440 -> n = 1438.
    assert ha.ready["path_mtu"] == 1500
    assert ha.ready["mtu"] == 1438
    assert " mtu 1438 " in _own_kernel_state(topology, "pa")["device"]
    assert "maxseg size set rt mtu" in _own_kernel_state(topology, "pa")["nft"]
    pb = topology.address("pb")
    size = 4 * 1024 * 1024
    sink = topology.popen(
        "pb", [sys.executable, "-c", _TCP_SINK, pb, "7100", "10"], stdout=subprocess.PIPE
    )
    assert sink.stdout is not None
    wait_for_output(sink.stdout, b"ready", 5)
    topology.python("pa", _TCP_SOURCE, pb, "7100", str(size), timeout=15)
    wait_for_output(sink.stdout, f"{size}\n".encode(), 10)  # every byte arrived
    # The throughput, for the record (not asserted: it depends on the machine).
    mbits = tcp_throughput(topology, "pa", "pb", 2, ready_timeout=5)
    print(f"userspace datapath, AES-GCM tunnel over UDP: {mbits:.0f} Mbit/s")


_TCP_SINK = r"""
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
server.settimeout(float(sys.argv[3]))
print("ready", flush=True)
conn, _ = server.accept()
conn.settimeout(float(sys.argv[3]))
total = 0
while chunk := conn.recv(1 << 16):
    total += len(chunk)
print(total, flush=True)
"""

_TCP_SOURCE = r"""
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as conn:
    conn.sendall(bytes(range(256)) * (int(sys.argv[3]) // 256))
"""
