"""Applying Tunnels, Secrets and pods produces the right per-pod Secrets; changes touch
exactly the affected pods."""

from __future__ import annotations

import asyncio

import pytest

from support.operator_cluster import Cluster, document, eventually
from support.operator_objects import namespace, pod, psk_mesh_spec, psk_secret, tunnel

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]


async def mesh(cluster: Cluster, app: str, names: list[str], first_ip: int) -> None:
    for offset, name in enumerate(names):
        await cluster.apply(pod(name, f"10.0.0.{first_ip + offset}", labels={"app": app}))


async def test_a_psk_mesh_gives_each_pod_a_document_naming_the_others(cluster: Cluster) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(psk_secret())
    await mesh(cluster, "mesh", ["a", "b", "c"], 1)
    await cluster.apply(tunnel("mesh", psk_mesh_spec()))

    secrets = await eventually(lambda: (s := cluster.config_secrets()) and len(s) == 3 and s)
    peers = {name: [p["name"] for p in document(s)["peers"]] for name, s in secrets.items()}
    assert peers == {
        "a": ["default/b", "default/c"],
        "b": ["default/a", "default/c"],
        "c": ["default/a", "default/b"],
    }


def versions(cluster: Cluster) -> dict[str, str]:
    return {name: s["metadata"]["resourceVersion"] for name, s in cluster.config_secrets().items()}


async def two_meshes(cluster: Cluster) -> dict[str, str]:
    """Tunnel `red` over pods r1, r2; Tunnel `blue` over b1, b2; returns the versions."""
    await cluster.apply(namespace("default"))
    await cluster.apply(psk_secret())
    await mesh(cluster, "red", ["r1", "r2"], 1)
    await mesh(cluster, "blue", ["b1", "b2"], 11)
    await cluster.apply(tunnel("red", psk_mesh_spec(app="red")))
    await cluster.apply(tunnel("blue", psk_mesh_spec(app="blue")))
    await eventually(lambda: {"r1", "r2", "b1", "b2"} <= set(cluster.config_secrets()))
    return versions(cluster)


async def test_editing_a_tunnel_rewrites_only_its_own_pods_secrets(cluster: Cluster) -> None:
    before = await two_meshes(cluster)

    await cluster.patch("Tunnel", "default", "red", {"spec": {"mode": "tunnel"}})

    def red_rewritten() -> bool:
        now = versions(cluster)
        return now["r1"] != before["r1"] and now["r2"] != before["r2"]

    await eventually(red_rewritten)
    after = versions(cluster)
    assert (after["b1"], after["b2"]) == (before["b1"], before["b2"])
    assert document(cluster.config_secrets()["r1"])["peers"][0]["mode"] == "tunnel"


async def test_deleting_a_pod_updates_its_peers_and_nothing_else(cluster: Cluster) -> None:
    await cluster.apply(pod("r3", "10.0.0.3", labels={"app": "red"}))
    before = await two_meshes(cluster)
    await eventually(lambda: "r3" in cluster.config_secrets())

    await cluster.delete("Pod", "default", "r3")

    def r1_dropped_r3() -> bool:
        peers = [p["name"] for p in document(cluster.config_secrets()["r1"])["peers"]]
        return peers == ["default/r2"]

    await eventually(r1_dropped_r3)
    await eventually(lambda: "r3" not in cluster.config_secrets())  # owned by the pod: collected
    after = versions(cluster)
    assert (after["b1"], after["b2"]) == (before["b1"], before["b2"])


async def test_a_change_no_tunnel_reads_writes_nothing(cluster: Cluster) -> None:
    before = await two_meshes(cluster)

    await cluster.patch("Pod", "default", "r1", {"metadata": {"labels": {"tier": "web"}}})
    await cluster.apply(pod("unrelated", "10.0.0.99", labels={"app": "other"}))
    await eventually(
        lambda: cluster.operator.reconciler.objects["Pod"].get(("default", "unrelated"))
    )
    await asyncio.sleep(0.5)  # several debounce periods

    assert versions(cluster) == before


async def test_a_selected_pod_without_an_ip_gets_an_empty_secret_then_its_document(
    cluster: Cluster,
) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(psk_secret())
    await cluster.apply(pod("a", "10.0.0.1", labels={"app": "mesh"}))
    await cluster.apply(pod("b", None, labels={"app": "mesh"}))
    await cluster.apply(tunnel("mesh", psk_mesh_spec()))

    bootstrap = await eventually(lambda: cluster.config_secrets().get("b"))
    assert "config.yaml" not in (bootstrap.get("data") or {})

    ip = {"podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.2"}], "phase": "Running"}
    await cluster.patch("Pod", "default", "b", {"status": ip})
    configured = await eventually(
        lambda: "config.yaml" in (data := cluster.config_secrets()["b"].get("data") or {}) and data
    )
    assert configured["config.yaml"]


async def test_deleting_the_tunnel_leaves_its_pods_a_document_without_peers(
    cluster: Cluster,
) -> None:
    await two_meshes(cluster)

    await cluster.delete("Tunnel", "default", "red")

    def peers(name: str) -> list[object]:
        return list(document(cluster.config_secrets()[name])["peers"])

    # One pass writes both Secrets, in any order (writes run concurrently).
    await eventually(lambda: peers("r1") == [] and peers("r2") == [])
    assert len(peers("b1")) == 1
