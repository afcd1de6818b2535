"""ExternalPeers under the real operator: the pods' peer entries, bad input as
conditions naming the field (good Tunnels unaffected), removal, status from reports."""

from __future__ import annotations

import base64
from functools import partial
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from kipsec_operator.reconcile.external import external_peer_name
from kipsec_operator.reconcile.status import SidecarReport
from support.operator_cluster import Cluster, condition, document, eventually
from support.operator_objects import (
    PSK,
    config_map,
    external_peer,
    external_spec,
    namespace,
    pod,
    psk_mesh_spec,
    psk_secret,
    tunnel,
)
from support.pki import CertificateAuthority

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]

SITE = external_peer_name(("default", "site"))


async def _pods(cluster: Cluster) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(psk_secret("site-psk"))
    await cluster.apply(psk_secret())
    for name, ip, app in (
        ("c1", "10.0.0.1", "client"),
        ("c2", "10.0.0.2", "client"),
        ("m1", "10.0.1.1", "mesh"),
        ("m2", "10.0.1.2", "mesh"),
    ):
        await cluster.apply(pod(name, ip, labels={"app": app}))


SITE_CA = CertificateAuthority.root("site CA").cert.public_bytes(Encoding.PEM).decode()
"""A CA of the site's own (not kipsec's), as a gateway's certificate chains to."""


def _pods_certificate() -> dict[str, Any]:
    """The TunnelCertificate "pods": the operator issues the client pods' certificates."""
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "TunnelCertificate",
        "metadata": {"name": "pods", "namespace": "default"},
        "spec": {"selector": {"podSelector": {"matchLabels": {"app": "client"}}}},
    }


def _certificate_peer(ca: dict[str, Any]) -> dict[str, Any]:
    """The ExternalPeer "site" with certificates: the CA from `ca`, the pods presenting
    the TunnelCertificate "pods"."""
    return external_peer(
        authentication={"certificate": {**ca, "tunnelCertificateRef": {"name": "pods"}}}
    )


def _entry(cluster: Cluster, pod_name: str) -> dict[str, Any] | None:
    secret = cluster.config_secrets().get(pod_name)
    if secret is None or "config.yaml" not in secret["data"]:
        return None
    peers = document(secret)["peers"]
    return next((p for p in peers if p["name"] == SITE), None)


async def test_each_selected_pod_gets_the_peer_with_its_selectors_and_the_psk(
    cluster: Cluster,
) -> None:
    await _pods(cluster)
    await cluster.apply(external_peer())
    await cluster.apply(tunnel("to-site", external_spec()))

    for name, ip in (("c1", "10.0.0.1"), ("c2", "10.0.0.2")):
        entry = await eventually(partial(_entry, cluster, name))
        assert entry["address"] == "192.0.2.10" and entry["mode"] == "tunnel"
        assert entry["trafficSelectors"] == {"local": [f"{ip}/32"], "remote": ["172.20.0.0/24"]}
        data = cluster.config_secrets()[name]["data"]
        psk = base64.b64decode(data[entry["auth"]["psk"]["secretFile"]]).decode()
        assert psk == PSK
    assert "m1" not in cluster.config_secrets()
    status = await eventually(
        lambda: (s := cluster.external_peer("site").get("status")) and s.get("pods") == 2 and s
    )
    assert status["tunnels"] == 1 and status["addresses"] == ["192.0.2.10"]
    assert PSK not in str(status)


