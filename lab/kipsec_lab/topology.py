"""The lab's addresses and names: pure, so they are tested without root.

One flat L2 segment: a bridge in the lab's control namespace joins every pod. The
control namespace owns the first address of the lab CIDR (the pods' default gateway,
where the operator listens); node ``i`` (0-based) hands out addresses from block
``i + 1`` of the CIDR (``10.213.1.0/24`` for node 0 of ``10.213.0.0/16``), so a pod's
address says which node it is on, as with per-node pod CIDRs in a real cluster.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

DEFAULT_CIDR = "10.213.0.0/16"
"""Unlikely to clash with a host's networks; configurable with ``--cidr``."""
NODE_PREFIX = 24
BRIDGE = "kipsec0"
"""The bridge in the control namespace; every pod's veth is a port of it."""


class AddressesExhausted(RuntimeError):
    """No free pod address is left in a node's block."""


@dataclass
class Addresses:
    """Pod address allocation over ``nodes`` node blocks of ``cidr``."""

    cidr: ipaddress.IPv4Network
    nodes: int
    used: set[ipaddress.IPv4Address] = field(default_factory=set)

    @classmethod
    def parse(cls, cidr: str, nodes: int) -> Addresses:
        """From the ``--cidr`` text (IPv4 only: raises ValueError naming ``cidr``)."""
        try:
            network = ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise ValueError(f"cidr: {exc}") from None
        if not isinstance(network, ipaddress.IPv4Network):
            raise ValueError(f"cidr: {cidr} is IPv6; the lab's pod network is IPv4")
        return cls(network, nodes)

    def __post_init__(self) -> None:
        if self.cidr.prefixlen > NODE_PREFIX - 1:
            raise ValueError(f"cidr: {self.cidr} is too small; use a /{NODE_PREFIX - 1} or larger")
        blocks = 2 ** (NODE_PREFIX - self.cidr.prefixlen) - 1
        if not 1 <= self.nodes <= blocks:
            raise ValueError(f"nodes: between 1 and {blocks} for cidr {self.cidr}")

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        """The control namespace's address: pods' gateway, the operator's address."""
        return self.cidr.network_address + 1

    def node_block(self, node: int) -> ipaddress.IPv4Network:
        return list(self.cidr.subnets(new_prefix=NODE_PREFIX))[node + 1]

    def allocate(self, node: int) -> ipaddress.IPv4Address:
        """The lowest free address of ``node``'s block (its network, first and
        broadcast addresses are never handed out)."""
        block = self.node_block(node)
        for address in list(block.hosts())[1:]:
            if address not in self.used:
                self.used.add(address)
                return address
        raise AddressesExhausted(f"node {node}: no free address left in {block}")

    def release(self, address: str) -> None:
        self.used.discard(ipaddress.IPv4Address(address))


def node_names(count: int) -> list[str]:
    return [f"lab-node-{index}" for index in range(count)]


def pod_key(namespace: str, name: str) -> str:
    """A short stable token for a pod, for names with length limits (veth: 15 bytes)."""
    return hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Names:
    """Names of what one lab creates, all derived from its ``lab`` name so that two labs
    (and :func:`sweep`) never confuse theirs."""

    lab: str

    @property
    def control(self) -> str:
        """The control network namespace (bridge, API server, operator)."""
        return f"{self.lab}-ctl"

    def pod_netns(self, namespace: str, name: str) -> str:
        return f"{self.lab}-pod-{pod_key(namespace, name)}"

    def owns(self, netns: str) -> bool:
        site = (f"{self.lab}-site", f"{self.lab}-site-host")  # the external site (.site)
        return netns in (self.control, *site) or netns.startswith(f"{self.lab}-pod-")

    @staticmethod
    def veth(namespace: str, name: str) -> str:
        """The pod veth's name on the bridge side (in the control namespace)."""
        return f"kv{pod_key(namespace, name)}"


__all__ = [
    "BRIDGE",
    "DEFAULT_CIDR",
    "Addresses",
    "AddressesExhausted",
    "Names",
    "node_names",
    "pod_key",
]
