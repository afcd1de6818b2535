"""The sidecar daemon end to end: real ``kipsec-sidecar run`` processes in pod namespaces.

Each test builds nodes and pods as network namespaces (``support.netns``), writes one
configuration document per pod, starts the sidecars, and drives and observes them through
the control socket (the same JSON the ``sas --json`` CLI prints) and real packets: ping,
UDP and TCP between pod addresses, captures on the node segment's bridge.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kipsec_sidecar.datapath.routing import DEFAULT_RULE_PRIORITY, DEFAULT_TABLE
from support.capture import Capture
from support.netns import WIRE, WIRE_BRIDGE, Topology, stop_process, udp_roundtrip, wait_for_output
from support.sequenced import sequenced_stream
from support.sidecars import (
    MARKER,
    Sidecar,
    established,
    manual_entry,
    peer_entry,
    tcp_roundtrip,
    wait_until,
)

pytestmark = pytest.mark.netns


@pytest.fixture
def pair(
    pods: Topology, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Sidecar, Sidecar]]:
    """Sidecars in pa and pb, each with the other as an onStart peer, established
    (``datapathWorkers`` from an indirect parameter, else the default)."""
    a, b = Sidecar(pods, "pa", tmp_path), Sidecar(pods, "pb", tmp_path)
    extra = {"datapathWorkers": request.param} if hasattr(request, "param") else {}
    a.write([peer_entry(pods, "pb")], **extra)
    b.write([peer_entry(pods, "pa")], **extra)
    a.start()
    b.start()
    try:
        wait_until(
            "pa and pb established", lambda: established(a, "pb")() and established(b, "pa")()
        )
        yield a, b
    finally:
        for sidecar in (a, b):
            sidecar.stop()


# --- traffic -------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", [1, 2], indirect=True, ids=["workers1", "workers2"])
def test_pod_traffic_is_carried_encrypted_both_ways(
    pair: tuple[Sidecar, Sidecar], pods: Topology, tmp_path: Path
) -> None:
    with Capture(pods, WIRE, WIRE_BRIDGE, tmp_path / "wire.pcap") as capture:
        pods.ping("pa", "pb", count=3)
        pods.ping("pb", "pa", count=3)
        assert udp_roundtrip(pods, "pa", "pb", MARKER) == MARKER
        assert udp_roundtrip(pods, "pb", "pa", MARKER, port=7778) == MARKER
        tcp_roundtrip(pods, "pa", "pb")
        tcp_roundtrip(pods, "pb", "pa", port=7071)
    summary = capture.summary
    assert not summary.contains(MARKER), summary.describe()
    assert not summary.unexpected(), summary.describe()
    assert summary.kinds["esp-in-udp"] > 0, summary.describe()
    assert set(summary.udp_ports) <= {500, 4500}, summary.describe()
    a, _ = pair
    child = a.peer("pb")["children"][0]
    assert child["packets_out"] > 0 and child["packets_in"] > 0


# --- rekeys --------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", [1, 2], indirect=True, ids=["workers1", "workers2"])
def test_child_and_ike_rekeys_under_traffic_lose_no_packet(
    pair: tuple[Sidecar, Sidecar], pods: Topology
) -> None:
    a, b = pair
    count = 2000
    echo, stream = sequenced_stream(pods, "pa", "pb", count)
    before = a.spis("pb")
    ike_before = a.peer("pb")["ike_sa"]["spi_i"]
    time.sleep(0.4)
    a.control("rekey", peer="pb", kind="child")  # pa initiates, pb answers
    time.sleep(0.5)
    b.control("rekey", peer="pa", kind="child")  # and the other way round
    time.sleep(0.5)
    a.control("rekey", peer="pb", kind="ike")
    stdout, _ = stream.communicate(timeout=20)
    stop_process(echo)
    assert f"received {count} of {count}".encode() in stdout, stdout.decode()
    after = a.spis("pb")
    assert before.isdisjoint(after), (before, after)
    assert a.peer("pb")["ike_sa"]["spi_i"] != ike_before
    assert a.sas()["rekeys"]["child"] >= 2 and a.sas()["rekeys"]["ike"] >= 1


def _outbound_worker(sidecar: Sidecar) -> int:
    """The process id of the sidecar's outbound worker (a descendant running the module)."""
    assert sidecar.proc is not None
    pending = [sidecar.proc.pid]
    while pending:
        pid = pending.pop()
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                if b"kipsec_sidecar.datapath.outbound_worker" in cmdline:
                    return int(child)
                pending.append(int(child))
    raise AssertionError("no outbound worker under the sidecar")


