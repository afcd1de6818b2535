"""The complete CustomResourceDefinition manifests, built from :mod:`.models`.

`python -m kipsec_operator.crds` writes them to `charts/kipsec/crds/`, where Helm
installs them before anything else; a unit test fails (and prints that command) when
the committed files differ from what the models give.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .models import (
    GROUP,
    VERSION,
    ExternalPeerSpec,
    ExternalPeerStatus,
    TunnelCertificateSpec,
    TunnelCertificateStatus,
    TunnelSpec,
    TunnelStatus,
)
from .openapi import JsonObject, structural_schema

CATEGORIES = ["kipsec"]
REGENERATE = "python -m kipsec_operator.crds"

_READY = '.status.conditions[?(@.type=="Ready")].status'
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

_HEADER = (
    "# Generated from operator/kipsec_operator/crds/models.py by `{command}`.\n"
    "# Do not edit: change the models and regenerate.\n"
)


def _resource_schema(
    kind: str, what: str, spec: type[BaseModel], status: type[BaseModel]
) -> JsonObject:
    return {
        "type": "object",
        "description": what,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": f"{GROUP}/{VERSION}",
            },
            "kind": {"type": "string", "description": kind},
            "metadata": {"type": "object", "description": "Standard object metadata."},
            "spec": structural_schema(spec),
            "status": structural_schema(status),
        },
    }


def _crd(
    kind: str,
    plural: str,
    short_name: str,
    what: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, str]],
) -> JsonObject:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "kipsec", "app.kubernetes.io/part-of": "kipsec"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                "categories": list(CATEGORIES),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [*columns, dict(_AGE)],
                    "schema": {"openAPIV3Schema": _resource_schema(kind, what, spec, status)},
                }
            ],
        },
    }


def tunnel_crd() -> JsonObject:
    """The `tunnels.kipsec.io` CRD."""
    return _crd(
        "Tunnel",
        "tunnels",
        "tun",
        "Encrypts traffic between pods with IPsec: the pods on each side, the mode, the "
        "protocol, the keying and authentication, algorithms and lifetimes.",
        TunnelSpec,
        TunnelStatus,
        [
            {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
            {"name": "Protocol", "type": "string", "jsonPath": ".spec.protocol"},
            {"name": "IKE", "type": "integer", "jsonPath": ".spec.ikeVersion"},
            {"name": "Pods", "type": "integer", "jsonPath": ".status.pods"},
            {"name": "SAs", "type": "integer", "jsonPath": ".status.childSasEstablished"},
            {"name": "Ready", "type": "string", "jsonPath": _READY},
        ],
    )


def tunnel_certificate_crd() -> JsonObject:
    """The `tunnelcertificates.kipsec.io` CRD."""
    return _crd(
        "TunnelCertificate",
        "tunnelcertificates",
        "tcert",
        "X.509 identities for pods: the sidecar generates the key in the pod and the "
        "operator signs its CSR with the chosen issuer.",
        TunnelCertificateSpec,
        TunnelCertificateStatus,
        [
            {"name": "Issuer", "type": "string", "jsonPath": ".spec.issuer.type"},
            {"name": "NotAfter", "type": "date", "jsonPath": ".status.notAfter"},
            {"name": "Ready", "type": "string", "jsonPath": _READY},
        ],
    )


def external_peer_crd() -> JsonObject:
    """The `externalpeers.kipsec.io` CRD."""
    return _crd(
        "ExternalPeer",
        "externalpeers",
        "xpeer",
        "An IPsec peer outside the cluster (a VPN gateway and the subnets behind it, or a "
        "single host) that Tunnels name in spec.selector.to.externalPeers.",
        ExternalPeerSpec,
        ExternalPeerStatus,
        [
            {"name": "Address", "type": "string", "jsonPath": ".spec.address"},
            {"name": "Initiator", "type": "string", "jsonPath": ".spec.initiator"},
            {"name": "IKE", "type": "integer", "jsonPath": ".spec.ikeVersion"},
            {"name": "Pods", "type": "integer", "jsonPath": ".status.pods"},
            {"name": "Established", "type": "integer", "jsonPath": ".status.podsEstablished"},
            {"name": "Ready", "type": "string", "jsonPath": _READY},
        ],
    )


def crds() -> dict[str, JsonObject]:
    """File name → CRD manifest, for every resource of the operator."""
    return {
        "tunnels.kipsec.io.yaml": tunnel_crd(),
        "tunnelcertificates.kipsec.io.yaml": tunnel_certificate_crd(),
        "externalpeers.kipsec.io.yaml": external_peer_crd(),
    }


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(manifest: JsonObject) -> str:
    """Stable YAML text of `manifest` (key order kept, no anchors, a header)."""
    body = yaml.dump(manifest, Dumper=_NoAliases, sort_keys=False, width=100)
    return _HEADER.format(command=REGENERATE) + body


def write(directory: Path) -> list[Path]:
    """Write every CRD into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, manifest in crds().items():
        path = directory / name
        path.write_text(to_yaml(manifest), encoding="utf-8")
        written.append(path)
    return written


__all__ = [
    "CATEGORIES",
    "REGENERATE",
    "crds",
    "external_peer_crd",
    "to_yaml",
    "tunnel_certificate_crd",
    "tunnel_crd",
    "write",
]
