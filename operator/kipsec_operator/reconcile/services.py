"""Service ClusterIPs → endpoints, for the sidecar to translate inside the pod.

kube-proxy rewrites a ClusterIP to a pod address only after the packet has left the
pod, so a sidecar that protects traffic by pod address never sees traffic to a Service
as traffic to a peer. The sidecar therefore needs, for each Service that has a peer
among its endpoints, the ClusterIP:port → endpoint address:port map, to translate in
the pod's own network namespace (kernel NAT there translates the replies back).

Every ready endpoint is listed, with `protected` telling whether it is a peer of the
pod, so translating in the pod keeps kube-proxy's load balancing; traffic to a peer is
then protected by the peer's SA, traffic to other endpoints leaves in clear as before.

The sidecar document has no field for this map yet: :func:`service_routes` produces
the data, and docs/operator.md says what the sidecar model needs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .cluster import Cluster, K8sObject, key_of

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
    """ClusterIP:port/protocol of one Service port and its ready endpoints."""

    service: str
    """`namespace/name` of the Service."""
    cluster_ip: str
    port: int
    protocol: str
    """TCP, UDP or SCTP."""
    endpoints: tuple[ServiceEndpoint, ...]


def service_routes(cluster: Cluster, peer_addresses: Iterable[str]) -> tuple[ServiceRoute, ...]:
    """Routes of every Service with at least one endpoint in `peer_addresses`, sorted."""
    peers = {str(ipaddress.ip_address(a)) for a in peer_addresses}
    slices: dict[tuple[str, str], list[K8sObject]] = {}
    for (namespace, _), endpoint_slice in sorted(cluster.endpoint_slices.items()):
        labels = (endpoint_slice.get("metadata") or {}).get("labels") or {}
        service = labels.get(SERVICE_NAME_LABEL)
        if service:
            slices.setdefault((namespace, service), []).append(endpoint_slice)
    routes: list[ServiceRoute] = []
    for key, service in sorted(cluster.services.items()):
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName":
            continue
        cluster_ips = [
            ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"
        ]
        if not cluster_ips:
            continue  # headless: clients already use the pod addresses
        for port in spec.get("ports") or []:
            protocol = str(port.get("protocol") or "TCP")
            endpoints = _endpoints(slices.get(key, []), port.get("name") or "", protocol, peers)
            if not any(e.protected for e in endpoints):
                continue
            for cluster_ip in cluster_ips:
                version = ipaddress.ip_address(cluster_ip).version
                same_family = tuple(
                    e for e in endpoints if ipaddress.ip_address(e.address).version == version
                )
                if any(e.protected for e in same_family):
                    routes.append(
                        ServiceRoute(
                            service=f"{key_of(service)[0]}/{key_of(service)[1]}",
                            cluster_ip=str(ipaddress.ip_address(cluster_ip)),
                            port=int(port["port"]),
                            protocol=protocol,
                            endpoints=same_family,
                        )
                    )
    return tuple(sorted(routes))


def _endpoints(
    slices: list[K8sObject], port_name: str, protocol: str, peers: set[str]
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
                found.add(ServiceEndpoint(normalized, int(target["port"]), normalized in peers))
    return tuple(sorted(found))


__all__ = ["SERVICE_NAME_LABEL", "ServiceEndpoint", "ServiceRoute", "service_routes"]
