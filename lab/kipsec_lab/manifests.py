"""Manifests as a user applies them: multi-document YAML → ordered API objects.

Pure: no I/O besides reading the files. The order is what `kubectl apply -f` users rely
on without knowing it: Namespaces first (everything else lives in one), then the
objects pods and Tunnels refer to (Secrets, ConfigMaps, ServiceAccounts), then the
custom resources, and pods last, so the admission webhook already knows the Tunnels
that select a pod when the pod is created. Deletion runs the other way round.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

KINDS: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("v1", "namespaces", False),
    "Secret": ("v1", "secrets", True),
    "ConfigMap": ("v1", "configmaps", True),
    "ServiceAccount": ("v1", "serviceaccounts", True),
    "Service": ("v1", "services", True),
    "EndpointSlice": ("discovery.k8s.io/v1", "endpointslices", True),
    "TunnelCertificate": ("kipsec.io/v1alpha1", "tunnelcertificates", True),
    "ExternalPeer": ("kipsec.io/v1alpha1", "externalpeers", True),
    "Tunnel": ("kipsec.io/v1alpha1", "tunnels", True),
    "Pod": ("v1", "pods", True),
}
"""Kind → (apiVersion, plural, namespaced): what the lab applies; the order is the
apply order."""

_RANK = {kind: rank for rank, kind in enumerate(KINDS)}


class ManifestError(ValueError):
    """A document the lab cannot apply; the message names the file, document and field."""


@dataclass(frozen=True)
class Manifest:
    """One object to apply, normalized (``stringData`` folded into ``data``)."""

    kind: str
    name: str
    namespace: str | None
    body: Mapping[str, Any]
    source: str
    """``file#index`` for error messages."""

    @property
    def api_version(self) -> str:
        return KINDS[self.kind][0]

    @property
    def plural(self) -> str:
        return KINDS[self.kind][1]

    def describe(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.lower()}/{where}{self.name}"


def fold_string_data(secret: Mapping[str, Any]) -> dict[str, Any]:
    """A Secret with ``stringData`` merged into ``data`` (base64), as the API server
    stores it: ``stringData`` wins over ``data`` for the same key and is not kept."""
    body = {k: v for k, v in secret.items() if k != "stringData"}
    data = dict(secret.get("data") or {})
    for key, value in (secret.get("stringData") or {}).items():
        data[str(key)] = base64.b64encode(str(value).encode()).decode("ascii")
    if data or "data" in secret or "stringData" in secret:
        body["data"] = data
    return body


def parse(
    documents: Iterable[Any], source: str, default_namespace: str = "default"
) -> list[Manifest]:
    """The manifests of already-parsed YAML documents (empty documents skipped)."""
    found: list[Manifest] = []
    for index, doc in enumerate(documents):
        where = f"{source}#{index}"
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            raise ManifestError(f"{where}: a document must be a mapping")
        kind = doc.get("kind")
        if kind not in KINDS:
            raise ManifestError(
                f"{where}: kind: {kind!r} is not one the lab applies ({', '.join(KINDS)})"
            )
        api_version, _, namespaced = KINDS[kind]
        if doc.get("apiVersion") != api_version:
            raise ManifestError(f"{where}: apiVersion: expected {api_version!r} for {kind}")
        metadata = doc.get("metadata")
        if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
            raise ManifestError(f"{where}: metadata.name: missing")
        namespace = str(metadata.get("namespace") or default_namespace) if namespaced else None
        body = dict(doc)
        body["metadata"] = {**metadata, **({"namespace": namespace} if namespace else {})}
        if kind == "Secret":
            body = fold_string_data(body)
        found.append(Manifest(kind, metadata["name"], namespace, body, where))
    return found


def load(paths: Iterable[Path]) -> list[Manifest]:
    """Every object of the files, in apply order (stable within a kind)."""
    found: list[Manifest] = []
    for path in paths:
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as exc:
            raise ManifestError(f"{path}: not YAML: {exc}") from None
        found += parse(documents, str(path))
    return ordered(found)


def ordered(manifests: Iterable[Manifest], *, reverse: bool = False) -> list[Manifest]:
    """Apply order (Namespaces first, pods last), or deletion order with ``reverse``."""
    ranked = sorted(manifests, key=lambda m: _RANK[m.kind])
    return ranked[::-1] if reverse else ranked


__all__ = ["KINDS", "Manifest", "ManifestError", "fold_string_data", "load", "ordered", "parse"]
