"""Two sidecars on the kernel datapath through the events of an SA's life, in the test VM.

Not a pytest module: ``tests/vm/test_kernel_lifecycle.py`` boots the VM and runs this
script, which prints ``{"checks": {...}}`` between the result markers (like the other
``*_checks.py`` scripts; the helpers are ``kernel_sidecar_checks``'s). One dual-stack
topology (``kernel_ipv6_checks.add_ipv6``), one start of each daemon, then every
configuration by reload:

- ``ipv6-esp-tunnel-udp``, ``ipv6-esp-transport-raw``: the peers' IPv6 addresses;
  ping6 both ways, exactly the expected ``ip xfrm`` states and policies.
- ``4in6``: IPv4 pod traffic in an ESP tunnel between the IPv6 addresses.
- ``reload-both``: both sides reload a changed peer (IPv4 now, ChaCha20-Poly1305) at the
  same moment, both onStart: they settle on exactly one child SA pair, matching SPIs,
  two kernel states each, traffic both ways.
- ``expire-soft``: pa's peer has ``lifetimes.bytes``: the kernel's soft EXPIRE (at 90 %)
  makes pa rekey under a ping of 1 kB packets, nothing lost.
- ``expire-hard``: pa's peer has ``lifetimes.packets``: a burst overruns the hard limit
  before a rekey can finish; the kernel deletes the state, its hard EXPIRE makes pa
  delete the child and initiate a new one (onStart), traffic flows again.
- ``nat``: node a masquerades pa (ports 40000-40100); pb's states carry the NAT's
  mapped port in XFRMA_ENCAP (RFC 3948), not 4500; traffic both ways.
- ``safety-net``: the states carry a hard time limit a bit longer than the child
  lifetime; after SIGKILL of pa its states expire on their own, its policies stay
  (fail closed). SIGTERM of pb leaves nothing.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(REPO / "sidecar"), str(REPO / "lab"), str(REPO / "tests")]

import support.sidecars as sidecars_module  # noqa: E402
from support.netns import Topology  # noqa: E402
from support.sidecars import Sidecar, peer_entry, wait_until  # noqa: E402
from vm.kernel_ipv6_checks import V6, add_ipv6  # noqa: E402
from vm.kernel_sidecar_checks import (  # noqa: E402
    START_TIMEOUT,
    captured_two_way,
    check,
    checking,
    child_spis,
    describe,
    diagnose,
    expect_kernel_entries,
    ping,
    rekey_under_ping,
    reload_pair,
    report,
    settled,
    start,
    stop_clean,
    timed,
    two_way,
    up,
    warm_up,
    xfrm_policies,
    xfrm_states,
)

NAT_PORTS = range(40000, 40101)
#: Child SA lifetime of the safety-net scenario and the kernel's hard limit it implies
#: (``xfrm_sa.safety_net_seconds``: 30 s + max(5 s, 10 %)).
CHILD_SA = 30
SAFETY_NET = 35


def document(topo: Topology, pod: str, **extra: Any) -> dict[str, Any]:
    """Top-level keys of a dual-stack kernel-datapath sidecar's document."""
    return {"local": {"addresses": [topo.address(pod), V6[pod]]}, "datapath": "kernel", **extra}


def v4_addresses(topo: Topology) -> dict[str, str]:
    """The pods' IPv4 addresses, for the helpers' ``addresses`` (the topology also has
    IPv6, whose neighbour discovery is on the wire too)."""
    return {pod: topo.address(pod) for pod in ("pa", "pb")}


def v6_peer(topo: Topology, name: str, **options: Any) -> dict[str, Any]:
    return peer_entry(topo, name, address=V6[name], **options)


