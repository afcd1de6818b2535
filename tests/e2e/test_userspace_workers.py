"""The two-worker userspace datapath (``workers: 2``, :mod:`kipsec_sidecar.datapath.split`).

Each pod runs the harness with its outbound half in a worker process. The claims:
traffic crosses both ways; no (SPI, sequence number) is ever on the wire twice, also
across a worker that is killed mid-stream and restarted; a replayed packet is dropped;
a make-before-break rekey under a steady stream loses nothing; a killed worker lets
nothing out in clear and the daemon side notices (counts it, starts a new one).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether

from kipsec_sidecar.core.ike.constants import EncrId
from kipsec_sidecar.datapath.split import MAX_RESTARTS
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
from support.sidecars import wait_until
from support.userspace_harness import Harness, esp_tunnel_peer

pytestmark = pytest.mark.netns

MARKER = b"kipsec-workers-marker-7d21"
PEER = "p"
SPIS = {"a>b": 0xA001, "b>a": 0xB002, "next a>b": 0xA003, "next b>a": 0xB004}


def _spec(me: str, peer: str, keys: dict[str, str], workers: int) -> dict[str, Any]:
    def sa(name: str, src: str, dst: str) -> dict[str, Any]:
        return {
            "spi": SPIS[name],
            "src": src,
            "dst": dst,
            "encr_id": int(EncrId.AES_GCM_16),
            "encr_key": keys[name],
        }

    out, back = ("a>b", "b>a") if me < peer else ("b>a", "a>b")
    return {
        "local_addr": me,
        "peer": esp_tunnel_peer(me, peer, PEER),
        "out": sa(out, me, peer),
        "in": sa(back, peer, me),
        "next_out": sa(f"next {out}", me, peer),
        "next_in": sa(f"next {back}", peer, me),
        "workers": workers,
    }


def _start_pair(topology: Topology, workers: int = 2) -> tuple[Harness, Harness]:
    topology.add_node("a")
    topology.add_node("b")
    topology.add_pod("pa", "a")
    topology.add_pod("pb", "b")
    a, b = topology.address("pa"), topology.address("pb")
    keys = {name: os.urandom(36).hex() for name in SPIS}
    # Worker processes import the datapath: slow on the loaded machine.
    ha = Harness(topology, "pa", _spec(a, b, keys, workers), timeout=60)
    hb = Harness(topology, "pb", _spec(b, a, keys, workers), timeout=60)
    ha.timeout = hb.timeout = 15
    return ha, hb


def _wire(topology: Topology, tmp_path: Path, name: str = "wire") -> Capture:
    return Capture(topology, WIRE, WIRE_BRIDGE, tmp_path / f"{name}.pcap")


def _esp(summary: CaptureSummary) -> list[tuple[str | None, bytes]]:
    """(outer destination, ESP bytes) of every ESP-in-UDP packet captured."""
    return [
        (packet.dst, bytes(Ether(packet.data)[UDP].payload))
        for packet in summary.of_kind("esp-in-udp")
    ]


def _repeated_sequence_numbers(summary: CaptureSummary) -> dict[tuple[int, int], int]:
    seen = Counter(
        (int.from_bytes(esp[:4], "big"), int.from_bytes(esp[4:8], "big"))
        for _, esp in _esp(summary)
    )
    return {key: count for key, count in seen.items() if count > 1}


def test_tcp_both_ways_through_two_workers_never_repeats_a_sequence_number(
    topology: Topology, tmp_path: Path
) -> None:
    ha, hb = _start_pair(topology)
    assert ha.request("worker")["ready"] and hb.request("worker")["ready"]
    with _wire(topology, tmp_path) as capture:
        forward = tcp_throughput(topology, "pa", "pb", 2)
        backward = tcp_throughput(topology, "pb", "pa", 2)
    assert forward > 0 and backward > 0
    summary = capture.summary
    esp = _esp(summary)
    assert len(esp) > 500, summary.describe()  # a bounded stream, not a handful
    assert {int.from_bytes(e[:4], "big") for _, e in esp} == {SPIS["a>b"], SPIS["b>a"]}
    assert _repeated_sequence_numbers(summary) == {}
    assert not summary.contains(MARKER) and not summary.unexpected(), summary.describe()
    assert ha.stats()["stats"]["packets_out"][PEER] > 250  # the worker's counts, merged


def test_a_replayed_packet_is_dropped_by_the_one_replay_window(
    topology: Topology, tmp_path: Path
) -> None:
    _, hb = _start_pair(topology)
    pb = topology.address("pb")
    with _wire(topology, tmp_path) as capture:
        assert udp_roundtrip(topology, "pa", "pb", MARKER) == MARKER
    recorded = next(esp for dst, esp in _esp(capture.summary) if dst == pb)
    topology.python(
        "a",
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.sendto(bytes.fromhex(sys.argv[2]), (sys.argv[1], 4500))\n",
        pb,
        recorded.hex(),
    )
    wait_until("a replay drop", lambda: bool(hb.stats()["stats"]["replay_drops"]), 5)
    assert hb.stats()["stats"]["replay_drops"] == {PEER: 1}


_COUNTING_RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((sys.argv[1], 7000))
s.settimeout(float(sys.argv[2]))
print("ready", flush=True)
seen = set()
try:
    while True:
        seen.add(int(s.recv(64)))
except TimeoutError:
    pass
print(len(seen), flush=True)
"""

