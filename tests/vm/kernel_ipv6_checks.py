"""KernelDatapath with IPv6 outer addresses, checked inside the test VM.

Not a pytest module: ``tests/vm/test_kernel_ipv6.py`` boots the VM and runs this script,
which prints ``{"checks": {...}}`` between the result markers (like the other
``*_checks.py`` scripts). Two nodes with IPv6 on their segment and a dual-stack pod
behind each (:func:`add_ipv6`); one ``KernelDatapath`` per node with manual AES-GCM SAs
(installed through ``XfrmSocket``), for three links in turn:

- ``v6-tunnel``: ESP tunnel between the nodes' IPv6 addresses protecting the pods' IPv6
  CIDRs (a gateway: ``fwd`` policies), ping6 from pod to pod;
- ``v6-transport``: ESP transport between the nodes themselves, ping6 node to node;
- ``4in6``: ESP tunnel with IPv6 outer addresses protecting the pods' IPv4 CIDRs.

Each: the ping is answered, the wire carries ESP over IPv6 and never the ping's
pattern, ``ip -6 xfrm state`` shows exactly the two states and ``ip xfrm policy`` the
expected policies, and ``close`` leaves nothing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(REPO / "sidecar"), str(REPO / "lab"), str(REPO / "tests")]

from kipsec_sidecar.core.ike.constants import EncrId, ProtocolId  # noqa: E402
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode  # noqa: E402
from kipsec_sidecar.core.traffic_selectors import TrafficSelector  # noqa: E402
from kipsec_sidecar.datapath.base import PeerPolicy  # noqa: E402
from kipsec_sidecar.datapath.kernel import KernelDatapath  # noqa: E402
from support.capture import Capture  # noqa: E402
from support.netns import WIRE, WIRE_BRIDGE, Topology  # noqa: E402

BEGIN = "=====KIPSEC-VM-RESULT-BEGIN====="
END = "=====KIPSEC-VM-RESULT-END====="
PATTERN = "4b495053454336"  # "KIPSEC6": ping -p, looked for on the wire

#: IPv6 addresses of the nodes (segment) and pods, and the pods' gateways and CIDRs.
V6 = {"a": "fd00:2::11", "b": "fd00:2::12", "pa": "fd00:10:1::2", "pb": "fd00:10:2::2"}
V6_GATEWAY = {"a": "fd00:10:1::1", "b": "fd00:10:2::1"}
V6_PODS = {"a": "fd00:10:1::/64", "b": "fd00:10:2::/64"}

checks: dict[str, dict[str, Any]] = {}


def check(name: str, ok: bool, detail: str = "") -> None:
    checks[name] = {"ok": bool(ok), "detail": detail[-4000:]}


def add_ipv6(topo: Topology) -> None:
    """Give nodes a/b and pods pa/pb (a ``Topology(ipv6=True)``) the :data:`V6` addresses
    and routes mirroring the IPv4 ones: a pod's /128 behind its node, the other node's
    pod CIDR via that node. No DAD, so the addresses are usable at once."""
    for node, other in (("a", "b"), ("b", "a")):
        topo.sysctl(node, {"net.ipv6.conf.all.forwarding": "1"})
        topo.ip(
            node,
            f"addr add {V6[node]}/64 dev eth0 nodad",
            f"route add {V6_PODS[other]} via {V6[other]}",
        )
    for pod, node in (("pa", "a"), ("pb", "b")):
        link = topo.pod(pod).node_link
        gateway = V6_GATEWAY[node]
        topo.ip(
            pod,
            f"addr add {V6[pod]}/128 dev eth0 nodad",
            f"route add {gateway}/128 dev eth0",
            f"route add default via {gateway} dev eth0",
        )
        topo.ip(
            node, f"addr add {gateway}/128 dev {link} nodad", f"route add {V6[pod]}/128 dev {link}"
        )


def gcm(spi: int, src: str, dst: str, mode: Mode) -> IpsecSa:
    return IpsecSa(
        spi=spi,
        src=ipaddress.ip_address(src),
        dst=ipaddress.ip_address(dst),
        protocol=ProtocolId.ESP,
        mode=mode,
        encr_id=EncrId.AES_GCM_16,
        encr_key=os.urandom(36),
    )


def ip_xfrm(ns: str, *what: str) -> list[str]:
    """``ip <what> list`` in ``ns`` as entries (each starts with a "src" line)."""
    out = subprocess.run(
        ["ip", "-n", ns, *what, "list"], capture_output=True, text=True, timeout=10
    ).stdout
    blocks: list[str] = []
    for line in out.splitlines():
        if line.startswith("src "):
            blocks.append(line)
        elif blocks:
            blocks[-1] += "\n" + line
    return [b for b in blocks if "socket" not in b]


@dataclass(frozen=True)
class Link:
    """One scenario: who pings whom, what each node's policy protects, in which mode."""

    name: str
    mode: Mode
    ts_a: str
    ts_b: str
    ping_from: str
    ping_to: str
    forward: bool


LINKS = (
    Link("v6-tunnel", Mode.TUNNEL, V6_PODS["a"], V6_PODS["b"], "pa", V6["pb"], True),
    Link("v6-transport", Mode.TRANSPORT, f"{V6['a']}/128", f"{V6['b']}/128", "a", V6["b"], False),
    Link("4in6", Mode.TUNNEL, "10.10.1.0/24", "10.10.2.0/24", "pa", "10.10.2.2", True),
)


