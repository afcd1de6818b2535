"""Kubernetes objects as the API returns them, for the operator's reconcile tests."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from kipsec_operator.reconcile.cluster import key_of
from support.pki import CertificateAuthority

PSK = "correct horse battery staple, 32b"
MASTER_KEY_HEX = "11" * 32


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def namespace(name: str, *, allow_tunnels_from: str | None = None, **labels: str) -> dict[str, Any]:
    """A Namespace; `allow_tunnels_from` sets its consent annotation (see
    :mod:`kipsec_operator.reconcile.consent`)."""
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if allow_tunnels_from is not None:
        metadata["annotations"] = {"kipsec.io/allow-tunnels-from": allow_tunnels_from}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


def pod(
    name: str,
    ip: str | None = "10.0.0.1",
    *,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    uid: str | None = None,
    ips: list[str] | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running" if ip else "Pending"}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": a} for a in (ips or [ip])]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{namespace}-{name}",
            "labels": dict(labels or {}),
        },
        "spec": {"nodeName": "node-1", "serviceAccountName": "default"},
        "status": status,
    }


def secret(
    name: str, data: dict[str, str], *, namespace: str = "default", type_: str = "Opaque"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": type_,
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: b64(v) for k, v in data.items()},
    }


def config_map(
    name: str, data: dict[str, str], *, namespace: str = "default", field: str = "data"
) -> dict[str, Any]:
    """A ConfigMap; `field` binaryData takes base64 values."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        field: dict(data),
    }


def psk_secret(
    name: str = "mesh-psk", namespace: str = "default", value: str = PSK
) -> dict[str, Any]:
    return secret(name, {"psk": value}, namespace=namespace)


def ca_secret(name: str, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    """A `kubernetes.io/tls` Secret holding a CA (what a CASecret issuer names)."""
    return secret(
        name,
        {"tls.crt": cert_pem.decode(), "tls.key": key_pem.decode()},
        type_="kubernetes.io/tls",
    )


def ca_secret_certificate(
    name: str, ca_secret_name: str, selector: dict[str, Any], duration: str, renew_before: str
) -> dict[str, Any]:
    """A TunnelCertificate in `default` signing with the CA of Secret `ca_secret_name`."""
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "TunnelCertificate",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": selector,
            "duration": duration,
            "renewBefore": renew_before,
            "issuer": {"type": "CASecret", "caSecretRef": {"name": ca_secret_name}},
        },
    }


def tunnel(name: str, spec: dict[str, Any], *, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "Tunnel",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": spec,
    }


def external_peer(name: str = "site", *, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    """An ExternalPeer: a gateway at 192.0.2.10 with 172.20.0.0/24 behind it, PSK from
    the Secret "site-psk" (override any field with `spec`)."""
    body: dict[str, Any] = {
        "address": "192.0.2.10",
        "subnets": ["172.20.0.0/24"],
        "authentication": {"psk": {"secretRef": {"name": "site-psk", "key": "psk"}}},
    }
    body.update(spec)
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "ExternalPeer",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": {k: v for k, v in body.items() if v is not None},
    }


def external_spec(app: str = "client", *peers: str) -> dict[str, Any]:
    """A Tunnel spec from the pods labelled app=`app` to the ExternalPeers `peers`."""
    return {
        "selector": {
            "from": {"podSelector": {"matchLabels": {"app": app}}},
            "to": {"externalPeers": list(peers or ("site",))},
        }
    }


def psk_mesh_spec(app: str = "mesh", secret_name: str = "mesh-psk") -> dict[str, Any]:
    return {
        "selector": {"from": {"podSelector": {"matchLabels": {"app": app}}}},
        "authentication": {"psk": {"secretRef": {"name": secret_name, "key": "psk"}}},
    }


def two_sided_spec(client: str = "client", server: str = "server", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": {
            "from": {"podSelector": {"matchLabels": {"app": client}}},
            "to": {"podSelector": {"matchLabels": {"app": server}}},
        },
        "authentication": {"psk": {"secretRef": {"name": "mesh-psk", "key": "psk"}}},
    }
    spec.update(extra)
    return spec


def service(
    name: str,
    cluster_ips: list[str],
    ports: list[dict[str, Any]],
    *,
    namespace: str = "default",
) -> dict[str, Any]:
    """A ClusterIP Service (`ports` as in its spec: name, port, targetPort, protocol)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": cluster_ips[0], "clusterIPs": cluster_ips, "ports": ports},
    }


def endpoint_slice(
    name: str,
    service_name: str,
    addresses: list[str],
    ports: list[dict[str, Any]],
    *,
    namespace: str = "default",
) -> dict[str, Any]:
    """An EndpointSlice of `service_name` with one ready endpoint per address (`ports`:
    name, port — the resolved targetPort — and protocol)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv6" if addresses and ":" in addresses[0] else "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
        "ports": ports,
    }


TRUST_BUNDLE = "-----BEGIN CERTIFICATE-----\nMIIB...test bundle...\n-----END CERTIFICATE-----\n"


def example_objects(path: Path) -> list[dict[str, Any]]:
    """The manifests of an example file as the API server would store them.

    `stringData` becomes base64 `data`, and pods get a UID and an IP (10.1.<file>.<n>)
    as if scheduled, so that they can be rendered.
    """
    objects = []
    pod_index = 0
    for document in yaml.safe_load_all(path.read_text()):
        if not document:
            continue
        document = dict(document)
        if document["kind"] == "Secret" and "stringData" in document:
            data = dict(document.get("data") or {})
            data.update({k: b64(v) for k, v in document.pop("stringData").items()})
            document["data"] = data
        if document["kind"] == "Pod":
            pod_index += 1
            document["metadata"] = {**document["metadata"], "uid": f"uid-{pod_index:04d}"}
            ip = f"10.1.0.{pod_index}"
            document["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
        document["metadata"].setdefault("generation", 1)
        objects.append(document)
    return objects


def example_trust_bundles(objects: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """A trust bundle for every TunnelCertificate, as the certificates module publishes."""
    return {
        (o["metadata"]["namespace"], o["metadata"]["name"]): TRUST_BUNDLE
        for o in objects
        if o["kind"] == "TunnelCertificate"
    }


def pod_certificates(
    objects: list[dict[str, Any]], ca: CertificateAuthority, slot: int = 20
) -> dict[tuple[str, str], str]:
    """For every pod with an IP: an RSA certificate naming it, signed by `ca`, as the
    operator records it in the pod's Secret (base64 PEM) after signing its CSR."""
    found: dict[tuple[str, str], str] = {}
    for obj in objects:
        ip = (obj.get("status") or {}).get("podIP") if obj["kind"] == "Pod" else None
        if ip:
            issued = ca.issue(ip, key_kind="rsa", key_slot=slot + len(found), ips=[ip])
            pem = issued.cert.public_bytes(Encoding.PEM)
            found[key_of(obj)] = base64.b64encode(pem).decode()
    return found


def admission_review(
    obj: Mapping[str, Any] | None,
    uid: str = "4f1c",
    *,
    ns: str = "default",
    operation: str = "CREATE",
) -> dict[str, Any]:
    """The AdmissionReview the API server sends the webhook for a pod ``operation`` in
    namespace ``ns``."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": ns,
            "operation": operation,
            "object": obj,
            "dryRun": False,
        },
    }


def new_pod(app: str) -> dict[str, Any]:
    """A pod as submitted (no name, uid or namespace yet) labelled `app: <app>`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": f"{app}-", "labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
    }
