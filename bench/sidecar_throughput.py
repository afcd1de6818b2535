"""Pod-to-pod throughput and latency: plain veth vs strongSwan (libipsec) vs kipsec sidecars.

Run (root; everything happens in network namespaces that are removed afterwards)::

    .venv/bin/python bench/sidecar_throughput.py [--seconds 5] [--setups 5]

On one topology shape (two nodes on a bridge, a pod behind each: pa 10.10.1.2 and pb
10.10.2.2, see ``tests/support/netns.py``) it measures, in one run, side by side:

- (a) **plain veth**: no IPsec, plain routes between the pod CIDRs (the ceiling);
- (b) **strongSwan**: two charons with kernel-libipsec as the nodes' gateways for their
  pod CIDRs (``tests/support/strongswan.py``: ``openssl`` before ``aes``/``gcm``),
  AES-GCM-256 ESP in UDP 4500;
- (c) **kipsec**: a ``kipsec-sidecar run`` in each pod (userspace datapath, AES-GCM-256
  ESP in UDP 4500, PSK), protecting pod to pod.

For each: TCP throughput ``iperf3 -c pb -t SECONDS`` from pa (the receiver's rate) and
ping RTT (30 pings 20 ms apart, average); it prints b/a and c/b. Then the time from
"initiate" to the first installed child SA (IKE_SA_INIT + IKE_AUTH with PSK and X25519),
median of ``--setups`` attempts, for kipsec (control socket ``initiate``; the child's
``installed_at`` minus the request time) and strongSwan (vici ``initiate``, which returns
when the child is up). Finally the resident memory (VmRSS from ``/proc``) of a kipsec
sidecar: idle with its one peer established, after the throughput run, and a sidecar
configured with 100 on-demand peers at fake addresses in a range the namespace
blackholes (no traffic to them, so no handshake ever leaves).

Bounds: every start and wait is bounded (sidecars 10 s, charon 10 s, iperf3
``SECONDS`` + 15 s); a whole run takes about ``3 × SECONDS + 12`` s.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.netns import Topology, sweep_stale, tcp_throughput  # noqa: E402
from support.sidecars import (  # noqa: E402
    Sidecar,
    established,
    fake_peers,
    peer_entry,
    wait_until,
)
from support.strongswan import Charon, Psk, gateway_pair, is_available  # noqa: E402

PSK = "kipsec bench pre-shared key 0123456789"
FAKE_PEERS = "10.99.0.0/24"
T = TypeVar("T")


@dataclass
class PathResult:
    """What one datapath achieved."""

    name: str
    mbits: float | None = None
    rtt_ms: float | None = None
    note: str = ""


def pods(topo: Topology) -> None:
    for node, pod in (("a", "pa"), ("b", "pb")):
        topo.add_node(node)
        topo.add_pod(pod, node)


def rtt(topo: Topology) -> float:
    """Average ping RTT from pa to pb in ms (30 pings, 20 ms apart)."""
    out = topo.run(
        "pa", "ping", "-n", "-q", "-c", "30", "-i", "0.02", "-w", "10", topo.address("pb")
    ).stdout
    match = re.search(r"= [\d.]+/([\d.]+)/", out)
    if match is None:
        raise RuntimeError(f"no RTT in ping output: {out!r}")
    return float(match[1])


def measure(topo: Topology, result: PathResult, seconds: float) -> None:
    topo.ping("pa", "pb", count=2)  # warm: ARP, on-demand SAs
    result.rtt_ms = rtt(topo)
    result.mbits = tcp_throughput(topo, "pa", "pb", seconds)


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --- (a) ----------------------------------------------------------------------------------


def plain(seconds: float) -> PathResult:
    result = PathResult("(a) plain veth")
    with Topology() as topo:
        pods(topo)
        measure(topo, result, seconds)
    return result


# --- (b) ----------------------------------------------------------------------------------


def strongswan(seconds: float, setups: int, workdir: Path) -> tuple[PathResult, list[float]]:
    result = PathResult("(b) strongSwan libipsec")
    reason = is_available()
    if reason is not None:
        result.note = reason
        return result, []
    times: list[float] = []
    with Topology(pod_routes=False) as topo:
        pods(topo)
        left = Charon(topo, "a", workdir / "charon-a").start()
        right = Charon(topo, "b", workdir / "charon-b").start()
        try:
            conn_a, conn_b = gateway_pair(
                topo, "a", "b", auth=(Psk(PSK), Psk(PSK)), ids=("a.bench", "b.bench")
            )
            left.configure(conn_a)
            right.configure(conn_b)
            left.load()
            right.load()
            for attempt in range(setups):
                start = time.monotonic()
                left.initiate("net", timeout=10)
                times.append(time.monotonic() - start)
                if attempt < setups - 1:
                    left.terminate(ike="gw", timeout=10)
                    right.wait_for(lambda sas: not sas, timeout=10, what="responder cleared")
            right.wait_established(child="net", timeout=10)
            measure(topo, result, seconds)
        finally:
            left.stop()
            right.stop()
    return result, times


# --- (c) ----------------------------------------------------------------------------------


def kipsec_setup_time(a: Sidecar, b: Sidecar) -> float:
    """Seconds from an ``initiate`` request to pa's first installed child SA with pb."""
    requested = time.time()
    a.control("initiate", peer="pb")
    wait_until("the child SA", established(a, "pb"), timeout=10)
    child = a.installed("pb")[0]
    return float(child["installed_at"]) - requested