def ipv6(topo: Topology, work: Path, a: Sidecar, b: Sidecar) -> None:
    """Start both daemons on IPv6 peers; then ESP transport raw by reload; then 4-in-6."""
    a.write([v6_peer(topo, "pb")], **document(topo, "pa"))
    b.write([v6_peer(topo, "pa", start="onDemand")], **document(topo, "pb"))
    start(a, b)
    up((a, "pb"), (b, "pa"))
    settled(topo, (a, "pb"), (b, "pa"))
    outer = (V6["pa"], V6["pb"])
    prefix = "ipv6-esp-tunnel-udp"
    captured_two_way(prefix, topo, work, "esp-in-udp", addresses=V6)
    expect_kernel_entries(
        prefix, topo, a, "pb", proto="esp", mode="tunnel", encap=True, outer=outer
    )

    prefix = "ipv6-esp-transport-raw"
    with checking(prefix):
        options = {"mode": "transport", "encapsulation": "raw"}
        reload_pair(
            prefix,
            (a, [v6_peer(topo, "pb", **options)], document(topo, "pa")),
            (b, [v6_peer(topo, "pa", start="onDemand", **options)], document(topo, "pb")),
            lambda child: child["mode"] == "transport",
        )
        captured_two_way(prefix, topo, work, "esp", addresses=V6)
        expect_kernel_entries(
            prefix, topo, a, "pb", proto="esp", mode="transport", encap=False, outer=outer
        )

    prefix = "4in6"
    with checking(prefix):
        v4 = v4_addresses(topo)

        def selectors(me: str, other: str) -> dict[str, Any]:
            return {"trafficSelectors": {"local": [v4[me]], "remote": [v4[other]]}}

        reload_pair(
            prefix,
            (a, [v6_peer(topo, "pb", **selectors("pa", "pb"))], document(topo, "pa")),
            (
                b,
                [v6_peer(topo, "pa", start="onDemand", **selectors("pb", "pa"))],
                document(topo, "pb"),
            ),
            lambda child: child["mode"] == "tunnel",
        )
        captured_two_way(prefix, topo, work, "esp-in-udp", addresses=v4)
        expect_kernel_entries(
            prefix,
            topo,
            a,
            "pb",
            proto="esp",
            mode="tunnel",
            encap=True,
            outer=outer,
            inner=(v4["pa"], v4["pb"]),
        )


def reload_both(topo: Topology, work: Path, a: Sidecar, b: Sidecar) -> None:
    """Both sides replace their peer at once (IPv4 addresses, ChaCha20-Poly1305, both
    onStart, as when a Tunnel changes): exactly one child SA pair must remain."""
    chacha = {"proposals": {"esp": ["chacha20poly1305"]}}
    a.write([peer_entry(topo, "pb", **chacha)], **document(topo, "pa"))
    b.write([peer_entry(topo, "pa", **chacha)], **document(topo, "pb"))
    reloads = [threading.Thread(target=car.control, args=("reload",)) for car in (a, b)]
    for thread in reloads:
        thread.start()
    for thread in reloads:
        thread.join(30)

    def one_pair() -> bool:
        mine, theirs = a.peer("pb")["children"], b.peer("pa")["children"]
        if len(mine) != 1 or len(theirs) != 1:
            return False
        ca, cb = mine[0], theirs[0]
        kernel_a = {s.spi for s in xfrm_states(topo.namespace("pa"))}
        kernel_b = {s.spi for s in xfrm_states(topo.namespace("pb"))}
        return bool(
            ca["state"] == cb["state"] == "installed"
            and ca["encryption"].startswith("chacha20")
            and (ca["spi_in"], ca["spi_out"]) == (cb["spi_out"], cb["spi_in"])
            and kernel_a == set(child_spis(a, "pb"))
            and kernel_b == set(child_spis(b, "pa"))
        )

    began = time.monotonic()
    try:
        wait_until("one chacha20 child SA pair", one_pair, 60)
        time.sleep(2.0)  # still one pair a moment later: no late duplicate undoes it
        settled_ok = one_pair()
        detail = f"settled in {time.monotonic() - began:.1f}s"
    except AssertionError as exc:
        settled_ok, detail = False, f"{exc}\n{diagnose((a, 'pb'), (b, 'pa'))}"
    check("reload-both/one-child-pair", settled_ok, detail)
    two_way("reload-both", topo, v4_addresses(topo))
    expect_kernel_entries("reload-both", topo, a, "pb", proto="esp", mode="tunnel", encap=True)


