"""Service ClusterIP translation with the kernel datapath, checked inside the test VM.

Not a pytest module: ``tests/vm/test_kernel_services.py`` boots the VM once and runs this
script, which prints ``{"checks": {...}}`` between the result markers. Nodes a and b,
pod pa behind a, pod pb behind b, both sidecars on ``datapath: kernel``; pa's document
maps the ClusterIP 10.96.0.10:80 (which exists nowhere) to pb:7070. The nftables DNAT
in pa's namespace runs before the kernel's route and XFRM policy lookup is redone, so
the translated connection must leave pa as ESP under pb's SA, and the reply must come
back to the client from the ClusterIP (connection tracking). Its segments are
full-sized, so this also needs pb's kernel datapath to clamp the MSS it advertises
through the SA (docs/kernel-datapath.md). The helpers (module warm-up, checks, waiting
for SAs) are ``kernel_sidecar_checks``'s.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(HERE), str(REPO / "sidecar"), str(REPO / "lab"), str(REPO / "tests")]

import kernel_sidecar_checks as base  # type: ignore[import-not-found]  # noqa: E402

import support.sidecars as sidecars_module  # noqa: E402
from support.capture import Capture  # noqa: E402
from support.netns import WIRE, WIRE_BRIDGE, Topology  # noqa: E402
from support.sidecars import MARKER, Sidecar, peer_entry, tcp_roundtrip  # noqa: E402

CLUSTER_IP = "10.96.0.10"
SERVICE_PORT = 80
TARGET_PORT = 7070


def scenario(topo: Topology, tmp: Path) -> None:
    a, b = Sidecar(topo, "pa", tmp), Sidecar(topo, "pb", tmp)
    service = {
        "name": "shop/api",
        "clusterIPs": [CLUSTER_IP],
        "ports": [
            {
                "port": SERVICE_PORT,
                "endpoints": [{"address": topo.address("pb"), "targetPort": TARGET_PORT}],
            }
        ],
    }
    a.write([peer_entry(topo, "pb")], datapath="kernel", services=[service])
    b.write([peer_entry(topo, "pa")], datapath="kernel")
    a.start()
    b.start()
    try:
        base.up((a, "pb"), (b, "pa"))
        base.check(
            "kernel/datapath-is-kernel",
            a.sas()["datapath"] == "kernel" and b.sas()["datapath"] == "kernel",
            a.sas()["datapath_reason"],
        )
        with Capture(topo, WIRE, WIRE_BRIDGE, tmp / "wire.pcap") as capture:
            started = time.monotonic()
            try:
                tcp_roundtrip(
                    topo,
                    "pa",
                    "pb",
                    TARGET_PORT,
                    connect_to=(CLUSTER_IP, SERVICE_PORT),
                    timeout=90.0,
                )
                base.check("kernel/cluster-ip-roundtrip", True, time.monotonic() - started)
            except Exception as exc:
                where = base.diagnose((a, "pb"))
                base.check("kernel/cluster-ip-roundtrip", False, f"{exc}\n{where}")
        summary = capture.summary
        base.check(
            "kernel/wire-is-esp-in-udp",
            summary.kinds["esp-in-udp"] > 0
            and not summary.contains(MARKER)
            and not summary.unexpected(),
            summary.describe(),
        )
    finally:  # SIGTERM cleanup is kernel_sidecar_checks' subject; here just stop
        a.stop()
        b.stop()


def main() -> None:
    started = time.monotonic()
    sidecars_module.START_TIMEOUT = base.START_TIMEOUT  # type: ignore[misc]
    base.warm_up()
    with (
        tempfile.TemporaryDirectory(prefix="kipsec-vm-") as tmp,
        Topology(prefix="kvmsv") as topo,
    ):
        topo.timeout = 30.0
        topo.add_node("a")
        topo.add_node("b")
        topo.add_pod("pa", "a")
        topo.add_pod("pb", "b")
        with base.checking("scenario"):
            scenario(topo, Path(tmp))
    result = {
        "checks": base.checks,
        "seconds": time.monotonic() - started,
        "kernel": os.uname().release,
    }
    print(base.BEGIN)
    print(json.dumps(result))
    print(base.END, flush=True)


if __name__ == "__main__":
    main()
