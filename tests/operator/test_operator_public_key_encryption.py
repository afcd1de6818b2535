"""IKEv1 public-key encryption under kopf against the emulated API: the operator signs
each pod's CSR, records the certificate in that pod's Secret, and gives every pod its
peers' certificates (`peerCertFile`), the Tunnel's Ready saying `PeerCertificatesPending`
until it has; a renewed certificate reaches the peers; private
keys appear nowhere; a TunnelCertificate issuing ECDSA keys is a condition naming
`spec.authentication.certificate.publicKeyEncryption`."""

from __future__ import annotations

import base64
import json
from functools import partial
from typing import Any

import pytest

from kipsec_operator.handlers import Operator
from kipsec_operator.reconcile.render import POD_CERTIFICATE_KEY
from kipsec_operator.reconciler import data_digests
from kipsec_sidecar.config import load_config_data
from kipsec_sidecar.identity import IdentityRequest, build_csr, generate_key
from support.operator_cluster import Cluster, bound_token, call, condition, document, eventually
from support.operator_objects import namespace, pod, tunnel

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]

PODS = {"keeper-0": "10.0.0.1", "keeper-1": "10.0.0.2"}
UIDS = {
    "keeper-0": "0a1b2c3d-0000-4000-8000-000000000000",
    "keeper-1": "9f8e7d6c-0000-4000-8000-000000000001",
}
"""Distinct in their first 16 hex digits: the Secret's name comes from them."""
FIELD = "spec.authentication.certificate.publicKeyEncryption"


def _tunnel_certificate(name: str, algorithm: str) -> dict[str, Any]:
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "TunnelCertificate",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"podSelector": {"matchLabels": {"ids": name}}},
            "privateKey": {"algorithm": algorithm},
        },
    }


def _spec(certificate: str, app: str) -> dict[str, Any]:
    return {
        "ikeVersion": 1,
        "selector": {"from": {"podSelector": {"matchLabels": {"app": app}}}},
        "authentication": {
            "certificate": {
                "tunnelCertificateRef": {"name": certificate},
                "publicKeyEncryption": "revised",
            }
        },
    }


async def _setup(cluster: Cluster) -> dict[str, str]:
    """Two pods under an RSA TunnelCertificate and a public-key-encryption Tunnel; their
    uids by name."""
    await cluster.apply(namespace("default"))
    await cluster.apply(namespace("kipsec-system"))
    await cluster.apply(_tunnel_certificate("rsa-ids", "RSA"))
    uids = {}
    for name, ip in PODS.items():
        labels = {"app": "keeper", "ids": "rsa-ids"}
        created = await cluster.apply(pod(name, ip, labels=labels, uid=UIDS[name]))
        uids[name] = created["metadata"]["uid"]
        bound_token(cluster, f"token-{name}", name, uids[name])
    await cluster.apply(tunnel("sealed", _spec("rsa-ids", "keeper")))
    return uids


async def _enroll(cluster: Cluster, name: str) -> str:
    """What the pod's sidecar does: a new RSA key, a CSR, the certificate (PEM) — once
    its configuration Secret exists, as a sidecar enrolls only after reading its document
    from it (the signing replica records the certificate in that Secret, and skips a pod
    that has none yet)."""
    await eventually(lambda: cluster.config_secrets().get(name))
    request = IdentityRequest.from_strings("cluster.local", "default", "default", [PODS[name]])
    csr = build_csr(generate_key("RSA"), request).decode()
    status, answer = await call(cluster, "POST", "/v1/csr", {"csr": csr}, f"token-{name}")
    assert status == 200, answer
    return str(answer["certificate"])


def _peer_certificate(cluster: Cluster, name: str) -> str | None:
    """The PEM that `name`'s document names as its one peer's certificate, if any."""
    secret = cluster.config_secrets().get(name)
    if secret is None or "config.yaml" not in secret["data"]:
        return None
    peers = document(secret)["peers"]
    if not peers:
        return None
    certificate = peers[0]["auth"]["certificate"]
    assert certificate["publicKeyEncryption"] == "revised"
    return base64.b64decode(secret["data"][certificate["peerCertFile"]]).decode()


def _b64(pem: str) -> str:
    return base64.b64encode(pem.encode()).decode()


