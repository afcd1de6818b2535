"""A running sidecar under bounded floods from another pod: probes answer, logs stay short.

Both attacks come from pod px, in another namespace behind another node, as a hostile pod
in the cluster would: slowloris connections to the health ports (each sends one byte,
holds the connection and opens a new one whenever the sidecar closes it), and IKE_SA_INIT
requests from an address that is no peer. Every attack is bounded in connections,
datagrams and time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from support.netns import Topology
from support.sidecars import Sidecar, peer_entry, wait_until

pytestmark = pytest.mark.netns

HEALTH_PORT = 9585
PROBE_PORT = 9586
ATTACK_SECONDS = 10.0
CONNECTIONS = 120  # per port
MAX_LOG_LINES = 200
"""Lines the sidecar may write during an attack (unlimited, it wrote thousands)."""
FLOOD = 3000
"""IKE_SA_INIT requests from the stranger."""

_SLOWLORIS = r"""
import selectors, socket, sys, time
target, ports = sys.argv[1], sys.argv[2].split(",")
per_port, seconds = int(sys.argv[3]), float(sys.argv[4])
sel = selectors.DefaultSelector()
opened = 0

def connect(port):
    global opened
    sock = socket.socket()
    sock.setblocking(False)
    sock.connect_ex((target, int(port)))
    sel.register(sock, selectors.EVENT_WRITE, (port, False))
    opened += 1

for port in ports:
    for _ in range(per_port):
        connect(port)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for key, _ in sel.select(timeout=0.1):
        sock, (port, sent) = key.fileobj, key.data
        try:
            if not sent:
                sock.send(b"G")  # one byte of a request that never ends
                sel.modify(sock, selectors.EVENT_READ, (port, True))
                continue
            if sock.recv(4096):
                continue
        except OSError:
            pass
        sel.unregister(sock)  # closed by the sidecar: come back at once
        sock.close()
        connect(port)
print(opened, flush=True)
"""

_PROBER = r"""
import json, socket, sys, time
target, ports, seconds = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
results = {port: [] for port in ports}
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for port in ports:
        started = time.monotonic()
        try:
            with socket.create_connection((target, int(port)), timeout=2) as sock:
                sock.settimeout(2)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\n\r\n")
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
            status = answer.split(b" ", 2)[1].decode() if answer else "closed"
        except OSError as exc:
            status = type(exc).__name__
        results[port].append([status, round(time.monotonic() - started, 3)])
    time.sleep(0.25)
print(json.dumps(results), flush=True)
"""


def _log_lines(sidecar: Sidecar) -> int:
    return len(sidecar.log.read_bytes().splitlines())


@pytest.fixture
def target(topology: Topology, tmp_path: Path) -> Sidecar:
    """A sidecar in pa with its health endpoint and its probe listener on the pod's address,
    as injected; px (behind the other node) is the hostile pod."""
    topology.add_node("a")
    topology.add_node("b")
    topology.add_pod("pa", "a")
    topology.add_pod("pb", "b")
    topology.add_pod("px", "b")
    sidecar = Sidecar(topology, "pa", tmp_path)
    sidecar.write(
        [peer_entry(topology, "pb", start="onDemand")],
        metrics={"enabled": True, "listen": f"0.0.0.0:{HEALTH_PORT}"},
    )
    sidecar.start(probe_listen=f"0.0.0.0:{PROBE_PORT}")  # type: ignore[arg-type]
    return sidecar


def test_probes_keep_answering_while_another_pod_holds_the_health_ports(
    topology: Topology, target: Sidecar
) -> None:
    address = topology.address("pa")
    ports = f"{HEALTH_PORT},{PROBE_PORT}"
    before = _log_lines(target)
    attacker = topology.popen(
        "px",
        [sys.executable, "-c", _SLOWLORIS, address, ports, str(CONNECTIONS), str(ATTACK_SECONDS)],
    )
    time.sleep(1.0)  # let the attack fill the connection tables first
    probes = topology.python(
        "pa", _PROBER, address, ports, str(ATTACK_SECONDS - 2), timeout=ATTACK_SECONDS + 30
    )
    attacker.wait(timeout=ATTACK_SECONDS + 15)
    results: dict[str, list[tuple[str, float]]] = json.loads(probes.stdout)
    for port, answers in results.items():
        failed = [answer for answer in answers if answer[0] != "200"]
        assert len(answers) >= 5 and not failed, f"/healthz on port {port}: {answers}"
    assert target.running, target.tail()
    written = _log_lines(target) - before
    assert written <= MAX_LOG_LINES, f"{written} log lines during the attack:\n{target.tail(10)}"


_IKE_FLOOD = r"""
import os, socket, sys, time
target, count = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for n in range(count):
    # An IKE_SA_INIT request header (RFC 7296 3.1): SPIi, zero SPIr, no payloads.
    header = os.urandom(8) + bytes(8) + bytes([0, 0x20, 34, 0x08, 0, 0, 0, 0, 0, 0, 0, 28])
    sock.sendto(header, (target, 500))
    if n % 100 == 99:
        time.sleep(0.01)
"""


def test_an_ike_sa_init_flood_from_a_stranger_writes_a_bounded_log(
    topology: Topology, target: Sidecar
) -> None:
    before = _log_lines(target)
    topology.python("px", _IKE_FLOOD, topology.address("pa"), str(FLOOD), timeout=30)
    seen: list[int] = []

    def refusals_settled() -> bool:
        seen.append(target.sas()["ike_refused"]["unknown_peer"])
        return len(seen) > 5 and seen[-1] == seen[-6]  # no change for half a second

    wait_until("the refusals to settle", refusals_settled, timeout=20)
    refused = seen[-1]
    assert refused >= FLOOD * 2 // 3, f"only {refused} of {FLOOD} requests reached the sidecar"
    lines = target.log.read_text().splitlines()[before:]
    about_it = [
        line
        for line in lines
        if "IKE_SA_INIT from an unknown address" in line and "similar lines" not in line
    ]
    assert len(about_it) <= 10, "\n".join(about_it[-5:])
    assert len(lines) <= MAX_LOG_LINES
    assert target.sas()["log_suppressed"] >= refused - len(about_it)
