"""Services reach the sidecars: a Service backed by a pod's peers appears in that pod's
document, and an EndpointSlice change rewrites exactly the Secrets of the pods whose
`services` section changes."""

from __future__ import annotations

import pytest

from support.operator_cluster import Cluster, document, eventually
from support.operator_objects import (
    endpoint_slice,
    namespace,
    pod,
    psk_mesh_spec,
    psk_secret,
    service,
    tunnel,
    two_sided_spec,
)

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]

SLICE_PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}]


def versions(cluster: Cluster) -> dict[str, str]:
    return {name: s["metadata"]["resourceVersion"] for name, s in cluster.config_secrets().items()}


def endpoints_of(cluster: Cluster, pod_name: str) -> list[str] | None:
    """The endpoint addresses of the first service port in the pod's document (None: no
    document yet, or no `services` section)."""
    secret = cluster.config_secrets().get(pod_name)
    if secret is None or not secret.get("data"):
        return None
    services = document(secret).get("services")
    if not services:
        return None
    return [e["address"] for e in services[0]["ports"][0]["endpoints"]]


async def web_cluster(cluster: Cluster) -> dict[str, str]:
    """Client c1 with servers s1, s2 behind Service web (Tunnel web), and an unrelated
    mesh m1, m2 (Tunnel mesh); returns the Secrets' versions once c1 sees both servers."""
    await cluster.apply(namespace("default"))
    await cluster.apply(psk_secret())
    await cluster.apply(pod("c1", "10.0.1.1", labels={"app": "client"}))
    await cluster.apply(pod("s1", "10.0.1.2", labels={"app": "server"}))
    await cluster.apply(pod("s2", "10.0.1.3", labels={"app": "server"}))
    await cluster.apply(pod("m1", "10.0.0.1", labels={"app": "mesh"}))
    await cluster.apply(pod("m2", "10.0.0.2", labels={"app": "mesh"}))
    await cluster.apply(tunnel("web", two_sided_spec()))
    await cluster.apply(tunnel("mesh", psk_mesh_spec()))
    await cluster.apply(
        service("web", ["10.96.0.80"], [{"name": "http", "port": 80, "targetPort": 8080}])
    )
    await cluster.apply(endpoint_slice("web-1", "web", ["10.0.1.2", "10.0.1.3"], SLICE_PORTS))
    await eventually(lambda: endpoints_of(cluster, "c1") == ["10.0.1.2", "10.0.1.3"])
    await eventually(lambda: {"s1", "s2", "m1", "m2"} <= set(cluster.config_secrets()))
    return versions(cluster)


async def test_a_service_and_its_endpoint_slice_reach_the_clients_document(
    cluster: Cluster,
) -> None:
    await web_cluster(cluster)

    (web,) = document(cluster.config_secrets()["c1"])["services"]
    assert (web["name"], web["clusterIPs"]) == ("default/web", ["10.96.0.80"])
    ports = [
        (p["port"], p["protocol"], [(e["address"], e["targetPort"]) for e in p["endpoints"]])
        for p in web["ports"]
    ]
    assert ports == [(80, "tcp", [("10.0.1.2", 8080), ("10.0.1.3", 8080)])]


async def test_an_endpoint_slice_change_rewrites_only_the_affected_pods_secrets(
    cluster: Cluster,
) -> None:
    before = await web_cluster(cluster)

    await cluster.patch(
        "EndpointSlice",
        "default",
        "web-1",
        {"endpoints": [{"addresses": ["10.0.1.2"], "conditions": {"ready": True}}]},
    )

    await eventually(lambda: endpoints_of(cluster, "c1") == ["10.0.1.2"])
    after = versions(cluster)
    assert after["c1"] != before["c1"]
    assert {k: v for k, v in after.items() if k != "c1"} == {
        k: v for k, v in before.items() if k != "c1"
    }
