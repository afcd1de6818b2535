"""Kernel datapath vs userspace datapath vs plain veth, measured inside the test VM.

Run (root; boots Debian's kernel under QEMU with virtme-ng, see ``tests/support/vm.py``)::

    .venv/bin/python bench/kernel_datapath.py [--seconds 3] [--peers 1000]

This machine's kernel has no ESP, so the script re-runs itself inside the VM
(``run_python_in_vm``) and prints the table the VM run returns. Inside, on the e2e
topology (nodes a and b on a bridge, pod pa 10.10.1.2 behind a, pb 10.10.2.2 behind b),
in one run:

- TCP throughput pa → pb (``iperf3 -t SECONDS``, the receiver's rate) through plain
  veth, through two ``kipsec-sidecar run`` daemons on the **kernel** datapath and
  through two on the **userspace** datapath (AES-GCM-256 ESP in UDP 4500, PSK);
- time from configuration to the first packet carried: from starting both daemons (the
  process exec, configuration already written) to the first ping answered through the
  tunnel, for each datapath, split into "daemons up" (both control sockets answer:
  Python start-up, dominated by imports under emulation) and the rest (IKE_SA_INIT,
  IKE_AUTH, SA installation, first ping);
- XFRM states installed per second: ``XfrmSocket.new_sa`` for ``--peers`` states
  (AES-GCM, distinct SPIs and destinations, kipsec's owner mark) in a fresh namespace,
  then ``flush_owned`` (removed per second too).

Software emulation (no KVM here) makes absolute numbers meaningless; read the ratios.
Bounds: each iperf3 run ``SECONDS`` + 30 s, each daemon start 150 s, first packet 60 s,
the VM 600 s.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "sidecar"), str(REPO / "tests")]

import support.sidecars as sidecars_module  # noqa: E402
from support.netns import Topology, tcp_throughput  # noqa: E402
from support.sidecars import Sidecar, peer_entry  # noqa: E402

BEGIN = "=====KIPSEC-VM-RESULT-BEGIN====="
END = "=====KIPSEC-VM-RESULT-END====="
VM_TIMEOUT = 600.0


def first_packet(topo: Topology, started: float, timeout: float = 60.0) -> float:
    """Seconds from ``started`` to the first ping pa → pb answered (pings 0.1 s apart),
    trying for at most ``timeout`` s from now."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = topo.run(
            "pa", "ping", "-n", "-q", "-c", "1", "-W", "0.1", topo.address("pb"), check=False
        )
        if probe.returncode == 0:
            return time.monotonic() - started
    raise TimeoutError(f"no packet carried within {timeout}s")


def through_sidecars(
    topo: Topology, workdir: Path, datapath: str, seconds: float
) -> dict[str, float]:
    """Start a sidecar pair on ``datapath``; time to the first packet, then throughput."""
    cars = []
    for pod, peer in (("pa", "pb"), ("pb", "pa")):
        car = Sidecar(topo, pod, workdir / datapath)
        (workdir / datapath).mkdir(parents=True, exist_ok=True)
        car.write([peer_entry(topo, peer)], datapath=datapath)
        cars.append(car)
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(len(cars)) as pool:  # both daemons start side by side
            for future in [pool.submit(car.start) for car in cars]:
                future.result()
        ready = time.monotonic() - started
        first = first_packet(topo, started)
        for car in cars:
            if car.sas()["datapath"] != datapath:
                raise RuntimeError(f"{car.pod} runs {car.sas()['datapath']}, not {datapath}")
        mbits = tcp_throughput(topo, "pa", "pb", seconds)
    finally:
        for car in cars:
            car.stop()
    return {
        "mbits": mbits,
        "first_packet_s": first,
        "daemons_ready_s": ready,
        "ike_s": first - ready,
    }


