"""What crossed a wire, from a tcpdump file: packets classified for "only IPsec here".

The claim the lab and the e2e tests make is that between pods only IPsec is seen (ESP,
AH, ESP in UDP 4500, IKE) and never the plaintext that was sent. :func:`summarize`
reads a pcap (scapy dissects the frames) and :class:`CaptureSummary` answers the
questions: counts by kind, whether a marker crossed in clear, what is unexpected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

IP_PROTOCOL_KINDS: Final[Mapping[int, str]] = {
    1: "icmp",
    2: "igmp",
    6: "tcp",
    17: "udp",
    50: "esp",
    51: "ah",
    58: "icmpv6",
}
"""IP protocol number → the kind a packet is counted as (UDP is refined by port)."""

IKE_PORT: Final = 500
NAT_T_PORT: Final = 4500
NON_ESP_MARKER: Final = b"\x00\x00\x00\x00"
"""RFC 3948: on port 4500, IKE messages start with four zero bytes; ESP starts with its SPI."""

HOUSEKEEPING_KINDS: Final = frozenset({"arp", "igmp"})
"""The segment's own chatter (address resolution, multicast membership), never user data."""

ENCRYPTED_KINDS: Final = frozenset({"esp", "ah", "esp-in-udp", "ike", "nat-keepalive"})
"""Kinds that may carry traffic between IPsec peers."""

ALLOWED_ON_WIRE: Final = ENCRYPTED_KINDS | HOUSEKEEPING_KINDS
"""What a capture between IPsec peers may hold: :meth:`CaptureSummary.unexpected`'s default."""


@dataclass(frozen=True)
class CapturedPacket:
    """One captured frame, reduced to what the assertions need."""

    kind: str
    """``esp``, ``ah``, ``esp-in-udp``, ``ike``, ``nat-keepalive``, ``udp``, ``tcp``,
    ``icmp``, ``igmp``, ``arp``, ``ipv6``, ``other``."""
    src: str | None
    dst: str | None
    protocol: int | None
    """IP protocol number (IPv4 ``proto`` / IPv6 ``nh``), None for non-IP frames."""
    sport: int | None
    dport: int | None
    data: bytes
    """The whole frame as captured, link-layer header included."""


@dataclass(frozen=True)
class CaptureSummary:
    """Every packet of a capture, with the counts tests assert on."""

    packets: tuple[CapturedPacket, ...]
    kinds: Counter[str] = field(init=False)
    protocols: Counter[int] = field(init=False)
    udp_ports: Counter[int] = field(init=False)
    """Destination (and source) UDP ports, one count each per packet."""

    def __post_init__(self) -> None:
        kinds: Counter[str] = Counter(p.kind for p in self.packets)
        protocols: Counter[int] = Counter(
            p.protocol for p in self.packets if p.protocol is not None
        )
        ports: Counter[int] = Counter()
        for p in self.packets:
            if p.protocol == 17 and p.sport is not None and p.dport is not None:
                ports.update({p.sport, p.dport})
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "protocols", protocols)
        object.__setattr__(self, "udp_ports", ports)

    def __len__(self) -> int:
        return len(self.packets)

    def contains(self, marker: bytes) -> bool:
        """Whether ``marker`` appears anywhere in any captured frame."""
        return any(marker in p.data for p in self.packets)

    def with_marker(self, marker: bytes) -> list[CapturedPacket]:
        """The frames that carry ``marker``."""
        return [p for p in self.packets if marker in p.data]

    def of_kind(self, *kinds: str) -> list[CapturedPacket]:
        return [p for p in self.packets if p.kind in kinds]

    def unexpected(self, allowed: Iterable[str] = ALLOWED_ON_WIRE) -> list[CapturedPacket]:
        """Frames whose kind is not in ``allowed``."""
        allowed = frozenset(allowed)
        return [p for p in self.packets if p.kind not in allowed]

    def describe(self, limit: int = 20) -> str:
        """A human summary for assertion messages: counts, then the first packets."""
        lines = [f"{len(self.packets)} packets; kinds {dict(self.kinds)}"]
        for p in self.packets[:limit]:
            ports = f" {p.sport}->{p.dport}" if p.sport is not None else ""
            lines.append(f"  {p.kind:<14} {p.src} -> {p.dst} proto={p.protocol}{ports}")
        if len(self.packets) > limit:
            lines.append(f"  ... {len(self.packets) - limit} more")
        return "\n".join(lines)


def _udp_kind(sport: int, dport: int, payload: bytes) -> str:
    if IKE_PORT in (sport, dport):
        return "ike"
    if NAT_T_PORT in (sport, dport):
        if payload == b"\xff":
            return "nat-keepalive"
        if payload.startswith(NON_ESP_MARKER):
            return "ike"
        return "esp-in-udp"
    return "udp"


def classify(frame: bytes, linktype: int = 1) -> CapturedPacket:
    """Reduce one captured frame (of pcap ``linktype``) to a :class:`CapturedPacket`."""
    from scapy.config import conf
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import ARP
    from scapy.packet import Raw

    dissector: Any = conf.l2types.get(linktype, Raw)
    packet = dissector(frame)
    if packet.haslayer(ARP):
        return CapturedPacket("arp", None, None, None, None, None, frame)
    if packet.haslayer(IP):
        ip = packet[IP]
        src, dst, protocol = str(ip.src), str(ip.dst), int(ip.proto)
    elif packet.haslayer(IPv6):
        ip6 = packet[IPv6]
        return CapturedPacket("ipv6", str(ip6.src), str(ip6.dst), int(ip6.nh), None, None, frame)
    else:
        return CapturedPacket("other", None, None, None, None, None, frame)
    kind = IP_PROTOCOL_KINDS.get(protocol, "other")
    sport = dport = None
    if packet.haslayer(UDP) and protocol == 17:
        udp = packet[UDP]
        sport, dport = int(udp.sport), int(udp.dport)
        kind = _udp_kind(sport, dport, bytes(udp.payload))
    elif packet.haslayer(TCP) and protocol == 6:
        sport, dport = int(packet[TCP].sport), int(packet[TCP].dport)
    return CapturedPacket(kind, src, dst, protocol, sport, dport, frame)


def summarize(path: Path) -> CaptureSummary:
    """Read a pcap file written by tcpdump and classify every frame."""
    from scapy.utils import RawPcapReader

    if path.stat().st_size < 24:
        return CaptureSummary(())
    packets = []
    with RawPcapReader(str(path)) as reader:
        linktype = int(reader.linktype)
        for frame, _meta in reader:
            packets.append(classify(bytes(frame), linktype))
    return CaptureSummary(tuple(packets))


__all__ = [
    "ALLOWED_ON_WIRE",
    "ENCRYPTED_KINDS",
    "HOUSEKEEPING_KINDS",
    "CaptureSummary",
    "CapturedPacket",
    "classify",
    "summarize",
]
