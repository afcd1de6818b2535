"""Chaos on the sidecar: a crash while traffic flows, and hostile ESP on the wire.

- A sidecar SIGKILLed in the middle of a stream gets no chance to clean up. Its pod still
  has a plain route to the peer (the default route through its node), so if the
  fail-closed state (blackhole routes under the TUN routes, which outlive the process)
  were missing, the stream would leave the pod in clear. A capture on the pod's own link
  must show that nothing but IPsec ever leaves it.
- ESP packets captured on the way to a pod are injected again (replayed) and, with a
  forged sequence number and a flipped ciphertext bit, tampered with — from the node
  namespace, on the pod's veth, with explicit MAC addresses, so nothing leaves the test's
  namespaces. The receiving sidecar must drop each one, count it as ``replay`` or
  ``integrity`` (in ``sas --json`` and on ``/metrics``), and keep its SAs and traffic.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.capture import ALLOWED_ON_WIRE, Capture, CaptureSummary
from support.netns import Topology, stop_process, udp_roundtrip, wait_for_output
from support.sidecars import MARKER, Sidecar, established, peer_entry, wait_until

pytestmark = pytest.mark.netns

METRICS = "127.0.0.1:9585"


@pytest.fixture
def pair(topology: Topology, tmp_path: Path) -> Iterator[tuple[Sidecar, Sidecar]]:
    """Pods pa (node a) and pb (node b), plain routes between them, sidecars established.

    pb serves /metrics inside its namespace.
    """
    for node, pod in (("a", "pa"), ("b", "pb")):
        topology.add_node(node)
        topology.add_pod(pod, node)
    a, b = Sidecar(topology, "pa", tmp_path), Sidecar(topology, "pb", tmp_path)
    a.write([peer_entry(topology, "pb")])
    b.write([peer_entry(topology, "pa")], metrics={"enabled": True, "listen": METRICS})
    try:
        a.start()
        b.start()
        wait_until(
            "pa and pb established", lambda: established(a, "pb")() and established(b, "pa")()
        )
        yield a, b
    finally:
        a.stop()
        b.stop()


# --- SIGKILL while traffic flows -----------------------------------------------------------

_STREAM = r"""
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = bytes.fromhex(sys.argv[3])
sent = failed = 0
print("started", flush=True)
end = time.monotonic() + float(sys.argv[4])
while time.monotonic() < end:
    try:
        sock.sendto(payload, (sys.argv[1], int(sys.argv[2])))
        sent += 1
    except OSError:
        failed += 1
    time.sleep(0.005)