_PACED_SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    s.sendto(str(i).encode(), (sys.argv[1], 7000))
    time.sleep(0.002)
"""


def test_a_make_before_break_rekey_under_a_stream_loses_no_packet(
    topology: Topology, tmp_path: Path
) -> None:
    ha, hb = _start_pair(topology)
    count = 1500  # ~3 s at one every 2 ms
    topology.ping("pa", "pb")
    receiver = topology.popen(
        "pb",
        [sys.executable, "-c", _COUNTING_RECEIVER, topology.address("pb"), "3"],
        stdout=subprocess.PIPE,
    )
    assert receiver.stdout is not None
    wait_for_output(receiver.stdout, b"ready", 10)
    with _wire(topology, tmp_path) as capture:
        sender = topology.popen(
            "pa", [sys.executable, "-c", _PACED_SENDER, topology.address("pb"), str(count)]
        )
        time.sleep(1.0)
        # The daemon's order: both inbound SAs first, then outbound moves, then the old
        # inbound SAs go (here after the old SA's last packets can have arrived).
        hb.request("install_next")
        ha.request("install_next")
        ha.request("switch_next")
        hb.request("switch_next")
        time.sleep(0.5)
        ha.request("remove_old")
        hb.request("remove_old")
        sender.wait(timeout=30)
        received = int(receiver.stdout.read().split()[-1])
        stop_process(receiver)
    assert received == count, f"{count - received} of {count} lost in the rekey"
    spis = Counter(int.from_bytes(e[:4], "big") for dst, e in _esp(capture.summary))
    assert spis[SPIS["a>b"]] > 0 and spis[SPIS["next a>b"]] > 0, spis
    assert _repeated_sequence_numbers(capture.summary) == {}


def test_a_killed_worker_lets_nothing_out_in_clear_and_is_replaced_without_reusing_numbers(
    topology: Topology, tmp_path: Path
) -> None:
    ha, _ = _start_pair(topology)
    pid = ha.request("worker")["pid"]
    pb = topology.address("pb")
    with _wire(topology, tmp_path) as capture:
        assert udp_roundtrip(topology, "pa", "pb", MARKER) == MARKER
        # A stream, so that the worker dies with numbers used since its last report.
        sender = topology.popen("pa", [sys.executable, "-c", _PACED_SENDER, pb, "1000"])
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        # While no worker reads the device, the pod's packets stay in it.
        topology.python(
            "pa",
            "import socket, sys\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for _ in range(20):\n"
            "    s.sendto(sys.argv[2].encode(), (sys.argv[1], 7777))\n",
            pb,
            MARKER.decode(),
        )
        wait_until("a new worker", lambda: bool(ha.request("worker")["ready"]), 60)
        worker = ha.request("worker")
        assert worker["restarts"] == 1 and not worker["failed"] and worker["pid"] != pid
        assert ha.stats()["stats"]["errors"].get("worker_died") == 1
        sender.wait(timeout=30)
        assert udp_roundtrip(topology, "pa", "pb", MARKER, port=7790) == MARKER
    summary = capture.summary
    assert not summary.contains(MARKER), summary.describe()
    assert not summary.unexpected(), summary.describe()
    assert _repeated_sequence_numbers(summary) == {}
    # The new worker resumed after the dead one's lease: the numbers jumped forward.
    seqs = [int.from_bytes(e[4:8], "big") for dst, e in _esp(summary) if dst == pb]
    assert max(seqs) > 65536, sorted(seqs)[-5:]


def test_a_worker_that_keeps_dying_is_given_up_and_traffic_stays_blocked(
    topology: Topology, tmp_path: Path
) -> None:
    ha, _ = _start_pair(topology)
    pb = topology.address("pb")
    killed: set[int] = set()
    for _ in range(MAX_RESTARTS + 1):
        wait_until("a running worker", lambda: bool(ha.request("worker")["ready"]), 60)
        pid = ha.request("worker")["pid"]
        killed.add(pid)
        os.kill(pid, signal.SIGKILL)
        wait_until("the death noticed", lambda: ha.request("worker")["pid"] not in killed, 30)
    worker = ha.request("worker")
    assert worker["failed"] and worker["pid"] is None and worker["restarts"] == MAX_RESTARTS
    assert ha.stats()["stats"]["errors"]["worker_died"] == MAX_RESTARTS + 1
    with _wire(topology, tmp_path) as capture, pytest.raises(CommandFailed):
        udp_roundtrip(topology, "pa", "pb", MARKER, timeout=2)
    summary = capture.summary
    assert not summary.contains(MARKER) and not summary.unexpected(), summary.describe()
    assert not [p for p in summary.of_kind("esp-in-udp") if p.dst == pb], summary.describe()


def _exited(pid: int) -> bool:
    """The process is gone or a zombie (its new parent may not have reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_when_the_daemon_dies_its_worker_exits_and_the_blackhole_takes_over(
    topology: Topology,
) -> None:
    ha, _ = _start_pair(topology)
    worker = ha.request("worker")["pid"]
    os.kill(ha.proc.pid, signal.SIGKILL)
    ha.proc.wait(timeout=5)
    wait_until("the worker exits with the daemon", lambda: _exited(worker), 10)
    wait_until(
        "kipsec0 is gone",
        lambda: not topology.run("pa", "ip", "link", "show", "kipsec0", check=False).stdout,
        5,
    )
    routes = topology.run("pa", "ip", "route", "show", "table", "all").stdout
    assert f"blackhole {topology.address('pb')}" in routes, routes
