"""Traffic selectors: address range, IP protocol and port range (RFC 4301 section 4.4.1.1).

One representation shared by the policy database (which packet is protected) and IKEv2
(the TSi/TSr payloads and their narrowing), so the two can never disagree about what a
selector means.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .errors import LocalProtocolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ANY_PROTOCOL = 0
MAX_PORT = 0xFFFF


@dataclass(frozen=True, slots=True)
class TrafficSelector:
    """An inclusive range of addresses, one IP protocol (0 = any) and an inclusive port range.

    For ICMP the "ports" carry type and code as RFC 7296 section 3.13.1 says; the
    cores treat them as plain 16-bit values.
    """

    start_addr: IPAddress
    end_addr: IPAddress
    protocol: int = ANY_PROTOCOL
    start_port: int = 0
    end_port: int = MAX_PORT

    def __post_init__(self) -> None:
        if self.start_addr.version != self.end_addr.version:
            raise LocalProtocolError("traffic selector mixes IPv4 and IPv6 addresses")
        if int(self.start_addr) > int(self.end_addr):
            raise LocalProtocolError(
                f"traffic selector address range is empty: {self.start_addr}-{self.end_addr}"
            )
        if not 0 <= self.protocol <= 255:
            raise LocalProtocolError(f"traffic selector protocol {self.protocol} is not 0-255")
        if not 0 <= self.start_port <= self.end_port <= MAX_PORT:
            raise LocalProtocolError(
                f"traffic selector port range {self.start_port}-{self.end_port} is invalid"
            )

    @classmethod
    def from_network(
        cls,
        network: str | ipaddress.IPv4Network | ipaddress.IPv6Network,
        protocol: int = ANY_PROTOCOL,
        start_port: int = 0,
        end_port: int = MAX_PORT,
    ) -> TrafficSelector:
        """A selector covering a CIDR block, e.g. ``from_network("10.0.1.0/24")``."""
        net = ipaddress.ip_network(network, strict=False)
        return cls(net.network_address, net.broadcast_address, protocol, start_port, end_port)

    @classmethod
    def host(cls, address: str | IPAddress, protocol: int = ANY_PROTOCOL) -> TrafficSelector:
        addr = ipaddress.ip_address(address)
        return cls(addr, addr, protocol)

    @property
    def version(self) -> int:
        return self.start_addr.version

    def contains_packet(self, address: IPAddress, protocol: int, port: int | None) -> bool:
        """Does a packet endpoint fall inside? ``port`` is None for protocols without ports."""
        if address.version != self.version:
            return False
        if not int(self.start_addr) <= int(address) <= int(self.end_addr):
            return False
        if self.protocol not in (ANY_PROTOCOL, protocol):
            return False
        if port is None:
            # A packet without ports only matches a selector that does not restrict them.
            return self.start_port == 0 and self.end_port == MAX_PORT
        return self.start_port <= port <= self.end_port

    def covers(self, other: TrafficSelector) -> bool:
        """Is ``other`` entirely inside this selector?"""
        return self.intersect(other) == other

    def intersect(self, other: TrafficSelector) -> TrafficSelector | None:
        """The largest selector inside both, or None when they do not overlap (narrowing)."""
        if self.version != other.version:
            return None
        if self.protocol == ANY_PROTOCOL:
            protocol = other.protocol
        elif other.protocol in (ANY_PROTOCOL, self.protocol):
            protocol = self.protocol
        else:
            return None
        start = max(int(self.start_addr), int(other.start_addr))
        end = min(int(self.end_addr), int(other.end_addr))
        port_start = max(self.start_port, other.start_port)
        port_end = min(self.end_port, other.end_port)
        if start > end or port_start > port_end:
            return None
        return TrafficSelector(
            ipaddress.ip_address(start) if self.version == 4 else ipaddress.IPv6Address(start),
            ipaddress.ip_address(end) if self.version == 4 else ipaddress.IPv6Address(end),
            protocol,
            port_start,
            port_end,
        )

    def __str__(self) -> str:
        addrs = (
            str(self.start_addr)
            if self.start_addr == self.end_addr
            else f"{self.start_addr}-{self.end_addr}"
        )
        proto = "" if self.protocol == ANY_PROTOCOL else f"[{self.protocol}"
        if proto and (self.start_port, self.end_port) != (0, MAX_PORT):
            proto += f"/{self.start_port}-{self.end_port}"
        return addrs + (proto + "]" if proto else "")


def narrow(
    proposed: list[TrafficSelector], allowed: list[TrafficSelector]
) -> list[TrafficSelector]:
    """The responder's narrowing (RFC 7296 section 2.9): every non-empty intersection.

    Returns an empty list when nothing overlaps, which the caller answers with
    TS_UNACCEPTABLE. Duplicates are removed; order follows ``proposed`` then ``allowed``.
    """
    out: list[TrafficSelector] = []
    for p in proposed:
        for a in allowed:
            inter = p.intersect(a)
            if inter is not None and inter not in out:
                out.append(inter)
    return out