def _udp_burst(pods: Topology, payload: bytes, count: int) -> None:
    """``count`` datagrams from pa to pb's port 7777 (nobody listens: they are counted)."""
    pods.python(
        "pa",
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(int(sys.argv[3])):\n"
        "    s.sendto(sys.argv[2].encode(), (sys.argv[1], 7777))\n",
        pods.address("pb"),
        payload.decode(),
        str(count),
    )


@pytest.mark.parametrize("pair", [2], indirect=True, ids=["workers2"])
def test_a_killed_outbound_worker_leaks_nothing_and_the_daemon_starts_another(
    pair: tuple[Sidecar, Sidecar], pods: Topology, tmp_path: Path
) -> None:
    a, _ = pair
    worker = _outbound_worker(a)
    _udp_burst(pods, b"before", 300)  # more than the worker's successor will send
    wait_until(
        "the worker's counts reach the daemon",
        lambda: a.peer("pb")["children"][0]["packets_out"] >= 300,
        5,
    )
    counted = a.peer("pb")["children"][0]["packets_out"]
    with Capture(pods, WIRE, WIRE_BRIDGE, tmp_path / "wire.pcap") as capture:
        os.kill(worker, signal.SIGKILL)
        _udp_burst(pods, MARKER, 20)  # held in the device while no worker reads it
        wait_until(
            "the daemon counts the dead worker",
            lambda: a.sas()["datapath_errors"].get("worker_died") == 1,
            30,
        )
        wait_until("a new worker", lambda: _outbound_worker(a) != worker, 30)
        assert udp_roundtrip(pods, "pa", "pb", MARKER, port=7790, timeout=30) == MARKER
    summary = capture.summary
    assert not summary.contains(MARKER), summary.describe()
    assert not summary.unexpected(), summary.describe()
    assert a.sas()["ready"]
    # The new worker counts on from the SA's lifetime counters, not from zero; its counts
    # reach the daemon with its next periodic report, not with the packet.
    wait_until(
        "the new worker's counts reach the daemon, above the dead worker's",
        lambda: a.peer("pb")["children"][0]["packets_out"] > counted,
        5,
    )


# --- manual keying -------------------------------------------------------------------------


def test_manual_keys_carry_traffic_and_rotate_to_new_spis_without_loss(
    pods: Topology, tmp_path: Path
) -> None:
    a, b = Sidecar(pods, "pa", tmp_path), Sidecar(pods, "pb", tmp_path)
    k1, k2, k3, k4 = (f"{n:02x}" * 36 for n in (0x11, 0x22, 0x33, 0x44))
    a.write([manual_entry(pods, "pb", 0x1001, 0x2001, k1, k2)])
    b.write([manual_entry(pods, "pa", 0x2001, 0x1001, k2, k1)])
    # The file is re-read on `reload` only: a poll landing between a write and the
    # command would apply it first, and `reload` would then report nothing to change.
    a.start(rotation_grace=1.0, config_poll_interval=60.0)
    b.start(rotation_grace=1.0, config_poll_interval=60.0)
    assert a.spis("pb") == {("00001001", "00002001")}
    pods.ping("pa", "pb")
    count = 5000
    echo, stream = sequenced_stream(pods, "pa", "pb", count)
    a.write([manual_entry(pods, "pb", 0x1002, 0x2002, k3, k4)])
    assert a.control("reload") == ["replaced peer pb (configuration changed)"]
    time.sleep(0.3)  # the two sides reload at different moments
    b.write([manual_entry(pods, "pa", 0x2002, 0x1002, k4, k3)])
    assert b.control("reload") == ["replaced peer pa (configuration changed)"]
    new = {("00001002", "00002002")}
    wait_until("pa switched to the new SAs", lambda: a.spis("pb") == new, timeout=5)
    assert stream.poll() is None, "the stream ended before the switch: make it longer"
    stdout, _ = stream.communicate(timeout=20)
    stop_process(echo)
    assert f"received {count} of {count}".encode() in stdout, stdout.decode()
    assert b.spis("pa") == {("00002002", "00001002")}
    child = a.peer("pb")["children"][0]
    assert child["packets_in"] > 0 and child["packets_out"] > 0


# --- on demand -------------------------------------------------------------------------------

_ONE_SHOT_RECEIVER = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.settimeout(float(sys.argv[3]))
print("ready", flush=True)
seen = []
try:
    while len(seen) < 3:
        seen.append(sock.recvfrom(2048)[0].decode())
except TimeoutError:
    pass
print(" ".join(seen), flush=True)
"""

_ONE_SHOT_SENDER = r"""
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(3):
    sock.sendto(f"first-{i}".encode(), (sys.argv[1], int(sys.argv[2])))
