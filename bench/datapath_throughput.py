"""TCP throughput through two userspace datapaths, against plain veth, with an ablation.

Run (root; two pods on two nodes in network namespaces, removed afterwards)::

    .venv/bin/python bench/datapath_throughput.py [--seconds 4] [--variants all]

Each variant starts one datapath per pod (AES-GCM-256 tunnel mode, ESP in UDP 4500,
manual SAs — no IKE) as a child process that owns the marked 4500 socket the way the
daemon does, then runs ``iperf3 -c`` from pod a to pod b for ``--seconds``. Plain veth
(no datapath) is measured in the same run; the table prints Mbit/s and kipsec/plain.

Variants (what each row turns on; see :mod:`kipsec_sidecar.datapath.offload`):

- ``baseline``: no TUN offload, one ``sendto`` per ESP packet, one ``recvfrom`` per
  datagram, one TUN write per packet (the datapath before batching);
- ``tun-offload``: TUN ``IFF_VNET_HDR`` + TSO/checksum offload (super-segment reads split
  in Python; decrypted segments merged into super-segment writes);
- ``+gso``: plus UDP GSO sends (one ``sendmsg`` per run of ESP datagrams);
- ``+gro``: plus UDP GRO reads on the 4500 socket (the full fast path, one process);
- ``gso+gro-no-tso``: UDP GSO and GRO without the TUN offload: the kernel cuts TCP
  into segments (in C) and the datapath reads and writes them one by one, instead of
  cutting and merging in Python;
- ``gro-only-offload``: the full fast path with the TUN offered without TSO
  (``UserspaceOptions.tso=False``): reads are segments the kernel cut and checksummed,
  writes are still merged into super-segments (:func:`.offload.coalesce`);
- ``workers2``: the same with its outbound half in a worker process
  (:mod:`kipsec_sidecar.datapath.split`, ``datapath: {workers: 2}``): two processes
  per pod, so the CPU columns add the worker's.

``--rounds N`` repeats the variants N times, interleaved (variant order rotates each
round), and ends with the median and the range of each variant: on a shared machine
compare medians of one run, never runs of different times.

Everything is bounded: each child start waits at most 10 s, each iperf3 at most
``--seconds`` + 15 s; the topology is torn down on any exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "sidecar"))
# Appended, not prepended: tests/ holds packages (e.g. ``operator``) that must not
# shadow the standard library.
sys.path.append(str(REPO / "tests"))

from kipsec_sidecar.core.ike.constants import EncrId  # noqa: E402
from kipsec_sidecar.datapath.sockets import GsoSender, enable_gro, receive_batch  # noqa: E402
from kipsec_sidecar.datapath.split import SplitDatapath  # noqa: E402
from kipsec_sidecar.datapath.userspace import UserspaceDatapath, UserspaceOptions  # noqa: E402
from support.netns import Topology, tcp_throughput  # noqa: E402
from support.procstat import cpu_seconds  # noqa: E402
from support.userspace_harness import _Child, esp_tunnel_peer  # noqa: E402

VARIANTS: dict[str, dict[str, bool]] = {
    "baseline": {"offload": False, "gso": False, "gro": False},
    "tun-offload": {"offload": True, "gso": False, "gro": False},
    "+gso": {"offload": True, "gso": True, "gro": False},
    "+gro": {"offload": True, "gso": True, "gro": True},
    "gso+gro-no-tso": {"offload": False, "gso": True, "gro": True},
    "gro-only-offload": {"offload": True, "tso": False, "gso": True, "gro": True},
    "workers2": {"offload": True, "gso": True, "gro": True, "workers": True},
}
SPI_A_TO_B = 0xA001
SPI_B_TO_A = 0xB002


class _BenchChild(_Child):
    """The harness child with the batching switches of one variant."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        switches = spec["switches"]
        self.gro = switches["gro"] and enable_gro(self.sock)
        options = UserspaceOptions(
            device=self.datapath.options.device,
            ids=self.datapath.options.ids,
            path_mtu=self.datapath.options.path_mtu,
            suites=self.datapath.options.suites,
            offload=switches["offload"],
            tso=switches.get("tso", True),
        )
        self.datapath: UserspaceDatapath
        if switches.get("workers"):
            self.datapath = SplitDatapath(
                udp_sender=self._send,
                udp_socket=self.sock,
                on_acquire=self.acquires.append,
                options=options,
                gso=switches["gso"],
            )
        else:
            self.datapath = UserspaceDatapath(
                udp_sender=self._send,
                on_acquire=self.acquires.append,
                options=options,
                udp_batch_sender=GsoSender(self.sock) if switches["gso"] else None,
            )

    def _on_udp(self) -> None:
        if not self.gro:
            super()._on_udp()
            return
        receive = self.datapath.receive_encapsulated
        for data, source in receive_batch(self.sock, 64):
            if len(data) > 4 and data[:4] != b"\0\0\0\0":
                receive(data, source)
        self.datapath.flush_received()


