"""Inbound policy for the userspace datapath: protected traffic must come out of the TUN device.

With the kernel datapath the inbound XFRM policies (``dir in``) make the kernel drop a
plaintext packet whose addresses say it must have arrived protected. The userspace
datapath decrypts in-process and writes the inner packet to its TUN device, so without
more, a *plain* packet arriving on the pod's ordinary interface with a peer's protected
source address (spoofed by anyone on the path) would reach the application as well.
This module closes that gap with one nftables table in the pod's namespace::

    table inet kipsec_inbound {
      chain inbound {
        ct state invalid counter ...             # conntrack: reassembled packets only
        iifname "kipsec0" accept                 # decrypted by the sidecar
        iif "lo" accept                          # the pod talking to itself
        meta l4proto { esp, ah } accept          # IPsec itself (raw encapsulation)
        udp dport { 500, 4500 } accept           # IKE and ESP in UDP, to the sidecar
        icmpv6 type { nd-... } accept            # IPv6 neighbour discovery
        ip saddr 10.0.0.2 ip daddr 10.0.0.1 drop comment "pb"
        ...
      }
      chain input { type filter hook input priority filter; policy accept; jump inbound }
      chain forward { type filter hook forward priority filter; policy accept; jump inbound }
    }

One ``drop`` rule per pair (remote selector, local selector) of every peer: source in
the remote selector, destination in the local one, with the protocol and port ranges
they name. Everything else passes untouched. The datapath writes a peer's rules in the
event-loop pass that adds it, before any SA can be negotiated (fail closed, like the
kernel's policies); the ``forward`` chain covers a sidecar that protects a subnet
behind it.

What is deliberately not dropped, although its addresses may be protected ones: ESP and
AH (pod-to-pod, the outer addresses *are* the protected pod addresses), UDP to the IKE
and NAT-T ports (the sidecar's own sockets), and ICMPv6 neighbour discovery (without it
the IPv6 link to the peer, and so ESP to it, would break). Selector port ranges of a
protocol without ports (ICMP type/code) are ignored: that drops more, never less.

:func:`ruleset` is the whole policy, pure text; :class:`InboundFilter` is what the
datapath holds: it rewrites the table (one ``nft -f`` transaction, the old rules replaced
atomically, a crashed run's table with them) only when the rendered rules change.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Sequence

from ..core.traffic_selectors import ANY_PROTOCOL, MAX_PORT, TrafficSelector
from . import nftables
from .base import DatapathError, PeerPolicy

TABLE = "kipsec_inbound"
#: The ports of the daemon's UDP sockets (IKE, NAT-T): never filtered.
IKE_PORTS = (500, 4500)
#: IP protocols whose selectors may name port ranges (nft ``th`` reads their ports).
PORT_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp", 136: "udplite"}
#: A rule that changes no verdict: its ``ct`` expression makes the kernel enable
#: connection tracking in the namespace, whose defragmentation runs before this table, so
#: the rules see whole packets. Without it IPv6 fragments reach the input hook one by one
#: (the kernel reassembles them after it), and a non-first fragment, which has no
#: transport header, would dodge the protocol rules and hit the address-only drops.
_REASSEMBLE = 'ct state invalid counter comment "conntrack reassembles fragments first"'
_MISSING = (
    "peers are configured but the nft command is missing, so clear-text packets from "
    "their protected addresses would be accepted (install the nftables package)"
)
_ND_TYPES = (
    "nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect"
)


def ruleset(
    policies: Iterable[PeerPolicy],
    *,
    device: str,
    ike_ports: Sequence[int] = IKE_PORTS,
    table: str = TABLE,
) -> str:
    """The nft script that replaces ``inet <table>`` with the inbound policy of ``policies``.

    Peers are rendered in name order, so the same peers give the same text whatever
    order they were added in (a reload that re-adds a peer writes nothing). No peers:
    the script only deletes the table.
    """
    script = nftables.drop_table(table)
    drops: list[str] = []
    for policy in sorted(policies, key=lambda p: p.peer):
        for rule in _peer_rules(policy):
            if rule not in drops:
                drops.append(rule)
    if not drops:
        return script
    ports = ", ".join(str(port) for port in ike_ports)
    accepts = [
        _REASSEMBLE,
        f'iifname "{device}" accept',
        'iif "lo" accept',
        "meta l4proto { esp, ah } accept",
        f"udp dport {{ {ports} }} accept",
        f"icmpv6 type {{ {_ND_TYPES} }} accept",
    ]
    body = "".join(f"    {rule}\n" for rule in accepts + drops)
    hooks = "".join(
        f"  chain {hook} {{\n"
        f"    type filter hook {hook} priority filter; policy accept;\n"
        f"    jump inbound\n"
        f"  }}\n"
        for hook in ("input", "forward")
    )
    return script + f"table inet {table} {{\n  chain inbound {{\n{body}  }}\n{hooks}}}\n"


def _peer_rules(policy: PeerPolicy) -> list[str]:
    """The drop rules of one peer: packets from its remote selectors to its local ones."""
    rules = []
    for remote in policy.remote_ts:
        for local in policy.local_ts:
            match = _match(remote, local)
            if match is not None:
                rules.append(f'{match} drop comment "{policy.peer}"')
    return rules


def _match(remote: TrafficSelector, local: TrafficSelector) -> str | None:
    """The nft match of packets from ``remote`` to ``local``; None when none can match
    (different IP versions or different protocols)."""
    if remote.version != local.version:
        return None
    if ANY_PROTOCOL not in (remote.protocol, local.protocol) and remote.protocol != local.protocol:
        return None
    protocol = local.protocol if remote.protocol == ANY_PROTOCOL else remote.protocol
    family = "ip" if remote.version == 4 else "ip6"
    parts = [f"{family} saddr {_addresses(remote)}", f"{family} daddr {_addresses(local)}"]
    sport, dport = _ports(remote), _ports(local)
    if protocol == ANY_PROTOCOL:
        if sport or dport:  # only packets with ports can fall inside a port range
            parts.append(f"meta l4proto {{ {', '.join(PORT_PROTOCOLS.values())} }}")
    elif protocol in PORT_PROTOCOLS:
        parts.append(f"meta l4proto {PORT_PROTOCOLS[protocol]}")
    else:
        parts.append(f"meta l4proto {protocol}")
        sport = dport = None  # e.g. ICMP type/code: drop the whole protocol (fail closed)
    if sport:
        parts.append(f"th sport {sport}")
    if dport:
        parts.append(f"th dport {dport}")
    return " ".join(parts)


def _addresses(ts: TrafficSelector) -> str:
    """One address, a prefix when the range is exactly one, else ``first-last``."""
    if ts.start_addr == ts.end_addr:
        return str(ts.start_addr)
    networks = list(ipaddress.summarize_address_range(ts.start_addr, ts.end_addr))
    if len(networks) == 1:
        return str(networks[0])
    return f"{ts.start_addr}-{ts.end_addr}"


def _ports(ts: TrafficSelector) -> str | None:
    """The selector's port range in nft syntax; None when it allows every port."""
    if (ts.start_port, ts.end_port) == (0, MAX_PORT):
        return None
    if ts.start_port == ts.end_port:
        return str(ts.start_port)
    return f"{ts.start_port}-{ts.end_port}"