async def scenario(topo: Topology, link: Link, spi: int, work: Path) -> None:
    a, b = topo.node("a"), topo.node("b")
    dps = {
        name: KernelDatapath(
            local_addr=ipaddress.ip_address(V6[name]),
            netns=node.namespace,
            forward=link.forward,
        )
        for name, node in (("a", a), ("b", b))
    }
    ts_a = (TrafficSelector.from_network(link.ts_a),)
    ts_b = (TrafficSelector.from_network(link.ts_b),)
    mode: Literal["tunnel", "transport"] = "tunnel" if link.mode == Mode.TUNNEL else "transport"
    for dp in dps.values():
        await dp.start()
    try:
        dps["a"].add_peer(
            PeerPolicy("b", ipaddress.ip_address(V6["b"]), ts_a, ts_b, mode, ProtocolId.ESP, "raw")
        )
        dps["b"].add_peer(
            PeerPolicy("a", ipaddress.ip_address(V6["a"]), ts_b, ts_a, mode, ProtocolId.ESP, "raw")
        )
        ab, ba = gcm(spi, V6["a"], V6["b"], link.mode), gcm(spi + 1, V6["b"], V6["a"], link.mode)
        dps["b"].install_inbound("a", ab)
        dps["a"].install_inbound("b", ba)
        dps["a"].set_outbound("b", ab)
        dps["b"].set_outbound("a", ba)
        with Capture(topo, WIRE, WIRE_BRIDGE, work / f"{link.name}.pcap", start_timeout=30) as cap:
            ping = topo.run(
                link.ping_from,
                *("ping", "-n", "-q", "-c", "5", "-i", "0.2", "-w", "15", "-p", PATTERN),
                link.ping_to,
                check=False,
                timeout=25,
            )
        summary = cap.summary
        check(f"{link.name}/ping", ping.returncode == 0, ping.stdout[-300:] + ping.stderr[-300:])
        esp = [p for p in summary.packets if p.protocol == 50 and p.src in (V6["a"], V6["b"])]
        check(
            f"{link.name}/wire-is-esp-over-ipv6",
            len(esp) >= 10 and not summary.contains(bytes.fromhex(PATTERN)),
            summary.describe(),
        )
        for name, node in (("a", a), ("b", b)):
            states = ip_xfrm(node.namespace, "-6", "xfrm", "state")
            want = {
                (V6["a"], V6["b"], f"{spi:#010x}"),
                (V6["b"], V6["a"], f"{spi + 1:#010x}"),
            }
            got = {(s.split()[1], s.split()[3], s.split("spi ")[1].split()[0]) for s in states}
            check(
                f"{link.name}/ip-xfrm-state-{name}",
                len(states) == 2 and got == want and all(f"mode {mode}" in s for s in states),
                f"want {want}\n" + "\n".join(states),
            )
            policies = ip_xfrm(node.namespace, "xfrm", "policy")
            mine, theirs = (link.ts_a, link.ts_b) if name == "a" else (link.ts_b, link.ts_a)
            local, remote = (V6["a"], V6["b"]) if name == "a" else (V6["b"], V6["a"])
            want_p = {
                (mine, theirs, "out", local, remote),
                (theirs, mine, "in", remote, local),
            }
            if link.forward:
                want_p.add((theirs, mine, "fwd", remote, local))
            got_p = {_policy_key(p) for p in policies}
            check(
                f"{link.name}/ip-xfrm-policy-{name}",
                len(policies) == len(want_p) and got_p == want_p,
                f"want {want_p}\n" + "\n".join(policies),
            )
    finally:
        for dp in dps.values():
            await dp.close()
    left = [
        e
        for node in (a, b)
        for what in ("state", "policy")
        for e in ip_xfrm(node.namespace, "xfrm", what)
    ]
    check(f"{link.name}/close-leaves-nothing", not left, "\n".join(left))


def _policy_key(block: str) -> tuple[str, ...]:
    """(selector src, dst, dir, template src, dst) of one ``ip xfrm policy`` entry."""
    words = block.split()
    tmpl = block.split("tmpl src ")[1].split() if "tmpl src " in block else ["", "", ""]
    return (words[1], words[3], words[words.index("dir") + 1], tmpl[0], tmpl[2])


def main() -> None:
    started = time.monotonic()
    subprocess.run(["modprobe", "-a", "esp4", "esp6", "xfrm_user", "gcm"], check=False, timeout=60)
    with (
        tempfile.TemporaryDirectory(prefix="kipsec-vm6-") as tmp,
        Topology(prefix="kvm6", ipv6=True) as topo,
    ):
        topo.timeout = 30.0
        for node, pod in (("a", "pa"), ("b", "pb")):
            topo.add_node(node)
            topo.add_pod(pod, node)
        add_ipv6(topo)
        plain = topo.run("pa", "ping", "-n", "-q", "-c", "1", "-w", "10", V6["pb"], check=False)
        check("topology/ipv6-reachable", plain.returncode == 0, plain.stdout[-300:])
        for index, link in enumerate(LINKS):
            try:
                asyncio.run(scenario(topo, link, 0x60000001 + 16 * index, Path(tmp)))
            except Exception:
                check(f"{link.name}/ran", False, traceback.format_exc())
    result = {"checks": checks, "seconds": time.monotonic() - started, "kernel": os.uname().release}
    print(BEGIN)
    print(json.dumps(result))
    print(END, flush=True)


if __name__ == "__main__":
    main()