"""


def test_on_demand_peer_queues_first_packets_until_the_sa_is_up(
    pods: Topology, tmp_path: Path
) -> None:
    a, b = Sidecar(pods, "pa", tmp_path), Sidecar(pods, "pb", tmp_path)
    a.write([peer_entry(pods, "pb", start="onDemand")])
    b.write([peer_entry(pods, "pa", start="onDemand")])
    a.start()
    b.start()
    time.sleep(0.5)
    assert a.peer("pb")["children"] == [] and a.peer("pb")["ike_sa"] is None
    receiver = pods.popen(
        "pb",
        [sys.executable, "-c", _ONE_SHOT_RECEIVER, pods.address("pb"), "7400", "5"],
        stdout=subprocess.PIPE,
    )
    assert receiver.stdout is not None
    wait_for_output(receiver.stdout, b"ready", 5)
    pods.python("pa", _ONE_SHOT_SENDER, pods.address("pb"), "7400")  # each sent once
    stdout, _ = receiver.communicate(timeout=10)
    assert stdout.split() == [b"first-0", b"first-1", b"first-2"], stdout
    assert established(a, "pb")()
    assert a.sas()["ready"] and b.sas()["ready"]


# --- shutdown --------------------------------------------------------------------------------


def test_sigterm_deletes_the_sas_at_the_peer_and_leaves_no_kernel_state(
    pair: tuple[Sidecar, Sidecar], pods: Topology
) -> None:
    a, b = pair
    assert a.stop(signal.SIGTERM) == 0, a.tail()
    wait_until("pb sees pa's SAs gone", lambda: b.peer("pa")["children"] == [], timeout=3)
    assert "kipsec0" not in pods.run("pa", "ip", "-o", "link").stdout
    rules = pods.run("pa", "ip", "rule").stdout
    assert f"{DEFAULT_RULE_PRIORITY}:" not in rules and str(DEFAULT_TABLE) not in rules, rules
    routes = pods.run("pa", "ip", "route", "show", "table", str(DEFAULT_TABLE), check=False)
    assert routes.stdout.strip() == "", routes.stdout


# --- reload ----------------------------------------------------------------------------------


def test_reload_adds_and_removes_peers_without_touching_the_others(
    pods: Topology, tmp_path: Path
) -> None:
    pods.add_node("c")
    pods.add_pod("pc", "c")
    a, b, c = (Sidecar(pods, name, tmp_path) for name in ("pa", "pb", "pc"))
    a.write([peer_entry(pods, "pb")])
    b.write([peer_entry(pods, "pa")])
    c.write([peer_entry(pods, "pa")])
    for sidecar in (a, b, c):
        sidecar.start()
    wait_until("pa-pb established", established(a, "pb"))
    spis = a.spis("pb")
    a.write([peer_entry(pods, "pb"), peer_entry(pods, "pc")])
    assert a.control("reload") == ["added peer pc"]
    wait_until("pa-pc established", established(a, "pc"))
    assert a.spis("pb") == spis
    pods.ping("pa", "pc")
    table = ["ip", "route", "show", "table", str(DEFAULT_TABLE)]
    assert pods.address("pb") in pods.run("pa", *table).stdout
    a.write([peer_entry(pods, "pc")])  # no command: the daemon notices the file changed
    wait_until("pb removed", lambda: pods.address("pb") not in pods.run("pa", *table).stdout, 4)
    assert [p["name"] for p in a.sas()["peers"]] == ["pc"]
    assert established(a, "pc")()


def test_a_psk_rotation_keeps_the_sas_and_the_next_ike_sa_uses_the_new_key(
    pods: Topology, tmp_path: Path
) -> None:
    a, b = Sidecar(pods, "pa", tmp_path), Sidecar(pods, "pb", tmp_path)
    a.write([peer_entry(pods, "pb")])
    b.write([peer_entry(pods, "pa", start="onDemand")])
    b.start()
    a.start()
    wait_until("pa-pb established", established(a, "pb"))
    spis, ike = a.spis("pb"), a.peer("pb")["ike_sas"]
    rotated = {"auth": {"psk": {"value": "the rotated pre-shared key, 0123456789"}}}

    b.write([peer_entry(pods, "pa", start="onDemand")], local=rotated)
    assert b.control("reload") == ["renewed credentials of peer pa (SAs kept)"]
    pods.ping("pa", "pb")  # one end rotated: the SAs still carry traffic
    a.write([peer_entry(pods, "pb")], local=rotated)
    assert a.control("reload") == ["renewed credentials of peer pb (SAs kept)"]
    pods.ping("pa", "pb")
    assert a.spis("pb") == spis and a.peer("pb")["ike_sas"] == ike

    # The next IKE SA authenticates with the key each end holds now: pb rotates again,
    # pa (still on the previous key) cannot set up a new IKE SA until it rotates too.
    again = {"auth": {"psk": {"value": "the key after that one, 9876543210"}}}
    b.write([peer_entry(pods, "pa", start="onDemand")], local=again)
    b.control("reload")
    a.control("terminate", peer="pb")
    wait_until("no child SA left", lambda: not a.spis("pb") and not b.spis("pa"))
    a.control("initiate", peer="pb")
    wait_until(
        "pa's new IKE SA refused",
        lambda: a.peer("pb")["last_failure"] == "authentication_failed",
    )
    a.write([peer_entry(pods, "pb")], local=again)
    a.control("reload")
    wait_until("pa-pb established with the newest key", established(a, "pb"), timeout=45)
    assert a.spis("pb").isdisjoint(spis)
    pods.ping("pa", "pb")


# --- liveness --------------------------------------------------------------------------------


def test_killed_peer_is_detected_and_the_sas_return_when_it_restarts(
    pods: Topology, tmp_path: Path
) -> None:
    a, b = Sidecar(pods, "pa", tmp_path), Sidecar(pods, "pb", tmp_path)
    liveness = {"interval": 1, "timeout": 2}
    a.write([peer_entry(pods, "pb")], liveness=liveness)
    b.write([peer_entry(pods, "pa")], liveness=liveness)
    a.start()
    b.start()
    wait_until("established", established(a, "pb"))
    old = a.spis("pb")
    b.stop(signal.SIGKILL)
    wait_until("pa reports pb down", lambda: a.peer("pb")["state"] == "down", timeout=8)
    assert a.peer("pb")["last_error"]
    assert a.peer("pb")["last_failure"] == "peer_dead"
    b.start()
    wait_until("SAs back", established(a, "pb"), timeout=8)
    assert a.spis("pb").isdisjoint(old)
    pods.ping("pa", "pb")


def test_a_wrong_psk_is_reported_as_an_authentication_failure(
    pods: Topology, tmp_path: Path
) -> None:
    a, b = Sidecar(pods, "pa", tmp_path), Sidecar(pods, "pb", tmp_path)
    a.write([peer_entry(pods, "pb")])
    b.write(
        [peer_entry(pods, "pa")], local={"auth": {"psk": {"value": "not the key pa holds, 0123"}}}
    )
    a.start()
    b.start()
    try:
        wait_until("pa reports pb down", lambda: a.peer("pb")["state"] == "down")
        assert a.peer("pb")["last_failure"] == "authentication_failed"
    finally:
        for sidecar in (a, b):
            sidecar.stop()


# --- hostile input ---------------------------------------------------------------------------

_HOSTILE = r"""
import os, socket, struct, sys
target = sys.argv[1]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def ike_header(spi_i, spi_r, length, exchange=34, flags=0x08, mid=0):
    return spi_i + spi_r + bytes([33, 0x20, exchange, flags]) + struct.pack("!II", mid, length)
