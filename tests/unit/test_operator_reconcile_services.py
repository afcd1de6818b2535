"""Service ClusterIP → endpoints maps for the pods whose peers back a Service."""

from __future__ import annotations

from typing import Any

from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.services import ServiceEndpoint, ServiceRoute, service_routes


def _service(
    name: str, cluster_ip: str, ports: list[dict[str, Any]], **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": ports, **spec},
    }


def _slice(
    service: str, addresses: list[tuple[str, bool]], ports: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-abc",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": r}} for a, r in addresses],
        "ports": ports,
    }


API_PORTS = [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]
SLICE_PORTS = [{"name": "https", "port": 8443, "protocol": "TCP"}]


def test_a_service_backed_by_a_peer_maps_its_cluster_ip_to_every_ready_endpoint() -> None:
    cluster = Cluster.of(
        [
            _service("api", "10.96.0.10", API_PORTS),
            _slice(
                "api", [("10.0.0.2", True), ("10.0.0.3", True), ("10.0.0.4", False)], SLICE_PORTS
            ),
        ]
    )
    assert service_routes(cluster, ["10.0.0.2"]) == (
        ServiceRoute(
            service="shop/api",
            cluster_ip="10.96.0.10",
            port=443,
            protocol="TCP",
            endpoints=(
                ServiceEndpoint("10.0.0.2", 8443, protected=True),
                ServiceEndpoint("10.0.0.3", 8443, protected=False),
            ),
        ),
    )


def test_a_service_without_a_peer_behind_it_is_left_to_kube_proxy() -> None:
    cluster = Cluster.of(
        [_service("api", "10.96.0.10", API_PORTS), _slice("api", [("10.0.0.3", True)], SLICE_PORTS)]
    )
    assert service_routes(cluster, ["10.0.0.2"]) == ()


def test_headless_services_need_no_translation() -> None:
    cluster = Cluster.of(
        [_service("db", "None", API_PORTS), _slice("db", [("10.0.0.2", True)], SLICE_PORTS)]
    )
    assert service_routes(cluster, ["10.0.0.2"]) == ()


def test_ports_are_matched_by_name_and_protocol() -> None:
    ports = [*API_PORTS, {"name": "dns", "port": 53, "protocol": "UDP"}]
    slice_ports = [*SLICE_PORTS, {"name": "dns", "port": 5353, "protocol": "UDP"}]
    cluster = Cluster.of(
        [_service("api", "10.96.0.10", ports), _slice("api", [("10.0.0.2", True)], slice_ports)]
    )
    routes = service_routes(cluster, ["10.0.0.2"])
    assert [(r.port, r.protocol, r.endpoints[0].port) for r in routes] == [
        (53, "UDP", 5353),
        (443, "TCP", 8443),
    ]