def expire_soft(topo: Topology, work: Path, a: Sidecar, b: Sidecar) -> None:
    """pa's peer may carry 1.7 MB per SA: at 90 % the kernel's soft EXPIRE (pa's own
    housekeeping reads the counters only every 5 s) makes pa rekey, under a 50 pps ping
    of 1 kB packets that loses nothing. The limit leaves the rekey about 3 s before the
    hard limit (the last 10 %) under emulation; a smaller one lets the hard limit cut
    the old SAs before the new ones are in place, and packets are lost."""
    limited = {"lifetimes": {"bytes": 1_700_000}}
    reload_pair(
        "expire-soft",
        (a, [peer_entry(topo, "pb", **limited)], document(topo, "pa")),
        (b, [peer_entry(topo, "pa", start="onDemand")], document(topo, "pb")),
    )
    rekey_under_ping(
        "expire-soft", topo, a, lambda: "waiting for the kernel's soft EXPIRE", size=1000, within=90
    )
    check(
        "expire-soft/rekeyed-by-kernel-expire",
        "kernel SA soft limit reached: rekeying" in a.tail(400),
        a.tail(30),
    )


def expire_hard(topo: Topology, work: Path, a: Sidecar, b: Sidecar) -> None:
    """pa's peer may carry 40 packets per SA; 300 datagrams sent at once overrun the hard
    limit long before a rekey started at 36 could finish."""
    limited = {"lifetimes": {"packets": 40}}
    reload_pair(
        "expire-hard",
        (a, [peer_entry(topo, "pb", **limited)], document(topo, "pa")),
        (b, [peer_entry(topo, "pa", start="onDemand")], document(topo, "pb")),
    )
    old = set(child_spis(a, "pb"))
    burst = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(300):\n"
        "    try:\n"
        "        s.sendto(b'x' * 64, (sys.argv[1], 9))\n"
        "    except OSError:\n"  # the SA is gone: the kernel refuses the rest
        "        pass\n"
    )
    topo.python("pa", burst, topo.address("pb"), timeout=60)
    try:
        wait_until("pa's hard EXPIRE handled", lambda: "kernel SA expired" in a.tail(400), 30)
        deleted, detail = True, ""
    except AssertionError as exc:
        deleted, detail = False, f"{exc}\n{a.tail(30)}"
    check("expire-hard/child-deleted-on-kernel-expire", deleted, detail)

    def replaced(child: dict[str, Any]) -> bool:
        return not {int(child["spi_in"], 16), int(child["spi_out"], 16)} & old

    try:
        up((a, "pb"), (b, "pa"), check_view=replaced)  # no traffic: onStart re-initiation
        reestablished, detail = True, f"old {old} new {child_spis(a, 'pb')}"
    except AssertionError as exc:
        reestablished, detail = False, str(exc)
    check("expire-hard/re-established", reestablished, detail)
    problem = ping(topo, "pa", "pb")
    check("expire-hard/traffic-flows", problem is None, problem or "")


