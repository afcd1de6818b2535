"""What an IKE_SA_INIT flood from a configured peer's address costs a running sidecar.

Run (root; three pods in network namespaces, removed afterwards)::

    .venv/bin/python bench/ike_flood.py [--count 5000] [--rate 1000]

Pods pa, pb (behind node a and node b) and px (behind node a), each at its
``tests/support/netns.py`` address. ``kipsec-sidecar run`` in pa and pb protects pa <-> pb
(PSK, userspace datapath, ESP in UDP); pa also lists px as an onDemand peer, so px's
address is a configured peer's address, which is what a spoofing attacker would use
(the flood reaches the code that builds responder state); with ``--source stranger`` pa
does not list px, and the flood is refused at the address lookup. px then sends
``--count`` IKE_SA_INIT requests (at most 20,000) to pa's port 500 at ``--rate`` per
second (at most 5,000), each a real request built by the project's own engine (one of
64, each with its own nonce and X25519 key share) with a fresh random SPI, and never
answers: the requests look like the first message of as many initiators.

Printed: pa's CPU seconds (user + system, from ``/proc/<pid>/stat``) per 1,000 datagrams,
counted from the flood's start to 1 s after its end, less the idle rate measured for 2 s
before, per 1,000 sent and per 1,000 read (UDP ``InDatagrams`` of pa's namespace, the
tunnel's ESP included: on a loaded machine the kernel drops part of a flood before any
socket, so the sidecar reads fewer than px sent); ping loss pa -> pb through the tunnel
during the flood (pings 50 ms apart); the sidecar's log lines written during the flood;
and, when the sidecar exports them, its half-open IKE SAs, COOKIEs sent and IKE datagrams
dropped afterwards. Then pa is
restarted twice (SIGTERM, new run): once in quiet, once 2 s into a second, identical
flood; each time it prints the seconds from the new run's start to the first ping pa ->
pb answered through the tunnel. A whole run takes about ``2 × count / rate + 20`` s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from kipsec_sidecar.config.load import load_config  # noqa: E402
from kipsec_sidecar.config.to_core import to_core  # noqa: E402
from kipsec_sidecar.core.ike.engine import IkeSa  # noqa: E402
from support.netns import Topology, sweep_stale  # noqa: E402
from support.procstat import cpu_seconds  # noqa: E402
from support.sidecars import Sidecar, established, peer_entry, wait_until  # noqa: E402

TEMPLATES = 64
IDLE_SECONDS = 2.0
TAIL_SECONDS = 1.0

#: The flooder (stdlib only, runs in px): sends the hex templates from stdin with a fresh
#: random SPIi (bytes 0-8) each, ``rate`` per second in 10 ms batches.
_FLOODER = r"""
import os, socket, sys, time
target, count, rate = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
templates = [bytearray(bytes.fromhex(line)) for line in sys.stdin.read().split()]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
start, sent = time.monotonic(), 0
while sent < count:
    due = min(count, int((time.monotonic() - start) * rate) + 1)
    while sent < due:
        data = templates[sent % len(templates)]
        data[0:8] = os.urandom(8)
        try:
            sock.sendto(data, (target, 500))
        except OSError:
            pass
        sent += 1
    time.sleep(0.01)
print(sent, round(time.monotonic() - start, 3), flush=True)
"""


def templates(sidecar: Sidecar, target: str) -> list[str]:
    """IKE_SA_INIT requests px's own configuration would send to pa (hex)."""
    plan = next(p for p in to_core(load_config(str(sidecar.config))) if p.ike is not None)
    assert plan.ike is not None
    out = []
    for _ in range(TEMPLATES):
        sa = IkeSa.initiator(plan.ike, (target, 500), now=0.0)
        (data, _addr), *_ = sa.datagrams_to_send(0.0)
        out.append(data.hex())
    return out


def ping_loss(output: str) -> float:
    match = re.search(r"([\d.]+)% packet loss", output)
    if match is None:
        raise RuntimeError(f"no loss in ping output: {output!r}")
    return float(match[1])


def udp_delivered(topo: Topology, pod: str) -> int:
    """UDP datagrams delivered to a socket in ``pod``'s namespace so far (``InDatagrams``
    of ``/proc/net/snmp``): what the sidecar read, tunnel traffic included."""
    lines = [line.split() for line in topo.run(pod, "cat", "/proc/net/snmp").stdout.splitlines()]
    names, values = (line for line in lines if line[0] == "Udp:")
    return int(values[names.index("InDatagrams")])


def counters(sidecar: Sidecar) -> dict[str, Any]:
    """What the sidecar's snapshot says about the flood (keys it lacks are left out)."""
    snapshot = sidecar.sas()
    found: dict[str, Any] = {
        "drops (malformed)": snapshot.get("drops", {}).get("malformed"),
        "half-open IKE SAs": snapshot.get("ike_half_open"),
        "COOKIEs sent": snapshot.get("ike_cookies_sent"),
        "requests refused": snapshot.get("ike_refused"),
        "log lines suppressed": snapshot.get("log_suppressed"),
    }
    return {k: v for k, v in found.items() if v is not None}