@pytest.mark.parametrize(
    ("peer", "tunnel_spec", "field"),
    [
        (external_peer(subnets=["172.20.0.0/33"]), None, "spec.subnets[0]"),
        (external_peer(subnets=["10.0.1.0/24"]), None, "spec.subnets[0]"),
        (
            external_peer(authentication={"psk": {"secretRef": {"name": "gone", "key": "psk"}}}),
            None,
            "spec.authentication.psk.secretRef.name",
        ),
        (
            external_peer(
                authentication={
                    "certificate": {
                        "caSecretRef": {"name": "no-ca"},
                        "tunnelCertificateRef": {"name": "pods"},
                    }
                }
            ),
            None,
            "spec.authentication.certificate.caSecretRef.name",
        ),
        (
            external_peer(authentication={"psk": {"secretRef": {"name": "site-psk", "key": "k"}}}),
            None,
            "spec.authentication.psk.secretRef.key",
        ),
        (
            _certificate_peer({"caConfigMapRef": {"name": "no-cas"}}),
            None,
            "spec.authentication.certificate.caConfigMapRef.name",
        ),
        (
            _certificate_peer({"caSecretRef": {"name": "site-psk", "key": "psk"}}),
            None,
            "spec.authentication.certificate.caSecretRef.key",
        ),
        (external_peer(identity={"dn": "vpn.example.com"}), None, "spec.identity.dn"),
        (external_peer(identity={"fqdn": "-vpn.example.com"}), None, "spec.identity.fqdn"),
        (external_peer(subnets=["10.0.1.0/24"]), None, "spec.subnets[0]"),
        (external_peer(subnets=["172.20.0.0/16", "fd00::/64"]), None, "spec.subnets[1]"),
        (external_peer(address="unresolvable.invalid"), None, "spec.address"),
        (external_peer(), external_spec("client", "nowhere"), "spec.selector.to.externalPeers[0]"),
    ],
)
async def test_bad_input_is_a_condition_naming_the_field_and_a_good_tunnel_still_renders(
    cluster: Cluster, peer: dict[str, Any], tunnel_spec: dict[str, Any] | None, field: str
) -> None:
    await _pods(cluster)
    await cluster.apply(peer)
    await cluster.apply(tunnel("to-site", tunnel_spec or external_spec()))
    await cluster.apply(tunnel("mesh", psk_mesh_spec()))

    if tunnel_spec is None:
        ready = await eventually(
            lambda: (
                (c := condition(cluster.external_peer("site"), "Ready")).get("reason")
                == "InvalidSpec"
                and c
            ),
            timeout=15,
        )
        assert field in ready["message"]
        events = await eventually(
            lambda: [
                e
                for e in cluster.events()
                if e.get("involvedObject", {}).get("kind") == "ExternalPeer"
            ]
        )
        assert events[0]["type"] == "Warning" and events[0]["reason"] == "InvalidSpec"
        assert field in str(events[0]["message"])
    tunnel_ready = await eventually(
        lambda: (
            (c := condition(cluster.tunnel("to-site"), "Ready")).get("reason") == "InvalidSpec"
            and c
        ),
        timeout=15,
    )
    assert "spec.selector.to.externalPeers[0]" in tunnel_ready["message"]
    mesh = await eventually(lambda: cluster.config_secrets().get("m1"))
    assert [p["name"] for p in document(mesh)["peers"]] == ["default/m2"]
    assert _entry(cluster, "c1") is None


async def test_a_ca_bundle_from_a_configmap_is_followed_and_a_bad_one_configures_nothing(
    cluster: Cluster,
) -> None:
    """The CA comes from a ConfigMap the operator watches: missing, then not PEM, each a
    condition naming the field with no pod configured towards the peer (the mesh
    Tunnel's pods keep their document); a good bundle reaches the pods' entries; breaking
    it again removes them rather than leaving a CA the sidecar would refuse."""
    await _pods(cluster)
    await cluster.apply(_pods_certificate())
    await cluster.apply(_certificate_peer({"caConfigMapRef": {"name": "public-cas"}}))
    await cluster.apply(tunnel("to-site", external_spec()))
    await cluster.apply(tunnel("mesh", psk_mesh_spec()))
    where = "spec.authentication.certificate.caConfigMapRef"

    await _invalid(cluster, f"{where}.name", 'ConfigMap "public-cas" not found')
    await cluster.apply(config_map("public-cas", {"ca.crt": "-----BEGIN CERTIFICATE-----\n"}))
    await _invalid(cluster, f"{where}.key", "holds no PEM CA certificate")
    mesh = await eventually(lambda: cluster.config_secrets().get("m1"))
    assert [p["name"] for p in document(mesh)["peers"]] == ["default/m2"]
    assert _entry(cluster, "c1") is None

    await cluster.patch("ConfigMap", "default", "public-cas", {"data": {"ca.crt": SITE_CA}})
    entry = await eventually(partial(_entry, cluster, "c1"), timeout=15)
    (ca_file,) = entry["auth"]["certificate"]["caFiles"]
    data = cluster.config_secrets()["c1"]["data"]
    assert base64.b64decode(data[ca_file]).decode() == SITE_CA
    assert entry["auth"]["certificate"]["source"] == "operator"

    await cluster.patch("ConfigMap", "default", "public-cas", {"data": {"ca.crt": "junk"}})
    await eventually(lambda: _entry(cluster, "c1") is None, timeout=15)
    await _invalid(cluster, f"{where}.key", "holds no PEM CA certificate")


