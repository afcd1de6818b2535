"""A Tunnel reaches into another namespace only with that namespace's consent.

Namespace `pay` runs its own mesh (its own PSK); a Tunnel in `default` selects pay's
clients with a namespaceSelector. Until pay's Namespace carries the annotation
`kipsec.io/allow-tunnels-from: default`, nothing of default's Tunnel reaches pay's
Secrets, and the Tunnel says why; once it does, pay's pods get the peer and the PSK.
"""

from __future__ import annotations

import pytest

from support.operator_cluster import Cluster, condition, document, eventually
from support.operator_objects import PSK, b64, namespace, pod, psk_mesh_spec, psk_secret, tunnel

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]

PAY_PSK = "pay's own pre-shared key, 32 bytes"


def cross_spec() -> dict[str, object]:
    return {
        "selector": {
            "from": {
                "podSelector": {"matchLabels": {"app": "client"}},
                "namespaceSelector": {"matchLabels": {"team": "pay"}},
            },
            "to": {"podSelector": {"matchLabels": {"app": "server"}}},
        },
        "authentication": {"psk": {"secretRef": {"name": "mesh-psk", "key": "psk"}}},
    }


def peers(cluster: Cluster, namespace_: str, pod_name: str) -> list[str]:
    secret = cluster.config_secrets(namespace_).get(pod_name)
    if secret is None or "config.yaml" not in (secret.get("data") or {}):
        return []
    return sorted(p["name"] for p in document(secret)["peers"])


async def pay_without_consent(cluster: Cluster) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(namespace("pay", team="pay"))
    await cluster.apply(psk_secret())
    await cluster.apply(psk_secret("pay-psk", namespace="pay", value=PAY_PSK))
    await cluster.apply(pod("s1", "10.0.0.1", labels={"app": "server"}))
    await cluster.apply(pod("c1", "10.0.1.1", namespace="pay", labels={"app": "client"}))
    await cluster.apply(pod("c2", "10.0.1.2", namespace="pay", labels={"app": "client"}))
    await cluster.apply(tunnel("local", psk_mesh_spec("client", "pay-psk"), namespace="pay"))
    await cluster.apply(tunnel("cross", cross_spec()))


async def test_without_consent_the_other_namespace_gets_no_peer_and_no_psk(
    cluster: Cluster,
) -> None:
    await pay_without_consent(cluster)

    degraded = await eventually(
        lambda: (
            (c := condition(cluster.tunnel("cross"), "Degraded")).get("reason")
            == "NamespaceNotConsenting"
            and c
        )
    )
    assert degraded["message"] == (
        'spec.selector.from.namespaceSelector: namespace "pay" does not allow Tunnels'
        ' from "default" (annotation kipsec.io/allow-tunnels-from)'
    )
    ready = condition(cluster.tunnel("cross"), "Ready")  # the cause, not "NoPeers"
    assert (ready["reason"], ready["message"]) == ("NamespaceNotConsenting", degraded["message"])
    await eventually(lambda: peers(cluster, "pay", "c1") == ["pay/c2"])
    pay_data = cluster.config_secrets("pay")["c1"]["data"]
    assert b64(PSK) not in pay_data.values()
    assert peers(cluster, "default", "s1") == []
    refusals = [e for e in cluster.events() if e.get("reason") == "NamespaceNotConsenting"]
    assert len(refusals) == 1
    assert refusals[0]["involvedObject"]["name"] == "cross"


async def test_annotating_the_namespace_gives_its_pods_the_peer_and_the_psk(
    cluster: Cluster,
) -> None:
    await pay_without_consent(cluster)
    await eventually(lambda: peers(cluster, "pay", "c1") == ["pay/c2"])

    consent = {"kipsec.io/allow-tunnels-from": "default"}
    await cluster.patch("Namespace", None, "pay", {"metadata": {"annotations": consent}})

    await eventually(lambda: peers(cluster, "pay", "c1") == ["default/s1", "pay/c2"])
    assert b64(PSK) in cluster.config_secrets("pay")["c1"]["data"].values()
    assert peers(cluster, "default", "s1") == ["pay/c1", "pay/c2"]
    await eventually(
        lambda: condition(cluster.tunnel("cross"), "Degraded").get("reason") == "AsExpected"
    )
