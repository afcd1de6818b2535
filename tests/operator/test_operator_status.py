"""Tunnel status from the operator's rendering and the sidecars' reports; invalid
Tunnels get a condition and an Event that name the field and never a secret."""

from __future__ import annotations

import pytest

from kipsec_operator.reconcile.status import SidecarReport
from support.operator_cluster import Cluster, condition, eventually, psk_mesh
from support.operator_objects import PSK, namespace, pod, psk_mesh_spec, psk_secret, tunnel

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]


def events_about(cluster: Cluster, name: str) -> list[dict[str, object]]:
    return [e for e in cluster.events() if e.get("involvedObject", {}).get("name") == name]


async def test_a_missing_psk_secret_is_a_condition_and_an_event_naming_the_field(
    cluster: Cluster,
) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(pod("a", "10.0.0.1", labels={"app": "mesh"}))
    await cluster.apply(tunnel("mesh", psk_mesh_spec(secret_name="absent")))

    ready = await eventually(lambda: condition(cluster.tunnel("mesh"), "Ready"))
    assert ready["status"] == "False"
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"].startswith('spec.authentication.psk.secretRef.name: Secret "absent"')
    assert condition(cluster.tunnel("mesh"), "Degraded")["status"] == "True"
    event = (await eventually(lambda: events_about(cluster, "mesh")))[0]
    assert event["type"] == "Warning" and event["reason"] == "InvalidSpec"
    assert "spec.authentication.psk.secretRef.name" in str(event["message"])
    assert cluster.config_secrets() == {}


async def test_a_refused_proposal_names_the_list_item_and_never_the_psk(cluster: Cluster) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(psk_secret())
    await cluster.apply(pod("a", "10.0.0.1", labels={"app": "mesh"}))
    spec = psk_mesh_spec()
    spec["proposals"] = {"esp": ["aes256gcm16", "3des-sha1"]}
    await cluster.apply(tunnel("mesh", spec))

    ready = await eventually(lambda: condition(cluster.tunnel("mesh"), "Ready"))
    assert ready["reason"] == "InvalidSpec"
    assert "spec.proposals.esp[1]" in ready["message"]
    event = (await eventually(lambda: events_about(cluster, "mesh")))[0]
    assert "spec.proposals.esp[1]" in str(event["message"])
    everything = str(cluster.tunnel("mesh").get("status")) + str(cluster.events())
    assert PSK not in everything


async def test_sidecar_reports_make_the_tunnel_ready(cluster: Cluster) -> None:
    await psk_mesh(cluster)
    pending = await eventually(lambda: condition(cluster.tunnel("mesh"), "Ready"))
    assert (pending["status"], pending["reason"]) == ("False", "SasPending")

    cluster.reports[("default", "a")] = SidecarReport(frozenset({"default/b"}))
    half = await eventually(
        lambda: (
            cluster.tunnel("mesh")["status"]["childSasEstablished"] == 1
            and cluster.tunnel("mesh")["status"]
        )
    )
    assert half["peersExpected"] == 2
    cluster.reports[("default", "b")] = SidecarReport(frozenset({"default/a"}))

    ready = await eventually(
        lambda: (c := condition(cluster.tunnel("mesh"), "Ready")).get("status") == "True" and c
    )
    assert ready["reason"] == "AllSasEstablished"
    assert cluster.tunnel("mesh")["status"]["childSasEstablished"] == 2


async def test_a_sidecar_error_degrades_the_tunnel_without_leaking_the_psk(
    cluster: Cluster,
) -> None:
    await psk_mesh(cluster)
    cluster.reports[("default", "a")] = SidecarReport(last_error=f"AUTHENTICATION_FAILED {PSK}")

    degraded = await eventually(
        lambda: (c := condition(cluster.tunnel("mesh"), "Degraded")).get("status") == "True" and c
    )
    assert degraded["reason"] == "SidecarError"
    assert "AUTHENTICATION_FAILED" in degraded["message"]
    assert PSK not in str(cluster.tunnel("mesh")["status"])


async def test_a_pod_that_should_carry_the_sidecar_and_does_not_is_reported(
    cluster: Cluster,
) -> None:
    await cluster.apply(namespace("default", **{"kipsec.io/inject": "enabled"}))
    bare = pod("bare", "10.0.0.5", labels={"app": "web"})
    bare["spec"]["containers"] = [{"name": "web", "image": "nginx"}]
    await cluster.apply(bare)

    event = (await eventually(lambda: events_about(cluster, "bare")))[0]
    assert event["reason"] == "SidecarMissing"
    assert "without the kipsec sidecar" in str(event["message"])
