"""What a lone packet's work costs right after the process slept, against back to back.

Run (no root, loopback only)::

    .venv/bin/python bench/wakeup_cost.py [--samples 200] [--gaps 0,1,10]

A ping 10 ms apart wakes each datapath for one packet after ~10 ms asleep; meanwhile
other work runs on the core and the caches and TLB hold its code and data, not ours. This
measures the thread CPU time (``time.thread_time_ns``: time on a CPU, not waiting for
one) of one unit of work done after sleeping ``gap`` ms, for units that make up a hop of
the userspace datapath, as the median of ``--samples``:

- ``empty call``: calling a Python function that does nothing (the floor);
- ``AES-GCM encrypt``: one ``AESGCM.encrypt`` of an 84-byte packet (``cryptography``);
- ``esp seal + open``: ``core.esp.seal`` then ``core.esp.open_`` of that packet (the
  ESP work of one hop out and one hop in, replay window and lifetime counting included);
- ``hop``: a datagram read from a UDP socket, opened, sealed again and sent (what one
  side of a ping's round trip does, without the event loop and the TUN device).

Gap 0 is back to back (warm). The difference between a row's gaps is what waking up
costs that packet, which a C implementation with a smaller working set pays much less
of (bench/README.md, "Latency, issue 14 second part").
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "sidecar"))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from kipsec_sidecar.core import esp  # noqa: E402
from kipsec_sidecar.core.ike.constants import EncrId, ProtocolId  # noqa: E402
from kipsec_sidecar.core.ip import IpProto  # noqa: E402
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode  # noqa: E402

PACKET = bytes(84)  # an IPv4 ICMP echo of ping's default size


def _sa(key: bytes) -> IpsecSa:
    return IpsecSa(
        spi=0x1001,
        src="127.0.0.1",
        dst="127.0.0.1",
        protocol=ProtocolId.ESP,
        mode=Mode.TUNNEL,
        encr_id=EncrId.AES_GCM_16,
        encr_key=key,
    )


def units() -> dict[str, Callable[[], None]]:
    """The units of work, each ready to be called once per sample."""
    aead = AESGCM(os.urandom(32))
    nonce, aad = os.urandom(12), os.urandom(8)
    key = os.urandom(36)
    tx, rx = _sa(key), _sa(key)  # the same keys: what one side seals the other opens
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    address = receiver.getsockname()

    def nothing() -> None:
        pass

    def encrypt() -> None:
        aead.encrypt(nonce, PACKET, aad)

    def seal_open() -> None:
        esp.open_(rx, esp.seal(tx, IpProto.IPIP, PACKET, os.urandom))

    def hop() -> None:
        data = receiver.recv(65535)
        _, inner = esp.open_(rx, data)
        sender.sendto(esp.seal(tx, IpProto.IPIP, inner, os.urandom), address)

    sender.sendto(esp.seal(tx, IpProto.IPIP, PACKET, os.urandom), address)
    return {
        "empty call": nothing,
        "AES-GCM encrypt": encrypt,
        "esp seal + open": seal_open,
        "hop": hop,
    }


def sample(unit: Callable[[], None], gap: float, count: int) -> float:
    """Median thread CPU µs of ``unit`` run ``count`` times, each after sleeping ``gap`` s."""
    times = []
    for _ in range(count):
        if gap:
            select.select([], [], [], gap)
        start = time.thread_time_ns()
        unit()
        times.append(time.thread_time_ns() - start)
    return statistics.median(times) / 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="samples per cell (max 2000)")
    parser.add_argument("--gaps", default="0,1,10", help="sleeps before each sample, ms")
    args = parser.parse_args()
    count = min(max(args.samples, 10), 2000)
    gaps = [min(max(float(g), 0.0), 100.0) / 1e3 for g in args.gaps.split(",")]
    work = units()
    columns = [f"after {g * 1e3:g} ms" if g else "back to back" for g in gaps]
    print(f"thread CPU µs per unit, median of {count}; load {os.getloadavg()[0]:.1f}")
    print(f"{'unit':<18}" + "".join(f"{c:>16}" for c in columns))
    for name, unit in work.items():
        unit()  # imports, first-call caches
        cells = [sample(unit, gap, count) for gap in gaps]
        print(f"{name:<18}" + "".join(f"{c:16.1f}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
