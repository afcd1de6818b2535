"""IKEv1 per Tunnel under kopf against the emulated API: `ikeVersion: 1` renders IKEv1
peers (with the sidecar's IKEv1 proposals when none are chosen), the deprecation shows in
the status and as a Warning Event (SHA-1 named in `proposals.ike`, the legacy opt-in, too),
and a combination IKEv1 does not have (an AEAD phase 1 proposal, Ed25519 certificates,
manual keying; SHA-1 with IKEv2) is a condition naming the field while a good Tunnel
beside it still renders."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest

from kipsec_sidecar.config import load_config_data
from kipsec_sidecar.config.model import DEFAULT_IKEV1_PROPOSALS
from support.operator_cluster import Cluster, condition, document, eventually
from support.operator_objects import namespace, pod, psk_mesh_spec, psk_secret, tunnel

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]


async def _pods(cluster: Cluster) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(psk_secret())
    for name, ip, app in (
        ("a", "10.0.0.1", "legacy"),
        ("b", "10.0.0.2", "legacy"),
        ("c", "10.0.1.1", "mesh"),
        ("d", "10.0.1.2", "mesh"),
    ):
        await cluster.apply(pod(name, ip, labels={"app": app}))


def _peers(cluster: Cluster, pod_name: str) -> list[dict[str, Any]] | None:
    secret = cluster.config_secrets().get(pod_name)
    if secret is None or "config.yaml" not in secret["data"]:
        return None
    peers: list[dict[str, Any]] = document(secret)["peers"]
    return peers or None


def _v1_spec(**extra: Any) -> dict[str, Any]:
    return {**psk_mesh_spec("legacy"), "ikeVersion": 1, **extra}


async def test_ike_version_1_renders_v1_peers_and_warns_that_it_is_deprecated(
    cluster: Cluster,
) -> None:
    await _pods(cluster)
    await cluster.apply(tunnel("legacy", _v1_spec()))
    await cluster.apply(tunnel("mesh", psk_mesh_spec()))

    (peer,) = await eventually(partial(_peers, cluster, "a"))
    assert peer["ikeVersion"] == 1
    # No proposals.ike chosen (the API server stored the IKEv2 default): the document
    # leaves it to the sidecar, whose loader then offers its IKEv1 default.
    assert "ike" not in peer["proposals"]
    secret = cluster.config_secrets()["a"]
    loaded = load_config_data(document(secret), source="test")
    assert loaded.proposals_for(loaded.peers[0]).ike == list(DEFAULT_IKEV1_PROPOSALS)
    (mesh_peer,) = await eventually(partial(_peers, cluster, "c"))
    assert "ikeVersion" not in mesh_peer  # IKEv2 documents are unchanged

    status = await eventually(lambda: cluster.tunnel("legacy").get("status"))
    assert [w.split(":")[0] for w in status["warnings"]] == ["spec.ikeVersion"]
    assert "RFC 9395" in status["warnings"][0]
    assert condition(cluster.tunnel("legacy"), "Ready")["reason"] == "SasPending"
    mesh_status = await eventually(lambda: cluster.tunnel("mesh").get("status"))
    assert mesh_status["warnings"] == []
    events = await eventually(
        lambda: [
            e
            for e in cluster.events()
            if e.get("involvedObject", {}).get("name") == "legacy" and e["reason"] == "Deprecated"
        ]
    )
    assert events[0]["type"] == "Warning" and "spec.ikeVersion" in str(events[0]["message"])


async def test_sha1_named_for_an_ikev1_tunnel_is_rendered_with_a_warning_and_an_event(
    cluster: Cluster,
) -> None:
    await _pods(cluster)
    sha1 = "aes128-sha1-modp2048"
    await cluster.apply(tunnel("legacy", _v1_spec(proposals={"ike": [sha1]})))

    (peer,) = await eventually(partial(_peers, cluster, "a"))
    assert peer["ikeVersion"] == 1 and peer["proposals"]["ike"] == [sha1]
    status = await eventually(lambda: cluster.tunnel("legacy").get("status"))
    assert [w.split(":")[0] for w in status["warnings"]] == [
        "spec.ikeVersion",
        "spec.proposals.ike[0]",
    ]
    assert "SHA-1" in status["warnings"][1]
    events = await eventually(
        lambda: [
            e
            for e in cluster.events()
            if e.get("involvedObject", {}).get("name") == "legacy"
            and e["reason"] == "Deprecated"
            and "spec.proposals.ike[0]" in str(e["message"])
        ]
    )
    assert events[0]["type"] == "Warning" and "SHA-1" in str(events[0]["message"])


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        (
            {"proposals": {"ike": ["aes256-sha256-modp2048", "aes256gcm16-prfsha256-ecp256"]}},
            "spec.proposals.ike[1]",
            "IKEv1 has no AEAD cipher for the ISAKMP SA",
        ),
        # SHA-1 is the legacy opt-in of IKEv1 only: with IKEv2 it is refused as always.
        (
            {
                "ikeVersion": 2,
                "proposals": {"ike": ["aes256gcm16-prfsha256-x25519", "aes128-sha1-modp2048"]},
            },
            "spec.proposals.ike[1]",
            "sha1 is not implemented",
        ),
        ({"keying": "manual", "manual": {"secretRef": {"name": "k"}}}, "spec.ikeVersion", ""),
    ],
)
async def test_a_combination_ikev1_lacks_is_a_condition_naming_the_field(
    cluster: Cluster, extra: dict[str, Any], field: str, words: str
) -> None:
    await _pods(cluster)
    spec = _v1_spec(**extra)
    if "manual" in extra:
        del spec["authentication"]
    await cluster.apply(tunnel("legacy", spec))
    await cluster.apply(tunnel("mesh", psk_mesh_spec()))

    ready = await eventually(lambda: condition(cluster.tunnel("legacy"), "Ready"))
    assert ready["reason"] == "InvalidSpec"
    assert field in ready["message"] and words in ready["message"]
    assert await eventually(partial(_peers, cluster, "c"))  # the good Tunnel renders
    assert "a" not in cluster.config_secrets()


async def test_ed25519_certificates_with_ikev1_name_the_field(cluster: Cluster) -> None:
    await _pods(cluster)
    await cluster.apply(
        {
            "apiVersion": "kipsec.io/v1alpha1",
            "kind": "TunnelCertificate",
            "metadata": {"name": "edwards", "namespace": "default"},
            "spec": {
                "selector": {"podSelector": {"matchLabels": {"app": "legacy"}}},
                "privateKey": {"algorithm": "Ed25519"},
            },
        }
    )
    spec = _v1_spec(authentication={"certificate": {"tunnelCertificateRef": {"name": "edwards"}}})
    await cluster.apply(tunnel("legacy", spec))

    ready = await eventually(
        lambda: (
            (c := condition(cluster.tunnel("legacy"), "Ready")).get("reason") == "InvalidSpec"
            and "spec.ikeVersion" in c["message"]
            and c
        )
    )
    assert "EdDSA" in ready["message"]
