"""Where a userspace-datapath packet's time goes: cryptography, Python, system calls.

Run (no root; in-process, loopback only)::

    .venv/bin/python bench/datapath_cost.py [--packets 4600] [--repeats 7]

Times, per 1,400-byte TCP segment of a 64 KiB super-segment (what a TUN read with
offload hands the datapath), each step of the sender's and the receiver's path on its
own: the bare AES-GCM-256 call of ``cryptography``, kipsec's ``esp.seal`` and
``esp.open_`` around it, the TSO split and the GRO merge (:mod:`.offload`, the TCP
checksum work included), and the send system calls (one ``sendto`` per datagram
against one GSO ``sendmsg`` per 46). Prints the best and the median of ``--repeats``
(the best is the cost; the median shows the machine's load).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "sidecar"))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kipsec_sidecar.core import esp
from kipsec_sidecar.core.ike.constants import EncrId, ProtocolId
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode
from kipsec_sidecar.datapath import offload
from kipsec_sidecar.datapath.sockets import GsoSender

MSS = 1400
SEGMENTS = 46  # one 64 KiB super-segment


def _sa(key: bytes) -> IpsecSa:
    return IpsecSa(
        spi=0x1001,
        src="10.0.0.1",
        dst="10.0.0.2",
        protocol=ProtocolId.ESP,
        mode=Mode.TUNNEL,
        encr_id=EncrId.AES_GCM_16,
        encr_key=key,
    )


def _super_segment() -> bytes:
    """A TUN read: virtio_net_hdr (GSO_TCPV4, partial checksum) + a 64 KiB TCP packet."""
    ip = bytearray(20)
    ip[0], ip[8], ip[9] = 0x45, 64, 6
    ip[12:20] = bytes([10, 10, 1, 2, 10, 10, 2, 2])
    tcp = bytearray(20)
    tcp[12], tcp[13] = 0x50, 0x18
    packet = bytearray(ip + tcp + os.urandom(MSS * SEGMENTS))
    packet[2:4] = (len(packet) & 0xFFFF).to_bytes(2, "big")
    hdr = offload.VnetHdr(offload.F_NEEDS_CSUM, offload.GSO_TCPV4, 40, MSS, 20, 16)
    return hdr.pack() + bytes(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packets", type=int, default=SEGMENTS * 100)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    key = os.urandom(36)
    sa = _sa(key)
    aead = AESGCM(key[:32])
    nonce = os.urandom(12)
    read = _super_segment()
    segments = offload.split(read)
    segment = segments[0]
    sealed = [esp.seal(sa, 4, segment, os.urandom) for _ in range(args.packets)]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    dest = rx.getsockname()
    gso = GsoSender(tx)

    def drain() -> None:
        try:
            while True:
                rx.recv(65535)
        except BlockingIOError:
            pass

    def aead_only(n: int) -> None:
        for _ in range(n):
            aead.encrypt(nonce, segment, b"12345678")

    def seal(n: int) -> None:
        for _ in range(n):
            esp.seal(sa, 4, segment, os.urandom)

    def open_(n: int) -> None:
        fresh = _sa(key)  # a new replay window each repeat
        for i in range(n):
            esp.open_(fresh, sealed[i])

    def split(n: int) -> None:
        for _ in range(n // SEGMENTS):
            offload.split(read)

    def coalesce(n: int) -> None:
        for _ in range(n // SEGMENTS):
            offload.coalesce(segments)

    def sendto(n: int) -> None:
        for i in range(n):
            tx.sendto(sealed[0], dest)
            if i % 32 == 31:
                drain()

    def gso_send(n: int) -> None:
        for _ in range(n // SEGMENTS):
            gso(sealed[:SEGMENTS], dest)
            drain()

    steps: list[tuple[str, Callable[[int], None]]] = [
        ("AES-GCM-256 encrypt alone (cryptography)", aead_only),
        ("esp.seal (sender: crypto + Python)", seal),
        ("offload.split (sender: TSO, checksums)", split),
        ("GSO sendmsg, 46 datagrams per call", gso_send),
        ("sendto, one datagram per call", sendto),
        ("esp.open_ (receiver: crypto + Python)", open_),
        ("offload.coalesce (receiver: GRO merge)", coalesce),
    ]
    print(f"{'step, per 1,400-byte segment':<44}{'best us':>9}{'median us':>11}")
    for name, step in steps:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            step(args.packets)
            times.append((time.perf_counter() - start) / args.packets * 1e6)
        print(f"{name:<44}{min(times):>9.2f}{statistics.median(times):>11.2f}", flush=True)


if __name__ == "__main__":
    main()