print(f"sent={sent} failed={failed}", flush=True)
"""


def leaving(summary: CaptureSummary, source: str) -> CaptureSummary:
    """Only the packets ``source`` sent."""
    return CaptureSummary(tuple(p for p in summary.packets if p.src == source))


def test_sigkilled_sidecar_lets_no_cleartext_leave_its_pod(
    pair: tuple[Sidecar, Sidecar], topology: Topology, tmp_path: Path
) -> None:
    a, _ = pair
    pa, pb = topology.address("pa"), topology.address("pb")
    pod_link = topology.pod("pa").node_link
    with Capture(topology, "a", pod_link, tmp_path / "pod-a.pcap") as capture:
        stream = topology.popen(
            "pa",
            [sys.executable, "-c", _STREAM, pb, "7600", MARKER.hex(), "2.0"],
            stdout=subprocess.PIPE,
        )
        assert stream.stdout is not None
        wait_for_output(stream.stdout, b"started", 5)
        time.sleep(0.6)
        a.kill()
        killed_at = time.monotonic()
        ping = topology.run(
            "pa", "ping", "-n", "-c", "2", "-i", "0.2", "-w", "1", "-p", MARKER[:16].hex(), pb,
            check=False,
        )  # fmt: skip
        out, _ = stream.communicate(timeout=10)
        stop_process(stream)
    assert time.monotonic() - killed_at > 0.5, "the stream must outlive the sidecar"
    assert ping.returncode != 0, "ping got through with the sidecar dead"
    sent, failed = (int(n) for n in re.findall(rb"=(\d+)", out))
    assert sent > 20 and failed > 20, out  # encrypted before the kill, refused after
    from_pod = leaving(capture.summary, pa)
    assert from_pod.kinds["esp-in-udp"] > 20, from_pod.describe()
    assert not from_pod.contains(MARKER) and not from_pod.contains(MARKER[:16]), from_pod.describe()
    assert not from_pod.unexpected(ALLOWED_ON_WIRE), from_pod.describe()
    routes = topology.run("pa", "ip", "route", "show", "table", "all").stdout
    assert "blackhole " + pb in routes, routes


# --- replayed and tampered ESP -------------------------------------------------------------

_SEND_DATAGRAMS = r"""
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[3])):
    sock.sendto(b"%d " % i + bytes.fromhex(sys.argv[4]), (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.01)
"""

_INJECT = r"""
import json, sys
from scapy.layers.l2 import Ether
from scapy.sendrecv import sendp
job = json.load(open(sys.argv[1]))
frames = [Ether(src=job["src_mac"], dst=job["dst_mac"], type=0x0800) / bytes.fromhex(p)
          for p in job["packets"]]
sendp(frames, iface=job["iface"], verbose=False, inter=0.005)
print(len(frames))
"""


def esp_packets(path: Path, src: str, dst: str) -> list[bytes]:
    """The IPv4 packets (no link header) of ESP-in-UDP datagrams from ``src`` to ``dst``."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.utils import RawPcapReader

    found = []
    with RawPcapReader(str(path)) as reader:
        for frame, _meta in reader:
            packet = Ether(bytes(frame))
            if not packet.haslayer(UDP) or packet[IP].src != src or packet[IP].dst != dst:
                continue
            payload = bytes(packet[UDP].payload)
            if packet[UDP].dport == 4500 and payload[:4] != b"\x00\x00\x00\x00":
                found.append(bytes(packet[IP]))
    return found


def replayed(ip_packet: bytes) -> bytes:
    """The captured packet as it was sent, but with its UDP checksum zeroed.

    Captured between veths, the checksum field may still hold only the partial sum of
    checksum offload (the kernel never finished it), which the receiving kernel would
    reject before the sidecar sees the datagram. Zero means "no checksum" for IPv4
    (RFC 768; RFC 3948 senders may do the same), and the checksum is no part of ESP:
    the ESP packet is replayed byte for byte.
    """
    data = bytearray(ip_packet)
    udp = (data[0] & 0x0F) * 4
    data[udp + 6 : udp + 8] = b"\x00\x00"
    return bytes(data)


def tampered(ip_packet: bytes, sequence: int) -> bytes:
    """The replayed packet with a forged (future) ESP sequence number and one ciphertext
    bit flipped. A sequence number ahead of the window passes the replay pre-check, so
    only the ICV can reject the packet.
    """
    data = bytearray(replayed(ip_packet))
    esp = (data[0] & 0x0F) * 4 + 8
    data[esp + 4 : esp + 8] = struct.pack("!I", sequence)
    data[esp + 20] ^= 0x01  # past SPI, sequence and the 8-byte IV: ciphertext
    return bytes(data)


def mac_of(topology: Topology, namespace: str, link: str) -> str:
    shown = json.loads(topology.run(namespace, "ip", "-j", "link", "show", link).stdout)
    return str(shown[0]["address"])


def scrape(topology: Topology, namespace: str) -> dict[str, float]:
    """``kipsec_dropped_packets_total`` by reason, from /metrics inside ``namespace``."""
    code = (
        "import sys, urllib.request; "
        f"sys.stdout.write(urllib.request.urlopen('http://{METRICS}/metrics', timeout=5)"
        ".read().decode())"
    )
    text = topology.python(namespace, code).stdout
    pattern = r'^kipsec_dropped_packets_total\{reason="(\w+)"\} ([0-9.e+]+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}


def test_replayed_and_tampered_esp_is_dropped_and_counted_and_traffic_is_unharmed(
    pair: tuple[Sidecar, Sidecar], topology: Topology, tmp_path: Path
) -> None:
    _, b = pair
    pa, pb = topology.address("pa"), topology.address("pb")
    pod_link = topology.pod("pb").node_link
    spis = b.spis("pa")
    drops_before = dict(b.sas()["drops"])
    with Capture(topology, "b", pod_link, tmp_path / "to-pb.pcap", bpf="udp port 4500"):
        topology.python("pa", _SEND_DATAGRAMS, pb, "7601", "6", MARKER.hex())
        time.sleep(0.2)
    captured = esp_packets(tmp_path / "to-pb.pcap", pa, pb)
    assert len(captured) >= 6, f"captured {len(captured)} ESP packets to pb"
    replays = [replayed(p) for p in captured[:6]]
    forgeries = [tampered(p, 0x00100000 + n) for n, p in enumerate(captured[:6])]
    job = {
        "iface": pod_link,
        "src_mac": mac_of(topology, "b", pod_link),
        "dst_mac": mac_of(topology, "pb", "eth0"),
        "packets": [p.hex() for p in replays + forgeries],
    }
    (tmp_path / "inject.json").write_text(json.dumps(job))
    topology.python("b", _INJECT, str(tmp_path / "inject.json"), timeout=20)

    def new_drops(reason: str) -> int:
        return int(b.sas()["drops"][reason]) - int(drops_before.get(reason, 0))

    def counted() -> bool:
        return new_drops("replay") >= len(replays) and new_drops("integrity") >= len(forgeries)

    try:
        wait_until("the injected packets to be counted", counted, timeout=5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: drops {b.sas()['drops']}, before {drops_before}") from None
    drops = b.sas()["drops"]
    assert new_drops("replay") == len(replays), drops
    assert new_drops("integrity") == len(forgeries), drops
    metrics = scrape(topology, "pb")
    assert metrics["replay"] == drops["replay"] and metrics["integrity"] == drops["integrity"]
    assert b.proc is not None and b.proc.poll() is None, b.tail()
    assert b.spis("pa") == spis
    assert established(b, "pa")()
    assert udp_roundtrip(topology, "pa", "pb", MARKER) == MARKER
    assert udp_roundtrip(topology, "pb", "pa", MARKER, port=7778) == MARKER