def nat_and_safety_net(topo: Topology, work: Path, a: Sidecar, b: Sidecar) -> None:
    """pa behind node a's masquerading NAT (pb's peer is the NAT's address), child SAs of
    CHILD_SA seconds; then pa is killed and its states expire in the kernel."""
    nat = topo.address("a")
    common = {
        "lifetimes": {"childSa": f"{CHILD_SA}s", "rekeyMargin": "10s"},
    }
    natt = {"natTraversal": {"keepalive": "1s"}}
    b_peer = peer_entry(
        topo,
        "pa",
        address=nat,
        start="onDemand",
        trafficSelectors={"local": [topo.address("pb")], "remote": [topo.address("pa")]},
        **common,
    )
    reload_pair(
        "nat",
        (a, [peer_entry(topo, "pb", **common)], document(topo, "pa", **natt)),
        (b, [b_peer], document(topo, "pb", **natt)),
        between=lambda: topo.masquerade("a", ports=f"{NAT_PORTS[0]}-{NAT_PORTS[-1]}"),
    )
    captured_two_way("nat", topo, work, "esp-in-udp", addresses=v4_addresses(topo))
    expect_kernel_entries("nat", topo, a, "pb", proto="esp", mode="tunnel", encap=True)

    def mapped_ports() -> tuple[bool, str]:
        remote = b.peer("pa")["ike_sa"]["remote_addr"]
        port = int(remote.rsplit(":", 1)[1])
        pb = topo.address("pb")
        spi_in, spi_out = child_spis(b, "pa")
        got = {(s.src, s.dst, s.spi, s.encap) for s in xfrm_states(topo.namespace("pb"))}
        want = {
            (nat, pb, spi_in, f"espinudp {port} 4500"),
            (pb, nat, spi_out, f"espinudp 4500 {port}"),
        }
        return port in NAT_PORTS and got == want, f"IKE from {remote}; want {want}; got {got}"

    with contextlib.suppress(AssertionError):  # a rekey may be under way: look again
        wait_until("pb's states carry the mapped port", lambda: mapped_ports()[0], 20)
    ok, detail = mapped_ports()
    check("nat/encap-has-mapped-port", ok, f"{detail}\n{describe(topo.namespace('pb'))}")

    out = subprocess.run(
        ["ip", "-s", "-n", topo.namespace("pa"), "xfrm", "state", "list"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    hard = re.findall(r"expire add: soft 0\(sec\), hard (\d+)\(sec\)", out)
    check(
        "safety-net/kernel-hard-time",
        len(hard) == 2 and set(hard) == {str(SAFETY_NET)},
        f"hard add-time limits {hard}",
    )
    policies = len(xfrm_policies(topo.namespace("pa")))
    a.kill()
    began = time.monotonic()
    try:
        wait_until(
            "pa's states expired in the kernel",
            lambda: not xfrm_states(topo.namespace("pa")),
            SAFETY_NET + 15,
        )
        gone, detail = True, f"gone {time.monotonic() - began:.1f}s after SIGKILL"
    except AssertionError as exc:
        gone, detail = False, f"{exc}\n{describe(topo.namespace('pa'))}"
    check("safety-net/crashed-states-expire", gone, detail)
    left = len(xfrm_policies(topo.namespace("pa")))
    check(
        "safety-net/policies-stay-fail-closed",
        policies == 2 and left == 2,
        f"policies before {policies}, after {left}",
    )


def scenario(topo: Topology, work: Path) -> None:
    a = Sidecar(topo, "pa", work)
    b = Sidecar(topo, "pb", work)
    try:
        for name, step in (
            ("ipv6", ipv6),
            ("reload-both", reload_both),
            ("expire-soft", expire_soft),
            ("expire-hard", expire_hard),
            ("nat-and-safety-net", nat_and_safety_net),
        ):
            with timed(name), checking(name):
                step(topo, work, a, b)
    finally:
        a.kill()
        stop_clean("lifecycle-pb", topo, b)


def run_dual_stack(
    prefix: str, steps: Callable[[Topology, Path], None], start_timeout: float = START_TIMEOUT
) -> None:
    """The body of a checks script on one dual-stack topology (nodes a and b, pods pa
    and pb, :func:`~vm.kernel_ipv6_checks.add_ipv6`): run ``steps`` there, then print
    the result. ``prefix`` names the namespaces (and the work directory);
    ``start_timeout`` is how long a sidecar may take to start."""
    started = time.monotonic()
    sidecars_module.START_TIMEOUT = start_timeout  # type: ignore[misc]
    warm_up()
    with (
        tempfile.TemporaryDirectory(prefix=f"kipsec-{prefix}-") as tmp,
        Topology(prefix=prefix, ipv6=True) as topo,
    ):
        topo.timeout = 30.0
        for node, pod in (("a", "pa"), ("b", "pb")):
            topo.add_node(node)
            topo.add_pod(pod, node)
        add_ipv6(topo)
        with checking("scenario"):
            steps(topo, Path(tmp))
    report(started)


if __name__ == "__main__":
    run_dual_stack("kvmlc", scenario)
