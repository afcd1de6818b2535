"""A failure a sidecar reports becomes one Warning Event on the Tunnel (not one per
poll), naming the pods and never a secret; a CA about to expire becomes one on the
TunnelCertificate."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta

import pytest

from kipsec_operator.certificates.ca import generate_ca
from kipsec_operator.reconcile.status import SidecarReport
from support.operator_cluster import Cluster, condition, eventually, psk_mesh
from support.operator_objects import (
    PSK,
    ca_secret,
    ca_secret_certificate,
    namespace,
)

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]


def warnings_on(cluster: Cluster, name: str, reason: str) -> list[dict[str, object]]:
    return [
        e
        for e in cluster.events()
        if e.get("involvedObject", {}).get("name") == name and e.get("reason") == reason
    ]


async def test_an_authentication_failure_is_one_event_on_the_tunnel_without_the_psk(
    cluster: Cluster,
) -> None:
    await psk_mesh(cluster)
    cluster.reports[("default", "a")] = SidecarReport(
        last_error=f"AUTHENTICATION_FAILED {PSK}",
        failures=frozenset({("default/b", "authentication_failed")}),
    )

    await eventually(lambda: warnings_on(cluster, "mesh", "AuthenticationFailed"))
    await eventually(lambda: condition(cluster.tunnel("mesh"), "Degraded").get("status") == "True")
    await asyncio.sleep(1.0)  # three more polls (every 0.3 s) report the same failure

    (event,) = warnings_on(cluster, "mesh", "AuthenticationFailed")
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "Tunnel"  # type: ignore[index]
    assert "default/a" in str(event["message"]) and "default/b" in str(event["message"])
    assert PSK not in str(cluster.events())


async def test_a_ca_secret_expiring_within_the_duration_is_one_warning_on_the_tunnelcertificate(
    cluster: Cluster,
) -> None:
    authority = generate_ca(datetime.now(UTC) - timedelta(days=1), timedelta(days=2), os.urandom)
    await cluster.apply(namespace("default"))
    await cluster.apply(ca_secret("shop-ca", authority.cert_pem(), authority.key_pem()))
    await cluster.apply(ca_secret_certificate("ids", "shop-ca", {"podSelector": {}}, "48h", "12h"))

    (event,) = await eventually(lambda: warnings_on(cluster, "ids", "CertificateExpiring"))

    assert event["involvedObject"]["kind"] == "TunnelCertificate"
    assert "Secret default/shop-ca" in str(event["message"])
    assert "PRIVATE KEY" not in str(cluster.events())
