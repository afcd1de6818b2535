"""Helpers of the operator tests: the emulated cluster and what to read from it.

The `cluster` fixture (tests/operator/conftest.py) runs the operator against the
emulator and hands the test a :class:`Cluster`: a client to apply objects with, the
emulator to read them back, and `reports`, the sidecar reports the fake fetcher serves.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kipsec_lab.apiserver import Emulator
from kipsec_operator.handlers import Operator
from kipsec_operator.kube import Credentials, Kube, object_path
from kipsec_operator.main import run_operator
from kipsec_operator.reconcile.cluster import ObjectKey, PodRef
from kipsec_operator.reconcile.status import SidecarReport
from kipsec_sidecar.config import load_config_data
from support.operator_objects import namespace, pod, psk_mesh_spec, psk_secret, tunnel

PLURALS = {
    "Pod": ("v1", "pods"),
    "Namespace": ("v1", "namespaces"),
    "Secret": ("v1", "secrets"),
    "ConfigMap": ("v1", "configmaps"),
    "Service": ("v1", "services"),
    "EndpointSlice": ("discovery.k8s.io/v1", "endpointslices"),
    "Tunnel": ("kipsec.io/v1alpha1", "tunnels"),
    "TunnelCertificate": ("kipsec.io/v1alpha1", "tunnelcertificates"),
    "ExternalPeer": ("kipsec.io/v1alpha1", "externalpeers"),
}


async def apply(kube: Kube, obj: dict[str, Any]) -> dict[str, Any]:
    """Create `obj` through `kube`; a pod's status is then set as its kubelet would."""
    api_version, plural = PLURALS[obj["kind"]]
    namespace = obj["metadata"].get("namespace") if obj["kind"] != "Namespace" else None
    body = {k: v for k, v in obj.items() if k != "status" or obj["kind"] != "Pod"}
    created = await kube.create(object_path(api_version, plural, namespace), body)
    if obj["kind"] == "Pod" and obj.get("status"):  # the kubelet's part
        path = object_path(api_version, plural, namespace, obj["metadata"]["name"])
        created = await kube.merge_patch(path + "/status", {"status": obj["status"]})
    return created