class InboundFilter:
    """The datapath's handle on the table: remembers the script it installed last, so it
    rewrites the table only when the set of selectors changed (a rekey changes none)."""

    def __init__(
        self, device: str, *, ike_ports: Sequence[int] = IKE_PORTS, table: str = TABLE
    ) -> None:
        self.device = device
        self.ike_ports = tuple(ike_ports)
        self.table = table
        self.applied: str | None = None
        """The script the table holds now (None: not written by this process yet)."""

    def sync(self, policies: Iterable[PeerPolicy]) -> bool:
        """Make the table hold the policy of ``policies``; True when it wrote.

        Raises DatapathError when nft refuses the script, or when there are peers and the
        ``nft`` command is missing (their plaintext would be accepted); the table then
        keeps what it held, and the next call tries again.
        """
        wanted = list(policies)
        script = ruleset(wanted, device=self.device, ike_ports=self.ike_ports, table=self.table)
        if script == self.applied:
            return False
        if not nftables.apply(self.table, script) and wanted:
            raise DatapathError(_MISSING)
        self.applied = script
        return True

    def require(self) -> None:
        """Raise DatapathError when the ``nft`` command is missing: without it the
        table cannot be written, and peers' clear text would be accepted."""
        if not nftables.available():
            raise DatapathError(_MISSING)

    def remove(self) -> None:
        """Delete the table if it exists (also a crashed run's); never raises."""
        with contextlib.suppress(DatapathError):
            nftables.apply(self.table, nftables.drop_table(self.table))
        self.applied = None


__all__ = ["IKE_PORTS", "TABLE", "InboundFilter", "ruleset"]
