"""Is `sidecar_throughput.py`'s strongSwan column what strongSwan reaches here? Settings compared.

Run (root; network namespaces, removed afterwards)::

    .venv/bin/python bench/strongswan_baseline.py [--seconds 5] [--rounds 4]

Issue 14 asks for an honest baseline: a tuned strongSwan, checked against what strongSwan
reaches elsewhere on the same machine. This script builds charon + kernel-libipsec as the
node gateways for the pod CIDRs (the placement of the issue's own measurement) in each way
a user could set it up, and kipsec's gateways beside them, then measures interleaved rounds
(iperf3 TCP pa -> pb, the receiver's rate; 50 pings 10 ms apart) so that the load of a
shared machine falls on all of them alike:

- **bench**: `sidecar_throughput.py`'s strongSwan gateway path: nodes on a bridge, `aesni`
  first, logging at 0, the TCP MSS clamped on ``ipsec0``;
- **bench, no clamp**: the same without the clamp (forwarded TCP then learns the path MTU
  from ICMP);
- **openssl first**: the plugin order of the tests' charons (openssl's AEAD wrapper);
- **direct veth, no clamp** and **direct veth, clamp**: the nodes joined by one veth pair
  instead of a bridge (the topology of the issue's table), `aesni` first;
- **kipsec**: `sidecar_throughput.py`'s kipsec gateway path (bridge), for scale.

Every path: AES-GCM-256 ESP in UDP 4500, PSK, X25519 (libipsec sends ESP only in UDP).
Bounds: charon and sidecar starts 10 s each, iperf3 ``SECONDS`` + 30 s, ping 30 s.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from kipsec_sidecar.datapath.mtu import mss_clamp_ruleset  # noqa: E402
from sidecar_throughput import (  # type: ignore[import-not-found]  # noqa: E402  (this directory)
    PSK,
    TUNED,
    Path_,
    charons,
    kipsec_gateways,
    ping_samples,
    pods,
    quantile,
    strongswan_gateways,
)
from support.netns import Topology, sweep_stale, tcp_throughput  # noqa: E402
from support.strongswan import PLUGINS, Child, Connection, Psk, is_available  # noqa: E402

LINK = ("192.168.77.1", "192.168.77.2")
"""The direct veth's two ends (nodes a and b); the bridge stays, unused by the tunnel."""


def direct_gateways(
    stack: contextlib.ExitStack, work: Path, settings: Mapping[str, Any], *, clamp: bool
) -> Topology:
    """charon on nodes a and b joined by one veth pair, protecting pod CIDR to pod CIDR."""
    topo = stack.enter_context(Topology(pod_routes=False))
    pods(topo)
    topo.ip("a", f"link add kb0 type veth peer name kb1 netns {topo.namespace('b')}")
    for node, device, address in (("a", "kb0", LINK[0]), ("b", "kb1", LINK[1])):
        topo.ip(node, f"addr add {address}/30 dev {device}")
        topo.ip(node, f"link set {device} up")
    left, right = charons(stack, topo, ("a", "b"), work, settings)

    def connection(me: str, peer: str, mine: str, theirs: str) -> Connection:
        child = Child("net", (str(topo.node(me).pod_cidr),), (str(topo.node(peer).pod_cidr),))
        return Connection(
            name="gw",
            local_addrs=(mine,),
            remote_addrs=(theirs,),
            auth=Psk(PSK),
            local_id=f"{me}.bench",
            remote_id=f"{peer}.bench",
            children=(child,),
        )

    left.configure(connection("a", "b", *LINK))
    right.configure(connection("b", "a", LINK[1], LINK[0]))
    left.load()
    right.load()
    left.initiate("net", timeout=10)
    right.wait_established(child="net", timeout=10)
    if clamp:
        for node in ("a", "b"):
            topo.run(node, "nft", "-f", "-", input=mss_clamp_ruleset("bench_clamp", "ipsec0"))
    return topo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="iperf3 time (max 60)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (max 20)")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 1.0), 60.0)
    rounds = min(max(args.rounds, 1), 20)
    missing = is_available()
    if missing is not None:
        print(f"strongSwan is not available: {missing}", file=sys.stderr)
        return 2
    sweep_stale()
    openssl_first = {**TUNED, "plugins": PLUGINS}

    builds: dict[str, Callable[[contextlib.ExitStack, Path], Path_]] = {
        "bench": lambda s, w: strongswan_gateways(s, w, TUNED, clamp=True, name="bench"),
        "bench, no clamp": lambda s, w: strongswan_gateways(s, w, TUNED, clamp=False, name="nc"),
        "openssl first": lambda s, w: strongswan_gateways(
            s, w, openssl_first, clamp=True, name="openssl"
        ),
        "direct veth, no clamp": lambda s, w: direct_path(s, w, clamp=False),
        "direct veth, clamp": lambda s, w: direct_path(s, w, clamp=True),
        "kipsec (bridge)": kipsec_gateways,
    }
    results: dict[str, tuple[list[float], list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="kipsec-swbase-") as tmp, contextlib.ExitStack() as s:
        paths: dict[str, Path_] = {}
        for index, (name, build) in enumerate(builds.items()):
            work = Path(tmp) / str(index)
            work.mkdir()
            paths[name] = build(s, work)
        for round_ in range(rounds):
            for name, path in paths.items():
                mbits, rtts = results.setdefault(name, ([], []))
                path.topo.ping("pa", path.target, count=1)
                mbits.append(
                    tcp_throughput(path.topo, "pa", "pb", seconds, server_address=path.target)
                )
                rtts.extend(ping_samples(path.topo, path.target, 50, None))
            line = ", ".join(f"{n} {r[0][-1]:.0f}" for n, r in results.items())
            print(f"round {round_ + 1}: {line}", file=sys.stderr, flush=True)
    print(f"\nstrongSwan gateways, {rounds} interleaved rounds of iperf3 TCP {seconds:g} s")
    print(f"{'path':<24} {'Mbit/s':>8} {'[min-max]':>12}  {'RTT p50 ms':>10}  vs bench")
    bench = statistics.median(results["bench"][0])
    for name, (mbits, rtts) in results.items():
        middle = statistics.median(mbits)
        spread = f"[{min(mbits):.0f}-{max(mbits):.0f}]"
        print(
            f"{name:<24} {middle:8.1f} {spread:>12}  {quantile(rtts, 0.5):10.3f}"
            f"  {middle / bench:8.2f}"
        )
    return 0


def direct_path(stack: contextlib.ExitStack, work: Path, *, clamp: bool) -> Path_:
    topo = direct_gateways(stack, work, TUNED, clamp=clamp)
    return Path_("strongSwan", "direct veth", topo, topo.address("pb"))


if __name__ == "__main__":
    sys.exit(main())