payloads = [os.urandom(n) for n in (1, 3, 7, 28, 100, 1400) for _ in range(5)]
payloads += [ike_header(os.urandom(8), bytes(8), 28)[:20]]                      # truncated
payloads += [ike_header(os.urandom(8), bytes(8), 200) + os.urandom(172)]         # garbage body
payloads += [ike_header(os.urandom(8), os.urandom(8), 60, 37) + os.urandom(32)]  # unknown SPIs
payloads += [ike_header(os.urandom(8), bytes(8), 28, 34) + b"\x00" * 4]          # length lies
for data in payloads:
    sock.sendto(data, (target, 500))
    sock.sendto(data, (target, 4500))
    sock.sendto(b"\x00\x00\x00\x00" + data, (target, 4500))                   # as NAT-T IKE
print(len(payloads) * 3)
"""


def test_hostile_datagrams_leave_the_daemon_running_with_its_sas(
    pair: tuple[Sidecar, Sidecar], pods: Topology
) -> None:
    a, _ = pair
    spis = a.spis("pb")
    pods.python("b", _HOSTILE, pods.address("pa"))  # from node b, on the wire
    pods.python("pb", _HOSTILE, pods.address("pa"))  # and from the peer's own address
    time.sleep(0.3)
    assert a.proc is not None and a.proc.poll() is None, a.tail()
    assert a.spis("pb") == spis
    assert established(a, "pb")()
    pods.ping("pa", "pb")
    snapshot = a.sas()
    assert snapshot["drops"]["malformed"] > 0
    # Random bytes on port 4500 are ESP with SPIs no SA has: dropped packets, like replays.
    assert snapshot["drops"]["no_sa"] > 0 and "unknown_spi" not in snapshot["datapath_errors"]
