"""The userspace datapath's TUN offloads with a real TCP stack on both ends.

The datapath opens its TUN device with TSO and checksum offload by default: the pod's
TCP hands it 64 KiB super-segments with partial checksums, which it must cut into
correct MSS-sized segments before protecting them, and on receive it merges decrypted
segments back into super-segments for the kernel to split. A bulk transfer whose hash
must match end to end, a capture inside the pod (super-segments on the TUN device) and
one on the node segment (only ESP-in-UDP, nothing larger than the path MTU) check it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kipsec_sidecar.core.ike.constants import EncrId
from support.capture import Capture
from support.netns import WIRE, WIRE_BRIDGE, Topology, stop_process, wait_for_output
from support.userspace_harness import Harness, esp_tunnel_peer

pytestmark = pytest.mark.netns

SIZE = 3 * 1024 * 1024
PORT = 7080

_SERVER = """
import hashlib, socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
srv.settimeout(15)
print("ready", flush=True)
conn, _ = srv.accept()
conn.settimeout(15)
digest, total = hashlib.sha256(), 0
while True:
    chunk = conn.recv(1 << 20)
    if not chunk:
        break
    digest.update(chunk)
    total += len(chunk)
conn.sendall(f"{total} {digest.hexdigest()}".encode())
conn.close()
"""

_CLIENT = """
import hashlib, socket, sys
data = bytes(range(256)) * (int(sys.argv[3]) // 256)
data = hashlib.sha256(b"seed").digest() * 3 + data  # not a multiple of any MSS
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=15)
sock.sendall(data)
sock.shutdown(socket.SHUT_WR)
answer = b""
while chunk := sock.recv(4096):
    answer += chunk
print(f"{len(data)} {hashlib.sha256(data).hexdigest()}")
print(answer.decode())
"""


def _spec(me: str, peer: str, keys: dict[str, str], tso: bool) -> dict[str, Any]:
    def sa(spi: int, src: str, dst: str) -> dict[str, Any]:
        return {
            "spi": spi,
            "src": src,
            "dst": dst,
            "encr_id": int(EncrId.AES_GCM_16),
            "encr_key": keys[f"{src}>{dst}"],
        }

    out_spi, in_spi = (0xA001, 0xB002) if me < peer else (0xB002, 0xA001)
    return {
        "local_addr": me,
        "peer": esp_tunnel_peer(me, peer),
        "out": sa(out_spi, me, peer),
        "in": sa(in_spi, peer, me),
        "tso": tso,
    }


def _bulk(topology: Topology, src: str, dst: str) -> tuple[str, str]:
    """Send SIZE bytes over TCP from ``src`` to ``dst``; (what was sent, what arrived)."""
    address = topology.address(dst)
    server = topology.popen(
        dst, [sys.executable, "-c", _SERVER, address, str(PORT)], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        wait_for_output(server.stdout, b"ready", 5)
        result = topology.python(src, _CLIENT, address, str(PORT), str(SIZE), timeout=20)
    finally:
        stop_process(server)
    sent, received = result.stdout.strip().splitlines()
    return sent, received


@pytest.mark.parametrize("tso", [True, False], ids=["tso", "no-tso"])
def test_bulk_tcp_through_offloaded_tun_arrives_intact_as_mtu_sized_esp_in_udp(
    topology: Topology, tmp_path: Path, tso: bool
) -> None:
    # tso=False: the pod's kernel cuts and checksums the segments itself (no super-segment
    # is read), while the receiving datapath still merges what it decrypted.
    topology.add_node("a")
    topology.add_node("b")
    topology.add_pod("pa", "a")
    topology.add_pod("pb", "b")
    a, b = topology.address("pa"), topology.address("pb")
    keys = {f"{a}>{b}": os.urandom(36).hex(), f"{b}>{a}": os.urandom(36).hex()}
    ha = Harness(topology, "pa", _spec(a, b, keys, tso))
    Harness(topology, "pb", _spec(b, a, keys, tso))
    mtu = int(ha.ready["mtu"])

    tun = Capture(topology, "pa", "kipsec0", tmp_path / "tun.pcap", bpf="tcp")
    wire = Capture(topology, WIRE, WIRE_BRIDGE, tmp_path / "wire.pcap")
    with tun, wire:
        sent, received = _bulk(topology, "pa", "pb")

    assert received == sent
    largest_read = max(len(p.data) for p in tun.summary.packets)
    if tso:
        assert largest_read > mtu, "the pod's TCP never handed over a super-segment"
    else:
        assert largest_read <= mtu, "a super-segment was read with TSO off"
    assert not wire.summary.unexpected({"esp-in-udp", "arp", "igmp"}), wire.summary.describe()
    assert max(len(p.data) for p in wire.summary.packets) <= 1500 + 14
    stats = ha.stats()["stats"]
    assert sum(stats["packets_out"].values()) > SIZE // mtu
    assert not stats["errors"], stats["errors"]
