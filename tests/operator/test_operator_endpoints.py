"""The operator's HTTPS endpoints (admission webhook, metrics) and its certificate work
(the operator CA in its Secret, the trust bundle in the pods' configuration)."""

from __future__ import annotations

import base64
import json
import ssl
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from kipsec_sidecar.identity import IdentityRequest, build_csr, generate_key
from support.operator_cluster import Cluster, call, document, eventually, psk_mesh
from support.operator_objects import (
    admission_review,
    namespace,
    new_pod,
    pod,
    psk_mesh_spec,
    tunnel,
)

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]


async def post(url: str, context: ssl.SSLContext, body: object) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, ssl=context) as response,
    ):
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


async def test_the_webhook_injects_a_pod_a_tunnel_selects(
    cluster: Cluster,
) -> None:
    url, context = cluster.endpoint, cluster.client_ssl
    await cluster.apply(namespace("default"))
    await cluster.apply(tunnel("mesh", psk_mesh_spec()))
    await eventually(lambda: cluster.operator.reconciler.objects["Tunnel"])

    answer = await post(f"{url}/mutate-pods", context, admission_review(new_pod("mesh")))

    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == "4f1c" and answer["response"]["allowed"] is True
    ops = json.loads(base64.b64decode(answer["response"]["patch"]))
    added = [op["value"] for op in ops if op["path"].startswith("/spec/initContainers")]
    assert any("kipsec" in json.dumps(value) for value in added)


async def test_the_webhook_leaves_an_unselected_pod_alone(
    cluster: Cluster,
) -> None:
    url, context = cluster.endpoint, cluster.client_ssl
    await cluster.apply(namespace("default"))

    answer = await post(f"{url}/mutate-pods", context, admission_review(new_pod("web")))

    assert answer["response"]["allowed"] is True
    assert "patch" not in answer["response"]


async def test_the_webhook_refuses_a_malformed_review_with_a_reason(
    cluster: Cluster,
) -> None:
    url, context = cluster.endpoint, cluster.client_ssl

    answer = await post(f"{url}/mutate-pods", context, {"kind": "AdmissionReview"})

    assert answer["response"]["allowed"] is False
    assert "malformed AdmissionReview" in answer["response"]["status"]["message"]


async def test_metrics_count_tunnels_and_configured_sidecars(
    cluster: Cluster,
) -> None:
    url, context = cluster.endpoint, cluster.client_ssl
    await psk_mesh(cluster)
    await eventually(lambda: len(cluster.config_secrets()) == 2)

    async def scrape() -> str | None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/metrics", ssl=context) as response,
        ):
            text = await response.text()
        return text if "kipsec_operator_sidecars_configured 2.0" in text else None

    text = await eventually(scrape)
    assert 'kipsec_operator_tunnels{ready="False"} 1.0' in text
    assert "kipsec_operator_reconcile_duration_seconds_count" in text


async def test_a_tunnel_certificate_puts_the_operator_ca_in_the_pods_configuration(
    cluster: Cluster,
) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(namespace("kipsec-system"))
    for name, ip in (("front", "10.0.0.1"), ("back", "10.0.0.2")):
        await cluster.apply(pod(name, ip, labels={"app": name}))
    await cluster.apply(
        {
            "apiVersion": "kipsec.io/v1alpha1",
            "kind": "TunnelCertificate",
            "metadata": {"name": "ids", "namespace": "default"},
            "spec": {"selector": {"podSelector": {}}, "issuer": {"type": "Operator"}},
        }
    )
    spec = {
        "selector": {
            "from": {"podSelector": {"matchLabels": {"app": "front"}}},
            "to": {"podSelector": {"matchLabels": {"app": "back"}}},
        },
        "authentication": {"certificate": {"tunnelCertificateRef": {"name": "ids"}}},
    }
    await cluster.apply(tunnel("front-to-back", spec))

    secret = await eventually(lambda: cluster.config_secrets().get("front"))
    ca_secret = cluster.emulator.stored("v1/secrets", "kipsec-system", "kipsec-ca")
    assert ca_secret is not None
    ca_files = document(secret)["peers"][0]["auth"]["certificate"]["caFiles"]
    bundle_key = ca_files[0].rsplit("/", 1)[-1]  # relative to the document
    assert secret["data"][bundle_key] == ca_secret["data"]["ca.crt"]
    assert "tls.key" not in json.dumps(secret["data"])


async def test_a_pod_gets_its_certificate_signed_and_another_pods_token_is_refused(
    cluster: Cluster,
) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(namespace("kipsec-system"))
    cart = pod("cart-0", "10.0.0.7", labels={"app": "cart"})
    cart["spec"]["serviceAccountName"] = "cart"
    created = await cluster.apply(cart)
    await cluster.apply(
        {
            "apiVersion": "kipsec.io/v1alpha1",
            "kind": "TunnelCertificate",
            "metadata": {"name": "ids", "namespace": "default"},
            "spec": {"selector": {"podSelector": {"matchLabels": {"app": "cart"}}}},
        }
    )
    cluster.emulator.token_reviews["cart-token"] = {
        "authenticated": True,
        "audiences": ["kipsec"],
        "user": {
            "username": "system:serviceaccount:default:cart",
            "extra": {
                "authentication.kubernetes.io/pod-name": ["cart-0"],
                "authentication.kubernetes.io/pod-uid": [created["metadata"]["uid"]],
            },
        },
    }
    request = IdentityRequest.from_strings("cluster.local", "default", "cart", ["10.0.0.7"])
    csr = build_csr(generate_key(), request).decode()

    def submit(token: str) -> Any:
        return call(cluster, "POST", "/v1/csr", {"csr": csr}, token)

    status, answer = await submit("cart-token")
    assert status == 200, answer
    issued = x509.load_pem_x509_certificate(answer["certificate"].encode())
    bundle = x509.load_pem_x509_certificates(answer["caBundle"].encode())
    issued.verify_directly_issued_by(bundle[0])
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{cluster.endpoint}/metrics", ssl=cluster.client_ssl) as response,
    ):
        metrics = await response.text()
    assert 'kipsec_operator_certificate_expiry_seconds{name="ids",namespace="default"}' in metrics
    tc_status = await eventually(
        lambda: (
            (
                found := cluster.emulator.stored(
                    "kipsec.io/v1alpha1/tunnelcertificates", "default", "ids"
                )
            )
            and (found.get("status") or {}).get("podsIssued") == 1
            and found["status"]
        )
    )
    assert tc_status["conditions"][0]["reason"] == "AllPodsIssued"
    assert tc_status["notAfter"] == answer["notAfter"]
    refused, reason = await submit("someone-elses-token")
    assert refused == 401 or refused == 403, reason
    assert "cart-token" not in json.dumps(reason)


async def test_per_tunnel_series_follow_the_tunnels_and_go_with_them(cluster: Cluster) -> None:
    url, context = cluster.endpoint, cluster.client_ssl
    await psk_mesh(cluster)
    series = 'kipsec_operator_tunnel_ready{namespace="default",tunnel="mesh"}'

    async def scrape(present: bool) -> str | None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/metrics", ssl=context) as response,
        ):
            text = await response.text()
        return text if (series in text) == present else None

    text = await eventually(lambda: scrape(True))
    assert f"{series} 0.0" in text  # no sidecar reports an SA yet
    assert 'kipsec_operator_tunnel_child_sas{namespace="default",tunnel="mesh"} 0.0' in text
    await cluster.delete("Tunnel", "default", "mesh")
    text = await eventually(lambda: scrape(False))
    assert 'tunnel="mesh"' not in text