def kipsec(
    seconds: float, setups: int, workdir: Path
) -> tuple[PathResult, list[float], dict[str, float]]:
    result = PathResult("(c) kipsec userspace")
    times: list[float] = []
    memory: dict[str, float] = {}
    with Topology() as topo:
        pods(topo)
        a, b = Sidecar(topo, "pa", workdir), Sidecar(topo, "pb", workdir)
        quiet = {"logging": {"level": "warning"}}
        a.write([peer_entry(topo, "pb", start="onDemand")], **quiet)
        b.write([peer_entry(topo, "pa", start="onDemand")], **quiet)
        try:
            a.start()
            b.start()
            for attempt in range(setups):
                times.append(kipsec_setup_time(a, b))
                if attempt < setups - 1:
                    a.control("terminate", peer="pb")
                    wait_until("pb cleared", lambda: b.peer("pa")["children"] == [], timeout=10)
            wait_until("pb established", established(b, "pa"), timeout=10)
            assert a.proc is not None
            time.sleep(0.5)
            memory["idle, 1 peer up"] = rss_mib(a.proc.pid)
            measure(topo, result, seconds)
            memory["after the throughput run"] = rss_mib(a.proc.pid)
            memory.update(hundred_peers(topo, workdir))
        finally:
            a.stop()
            b.stop()
    return result, times, memory


def hundred_peers(topo: Topology, workdir: Path) -> dict[str, float]:
    """RSS of a sidecar with 100 configured on-demand peers (and of one with none)."""
    topo.add_pod("pm", "a")
    topo.ip("pm", f"route add blackhole {FAKE_PEERS}")
    memory: dict[str, float] = {}
    for count in (0, 100):
        sidecar = Sidecar(topo, "pm", workdir / f"peers{count}")
        sidecar.workdir.mkdir()
        sidecar.write(fake_peers(count), logging={"level": "warning"})
        try:
            sidecar.start()
            assert len(sidecar.sas()["peers"]) == count
            time.sleep(1.0)
            assert sidecar.proc is not None
            memory[f"{count} on-demand peers"] = rss_mib(sidecar.proc.pid)
        finally:
            sidecar.stop()
    return memory


# --- report -------------------------------------------------------------------------------


def ratio(top: float | None, bottom: float | None) -> str:
    if not top or not bottom:
        return "n/a"
    return f"{top / bottom:.2f}"


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def report(
    paths: list[PathResult],
    setups: dict[str, list[float]],
    memory: dict[str, float],
    seconds: float,
) -> None:
    print(f"\nPod-to-pod, pa -> pb, iperf3 TCP {seconds:g} s, ping x30")
    print(f"{'datapath':<26} {'TCP Mbit/s':>11} {'ping RTT ms':>12}  note")
    for path in paths:
        print(
            f"{path.name:<26} {fmt(path.mbits, '11.1f')} {fmt(path.rtt_ms, '12.3f')}  {path.note}"
        )
    a, b, c = paths
    print(f"b/a (strongSwan / plain)   {ratio(b.mbits, a.mbits)}")
    print(f"c/b (kipsec / strongSwan)  {ratio(c.mbits, b.mbits)}   (goal: >= 2)")
    print(f"c/a (kipsec / plain)       {ratio(c.mbits, a.mbits)}")
    print("\nIKE SA + first child SA setup (PSK, X25519, AES-GCM-256)")
    for name, times in setups.items():
        if times:
            ms = [t * 1000 for t in times]
            print(
                f"{name:<26} median {statistics.median(ms):7.1f} ms"
                f"  (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)})"
            )
        else:
            print(f"{name:<26} n/a")
    print("\nkipsec sidecar resident memory (VmRSS)")
    for name, mib in memory.items():
        print(f"{name:<26} {mib:7.1f} MiB")


def guarded(step: Callable[[], T], fallback: T, what: str) -> T:
    """``step()``, or ``fallback`` when it raises: one path failing must not hide the others."""
    try:
        return step()
    except Exception as exc:
        print(f"{what} failed: {exc}", file=sys.stderr)
        return fallback


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="iperf3 time per path (max 60)")
    parser.add_argument("--setups", type=int, default=5, help="setup-time samples (max 20)")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 1.0), 60.0)
    setups = min(max(args.setups, 1), 20)
    sweep_stale()
    with tempfile.TemporaryDirectory(prefix="kipsec-bench-") as tmp:
        work = Path(tmp)
        (work / "kipsec").mkdir()
        (work / "strongswan").mkdir()
        no_times: list[float] = []
        no_memory: dict[str, float] = {}
        a = guarded(lambda: plain(seconds), PathResult("(a) plain veth", note="failed"), "(a)")
        b, swan_times = guarded(
            lambda: strongswan(seconds, setups, work / "strongswan"),
            (PathResult("(b) strongSwan libipsec", note="failed"), no_times),
            "(b)",
        )
        c, kipsec_times, memory = guarded(
            lambda: kipsec(seconds, setups, work / "kipsec"),
            (PathResult("(c) kipsec userspace", note="failed"), no_times, no_memory),
            "(c)",
        )
    report([a, b, c], {"kipsec": kipsec_times, "strongSwan": swan_times}, memory, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