async def test_two_tunnels_linking_a_pod_to_one_peer_give_a_conflict_naming_both(
    cluster: Cluster,
) -> None:
    await _pods(cluster)
    await cluster.apply(external_peer())
    await cluster.apply(tunnel("a-first", external_spec()))
    await cluster.apply(tunnel("b-second", external_spec()))

    degraded = await eventually(
        lambda: (
            (c := condition(cluster.tunnel("b-second"), "Degraded")).get("reason") == "PeerConflict"
            and c
        ),
        timeout=15,
    )
    assert "'a-first'" in degraded["message"] and "'b-second'" in degraded["message"]
    assert 'ExternalPeer "site"' in degraded["message"]
    secret = await eventually(lambda: cluster.config_secrets().get("c1"))
    assert [p["name"] for p in document(secret)["peers"]] == [SITE]
    await eventually(
        lambda: condition(cluster.tunnel("a-first"), "Degraded").get("reason") == "AsExpected"
    )

    await cluster.delete("Tunnel", "default", "a-first")
    await eventually(
        lambda: condition(cluster.tunnel("b-second"), "Degraded").get("reason") == "AsExpected",
        timeout=15,
    )
    assert _entry(cluster, "c1") is not None


async def test_the_later_of_two_overlapping_peers_works_once_the_first_is_deleted(
    cluster: Cluster,
) -> None:
    """The overlap names the first peer; deleting it makes the second valid, and its pods
    get their entries without any change to the second peer or its Tunnel."""
    await _pods(cluster)
    await cluster.apply(external_peer("a-site"))
    await cluster.apply(external_peer(address="192.0.2.20"))
    await cluster.apply(tunnel("to-site", external_spec()))
    await _invalid(cluster, "spec.subnets[0]", 'ExternalPeer "a-site"')
    assert _entry(cluster, "c1") is None

    await cluster.delete("ExternalPeer", "default", "a-site")
    entry = await eventually(partial(_entry, cluster, "c1"), timeout=15)
    assert entry["address"] == "192.0.2.20"
    await eventually(
        lambda: condition(cluster.tunnel("to-site"), "Ready").get("reason") != "InvalidSpec"
    )


async def _invalid(cluster: Cluster, field: str, words: str) -> None:
    """Wait for the ExternalPeer "site" to be InvalidSpec naming `field` with `words`."""
    await eventually(
        lambda: (
            (c := condition(cluster.external_peer("site"), "Ready")).get("reason") == "InvalidSpec"
            and field in c["message"]
            and words in c["message"]
        ),
        timeout=15,
    )


async def test_deleting_the_peer_or_the_tunnel_removes_the_entries(cluster: Cluster) -> None:
    await _pods(cluster)
    await cluster.apply(external_peer())
    await cluster.apply(tunnel("to-site", external_spec()))
    await eventually(lambda: _entry(cluster, "c1"))

    await cluster.delete("ExternalPeer", "default", "site")
    await eventually(lambda: _entry(cluster, "c1") is None)
    await eventually(
        lambda: condition(cluster.tunnel("to-site"), "Ready").get("reason") == "InvalidSpec"
    )

    await cluster.apply(external_peer())
    await eventually(lambda: _entry(cluster, "c1"))
    await cluster.delete("Tunnel", "default", "to-site")
    await eventually(lambda: _entry(cluster, "c1") is None and _entry(cluster, "c2") is None)
    assert document(cluster.config_secrets()["c1"])["peers"] == []


async def test_the_peer_counts_established_pods_and_names_failures_from_reports(
    cluster: Cluster,
) -> None:
    await _pods(cluster)
    await cluster.apply(external_peer())
    await cluster.apply(tunnel("to-site", external_spec()))
    await eventually(lambda: _entry(cluster, "c2"))

    cluster.reports[("default", "c1")] = SidecarReport(frozenset({SITE}))
    cluster.reports[("default", "c2")] = SidecarReport(
        last_error=f"AUTHENTICATION_FAILED {PSK}",
        failures=frozenset({(SITE, "authentication_failed")}),
    )
    status = await eventually(
        lambda: (
            (s := cluster.external_peer("site").get("status"))
            and s.get("podsEstablished") == 1
            and s.get("podErrors")
            and s
        )
    )
    assert status["podErrors"] == [{"pod": "default/c2", "reason": "authentication_failed"}]
    assert condition(cluster.external_peer("site"), "Degraded")["reason"] == "SidecarError"
    assert PSK not in str(status)

    cluster.reports[("default", "c2")] = SidecarReport(frozenset({SITE}))
    ready = await eventually(
        lambda: (
            (c := condition(cluster.external_peer("site"), "Ready")).get("status") == "True" and c
        )
    )
    assert ready["reason"] == "AllSasEstablished"
    assert cluster.tunnel("to-site")["status"]["childSasEstablished"] == 2