def sa_rate(peers: int) -> dict[str, float]:
    """XFRM states installed (then flushed) per second through XfrmSocket."""
    from kipsec_sidecar.datapath.xfrm import XfrmSocket
    from kipsec_sidecar.datapath.xfrm_sa import (
        DEFAULT_OWNER_MASK,
        REQID_RANGE,
        XfrmAlgorithm,
        XfrmMode,
        XfrmProto,
        XfrmSelector,
        XfrmStateSpec,
        owner_mark,
    )

    ns = f"kbench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=10)
    try:
        src = ipaddress.IPv4Address("10.20.0.1")
        base = int(ipaddress.IPv4Address("10.21.0.0"))
        specs = [
            XfrmStateSpec(
                src=src,
                dst=ipaddress.IPv4Address(base + i + 1),
                spi=0x10000 + i,
                proto=XfrmProto.ESP,
                mode=XfrmMode.TUNNEL,
                reqid=REQID_RANGE[i % (len(REQID_RANGE) - 1)],
                mark=owner_mark(DEFAULT_OWNER_MASK),
                selector=XfrmSelector.any(4),
                aead=XfrmAlgorithm("rfc4106(gcm(aes))", secrets.token_bytes(36), 128),
                replay_window=128,
            )
            for i in range(peers)
        ]
        with XfrmSocket(netns=ns) as sock:
            began = time.monotonic()
            for spec in specs:
                sock.new_sa(spec)
            installed = time.monotonic() - began
            began = time.monotonic()
            states, _ = sock.flush_owned(DEFAULT_OWNER_MASK, REQID_RANGE)
            flushed = time.monotonic() - began
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=10)
    return {
        "peers": peers,
        "install_per_s": peers / installed,
        "flush_per_s": states / flushed if flushed else 0.0,
        "flushed": states,
    }


def inside(seconds: float, peers: int) -> dict[str, Any]:
    modules = ["esp4", "xfrm_user", "gcm", "seqiv", "echainiv", "tun"]
    subprocess.run(["modprobe", "-a", *modules], check=False, timeout=60)
    if not os.path.exists("/dev/net/tun"):  # the VM's /dev has no TUN node
        os.makedirs("/dev/net", exist_ok=True)
        subprocess.run(["mknod", "/dev/net/tun", "c", "10", "200"], check=False, timeout=10)
    sidecars_module.START_TIMEOUT = 150.0  # type: ignore[misc]  # slow starts under emulation
    result: dict[str, Any] = {"release": os.uname().release, "seconds": seconds}
    result["sa_rate"] = sa_rate(peers)
    with tempfile.TemporaryDirectory(prefix="kipsec-bench-") as tmp, Topology(prefix="kbn") as topo:
        topo.timeout = 30.0
        for node, pod in (("a", "pa"), ("b", "pb")):
            topo.add_node(node)
            topo.add_pod(pod, node)
        result["plain"] = {"mbits": tcp_throughput(topo, "pa", "pb", seconds)}
        for datapath in ("kernel", "userspace"):
            try:
                result[datapath] = through_sidecars(topo, Path(tmp), datapath, seconds)
            except Exception as exc:  # report the others
                first_line = (str(exc).strip().splitlines() or [""])[0]
                result[datapath] = {"error": f"{type(exc).__name__}: {first_line}"}
    return result


def ratio(top: float | None, bottom: float | None) -> str:
    return "n/a" if not top or not bottom else f"{top / bottom:.2f}"


def report(result: dict[str, Any], vm_seconds: float) -> None:
    plain = result["plain"]["mbits"]
    kernel, user = result["kernel"], result["userspace"]
    print(f"\nInside the VM (kernel {result['release']}, QEMU without KVM), run {vm_seconds:.0f} s")
    print(f"pa -> pb, iperf3 TCP {result['seconds']:g} s; read the ratios, not the Mbit/s\n")
    print("| path | TCP Mbit/s | / plain | first packet s | daemons up s | then to 1st packet s |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| plain veth | {plain:.0f} | 1.00 | | | |")
    for name, row in (("kipsec kernel datapath", kernel), ("kipsec userspace datapath", user)):
        if "error" in row:
            print(f"| {name} | {row['error']} | | | | |")
            continue
        print(
            f"| {name} | {row['mbits']:.0f} | {ratio(row['mbits'], plain)} "
            f"| {row['first_packet_s']:.2f} | {row['daemons_ready_s']:.2f} | {row['ike_s']:.2f} |"
        )
    print(f"\nkernel / userspace throughput: {ratio(kernel.get('mbits'), user.get('mbits'))}")
    sa = result["sa_rate"]
    print(
        f"XFRM states: {sa['peers']} installed at {sa['install_per_s']:.0f}/s, "
        f"{sa['flushed']} flushed at {sa['flush_per_s']:.0f}/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="iperf3 time per path (max 30)")
    parser.add_argument("--peers", type=int, default=1000, help="XFRM states to install (max 5000)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    seconds = min(max(args.seconds, 1.0), 30.0)
    peers = min(max(args.peers, 1), 5000)
    if args.inside:
        result = inside(seconds, peers)
        print(BEGIN)
        print(json.dumps(result))
        print(END, flush=True)
        return 0
    from support.vm import run_python_in_vm

    result, run = run_python_in_vm(
        Path(__file__).resolve(),
        "--inside",
        "--seconds",
        f"{seconds:g}",
        "--peers",
        str(peers),
        timeout=VM_TIMEOUT,
    )
    report(result, run.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