def back_in(topo: Topology, sidecar: Sidecar) -> float:
    """Restart ``sidecar`` (SIGTERM, then a new run); seconds from the new process's start
    to the first ping pa -> pb answered through the tunnel (at most 20 s)."""
    sidecar.stop()
    started = time.monotonic()
    sidecar.start()
    while time.monotonic() - started < 20:
        answered = topo.run(
            "pa", "ping", "-n", "-q", "-c", "1", "-W", "0.2", topo.address("pb"), check=False
        )
        if answered.returncode == 0:
            return time.monotonic() - started
    raise RuntimeError("no ping through the tunnel 20 s after the restart")


def run(count: int, rate: float, work: Path, source: str) -> dict[str, Any]:
    with Topology() as topo:
        for node in ("a", "b"):
            topo.add_node(node)
        topo.add_pod("pa", "a")
        topo.add_pod("pb", "b")
        topo.add_pod("px", "a")
        a, b, x = (Sidecar(topo, name, work) for name in ("pa", "pb", "px"))
        flooder_peer = [peer_entry(topo, "px", start="onDemand")] if source == "peer" else []
        a.write([peer_entry(topo, "pb"), *flooder_peer])
        b.write([peer_entry(topo, "pa")])
        x.write([peer_entry(topo, "pa", start="onDemand")])  # only read, never run
        requests = templates(x, topo.address("pa"))
        a.start()
        b.start()
        wait_until("pa-pb up", established(a, "pb"), timeout=15)
        topo.ping("pa", "pb", count=2)
        assert a.proc is not None
        pid = a.proc.pid
        cpu0 = cpu_seconds(pid)
        time.sleep(IDLE_SECONDS)
        idle_rate = (cpu_seconds(pid) - cpu0) / IDLE_SECONDS
        seconds = count / rate
        log_before = len(a.log.read_bytes().splitlines())
        pings = topo.popen(
            "pa",
            ["ping", "-n", "-q", "-i", "0.05", "-w", f"{seconds:.0f}", topo.address("pb")],
            stdout=subprocess.PIPE,
        )
        delivered0 = udp_delivered(topo, "pa")
        cpu1, started = cpu_seconds(pid), time.monotonic()
        flooder = topo.run(
            "px",
            sys.executable,
            "-c",
            _FLOODER,
            topo.address("pa"),
            str(count),
            str(rate),
            input="\n".join(requests),
            timeout=seconds + 30,
        )
        time.sleep(TAIL_SECONDS)
        cpu2, wall = cpu_seconds(pid), time.monotonic() - started
        out, _ = pings.communicate(timeout=seconds + 15)
        sent, took = flooder.stdout.split()
        log_after = len(a.log.read_bytes().splitlines())
        flood_cpu = max(0.0, (cpu2 - cpu1) - idle_rate * wall)
        handled = udp_delivered(topo, "pa") - delivered0
        result = {
            "datagrams sent": int(sent),
            "UDP datagrams pa read (flood + tunnel)": handled,
            "flood seconds": float(took),
            "cpu s / 1,000 datagrams sent": flood_cpu / (int(sent) / 1000),
            "cpu s / 1,000 datagrams read": flood_cpu / (max(1, handled) / 1000),
            "cpu share during the flood": (cpu2 - cpu1) / wall,
            "idle cpu share": idle_rate,
            "ping loss % (pa -> pb, tunnel)": ping_loss(out.decode()),
            "log lines during the flood": log_after - log_before,
            **counters(a),
        }
        result["restart -> traffic, s (no flood)"] = back_in(topo, a)
        flooding = topo.popen(
            "px",
            [sys.executable, "-c", _FLOODER, topo.address("pa"), str(count), str(rate)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert flooding.stdin is not None
        flooding.stdin.write("\n".join(requests).encode())
        flooding.stdin.close()
        time.sleep(min(2.0, seconds / 3))
        result["restart -> traffic, s (during a flood)"] = back_in(topo, a)
        flooding.wait(timeout=seconds + 30)
        a.stop()
        b.stop()
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="datagrams (max 20,000)")
    parser.add_argument("--rate", type=float, default=1000.0, help="per second (max 5,000)")
    parser.add_argument(
        "--source",
        choices=("peer", "stranger"),
        default="peer",
        help="px is one of pa's peers (default) or an address pa does not know",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    count = min(max(args.count, 100), 20_000)
    rate = min(max(args.rate, 10.0), 5_000.0)
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    sweep_stale()
    with tempfile.TemporaryDirectory(prefix="kipsec-bench-") as tmp:
        result = run(count, rate, Path(tmp), args.source)
    if args.json:
        print(json.dumps(result))
        return 0
    what = "a configured peer's address" if args.source == "peer" else "an unknown address"
    print(f"IKE_SA_INIT flood on pa from {what}: {count} at {rate:g}/s")
    for name, value in result.items():
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"  {name:<50} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
