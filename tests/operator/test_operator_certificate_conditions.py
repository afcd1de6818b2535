"""A TunnelCertificate's `Ready` condition tells the truth: a spec the operator cannot use
is `InvalidSpec` naming the field (the emulator, like an API server running an older CRD,
does not evaluate the CEL bounds), a missing issuer Secret is `IssuerUnavailable` naming
it, and a pod's refused request is `IssuanceFailed` naming the pod. No spec value makes
`GET /v1/identity` answer 500."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kipsec_operator.certificates.ca import generate_ca
from kipsec_sidecar.identity import IdentityRequest, build_csr, generate_key
from support.operator_cluster import Cluster, bound_token, call, condition, eventually
from support.operator_objects import ca_secret, ca_secret_certificate, namespace, pod

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]

TC = "kipsec.io/v1alpha1/tunnelcertificates"


def ready(cluster: Cluster, name: str = "ids") -> dict[str, Any]:
    found = cluster.emulator.stored(TC, "default", name) or {}
    return condition(found, "Ready")


def operator_issued(name: str, duration: str, renew_before: str) -> dict[str, Any]:
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "TunnelCertificate",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"podSelector": {"matchLabels": {"app": "cart"}}},
            "duration": duration,
            "renewBefore": renew_before,
        },
    }


async def cart_pod(cluster: Cluster) -> None:
    """Pod cart-0 (10.0.0.7, app=cart) and a token the TokenReview binds to it."""
    await cluster.apply(namespace("default"))
    await cluster.apply(namespace("kipsec-system"))
    created = await cluster.apply(pod("cart-0", "10.0.0.7", labels={"app": "cart"}))
    bound_token(cluster, "cart-token", "cart-0", created["metadata"]["uid"])


async def casecret_issuer(cluster: Cluster, age: timedelta, validity: timedelta) -> None:
    """cart-0, Secret shop-ca with a CA made `age` ago valid for `validity`, and the
    TunnelCertificate `ids` it signs for (24h, renewed 8h before)."""
    authority = generate_ca(datetime.now(UTC) - age, validity, os.urandom)
    await cart_pod(cluster)
    await cluster.apply(ca_secret("shop-ca", authority.cert_pem(), authority.key_pem()))
    selector = {"podSelector": {"matchLabels": {"app": "cart"}}}
    await cluster.apply(ca_secret_certificate("ids", "shop-ca", selector, "24h", "8h"))


def cart_csr() -> str:
    request = IdentityRequest.from_strings("cluster.local", "default", "default", ["10.0.0.7"])
    return build_csr(generate_key(), request).decode()


async def test_lifetimes_out_of_bounds_are_invalid_spec_and_never_a_500(cluster: Cluster) -> None:
    await cart_pod(cluster)
    await cluster.apply(operator_issued("ids", "876000000h", "8h"))

    status, body = await call(cluster, "GET", "/v1/identity")
    assert (status, body["code"]) == (403, "invalid-tunnelcertificate"), body
    assert "spec.duration" in body["reason"]
    found = await eventually(
        lambda: ready(cluster).get("reason") == "InvalidSpec" and ready(cluster)
    )
    assert found["status"] == "False"
    assert found["message"].startswith("spec.duration: 876000000h")

    await cluster.patch(
        "TunnelCertificate", "default", "ids", {"spec": {"duration": "1s", "renewBefore": "0s"}}
    )
    found = await eventually(
        lambda: "1s is outside 1h to 720h" in ready(cluster).get("message", "") and ready(cluster)
    )
    assert (found["status"], found["reason"]) == ("False", "InvalidSpec")
    status, body = await call(cluster, "POST", "/v1/csr", {"csr": cart_csr()})
    assert (status, body["code"]) == (403, "invalid-tunnelcertificate"), body

    await cluster.patch(
        "TunnelCertificate", "default", "ids", {"spec": {"duration": "24h", "renewBefore": "8h"}}
    )
    status, body = await call(cluster, "POST", "/v1/csr", {"csr": cart_csr()})
    assert status == 200, body
    await eventually(lambda: ready(cluster).get("reason") == "AllPodsIssued")


async def test_a_missing_issuer_secret_is_not_ready_and_names_the_secret(cluster: Cluster) -> None:
    await casecret_issuer(cluster, timedelta(hours=1), timedelta(days=30))
    status, body = await call(cluster, "POST", "/v1/csr", {"csr": cart_csr()})
    assert status == 200, body
    await eventually(lambda: ready(cluster).get("reason") == "AllPodsIssued")

    await cluster.delete("Secret", "default", "shop-ca")

    # the trust-bundle timer (every 5 s here) notices without any pod asking
    found = await eventually(
        lambda: ready(cluster).get("reason") == "IssuerUnavailable" and ready(cluster), 15
    )
    assert found["status"] == "False"
    assert found["message"] == "spec.issuer.caSecretRef: Secret default/shop-ca not found"
    status, body = await call(cluster, "POST", "/v1/csr", {"csr": cart_csr()})
    assert (status, body["code"], body["retryable"]) == (503, "ca-unavailable", True)
    assert "Secret default/shop-ca not found" in body["reason"]


async def test_a_refused_pod_is_named_in_the_condition(cluster: Cluster) -> None:
    await cart_pod(cluster)
    tc = operator_issued("ids", "24h", "8h")
    tc["spec"]["privateKey"] = {"algorithm": "ECDSA", "size": 384}
    await cluster.apply(tc)
    await eventually(lambda: ready(cluster).get("reason") == "PodsPending")

    status, body = await call(cluster, "POST", "/v1/csr", {"csr": cart_csr()})  # a P-256 key
    assert (status, body["code"]) == (403, "key-type"), body

    found = await eventually(
        lambda: ready(cluster).get("reason") == "IssuanceFailed" and ready(cluster)
    )
    assert found["status"] == "False"
    assert "pod default/cart-0: key-type: the CSR key is ECDSA 256" in found["message"]


async def test_an_expired_issuer_ca_is_not_ready_and_signs_nothing(cluster: Cluster) -> None:
    await casecret_issuer(cluster, timedelta(days=2), timedelta(days=1))

    found = await eventually(
        lambda: ready(cluster).get("reason") == "IssuerUnavailable" and ready(cluster)
    )
    assert found["message"].startswith(
        "spec.issuer.caSecretRef: Secret default/shop-ca: the CA expired at "
    )
    status, body = await call(cluster, "POST", "/v1/csr", {"csr": cart_csr()})
    assert (status, body["code"]) == (503, "ca-unavailable"), body


@pytest.mark.parametrize("cluster", [3600.0], indirect=True)  # the timer ticks once, at start
async def test_a_spec_change_and_a_deleted_issuer_secret_show_without_the_timer(
    cluster: Cluster,
) -> None:
    await casecret_issuer(cluster, timedelta(hours=1), timedelta(days=30))
    await eventually(lambda: ready(cluster).get("reason") == "PodsPending")

    await cluster.patch("TunnelCertificate", "default", "ids", {"spec": {"duration": "1s"}})
    await eventually(lambda: ready(cluster).get("reason") == "InvalidSpec")
    await cluster.patch("TunnelCertificate", "default", "ids", {"spec": {"duration": "24h"}})
    await eventually(lambda: ready(cluster).get("reason") == "PodsPending")
    await cluster.delete("Secret", "default", "shop-ca")
    found = await eventually(
        lambda: ready(cluster).get("reason") == "IssuerUnavailable" and ready(cluster)
    )
    assert found["message"] == "spec.issuer.caSecretRef: Secret default/shop-ca not found"