async def test_each_pod_gets_the_certificate_its_peer_was_issued(cluster: Cluster) -> None:
    await _setup(cluster)
    # Before any certificate: each pod has its document with local.auth (so its
    # sidecar enrolls) and no peer yet.
    secret = await eventually(lambda: cluster.config_secrets().get("keeper-0"))
    first = document(secret)
    assert first["peers"] == []
    assert first["local"]["auth"]["certificate"]["source"] == "operator"
    # The Tunnel says what it waits for, not just that SAs are pending.
    ready = await eventually(
        lambda: (
            (c := condition(cluster.tunnel("sealed"), "Ready")).get("reason")
            == "PeerCertificatesPending"
            and c
        )
    )
    assert ready["message"].startswith("2 pod(s) wait for their peers' certificates")

    certificates = {name: await _enroll(cluster, name) for name in PODS}

    for name, other in (("keeper-0", "keeper-1"), ("keeper-1", "keeper-0")):
        expected = certificates[other]
        assert await eventually(partial(_peer_certificate, cluster, name)) == expected
    # Both configured: what is left is the IKE exchanges (no sidecar reports here).
    assert await eventually(
        lambda: condition(cluster.tunnel("sealed"), "Ready").get("reason") == "SasPending"
    )
    for name in PODS:
        secret = cluster.config_secrets()[name]
        # The pod's own certificate is recorded in its own Secret ...
        assert secret["data"][POD_CERTIFICATE_KEY] == _b64(certificates[name])
        # ... no key is anywhere, and the sidecar's loader takes the document.
        assert "PRIVATE KEY" not in json.dumps(
            {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        )
        loaded = load_config_data(document(secret), source="test")
        assert loaded.peers[0].ike_version == 1

    # A renewal (a new key) reaches the peer; a later pass keeps the pod's record.
    renewed = await _enroll(cluster, "keeper-1")
    assert renewed != certificates["keeper-1"]
    assert await eventually(lambda: _peer_certificate(cluster, "keeper-0") == renewed or None)
    assert cluster.config_secrets()["keeper-1"]["data"][POD_CERTIFICATE_KEY] == _b64(renewed)


async def test_an_ecdsa_tunnel_certificate_is_refused_naming_the_field(
    cluster: Cluster,
) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(_tunnel_certificate("ec-ids", "ECDSA"))
    await cluster.apply(pod("x", "10.0.1.1", labels={"app": "x", "ids": "ec-ids"}))
    await cluster.apply(tunnel("wrong", _spec("ec-ids", "x")))
    degraded = await eventually(
        lambda: (
            cluster.tunnel("wrong").get("status")
            and condition(cluster.tunnel("wrong"), "Degraded").get("status") == "True"
            and condition(cluster.tunnel("wrong"), "Degraded")
        )
    )
    assert FIELD in degraded["message"] and "ECDSA" in degraded["message"]
    assert "x" not in cluster.config_secrets()


async def test_a_pass_never_overwrites_or_removes_the_pods_certificate(cluster: Cluster) -> None:
    await _setup(cluster)
    certificate = _b64(await _enroll(cluster, "keeper-0"))
    secret = await eventually(
        lambda: (
            (found := cluster.config_secrets().get("keeper-0"))
            and found["data"].get(POD_CERTIFICATE_KEY) == certificate
            and found
        )
    )
    data = secret["data"]
    stale = _b64("an older certificate")
    # Passes that started before the signing replica wrote: one without the key, one
    # with an older value; neither may touch what the Secret holds now.
    without = {k: v for k, v in data.items() if k != POD_CERTIFICATE_KEY}
    for manifest_data, previous in (
        (without, without),
        ({**data, POD_CERTIFICATE_KEY: stale}, data),
    ):
        manifest = {"metadata": secret["metadata"], "data": manifest_data}
        # The Writer the reconciler uses, on this test's loop (kopf runs in a thread).
        writer = Operator(cluster.operator.connection)
        async with writer.kube:
            await writer.apply_secret(manifest, previous, data_digests(manifest_data))
        stored = cluster.config_secrets()["keeper-0"]["data"]
        assert stored[POD_CERTIFICATE_KEY] == certificate
