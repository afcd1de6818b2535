"""Service ClusterIPs → protected endpoints, for the sidecar to translate inside the pod.

kube-proxy rewrites a ClusterIP to a pod address only after the packet has left the
pod, so a sidecar that protects traffic by pod address never sees traffic to a Service
as traffic to a peer. The sidecar therefore gets, in its document's `services` section,
each Service that has a peer of the pod among its ready endpoints: the ClusterIPs and,
per port, those peers with the port they serve on. It translates in the pod's own
network namespace (kernel NAT there translates the replies back); see the sidecar's
`kipsec_sidecar.daemon.service_nat`.

Only the endpoints that are peers are listed, on purpose: the pod's traffic to the
Service then always goes through an SA, never in clear to an endpoint without a
sidecar, at the price of not reaching the other endpoints (kube-proxy still balances
every other client). A Service without a peer behind it is not listed and stays
kube-proxy's. Per ClusterIP only the endpoints of its IP version count: a dual-stack
Service whose peers are IPv4 is listed with its IPv4 ClusterIP only.

:class:`ServiceIndex` is built once per cluster snapshot (endpoint address → the
Service ports it backs), so rendering a pod costs its peers, not every Service.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .cluster import Cluster, K8sObject, key_of, normalized_ip

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, order=True)
class ServiceEndpoint:
    """One backend of a Service port."""

    address: str
    port: int
    protected: bool
    """Whether the address is a peer of the pod (its traffic goes through an SA)."""


@dataclass(frozen=True, order=True)
class ServiceRoute:
    """ClusterIP:port/protocol of one Service port and its ready endpoints of the
    ClusterIP's IP version."""

    service: str
    """`namespace/name` of the Service."""
    cluster_ip: str
    port: int
    protocol: str
    """TCP, UDP or SCTP."""
    endpoints: tuple[ServiceEndpoint, ...]


@dataclass(frozen=True)
class ServiceIndex:
    """Every ClusterIP route of a cluster, by the endpoint addresses behind it."""

    by_address: Mapping[str, tuple[ServiceRoute, ...]]
    """Endpoint address → the routes it backs (endpoints marked unprotected)."""

    @classmethod
    def of(cls, cluster: Cluster) -> ServiceIndex:
        index: dict[str, list[ServiceRoute]] = {}
        for route in _all_routes(cluster):
            for endpoint in route.endpoints:
                index.setdefault(endpoint.address, []).append(route)
        return cls({address: tuple(routes) for address, routes in index.items()})

    def routes(self, peer_addresses: Iterable[str]) -> tuple[ServiceRoute, ...]:
        """Routes with at least one endpoint in `peer_addresses`, endpoints marked, sorted.

        Nothing to parse without Services (every rendered pod asks: 4 % of the operator
        at 5,000 pods); addresses are normalized through the memoized
        :func:`~.cluster.normalized_ip`."""
        if not self.by_address:
            return ()
        peers = {normalized_ip(a) for a in peer_addresses}
        found = {route for address in peers for route in self.by_address.get(address, ())}
        return tuple(
            sorted(
                replace(
                    route,
                    endpoints=tuple(
                        replace(e, protected=e.address in peers) for e in route.endpoints
                    ),
                )
                for route in found
            )
        )

    def document(self, peer_addresses: Iterable[str]) -> list[dict[str, Any]]:
        """The sidecar document's `services` for a pod with these peers (empty: none).

        Deterministic: Services by name, ClusterIPs and ports (port, protocol) and
        endpoints (address) sorted, so an unchanged cluster renders identical bytes.
        """
        services: dict[str, tuple[set[str], dict[tuple[int, str], dict[str, int]]]] = {}
        for route in self.routes(peer_addresses):
            cluster_ips, ports = services.setdefault(route.service, (set(), {}))
            cluster_ips.add(route.cluster_ip)
            endpoints = ports.setdefault((route.port, route.protocol.lower()), {})
            for e in route.endpoints:
                if e.protected:  # one target port per address (slices that disagree: lowest)
                    endpoints[e.address] = min(e.port, endpoints.get(e.address, e.port))
        return [
            {
                "name": name,
                "clusterIPs": sorted(cluster_ips, key=_address_order),
                "ports": [
                    {
                        "port": port,
                        "protocol": protocol,
                        "endpoints": [
                            {"address": address, "targetPort": endpoints[address]}
                            for address in sorted(endpoints, key=_address_order)
                        ],
                    }
                    for (port, protocol), endpoints in sorted(ports.items())
                ],
            }
            for name, (cluster_ips, ports) in sorted(services.items())
        ]


def _address_order(address: str) -> tuple[int, int]:
    """IPv4 before IPv6, then numeric (addresses of both versions do not compare)."""
    ip = ipaddress.ip_address(address)
    return (ip.version, int(ip))


def service_routes(cluster: Cluster, peer_addresses: Iterable[str]) -> tuple[ServiceRoute, ...]:
    """Routes of every Service with at least one endpoint in `peer_addresses`, sorted."""
    return ServiceIndex.of(cluster).routes(peer_addresses)


def _all_routes(cluster: Cluster) -> list[ServiceRoute]:
    """One route per ClusterIP and port of every Service that has ready endpoints of the
    ClusterIP's IP version (endpoints unmarked)."""
    slices: dict[tuple[str, str], list[K8sObject]] = {}
    for (namespace, _), endpoint_slice in sorted(cluster.endpoint_slices.items()):
        service_name = service_of_slice(endpoint_slice)
        if service_name:
            slices.setdefault((namespace, service_name), []).append(endpoint_slice)
    routes: list[ServiceRoute] = []
    for key, service in sorted(cluster.services.items()):
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName" or key not in slices:
            continue
        cluster_ips = [
            ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"
        ]
        if not cluster_ips:
            continue  # headless: clients already use the pod addresses
        namespace, name = key_of(service)
        for port in spec.get("ports") or []:
            protocol = str(port.get("protocol") or "TCP")
            endpoints = _endpoints(slices[key], port.get("name") or "", protocol)
            for cluster_ip in cluster_ips:
                version = ipaddress.ip_address(cluster_ip).version
                same_family = tuple(
                    e for e in endpoints if ipaddress.ip_address(e.address).version == version
                )
                if same_family:
                    routes.append(
                        ServiceRoute(
                            service=f"{namespace}/{name}",
                            cluster_ip=str(ipaddress.ip_address(cluster_ip)),
                            port=int(port["port"]),
                            protocol=protocol,
                            endpoints=same_family,
                        )
                    )
    return routes


def _endpoints(
    slices: list[K8sObject], port_name: str, protocol: str
) -> tuple[ServiceEndpoint, ...]:
    found: set[ServiceEndpoint] = set()
    for endpoint_slice in slices:
        target = next(
            (
                p
                for p in endpoint_slice.get("ports") or []
                if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == protocol
            ),
            None,
        )
        if target is None or target.get("port") is None:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                normalized = str(ipaddress.ip_address(address))
                found.add(ServiceEndpoint(normalized, int(target["port"]), protected=False))
    return tuple(sorted(found))


def service_of_slice(endpoint_slice: K8sObject) -> str | None:
    """The name of the Service an EndpointSlice belongs to (its service-name label)."""
    labels = (endpoint_slice.get("metadata") or {}).get("labels") or {}
    name = labels.get(SERVICE_NAME_LABEL)
    return str(name) if name else None


__all__ = [
    "SERVICE_NAME_LABEL",
    "ServiceEndpoint",
    "ServiceIndex",
    "ServiceRoute",
    "service_of_slice",
    "service_routes",
]
