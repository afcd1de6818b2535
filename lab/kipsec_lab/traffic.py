"""``kipsec lab traffic``: bounded traffic between two pods (or a pod and the external
site's host), captured on the wire between them.

Sends ``pings`` ICMP echoes whose padding is a random marker and one TCP exchange (a
marker to a one-shot echo server in the target's namespace, which sends it back), while
tcpdump captures on the lab bridge (the packets between the two pod addresses) or on the
link to the external site (every packet of the pod's address). The verdict
(:attr:`TrafficReport.verdict`) is "encrypted" only if the marker never crossed the wire
in clear, no plaintext packet of the two crossed it, and the payload arrived;
"authenticated" for AH, whose packets carry the payload readable. Everything is bounded:
the echo server and the client give up after :data:`TIMEOUT` seconds, the capture stops
when the exchange ends.
"""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .capture import CaptureSummary, summarize
from .host import stop_process, wait_for_output
from .topology import BRIDGE

TIMEOUT = 15.0
ECHO_PORT = 7777
PROTOCOL_LABELS = {
    "esp": "ESP",
    "esp-in-udp": "ESP in UDP 4500",
    "ah": "AH",
    "ike": "IKE",
    "nat-keepalive": "NAT keepalive",
}

_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(float(sys.argv[2]))
print("listening", flush=True)
c, _ = s.accept(); c.settimeout(float(sys.argv[2]))
data = b""
while len(data) < int(sys.argv[3]):
    chunk = c.recv(4096)
    if not chunk: break
    data += chunk
c.sendall(data); c.close()
"""

_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
c.sendall(sys.argv[4].encode())
data = b""
while len(data) < len(sys.argv[4]):
    chunk = c.recv(4096)
    if not chunk: break
    data += chunk
sys.stdout.write(data.decode(errors="replace"))
"""


@dataclass(frozen=True)
class TrafficReport:
    """What was sent, what arrived, and what the bridge saw."""

    source: str
    target: str
    pings_sent: int
    pings_received: int
    tcp_port: int
    tcp_echoed: bool
    summary: CaptureSummary
    marker: bytes

    @property
    def by_protocol(self) -> Counter[str]:
        """Packet counts by what they are: ESP, ESP in UDP 4500, AH, IKE, or plaintext."""
        counts: Counter[str] = Counter()
        for packet in self.summary.packets:
            if packet.kind in ("arp", "igmp", "ipv6"):
                continue
            counts[PROTOCOL_LABELS.get(packet.kind, f"plaintext {packet.kind.upper()}")] += 1
        return counts

    @property
    def plaintext(self) -> int:
        return sum(n for label, n in self.by_protocol.items() if label.startswith("plaintext"))

    @property
    def arrived(self) -> bool:
        return self.tcp_echoed and self.pings_received == self.pings_sent

    @property
    def verdict(self) -> str:
        """``encrypted``: the payload arrived and neither it nor any plaintext packet of
        the two pods crossed the bridge. ``authenticated``: the same, except that the
        payload is readable inside AH packets (AH protects integrity, not secrecy).
        ``not protected`` otherwise."""
        if not self.arrived or self.plaintext:
            return "not protected"
        carriers = {p.kind for p in self.summary.with_marker(self.marker)}
        if not carriers:
            return "encrypted"
        return "authenticated" if carriers == {"ah"} else "not protected"

    @property
    def explanation(self) -> str:
        return {
            "encrypted": "no plaintext of the payload crossed the wire",
            "authenticated": "every packet carried AH: integrity-protected, payload readable",
            "not protected": "plaintext crossed the wire or the payload did not arrive",
        }[self.verdict]

    @property
    def encrypted(self) -> bool:
        return self.verdict == "encrypted"


def _in(netns: str, *argv: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def exchange(
    control_netns: str,
    source: tuple[str, str],
    target: tuple[str, str],
    pcap: Path,
    *,
    pings: int = 20,
    tcp_port: int = ECHO_PORT,
    interface: str = BRIDGE,
    capture: Sequence[str] | None = None,
    wait: float = TIMEOUT,
) -> TrafficReport:
    """Send and capture between ``source`` and ``target`` (each ``(netns, address)``):
    on ``interface`` of the control namespace, what the tcpdump filter ``capture``
    selects (default: the packets between the two addresses). ``wait``: how long the TCP
    exchange may take (less when nothing is expected to arrive)."""
    marker = f"kipsec-lab-{secrets.token_hex(8)}".encode()
    (src_ns, src_ip), (dst_ns, dst_ip) = source, target
    timeout = str(wait)
    server = subprocess.Popen(  # noqa: S603 - fixed argv
        _in(dst_ns, sys.executable, "-c", _SERVER, str(tcp_port), timeout, str(len(marker))),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    selected = capture or ["host", src_ip, "and", "host", dst_ip]
    capturing = subprocess.Popen(  # noqa: S603 - fixed argv
        _in(control_netns, "tcpdump", "-n", "-U", "--immediate-mode", "-s", "0", "-Z", "root",
            "-i", interface, "-w", str(pcap), *selected),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert capturing.stderr is not None and server.stdout is not None
        wait_for_output(capturing.stderr, b"listening on", 10.0)
        wait_for_output(server.stdout, b"listening", 10.0)
        received = 0
        if pings:
            pad = marker[:16].hex()
            done = subprocess.run(  # noqa: S603 - fixed argv
                _in(src_ns, "ping", "-n", "-q", "-c", str(pings), "-i", "0.2", "-W", "2",
                    "-p", pad, dst_ip),
                capture_output=True, text=True, timeout=TIMEOUT + pings, check=False,
            )  # fmt: skip
            received = _received(done.stdout)
        client = subprocess.run(  # noqa: S603 - fixed argv
            _in(src_ns, sys.executable, "-c", _CLIENT, dst_ip, str(tcp_port), timeout,
                marker.decode()),
            capture_output=True, timeout=wait + 5, check=False,
        )  # fmt: skip
        echoed = client.stdout == marker
        time.sleep(0.2)
    finally:
        for process in (server, capturing):
            stop_process(process, signal.SIGINT)
    return TrafficReport(src_ip, dst_ip, pings, received, tcp_port, echoed, summarize(pcap), marker)


def _received(ping_output: str) -> int:
    for line in ping_output.splitlines():
        if "received" in line:
            for part in line.split(","):
                if "received" in part:
                    return int(part.split()[0])
    return 0


__all__ = ["ECHO_PORT", "TrafficReport", "exchange"]
