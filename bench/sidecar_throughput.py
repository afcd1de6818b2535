"""Throughput and latency, kipsec vs a tuned strongSwan libipsec, in two placements, interleaved.

Run (root; everything happens in network namespaces that are removed afterwards)::

    .venv/bin/python bench/sidecar_throughput.py [--seconds 5] [--rounds 3] [--pings 200]
                                                 [--setups 5] [--untuned] [--interval 10]
                                                 [--variant NAME=VAR=VALUE,...]

Two nodes a and b on a bridge, a pod behind each (pa 10.10.1.2, pb 10.10.2.2, see
``tests/support/netns.py``). Five (six with ``--untuned``) independent topologies are
built and brought up first, then measured in interleaved rounds — each round visits
every path in turn — so that the load of a shared machine falls on all of them alike:

- **plain**: no IPsec, plain routes between the pod CIDRs (the ceiling);
- **(a) in the pods**: ``kipsec-sidecar run`` in pa and pb protecting pod to pod, against
  charon + kernel-libipsec in pa and pb. libipsec cannot protect traffic to its own IKE
  address, so each strongSwan pod gets an inner address on ``lo`` (10.20.N.2, the way
  libipsec users protect host-to-host traffic) and the traffic runs between those;
- **(b) as gateways**: kipsec on nodes a and b protecting pod CIDR to pod CIDR (the
  placement of an external peer's gateway), against charon on the nodes doing the same;
  no plain routes between the pod CIDRs, so traffic crosses only inside the tunnel.

strongSwan is tuned as its users tune it (``TUNED``): ``aesni`` before ``openssl``/
``aes``/``gcm`` (charon's own AES-NI GCM; openssl's AEAD wrapper re-initialises its
context for every packet), logging at level 0, and in the gateway placement TCP MSS
clamped on ``ipsec0`` as kipsec clamps on its device. ``--untuned`` adds the settings
this bench used before (``openssl`` first, IKE logging at 2, no clamp) as one more
gateway path, to measure what the tuning is worth in the same run. ``--variant``
(repeatable) adds kipsec paths in both placements whose sidecars run with environment
variables set, e.g. ``before=PYTHONPATH=/tmp/old/sidecar`` (a ``git archive`` of an older
commit's ``sidecar/``): two code trees side by side in the same rounds.

Every path: AES-GCM-256 ESP in UDP 4500, PSK, X25519. Per round and path: TCP throughput
(``iperf3 -t SECONDS`` one stream pa -> pb, the receiver's rate), then ``PINGS`` pings
``--interval`` ms apart (10; each reply's RTT). Reported: the median and range of the
rounds' throughputs, the p50/p90/p99 of every RTT sample, the CPU time the two IPsec
daemons spent per ping (every thread, kernel work in their context included; the median
of the rounds): what a packet costs them, which load does not inflate as it does the
RTT; its user-mode part (``user``, tick-sampled) and the daemons' context switches per
ping (``csw``); and kipsec/strongSwan ratios per placement (of the medians; and the
range of the per-round ratios; CPU per ping too). Then the time from
"initiate" to the first installed child SA, median of ``--setups`` (pods placement,
kipsec's control socket ``initiate`` vs vici ``initiate``), and the kipsec sidecar's
resident memory (idle, after the rounds, with 0 and 100 configured on-demand peers).

Bounds: every start and wait is bounded (sidecars 10 s, charon 10 s, iperf3
``SECONDS`` + 30 s, ping 30 s + twice the pings' duration); a run takes about
``ROUNDS × PATHS × (SECONDS + 4)`` s plus about 40 s of set-up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from kipsec_sidecar.datapath.mtu import mss_clamp_ruleset  # noqa: E402
from sidecar_startup import bytecode  # type: ignore[import-not-found]  # noqa: E402  (this directory)
from support.netns import Topology, sweep_stale, tcp_throughput  # noqa: E402
from support.process_stats import cpu_seconds  # noqa: E402
from support.sidecars import (  # noqa: E402
    Sidecar,
    established,
    fake_peers,
    peer_entry,
    wait_until,
)
from support.strongswan import (  # noqa: E402
    PLUGINS,
    TUNED,
    Charon,
    Child,
    Connection,
    Psk,
    gateway_pair,
    is_available,
)
from support.variants import parse_variants  # noqa: E402

PSK = "kipsec bench pre-shared key 0123456789"
FAKE_PEERS = "10.99.0.0/24"
QUIET = {"logging": {"level": "warning"}}
T = TypeVar("T")

UNTUNED = {"plugins": PLUGINS, "log_levels": {"default": 1, "ike": 2, "cfg": 2, "knl": 1}}
"""What this bench ran before (``support.strongswan``'s test defaults: openssl first)."""
INNER = {"pa": "10.20.1.2", "pb": "10.20.2.2"}
"""Inner addresses of the strongSwan pods (placement a): what their tunnel carries."""


@dataclass
class Path_:
    """One datapath under test: its topology, where to send to, and what it achieved."""

    name: str
    placement: str
    topo: Topology
    target: str
    source: str | None = None
    mbits: list[float] = field(default_factory=list)
    rtts: list[float] = field(default_factory=list)
    note: str = ""
    sidecar: Sidecar | None = None
    """pa's kipsec sidecar, whose memory is reported (kipsec in the pods)."""
    pids: list[int] = field(default_factory=list)
    """The two IPsec daemons (kipsec sidecars, charons) whose CPU per ping is reported."""
    cpu_per_ping: list[float] = field(default_factory=list)
    user_per_ping: list[float] = field(default_factory=list)
    """The user-mode part of ``cpu_per_ping`` (the rest is kernel work)."""
    switches_per_ping: list[float] = field(default_factory=list)
    """Context switches of the two daemons per ping (each a sleep and a wake-up)."""


def pods(topo: Topology) -> None:
    for node, pod in (("a", "pa"), ("b", "pb")):
        topo.add_node(node)
        topo.add_pod(pod, node)


def ping_samples(
    topo: Topology, target: str, count: int, source: str | None, interval: float = 0.01
) -> list[float]:
    """Each reply's RTT in ms for ``count`` pings pa -> ``target``, ``interval`` s apart."""
    bind = ("-I", source) if source else ()
    deadline = int(30 + count * interval * 2)
    out = topo.run(
        "pa",
        *("ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-w", str(deadline)),
        *bind,
        target,
        timeout=deadline + 10,
        check=False,
    ).stdout
    samples = [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]
    if not samples:
        raise RuntimeError(f"no ping replies: {out[-300:]!r}")
    return samples


def measure(path: Path_, seconds: float, pings: int, interval: float = 0.01) -> None:
    """One round on ``path``: iperf3 then the pings."""
    topo = path.topo
    topo.ping("pa", path.target, count=1)  # ARP, caches
    path.mbits.append(
        tcp_throughput(
            topo, "pa", "pb", seconds, server_address=path.target, client_address=path.source
        )
    )
    before = cpu_seconds(path.pids), daemon_counters(path.pids)
    samples = ping_samples(topo, path.target, pings, path.source, interval)
    if path.pids:
        after = cpu_seconds(path.pids), daemon_counters(path.pids)
        path.cpu_per_ping.append((after[0] - before[0]) / len(samples))
        path.user_per_ping.append((after[1][0] - before[1][0]) / len(samples))
        path.switches_per_ping.append((after[1][1] - before[1][1]) / len(samples))
    path.rtts.extend(samples)


def daemon_counters(pids: Sequence[int]) -> tuple[float, int]:
    """(user-mode CPU seconds, context switches) of every thread of ``pids``: ``utime``
    of ``/proc/PID/task/*/stat`` (tick-sampled, so read over many pings) and the
    voluntary and involuntary switches of ``status``."""
    ticks = switches = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                ticks += int((task / "stat").read_text().rsplit(")", 1)[1].split()[11])
                for line in (task / "status").read_text().splitlines():
                    if "ctxt_switches:" in line:
                        switches += int(line.split()[1])
    return ticks / os.sysconf("SC_CLK_TCK"), switches


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --- set-ups ------------------------------------------------------------------------------


def kipsec_setup_time(a: Sidecar, peer: str) -> float:
    """Seconds from an ``initiate`` request to ``a``'s first installed child SA with ``peer``."""
    requested = time.time()
    a.control("initiate", peer=peer)
    wait_until("the child SA", established(a, peer), timeout=10)
    child = a.installed(peer)[0]
    return float(child["installed_at"]) - requested


def kipsec_pods(
    stack: contextlib.ExitStack,
    work: Path,
    setups: int,
    env: Mapping[str, str] | None = None,
    name: str = "kipsec",
) -> tuple[Path_, list[float]]:
    """(a) kipsec: a sidecar in each pod (run with ``env`` added); also the setup times,
    measured here."""
    topo = stack.enter_context(Topology())
    pods(topo)
    a, b = Sidecar(topo, "pa", work), Sidecar(topo, "pb", work)
    a.env = b.env = dict(env or {})
    a.write([peer_entry(topo, "pb", start="onDemand")], **QUIET)
    b.write([peer_entry(topo, "pa", start="onDemand")], **QUIET)
    stack.callback(b.stop)
    stack.callback(a.stop)
    a.start()
    b.start()
    times = []
    for attempt in range(setups):
        times.append(kipsec_setup_time(a, "pb"))
        if attempt < setups - 1:
            a.control("terminate", peer="pb")
            wait_until("pb cleared", lambda: b.peer("pa")["children"] == [], timeout=10)
    wait_until("pb established", established(b, "pa"), timeout=10)
    path = Path_(name, "pods", topo, topo.address("pb"), sidecar=a)
    path.pids = [proc.pid for proc in (a.proc, b.proc) if proc is not None]
    return path, times


def kipsec_gateways(
    stack: contextlib.ExitStack,
    work: Path,
    env: Mapping[str, str] | None = None,
    name: str = "kipsec",
) -> Path_:
    """(b) kipsec: a sidecar on each node protecting its pod CIDR (run with ``env``)."""
    topo = stack.enter_context(Topology(pod_routes=False))
    pods(topo)
    sidecars = []
    for me, peer in (("a", "b"), ("b", "a")):
        sidecar = Sidecar(topo, me, work)
        sidecar.env = dict(env or {})
        selectors = {
            "local": [str(topo.node(me).pod_cidr)],
            "remote": [str(topo.node(peer).pod_cidr)],
        }
        start = "onStart" if me == "a" else "onDemand"
        sidecar.write([peer_entry(topo, peer, start=start, trafficSelectors=selectors)], **QUIET)
        stack.callback(sidecar.stop)
        sidecars.append(sidecar.start())
    wait_until("gateways established", established(sidecars[1], "a"), timeout=10)
    path = Path_(name, "gateway", topo, topo.address("pb"))
    path.pids = [s.proc.pid for s in sidecars if s.proc is not None]
    return path


def variant_pods(
    stack: contextlib.ExitStack, env: Mapping[str, str], name: str, work: Path
) -> Path_:
    """:func:`kipsec_pods` for a ``--variant`` (one setup: its times are not reported)."""
    return kipsec_pods(stack, work, 1, env, name)[0]


def variant_gateways(
    stack: contextlib.ExitStack, env: Mapping[str, str], name: str, work: Path
) -> Path_:
    """:func:`kipsec_gateways` for a ``--variant``."""
    return kipsec_gateways(stack, work, env, name)


def charons(
    stack: contextlib.ExitStack,
    topo: Topology,
    names: Sequence[str],
    work: Path,
    settings: Mapping[str, Any],
) -> list[Charon]:
    """Start a charon in each of ``names`` (stopped when ``stack`` closes)."""
    started = []
    for name in names:
        charon = Charon(topo, name, work / f"charon-{name}", **settings)
        stack.callback(charon.stop)
        started.append(charon.start())
    return started


def strongswan_pods(
    stack: contextlib.ExitStack, work: Path, setups: int
) -> tuple[Path_, list[float]]:
    """(a) strongSwan: charon in each pod, tunnelling between the pods' inner addresses."""
    topo = stack.enter_context(Topology())
    pods(topo)
    for pod, inner in INNER.items():
        topo.ip(pod, f"addr add {inner}/32 dev lo")
    left, right = charons(stack, topo, ("pa", "pb"), work, TUNED)

    def conn(me: str, peer: str) -> Connection:
        return Connection(
            name="gw",
            local_addrs=(topo.address(me),),
            remote_addrs=(topo.address(peer),),
            auth=Psk(PSK),
            local_id=f"{me}.bench",
            remote_id=f"{peer}.bench",
            children=(Child("net", (f"{INNER[me]}/32",), (f"{INNER[peer]}/32",)),),
        )

    left.configure(conn("pa", "pb"))
    right.configure(conn("pb", "pa"))
    left.load()
    right.load()
    times = []
    for attempt in range(setups):
        start = time.monotonic()
        left.initiate("net", timeout=10)
        times.append(time.monotonic() - start)
        if attempt < setups - 1:
            left.terminate(ike="gw", timeout=10)
            right.wait_for(lambda sas: not sas, timeout=10, what="responder cleared")
    right.wait_established(child="net", timeout=10)
    path = Path_("strongSwan", "pods", topo, INNER["pb"], source=INNER["pa"])
    path.pids = [c.pid for c in (left, right) if c.pid is not None]
    return path, times


def strongswan_gateways(
    stack: contextlib.ExitStack, work: Path, settings: Mapping[str, Any], *, clamp: bool, name: str
) -> Path_:
    """(b) strongSwan: charon on each node as the gateway for its pod CIDR."""
    topo = stack.enter_context(Topology(pod_routes=False))
    pods(topo)
    left, right = charons(stack, topo, ("a", "b"), work, settings)
    conn_a, conn_b = gateway_pair(
        topo, "a", "b", auth=(Psk(PSK), Psk(PSK)), ids=("a.bench", "b.bench")
    )
    left.configure(conn_a)
    right.configure(conn_b)
    left.load()
    right.load()
    left.initiate("net", timeout=10)
    right.wait_established(child="net", timeout=10)
    if clamp:
        for node in ("a", "b"):
            topo.run(node, "nft", "-f", "-", input=mss_clamp_ruleset("bench_clamp", "ipsec0"))
    path = Path_(name, "gateway", topo, topo.address("pb"))
    path.pids = [c.pid for c in (left, right) if c.pid is not None]
    return path


def plain(stack: contextlib.ExitStack) -> Path_:
    topo = stack.enter_context(Topology())
    pods(topo)
    return Path_("plain", "", topo, topo.address("pb"))


def hundred_peers(work: Path) -> dict[str, float]:
    """RSS of a sidecar with 100 configured on-demand peers (and of one with none)."""
    memory: dict[str, float] = {}
    with Topology() as topo:
        topo.add_node("a")
        topo.add_pod("pm", "a")
        topo.ip("pm", f"route add blackhole {FAKE_PEERS}")
        for count in (0, 100):
            sidecar = Sidecar(topo, "pm", work / f"peers{count}")
            sidecar.workdir.mkdir()
            sidecar.write(fake_peers(count), **QUIET)
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


def quantile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def describe(path: Path_) -> str:
    if not path.mbits:
        return f"{'n/a':>9}  {path.note}"
    spread = f"[{min(path.mbits):.0f}-{max(path.mbits):.0f}]"
    rtt = "  ".join(f"{quantile(path.rtts, q):6.3f}" for q in (0.5, 0.9, 0.99))
    cpu, user = median(path.cpu_per_ping), median(path.user_per_ping)
    switches = median(path.switches_per_ping)
    cpu_text = f"{cpu * 1e6:8.0f}" if cpu is not None else f"{'-':>8}"
    user_text = f"{user * 1e6:6.0f}" if user is not None else f"{'-':>6}"
    switch_text = f"{switches:5.1f}" if switches is not None else f"{'-':>5}"
    return (
        f"{median(path.mbits):9.1f} {spread:>13}  {rtt}  {cpu_text}  {user_text}  {switch_text}"
        f"  {path.note}"
    )


def ratio_line(label: str, top: Path_, bottom: Path_) -> str:
    m_top, m_bottom = median(top.mbits), median(bottom.mbits)
    if not m_top or not m_bottom:
        return f"{label:<34} n/a"
    rounds = [t / b for t, b in zip(top.mbits, bottom.mbits, strict=False) if b]
    per_round = f"(per round {min(rounds):.2f}-{max(rounds):.2f})" if rounds else ""
    rtt = quantile(top.rtts, 0.5) / quantile(bottom.rtts, 0.5)
    line = f"{label:<34} TCP {m_top / m_bottom:5.2f} {per_round}  RTT p50 {rtt:5.2f}"
    cpu_top, cpu_bottom = median(top.cpu_per_ping), median(bottom.cpu_per_ping)
    if cpu_top and cpu_bottom:
        line += f"  CPU/ping {cpu_top / cpu_bottom:5.2f}"
    return line


def report(
    paths: list[Path_],
    setups: dict[str, list[float]],
    memory: dict[str, float],
    seconds: float,
    rounds: int,
    pings: int,
    interval: float = 0.01,
) -> None:
    print(
        f"\npa -> pb, {rounds} interleaved rounds of iperf3 TCP {seconds:g} s + {pings} pings"
        f" {interval * 1e3:g} ms apart; AES-GCM-256 ESP in UDP, PSK"
    )
    print(
        f"{'path':<34} {'Mbit/s':>9} {'[min-max]':>13}  {'RTT p50':>6}  {'p90':>6}  {'p99':>6}"
        f"  {'CPU us/ping':>8}  {'user':>6}  {'csw':>5}"
    )
    for path in paths:
        label = f"{path.name} ({path.placement})" if path.placement else path.name
        print(f"{label:<34} {describe(path)}")
    by = {(p.name, p.placement): p for p in paths}
    base = by[("plain", "")]
    print()
    kipsecs = [p for p in paths if p.name.startswith("kipsec") and p.placement == "pods"]
    for placement in ("pods", "gateway"):
        swan = by.get(("strongSwan", placement))
        for name in (p.name for p in kipsecs):
            kipsec = by.get((name, placement))
            if kipsec and swan:
                line = ratio_line(f"{name} / strongSwan ({placement})", kipsec, swan)
                print(line + "  goal >= 2")
    for path in paths:
        if path is not base and (path.name.startswith("kipsec") or path.name == "strongSwan"):
            print(ratio_line(f"{path.name} ({path.placement}) / plain", path, base))
    for placement in ("pods", "gateway"):
        kipsec = by.get(("kipsec", placement))
        for path in paths:
            if kipsec and path.placement == placement and path.name.startswith("kipsec "):
                print(ratio_line(f"kipsec / {path.name} ({placement})", kipsec, path))
    untuned = by.get(("strongSwan untuned", "gateway"))
    tuned = by.get(("strongSwan", "gateway"))
    if untuned and tuned:
        print(ratio_line("strongSwan tuned / untuned (gw)", tuned, untuned))
    print("\nIKE SA + first child SA setup, pods placement (PSK, X25519, AES-GCM-256)")
    for name, times in setups.items():
        if times:
            ms = [t * 1000 for t in times]
            print(
                f"{name:<34} median {statistics.median(ms):7.1f} ms"
                f"  (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)})"
            )
        else:
            print(f"{name:<34} n/a")
    print("\nkipsec sidecar resident memory (VmRSS; started from cached bytecode)")
    for name, mib in memory.items():
        print(f"{name:<34} {mib:7.1f} MiB")


def guarded(step: Callable[[], T], fallback: T, what: str) -> T:
    """``step()``, or ``fallback`` when it raises: one path failing must not hide the others."""
    try:
        return step()
    except Exception as exc:
        print(f"{what} failed: {exc}", file=sys.stderr)
        return fallback


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kipsec-bench-") as tmp:
        yield Path(tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="iperf3 time (max 60)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (max 20)")
    parser.add_argument("--pings", type=int, default=200, help="pings per round (max 2000)")
    parser.add_argument(
        "--interval", type=float, default=10.0, help="ms between pings (1 to 100; default 10)"
    )
    parser.add_argument("--setups", type=int, default=5, help="setup-time samples (max 20)")
    parser.add_argument(
        "--untuned", action="store_true", help="also the old strongSwan settings (gateways)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=VAR=VALUE,...",
        help="also kipsec paths whose sidecars run with these environment variables "
        "(e.g. before=PYTHONPATH=/tmp/old/sidecar)",
    )
    args = parser.parse_args()
    variants = parse_variants(args.variant)
    seconds = min(max(args.seconds, 1.0), 60.0)
    rounds = min(max(args.rounds, 1), 20)
    pings = min(max(args.pings, 10), 2000)
    interval = min(max(args.interval, 1.0), 100.0) / 1e3
    setups = min(max(args.setups, 1), 20)
    sweep_stale()
    memory: dict[str, float] = {}
    times: dict[str, list[float]] = {"kipsec": [], "strongSwan": []}
    with workdir() as cache:
        # The sidecars start from cached bytecode, as the image's do: compiling kipsec's
        # modules at each start (this checkout's PYTHONDONTWRITEBYTECODE) holds ~10 MiB more.
        bytecode(True, cache)
        return measure_all(args, variants, seconds, rounds, pings, interval, setups, memory, times)


def measure_all(
    args: argparse.Namespace,
    variants: Mapping[str, Mapping[str, str]],
    seconds: float,
    rounds: int,
    pings: int,
    interval: float,
    setups: int,
    memory: dict[str, float],
    times: dict[str, list[float]],
) -> int:
    """Build every path, measure the interleaved rounds, the memory, and print the report."""
    swan_missing = is_available()
    with workdir() as work, contextlib.ExitStack() as stack:
        paths: list[Path_] = []

        def add(what: str, build: Callable[[Path], Path_]) -> None:
            directory = work / what.replace(" ", "-")
            directory.mkdir()
            path: Path_ | None = guarded(lambda: build(directory), None, what)
            if path is not None:
                paths.append(path)

        def kp(d: Path) -> Path_:
            path, times["kipsec"] = kipsec_pods(stack, d, setups)
            return path

        def sp(d: Path) -> Path_:
            path, times["strongSwan"] = strongswan_pods(stack, d, setups)
            return path

        add("kipsec pods", kp)
        for name, env in variants.items():
            add(f"kipsec {name} pods", partial(variant_pods, stack, env, f"kipsec {name}"))
        if swan_missing is None:
            add("strongSwan pods", sp)
        add("kipsec gateway", lambda d: kipsec_gateways(stack, d))
        for name, env in variants.items():
            add(f"kipsec {name} gateway", partial(variant_gateways, stack, env, f"kipsec {name}"))
        if swan_missing is None:
            add(
                "strongSwan gateway",
                lambda d: strongswan_gateways(stack, d, TUNED, clamp=True, name="strongSwan"),
            )
            if args.untuned:
                add(
                    "strongSwan untuned",
                    lambda d: strongswan_gateways(
                        stack, d, UNTUNED, clamp=False, name="strongSwan untuned"
                    ),
                )
        else:
            print(f"strongSwan paths skipped: {swan_missing}", file=sys.stderr)
        add("plain", lambda d: plain(stack))
        sidecar = next((p.sidecar for p in paths if p.sidecar is not None), None)
        if sidecar is not None and sidecar.proc is not None:
            time.sleep(0.5)
            memory["idle, 1 peer up"] = rss_mib(sidecar.proc.pid)
        for round_ in range(rounds):
            for path in paths:
                guarded(
                    partial(measure, path, seconds, pings, interval), None, f"{path.name} round"
                )
            print(
                f"round {round_ + 1}: "
                + ", ".join(
                    f"{p.name}/{p.placement or '-'} {p.mbits[-1]:.0f}" for p in paths if p.mbits
                ),
                file=sys.stderr,
                flush=True,
            )
        if sidecar is not None and sidecar.proc is not None:
            memory["after the rounds"] = rss_mib(sidecar.proc.pid)
    with workdir() as work:
        none: dict[str, float] = {}
        memory.update(guarded(lambda: hundred_peers(work), none, "100 peers"))
    report(paths, times, memory, seconds, rounds, pings, interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
