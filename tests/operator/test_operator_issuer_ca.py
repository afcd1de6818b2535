"""A TunnelCertificate whose CA is the user's Secret (`spec.issuer.type: CASecret`): when
the CA in the Secret is replaced, the old one stays in the pods' trust bundles for
`spec.duration`, so pods still holding certificates it signed keep authenticating."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kipsec_operator.certificates.ca import generate_ca
from support.operator_cluster import Cluster, eventually
from support.operator_objects import b64, ca_secret, ca_secret_certificate, namespace, pod, tunnel

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]


def trust_files(cluster: Cluster, pod_name: str) -> list[str]:
    """The CA bundle files (`ca-*.crt`) of a pod's configuration Secret, decoded."""
    found = cluster.config_secrets().get(pod_name) or {}
    data = found.get("data") or {}
    return [base64.b64decode(v).decode() for k, v in data.items() if k.startswith("ca-")]


async def test_a_ca_replaced_in_the_issuer_secret_stays_trusted_for_the_duration(
    cluster: Cluster,
) -> None:
    now = datetime.now(UTC)
    first, second = (
        generate_ca(now - timedelta(hours=1), timedelta(days=30), os.urandom) for _ in range(2)
    )
    old, new = first.cert_pem().decode().strip(), second.cert_pem().decode().strip()
    await cluster.apply(namespace("default"))
    await cluster.apply(ca_secret("shop-ca", first.cert_pem(), first.key_pem()))
    selector = {"podSelector": {"matchLabels": {"app": "mesh"}}}
    await cluster.apply(ca_secret_certificate("ids", "shop-ca", selector, "24h", "8h"))
    await cluster.apply(pod("a", "10.0.0.1", labels={"app": "mesh"}))
    await cluster.apply(pod("b", "10.0.0.2", labels={"app": "mesh"}))
    mesh: dict[str, Any] = {
        "selector": {"from": {"podSelector": {"matchLabels": {"app": "mesh"}}}},
        "authentication": {"certificate": {"tunnelCertificateRef": {"name": "ids"}}},
    }
    await cluster.apply(tunnel("mesh", mesh))
    await eventually(lambda: [f.strip() for f in trust_files(cluster, "a")] == [old], 15)

    await cluster.patch(
        "Secret",
        "default",
        "shop-ca",
        {
            "data": {
                "tls.crt": b64(second.cert_pem().decode()),
                "tls.key": b64(second.key_pem().decode()),
            }
        },
    )

    def both() -> bool:
        files = trust_files(cluster, "a")
        return len(files) == 1 and old in files[0] and new in files[0]

    await eventually(both, 15)
    status = cluster.emulator.stored("kipsec.io/v1alpha1/tunnelcertificates", "default", "ids")
    assert status is not None
    (retired,) = status["status"]["retiredIssuerCAs"]
    assert retired["certificate"].strip() == old
    until = datetime.fromisoformat(retired["until"])
    assert timedelta(hours=23) < until - now < timedelta(hours=25)
    assert status["status"]["issuerCA"].strip() == new
    # b's Secret is written in the same pass as a's, 16 writes at a time: it may land a
    # moment after a's (seen under load), so wait for it rather than race it.
    await eventually(lambda: trust_files(cluster, "b") == trust_files(cluster, "a"), 15)