def _spec(me: str, peer: str, keys: dict[str, str], switches: dict[str, bool]) -> dict[str, Any]:
    def sa(spi: int, src: str, dst: str) -> dict[str, Any]:
        return {
            "spi": spi,
            "src": src,
            "dst": dst,
            "encr_id": int(EncrId.AES_GCM_16),
            "encr_key": keys[f"{src}>{dst}"],
        }

    out_spi, in_spi = (SPI_A_TO_B, SPI_B_TO_A) if me < peer else (SPI_B_TO_A, SPI_A_TO_B)
    return {
        "local_addr": me,
        "peer": esp_tunnel_peer(me, peer),
        "out": sa(out_spi, me, peer),
        "in": sa(in_spi, peer, me),
        "switches": switches,
    }


def _start_child(topology: Any, pod: str, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "sidecar")
    proc: subprocess.Popen[bytes] = topology.popen(
        pod,
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10.0)
    line = proc.stdout.readline() if ready else b""
    if b"ready" not in line:
        proc.kill()
        error = proc.stderr.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"datapath in {pod} did not start: {line!r} {error}")
    return proc


def _packets(proc: subprocess.Popen[bytes], key: str) -> int:
    """The child datapath's ``stats[key]`` summed over peers (bounded wait)."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b'{"op": "stats"}\n')
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], 10.0)
    if not ready:
        raise RuntimeError("the datapath did not answer a stats request")
    stats = json.loads(proc.stdout.readline())["stats"]
    return int(sum(stats[key].values()))


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(b'{"op": "close"}\n')
        proc.stdin.flush()
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait(timeout=5)


def _tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (the outbound worker of ``workers2``)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        total += sum(_tree_cpu(int(child)) for child in children)
    return total


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--variants", default="all", help="comma list or 'all'")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        profile = os.environ.get("KIPSEC_BENCH_PROFILE")  # a prefix: cProfile per pod
        if profile:
            import cProfile

            cProfile.runctx(
                "asyncio.run(_BenchChild(spec).run())",
                globals(),
                {"spec": spec},
                f"{profile}.{spec['local_addr']}",
            )
        else:
            asyncio.run(_BenchChild(spec).run())
        return

    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    with Topology() as topology:
        topology.add_node("a")
        topology.add_node("b")
        topology.add_pod("pa", "a")
        topology.add_pod("pb", "b")
        a, b = topology.address("pa"), topology.address("pb")
        plain = tcp_throughput(topology, "pa", "pb", args.seconds)
        print(
            f"{'path':<14}{'Mbit/s':>10}{'vs plain':>10}{'cpu a':>8}{'cpu b':>8}"
            f"{'machine':>9}{'us/pkt a':>9}{'us/pkt b':>9}"
        )
        print(f"{'plain veth':<14}{plain:>10.0f}{1.0:>10.3f}")
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                rate, us_a, us_b = _measure(topology, name, a, b, args.seconds, plain)
                results[name].append((rate, us_a, us_b))
        if args.rounds > 1:
            print(f"\nmedians of {args.rounds} interleaved rounds (range)")
            print(f"{'path':<14}{'Mbit/s':>22}{'us/pkt a':>20}{'us/pkt b':>20}")
            for name, rows in results.items():
                cells = []
                for column in zip(*rows, strict=True):
                    low, high = min(column), max(column)
                    cells.append(f"{statistics.median(column):.1f} ({low:.1f}-{high:.1f})")
                print(f"{name:<14}{cells[0]:>22}{cells[1]:>20}{cells[2]:>20}")


def _measure(
    topology: Any, name: str, a: str, b: str, seconds: float, plain: float
) -> tuple[float, float, float]:
    """One variant's run: print its row; (Mbit/s, us/pkt a, us/pkt b)."""
    switches = VARIANTS[name]
    keys = {f"{a}>{b}": os.urandom(36).hex(), f"{b}>{a}": os.urandom(36).hex()}
    pa = _start_child(topology, "pa", _spec(a, b, keys, switches))
    pb = _start_child(topology, "pb", _spec(b, a, keys, switches))
    try:
        cpu0 = _tree_cpu(pa.pid), _tree_cpu(pb.pid)
        busy0 = _machine_busy()
        start = time.monotonic()
        rate = tcp_throughput(topology, "pa", "pb", seconds)
        wall = time.monotonic() - start
        busy1 = _machine_busy()
        cpu_a = (_tree_cpu(pa.pid) - cpu0[0]) / wall
        cpu_b = (_tree_cpu(pb.pid) - cpu0[1]) / wall
        machine = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
        time.sleep(0.2)  # the worker's last counter report
        sent = max(1, _packets(pa, "packets_out"))
        received = max(1, _packets(pb, "packets_in"))
    finally:
        _stop_child(pa)
        _stop_child(pb)
    us_a = cpu_a * wall / sent * 1e6
    us_b = cpu_b * wall / received * 1e6
    print(
        f"{name:<14}{rate:>10.0f}{rate / plain:>10.3f}"
        f"{cpu_a:>8.0%}{cpu_b:>8.0%}{machine:>9.0%}"
        f"{us_a:>9.1f}{us_b:>9.1f}",
        flush=True,
    )
    return rate, us_a, us_b


if __name__ == "__main__":
    main()