@dataclass
class Cluster:
    """The emulated cluster and the operator watching it."""

    emulator: Emulator
    kube: Kube
    operator: Operator
    reports: dict[ObjectKey, SidecarReport] = field(default_factory=dict)
    client_ssl: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    """Trusts the operator's serving certificate."""

    @property
    def endpoint(self) -> str:
        """Base URL of the operator's HTTPS endpoints."""
        return f"https://127.0.0.1:{self.operator.endpoint_port}"

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await apply(self.kube, obj)

    async def patch(
        self, kind: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> None:
        api_version, plural = PLURALS[kind]
        await self.kube.merge_patch(object_path(api_version, plural, namespace, name), patch)

    async def delete(self, kind: str, namespace: str | None, name: str) -> None:
        api_version, plural = PLURALS[kind]
        await self.kube.delete(object_path(api_version, plural, namespace, name))

    def config_secrets(self, namespace: str = "default") -> dict[str, dict[str, Any]]:
        """The operator's Secrets by pod name."""
        found = {}
        for secret in self.emulator.listing("v1/secrets", namespace):
            labels = secret["metadata"].get("labels") or {}
            if labels.get("app.kubernetes.io/managed-by") == "kipsec-operator":
                found[secret["metadata"]["annotations"]["kipsec.io/pod"]] = secret
        return found

    def tunnel(self, name: str, namespace: str = "default") -> dict[str, Any]:
        found = self.emulator.stored("kipsec.io/v1alpha1/tunnels", namespace, name)
        assert found is not None, f"Tunnel {namespace}/{name} not found"
        return found

    def external_peer(self, name: str, namespace: str = "default") -> dict[str, Any]:
        found = self.emulator.stored("kipsec.io/v1alpha1/externalpeers", namespace, name)
        assert found is not None, f"ExternalPeer {namespace}/{name} not found"
        return found

    def events(self) -> list[dict[str, Any]]:
        return self.emulator.listing("v1/events")


def document(secret: dict[str, Any]) -> dict[str, Any]:
    """The sidecar document of a configuration Secret, loaded by the sidecar's loader."""
    raw = base64.b64decode(secret["data"]["config.yaml"]).decode()
    load_config_data(json.loads(raw), source="test")
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


def condition(tunnel: dict[str, Any], kind: str) -> dict[str, Any]:
    for found in (tunnel.get("status") or {}).get("conditions") or []:
        if found["type"] == kind:
            return dict(found)
    return {}


async def psk_mesh(cluster: Cluster) -> None:
    """Namespace `default`, its PSK Secret, pods a (10.0.0.1) and b (10.0.0.2) labelled
    `app: mesh`, and the Tunnel `mesh` that links them with the PSK."""
    await cluster.apply(namespace("default"))
    await cluster.apply(psk_secret())
    await cluster.apply(pod("a", "10.0.0.1", labels={"app": "mesh"}))
    await cluster.apply(pod("b", "10.0.0.2", labels={"app": "mesh"}))
    await cluster.apply(tunnel("mesh", psk_mesh_spec()))


def bound_token(cluster: Cluster, token: str, name: str, uid: str) -> None:
    """Make the emulator's TokenReview answer `token` as bound to pod `name` (`uid`)."""
    cluster.emulator.token_reviews[token] = {
        "authenticated": True,
        "audiences": ["kipsec"],
        "user": {
            "username": "system:serviceaccount:default:default",
            "extra": {
                "authentication.kubernetes.io/pod-name": [name],
                "authentication.kubernetes.io/pod-uid": [uid],
            },
        },
    }


async def call(
    cluster: Cluster, method: str, path: str, body: object = None, token: str = "cart-token"
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON answer) of the operator's endpoint `path` asked as a pod with
    bearer `token` (the CSR and identity endpoints)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"{cluster.endpoint}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            ssl=cluster.client_ssl,
        ) as response,
    ):
        return response.status, await response.json()


async def eventually(probe: Callable[[], Any], timeout: float = 8.0) -> Any:
    """The first truthy value of `probe()`, polled every 50 ms (fails after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {probe}")
        await asyncio.sleep(0.05)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A serving certificate for 127.0.0.1 (what the chart's webhook certificate is)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kipsec-operator")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def new_operator(
    connection: Credentials,
    reports: dict[ObjectKey, SidecarReport],
    directory: Path,
    *,
    certificate_interval: float = 5.0,
) -> Operator:
    """An operator with the tests' short intervals, sidecar reports read from `reports`,
    and HTTPS endpoints on a free port with a certificate written to `directory`."""

    async def fetch(pod: PodRef, expected: frozenset[str]) -> SidecarReport | None:
        return reports.get(pod.key)

    return Operator(
        connection,
        namespace="kipsec-system",
        fetcher=fetch,
        report_interval=0.3,
        certificate_interval=certificate_interval,
        debounce=0.05,
        listen=("127.0.0.1", 0),
        tls=tuple(str(p) for p in self_signed(directory)),  # type: ignore[arg-type]
    )


@asynccontextmanager
async def running(operator: Operator, priority: int | None = None) -> AsyncIterator[None]:
    """`operator` under kopf, in a thread with its own event loop (kopf cancels every
    task of its loop that it did not start): standalone, or with `priority` a replica
    under kopf peering (the ``kipsec`` ClusterKopfPeering must exist)."""
    stop, ready = threading.Event(), threading.Event()
    standalone = priority is None
    thread = threading.Thread(
        target=asyncio.run,
        args=(
            run_operator(
                operator,
                standalone=standalone,
                priority=priority,
                stop_flag=stop,
                ready_flag=ready,
            ),
        ),
        name="kipsec-operator",
        daemon=True,
    )
    thread.start()
    try:
        assert await asyncio.to_thread(ready.wait, 5), "the operator did not start"
        yield
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 10)
