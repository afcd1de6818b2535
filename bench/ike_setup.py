"""IKE SA + first child SA setup time: kipsec against strongSwan, PSK and ECDSA, one run.

Run (root; two pods and two nodes in network namespaces, removed afterwards)::

    .venv/bin/python bench/ike_setup.py [--setups 9]

For each authentication — PSK, and ECDSA P-256 certificates from one test CA (each side
sends its end-entity certificate) — two ``kipsec-sidecar run`` daemons in pods pa and pb
and two strongSwan charons on nodes a and b (gateways for the pod subnets, as in
``sidecar_throughput.py``) are set up once; then ``--setups`` rounds each time one
handshake of kipsec and one of strongSwan, alternately, so both see the same load. One
setup is an ``initiate`` that answers when the first child SA is installed: kipsec's
control socket with ``wait`` and charon's vici ``initiate`` both do; it is followed by a
``terminate`` (not timed) and a wait until the responder holds nothing. Both sides use
their default proposals (kipsec: AES-GCM-256 with X25519 first; charon: its defaults);
charon is tuned as in ``sidecar_throughput.py`` (``support.strongswan.TUNED``: logging at
level 0, ``aesni`` first), kipsec logs warnings only. ``--variant NAME=VAR=VALUE,...``
(repeatable) adds a kipsec pair whose sidecars run with those environment variables, e.g.
``before=PYTHONPATH=/tmp/old/sidecar`` (a ``git archive`` of an older commit's
``sidecar/``), in its own pods, timed in the same rounds: two code trees side by side.
Printed: the median (min-max) of each, and kipsec / strongSwan; beside it the CPU time
both daemons of a pair used during one setup (every thread's ``schedstat`` of the two
sidecars, of the two charons, read before the request and after the answer: the
protocol's crypto, message handling, the child's install, the control request and
answer, and the kernel work done in their context such as sending through the veths),
the figure a loaded machine stretches least. In-memory CPU per handshake, without
sockets or processes, is ``ike_handshakes.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support.netns import Topology, sweep_stale  # noqa: E402
from support.pki import CertificateAuthority  # noqa: E402
from support.process_stats import cpu_seconds  # noqa: E402
from support.sidecars import Sidecar, fqdn, peer_entry, wait_until  # noqa: E402
from support.strongswan import (  # noqa: E402
    TUNED,
    Auth,
    CertAuth,
    Charon,
    Psk,
    gateway_pair,
    is_available,
)
from support.variants import parse_variants  # noqa: E402

PSK = "kipsec bench pre-shared key 0123456789"
MAX_SETUPS = 30
TIMEOUT = 8.0  # under the control client's 10 s read timeout

#: One setup: wall seconds from request to answer, CPU seconds of both daemons meanwhile.
Setup = Callable[[], tuple[float, float]]


def kipsec_pair(
    topo: Topology,
    workdir: Path,
    auth: str,
    ca: CertificateAuthority,
    env: dict[str, str] | None = None,
) -> Setup:
    """Two sidecars (pods pa, pb) with each other as onDemand peers, run with ``env``
    added to their environment; a function timing one setup."""
    sidecars = {}
    for slot, (me, other) in enumerate((("pa", "pb"), ("pb", "pa"))):
        sidecar = Sidecar(topo, me, workdir / auth)
        sidecar.env = dict(env or {})
        sidecar.workdir.mkdir(exist_ok=True)
        local: dict[str, Any] = {}
        if auth == "ecdsa":
            issued = ca.issue(me, dns=[fqdn(me)], key_kind="ec256", key_slot=50 + slot)
            local["auth"] = sidecar.certificate_auth(issued, ca)
        sidecar.write(
            [peer_entry(topo, other, start="onDemand")], local=local, logging={"level": "warning"}
        )
        sidecars[me] = sidecar.start()
    a, b = sidecars["pa"], sidecars["pb"]
    pids = [s.proc.pid for s in (a, b) if s.proc is not None]

    def setup() -> tuple[float, float]:
        cpu = cpu_seconds(pids)
        start = time.monotonic()
        a.control("initiate", peer="pb", wait=TIMEOUT)
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(pids) - cpu
        if not a.installed("pb"):
            raise AssertionError(f"kipsec {auth}: no child SA after initiate\n{a.tail(10)}")
        a.control("terminate", peer="pb", wait=TIMEOUT)
        wait_until("pb cleared", lambda: b.peer("pa")["children"] == [], timeout=TIMEOUT)
        return elapsed, cpu

    return setup


def strongswan_pair(
    topo: Topology, workdir: Path, auth: str, ca: CertificateAuthority, stack: ExitStack
) -> Setup:
    """Two charons (nodes a, b) as gateways for the pod subnets, stopped with ``stack``;
    a function timing one setup."""
    ids = ("a.bench", "b.bench")
    auths: tuple[Auth, Auth]
    if auth == "ecdsa":
        left, right = (
            ca.issue(name, dns=[name], key_kind="ec256", key_slot=60 + slot)
            for slot, name in enumerate(ids)
        )
        auths = (CertAuth(left, (ca.cert,)), CertAuth(right, (ca.cert,)))
    else:
        auths = (Psk(PSK), Psk(PSK))
    charon_a = stack.enter_context(Charon(topo, "a", workdir / f"charon-a-{auth}", **TUNED))
    charon_b = stack.enter_context(Charon(topo, "b", workdir / f"charon-b-{auth}", **TUNED))
    conn_a, conn_b = gateway_pair(topo, "a", "b", auth=auths, ids=ids)
    charon_a.configure(conn_a)
    charon_b.configure(conn_b)
    charon_a.load()
    charon_b.load()
    pids = [c.pid for c in (charon_a, charon_b) if c.pid is not None]

    def setup() -> tuple[float, float]:
        cpu = cpu_seconds(pids)
        start = time.monotonic()
        charon_a.initiate("net", timeout=TIMEOUT)
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(pids) - cpu
        charon_a.terminate(ike="gw", timeout=TIMEOUT)
        charon_b.wait_for(lambda sas: not sas, timeout=TIMEOUT, what="responder cleared")
        return elapsed, cpu

    return setup


def median(values: list[float]) -> str:
    if not values:
        return "n/a"
    ms = [v * 1000 for v in values]
    return f"{statistics.median(ms):7.1f} ms ({min(ms):.1f}-{max(ms):.1f}, n={len(ms)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", type=int, default=9, help=f"rounds (1-{MAX_SETUPS})")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=VAR=VALUE,...",
        help="also a kipsec pair whose sidecars run with these environment variables "
        "(e.g. before=PYTHONPATH=/tmp/old/sidecar)",
    )
    args = parser.parse_args()
    variants = {f"kipsec {name}": env for name, env in parse_variants(args.variant).items()}
    setups = max(1, min(args.setups, MAX_SETUPS))
    missing = is_available()
    if missing is not None:
        print(f"strongSwan unavailable: {missing}", file=sys.stderr)
        return 2
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"load average before: {load}")
    sweep_stale()
    ca = CertificateAuthority.root("kipsec bench root")
    results: dict[tuple[str, str], list[float]] = {}
    cpus: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="kipsec-ike-setup-") as tmp:
        for auth in ("psk", "ecdsa"):
            with ExitStack() as stack:
                pods = stack.enter_context(Topology())
                gateways = stack.enter_context(Topology(pod_routes=False))
                for topo in (pods, gateways):
                    topo.add_node("a")
                    topo.add_node("b")
                    topo.add_pod("pa", "a")
                    topo.add_pod("pb", "b")
                workdir = Path(tmp) / auth
                workdir.mkdir()
                pairs = {"kipsec": kipsec_pair(pods, workdir, auth, ca)}
                for n, (name, env) in enumerate(variants.items()):
                    own = stack.enter_context(Topology())
                    own.add_node("a")
                    own.add_node("b")
                    own.add_pod("pa", "a")
                    own.add_pod("pb", "b")
                    (workdir / f"variant{n}").mkdir()
                    pairs[name] = kipsec_pair(own, workdir / f"variant{n}", auth, ca, env)
                pairs["strongSwan"] = strongswan_pair(gateways, workdir, auth, ca, stack)
                for setup in pairs.values():
                    setup()  # unmeasured: first use of every code path
                for _ in range(setups):
                    for name, setup in pairs.items():
                        elapsed, cpu = setup()
                        results.setdefault((name, auth), []).append(elapsed)
                        cpus.setdefault((name, auth), []).append(cpu)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"load average after:  {load}")
    print(
        "\nIKE SA + first child SA setup, initiate to installed (median (min-max));"
        " CPU of both daemons during it"
    )
    names = ["kipsec", *variants, "strongSwan"]
    width = max(len(name) for name in names)
    for auth in ("psk", "ecdsa"):
        theirs = results[("strongSwan", auth)]
        for name in names:
            times = results[(name, auth)]
            print(f"  {auth:6} {name:{width}} {median(times)}   CPU {median(cpus[(name, auth)])}")
        for name in names[:-1]:
            ratio = statistics.median(results[(name, auth)]) / statistics.median(theirs)
            cpu_ratio = statistics.median(cpus[(name, auth)]) / statistics.median(
                cpus[("strongSwan", auth)]
            )
            print(
                f"  {auth:6} {name} / strongSwan = {ratio:.2f}  (goal: <= 1); CPU {cpu_ratio:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
