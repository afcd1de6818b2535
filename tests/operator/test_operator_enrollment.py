"""The sidecar's enrollment against the real operator: the document the operator renders,
the operator's HTTPS CSR endpoint with a TokenReview in the emulator, TLS verified.

The pod's Secret is written out as the kubelet would mount it (``/etc/kipsec`` and the
identity ``emptyDir`` mapped into the test's directory), and the sidecar's enrollment
gets only the environment the webhook sets, plus the operator's serving CA.
"""

from __future__ import annotations

import asyncio
import base64
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from kipsec_operator.reconcile.render import IDENTITY_DIR, MOUNT_PATH
from kipsec_sidecar.config.load import load_config
from kipsec_sidecar.config.model import SidecarConfig
from kipsec_sidecar.config.to_core import to_core
from kipsec_sidecar.daemon.enrollment import (
    ENV_IDENTITY_DIR,
    ENV_OPERATOR_CA_FILE,
    ENV_OPERATOR_URL,
    ENV_TOKEN_FILE,
    Enrollment,
    settings_from,
)
from support.operator_cluster import Cluster, eventually
from support.operator_objects import namespace, pod, tunnel

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]


async def certificate_pods(cluster: Cluster) -> dict[str, Any]:
    """front and back, a TunnelCertificate for both and a Tunnel using it; front's Secret."""
    await cluster.apply(namespace("default"))
    await cluster.apply(namespace("kipsec-system"))
    created = {}
    for name, ip in (("front", "10.0.0.1"), ("back", "10.0.0.2")):
        created[name] = await cluster.apply(pod(name, ip, labels={"app": name}))
    await cluster.apply(
        {
            "apiVersion": "kipsec.io/v1alpha1",
            "kind": "TunnelCertificate",
            "metadata": {"name": "ids", "namespace": "default"},
            "spec": {"selector": {"podSelector": {}}},
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
    cluster.emulator.token_reviews["front-token"] = {
        "authenticated": True,
        "audiences": ["kipsec"],
        "user": {
            "username": "system:serviceaccount:default:default",
            "extra": {
                "authentication.kubernetes.io/pod-name": ["front"],
                "authentication.kubernetes.io/pod-uid": [created["front"]["metadata"]["uid"]],
            },
        },
    }
    secret: dict[str, Any] = await eventually(lambda: cluster.config_secrets().get("front"))
    return secret


def mount(secret: dict[str, Any], root: Path) -> Path:
    """The Secret as the kubelet mounts it, paths mapped under ``root``; the document."""
    etc, identity = root / "etc", root / "identity"
    etc.mkdir()
    for key, value in secret["data"].items():
        text = base64.b64decode(value).decode()
        if key == "config.yaml":
            text = text.replace(MOUNT_PATH, str(etc)).replace(IDENTITY_DIR, str(identity))
        (etc / key).write_text(text)
    return etc / "config.yaml"


async def enrolling(
    cluster: Cluster, tmp_path: Path, serving_ca: Path
) -> tuple[Path, SidecarConfig, Enrollment]:
    """front's mounted Secret (under tmp_path/pod), its document and its enrollment with
    the webhook's environment, trusting ``serving_ca`` for the operator's TLS. The
    document's IPsec trust bundle is also copied to ``etc/ipsec-ca.crt``."""
    root = tmp_path / "pod"
    root.mkdir()
    config_path = mount(await certificate_pods(cluster), root)
    config = load_config(str(config_path))
    auth = config.peers[0].auth
    assert auth is not None and auth.certificate is not None
    shutil.copy(config.resolve_path(auth.certificate.ca_files[0]), root / "etc" / "ipsec-ca.crt")
    (root / "token").write_text("front-token\n")
    environment = {
        ENV_OPERATOR_URL: cluster.endpoint,
        ENV_TOKEN_FILE: str(root / "token"),
        ENV_IDENTITY_DIR: str(root / "identity"),
        ENV_OPERATOR_CA_FILE: str(serving_ca),
    }
    settings = settings_from(config, str(config_path), environment)
    assert settings is not None
    return root, config, Enrollment(settings)


async def test_the_rendered_document_gets_its_certificate_from_the_operator_over_tls(
    cluster: Cluster, tmp_path: Path
) -> None:
    root, config, keeper = await enrolling(cluster, tmp_path, tmp_path / "tls.crt")

    assert await asyncio.wait_for(keeper.first(asyncio.Event()), 15)

    cert = x509.load_pem_x509_certificate((root / "identity" / "tls.crt").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=default,OU=default,O=cluster.local"
    (plan,) = to_core(config)  # the daemon's own loader accepts the stored files
    assert plan.ike is not None and plan.ike.auth.method == "signature"


async def test_an_operator_whose_tls_certificate_is_not_trusted_gets_no_csr(
    cluster: Cluster, tmp_path: Path
) -> None:
    ipsec_ca = tmp_path / "pod" / "etc" / "ipsec-ca.crt"  # written by enrolling() below
    root, _, keeper = await enrolling(cluster, tmp_path, ipsec_ca)

    assert not await keeper.renew()

    assert keeper.last_error is not None and keeper.last_error.code == "unreachable"
    assert "CERTIFICATE_VERIFY_FAILED" in keeper.last_error.reason
    assert not (root / "identity" / "tls.crt").exists()
