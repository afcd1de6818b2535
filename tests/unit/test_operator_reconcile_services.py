"""Service ClusterIP → endpoints maps for the pods whose peers back a Service."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from kipsec_operator.reconcile.affected import Change, affected_pods, changed_configs
from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.render import plan
from kipsec_operator.reconcile.services import ServiceEndpoint, ServiceRoute, service_routes
from kipsec_sidecar.config import load_config_data
from support.operator_objects import (
    endpoint_slice,
    namespace,
    pod,
    psk_secret,
    service,
    tunnel,
    two_sided_spec,
)


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


# --- the `services` section of the pods' documents ------------------------------------------

WEB_PORTS = [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def _web_world(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Client c1 linked to servers s1 and s2 (Tunnel web); s3 is a server no Tunnel selects;
    Service web (10.96.0.80:80) is backed by s1, s2 and s3."""
    return [
        namespace("default"),
        psk_secret(),
        tunnel("web", two_sided_spec()),
        pod("c1", "10.0.1.1", labels={"app": "client"}),
        pod("s1", "10.0.1.2", labels={"app": "server"}),
        pod("s2", "10.0.1.3", labels={"app": "server"}),
        pod("s3", "10.0.1.4", labels={"app": "other"}),
        service("web", ["10.96.0.80"], WEB_PORTS),
        endpoint_slice(
            "web-1",
            "web",
            ["10.0.1.4", "10.0.1.3", "10.0.1.2"],
            [{"name": "http", "port": 8080, "protocol": "TCP"}],
        ),
        *extra,
    ]


def _documents(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rendering = plan(Cluster.of(objects))
    return {f"{k[0]}/{k[1]}": dict(c.document) for k, c in rendering.pods.items()}


def test_a_pod_gets_the_services_its_peers_back_with_only_the_peers_as_endpoints() -> None:
    assert _documents(_web_world())["default/c1"]["services"] == [
        {
            "name": "default/web",
            "clusterIPs": ["10.96.0.80"],
            "ports": [
                {
                    "port": 80,
                    "protocol": "tcp",
                    "endpoints": [
                        {"address": "10.0.1.2", "targetPort": 8080},
                        {"address": "10.0.1.3", "targetPort": 8080},
                    ],
                }
            ],
        }
    ]


def test_a_pod_whose_peers_back_no_service_gets_no_services_section() -> None:
    documents = _documents(_web_world())
    assert "services" not in documents["default/s1"]  # its peer c1 backs nothing


def test_the_rendered_document_loads_in_the_sidecar_with_its_services() -> None:
    config = load_config_data(_documents(_web_world())["default/c1"])
    assert [e.address for e in config.services[0].ports[0].endpoints] == ["10.0.1.2", "10.0.1.3"]


def test_a_dual_stack_service_keeps_only_the_cluster_ips_of_the_peers_ip_version() -> None:
    dual = service("web", ["10.96.0.80", "fd00:96::80"], WEB_PORTS)
    objects = [o for o in _web_world() if o["kind"] != "Service"] + [dual]
    assert _documents(objects)["default/c1"]["services"][0]["clusterIPs"] == ["10.96.0.80"]


def test_services_render_in_the_same_bytes_whatever_the_object_order() -> None:
    more = [
        service("api", ["10.96.0.81", "fd00:96::81"], WEB_PORTS),
        endpoint_slice(
            "api-2", "api", ["10.0.1.3"], [{"name": "http", "port": 9090, "protocol": "TCP"}]
        ),
        endpoint_slice(
            "api-1", "api", ["10.0.1.2"], [{"name": "http", "port": 9090, "protocol": "TCP"}]
        ),
    ]
    objects = _web_world(*more)
    first = plan(Cluster.of(objects)).pods[("default", "c1")].files
    second = plan(Cluster.of(list(reversed(objects)))).pods[("default", "c1")].files
    assert first == second
    names = [s["name"] for s in _documents(objects)["default/c1"]["services"]]
    assert names == ["default/api", "default/web"]


def _slice_edit(objects: list[dict[str, Any]], addresses: list[str]) -> None:
    for obj in objects:
        if obj["kind"] == "EndpointSlice":
            obj["endpoints"] = [
                {"addresses": [a], "conditions": {"ready": True}} for a in addresses
            ]


def test_an_endpoint_slice_change_touches_only_the_pods_whose_services_change() -> None:
    before = _web_world(pod("m1", "10.0.2.1", labels={"app": "mesh"}))
    after = copy.deepcopy(before)
    _slice_edit(after, ["10.0.1.2"])  # s2 is no endpoint any more

    affected = affected_pods(
        Cluster.of(before), Cluster.of(after), Change("EndpointSlice", "default", "web-1")
    )

    assert set(affected) == {("default", "c1")}
    brute = changed_configs(plan(Cluster.of(before)).secrets(), plan(Cluster.of(after)).secrets())
    assert set(affected) == brute


def test_a_service_deleted_removes_it_from_its_clients_only() -> None:
    before = _web_world()
    after = [o for o in before if o["kind"] != "Service"]

    affected = affected_pods(
        Cluster.of(before), Cluster.of(after), Change("Service", "default", "web")
    )

    assert set(affected) == {("default", "c1")}
    secret = affected[("default", "c1")]
    assert secret is not None
    document = json.loads(base64.b64decode(secret["data"]["config.yaml"]))
    assert "services" not in document
