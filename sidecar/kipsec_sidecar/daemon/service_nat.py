"""Service ClusterIPs translated to protected endpoints inside the pod (nftables DNAT).

kube-proxy translates a ClusterIP on the node, after the packet has left the pod, so
a sidecar that protects traffic by pod address would see traffic to a Service as
traffic to an address that is no peer. The document's ``services`` section lists, per
Service, the ClusterIPs and, per port, the endpoints that are peers; this module turns
it into one nftables table in the pod's own network namespace::

    table inet kipsec_svc {
      chain output {
        type nat hook output priority -100; policy accept;
        ip daddr 10.96.0.10 tcp dport 443 dnat ip to numgen random mod 2 map { ... }
      }
    }

The ``output`` nat hook sees locally generated packets before the final routing
decision (the kernel re-routes a packet whose destination NAT changed), so a translated
packet takes the peer's route into the TUN device (userspace datapath) or matches the
peer's XFRM policy (kernel datapath) exactly like traffic sent to the peer's address.
Connection tracking translates the replies back to the ClusterIP. Several endpoints:
each new connection picks one with ``numgen random`` (as kube-proxy's iptables mode);
none of a ClusterIP's IP version: new connections are rejected, never sent in clear.

:func:`ruleset` is the whole translation, pure text; :func:`install` and :func:`remove`
run it with ``nft -f`` (one transaction: the old table is replaced atomically, and a
stale table of a crashed run is replaced by the same script); :class:`ServiceNat` is
what the daemon holds.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Sequence

from ..config.model import Service, ServiceEndpoint
from ..datapath import nftables
from ..datapath.base import DatapathError
from ..datapath.nftables import drop_table, run_nft

TABLE = "kipsec_svc"
#: The nat ``output`` hook priority of destination NAT (``dstnat``), written as a number
#: because nft 1.0.6 accepts the name only on the prerouting hook.
DSTNAT_PRIORITY = -100


def ruleset(services: Sequence[Service], table: str = TABLE) -> str:
    """The nft script that replaces ``inet <table>`` with the translation of ``services``.

    No services: the script only deletes the table (nothing of kipsec's is left).
    One rule per ClusterIP, port and protocol, in document order, commented with the
    Service's name.
    """
    script = drop_table(table)
    rules = [
        _rule(service, cluster_ip, port.port, port.protocol, port.endpoints)
        for service in services
        for port in service.ports
        for cluster_ip in service.cluster_ips
    ]
    if not rules:
        return script
    body = "".join(f"    {rule}\n" for rule in rules)
    return script + (
        f"table inet {table} {{\n"
        f"  chain output {{\n"
        f"    type nat hook output priority {DSTNAT_PRIORITY}; policy accept;\n"
        f"{body}"
        f"  }}\n"
        f"}}\n"
    )


def _rule(
    service: Service,
    cluster_ip: str,
    port: int,
    protocol: str,
    endpoints: Sequence[ServiceEndpoint],
) -> str:
    version = ipaddress.ip_address(cluster_ip).version
    family = "ip" if version == 4 else "ip6"
    match = f"{family} daddr {cluster_ip} {protocol} dport {port}"
    comment = f'comment "{service.name}"'
    backends = [e for e in endpoints if ipaddress.ip_address(e.address).version == version]
    if not backends:
        return f"{match} reject {comment}"
    if len(backends) == 1:
        (only,) = backends
        address = only.address if version == 4 else f"[{only.address}]"
        return f"{match} dnat {family} to {address}:{only.target_port} {comment}"
    elements = ", ".join(
        f"{index} : {e.address} . {e.target_port}" for index, e in enumerate(backends)
    )
    return (
        f"{match} dnat {family} to numgen random mod {len(backends)} map {{ {elements} }} {comment}"
    )


def install(services: Sequence[Service], table: str = TABLE) -> None:
    """Replace the table with the translation of ``services`` (removing a stale one).

    Raises DatapathError with nft's message when nft refuses the script, or when
    ``services`` is not empty and the ``nft`` command is missing (the Services would
    silently go unprotected). With no services and no ``nft`` there is nothing to do.
    """
    if not nftables.apply(table, ruleset(services, table)) and services:
        raise DatapathError(
            "services are configured but the nft command is missing (install the nftables package)"
        )


def remove(table: str = TABLE) -> None:
    """Delete the table if it exists (never another one); best effort, never raises."""
    try:
        run_nft(drop_table(table))
    except (OSError, subprocess.SubprocessError):
        return


class ServiceNat:
    """The daemon's handle on the table: remembers what it installed last, so a reload
    rewrites the table only when the services changed or the last attempt failed."""

    def __init__(self, table: str = TABLE) -> None:
        self.table = table
        self.applied: list[Service] | None = None
        """The services the table holds (None: not written by this process yet)."""

    def apply(self, services: Sequence[Service]) -> bool:
        """Install ``services`` unless the table holds them already; True when it wrote.

        The first call always writes (it also replaces a crashed run's table). Raises
        DatapathError like :func:`install`; the table then keeps what it held.
        """
        wanted = list(services)
        if wanted == self.applied:
            return False
        install(wanted, self.table)
        self.applied = wanted
        return True

    def remove(self) -> None:
        remove(self.table)
        self.applied = None


__all__ = ["DSTNAT_PRIORITY", "TABLE", "ServiceNat", "install", "remove", "ruleset"]
