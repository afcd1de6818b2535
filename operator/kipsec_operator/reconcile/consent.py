"""Whether a namespace lets Tunnels of another namespace take its pods.

A Tunnel whose `namespaceSelector` reaches into another namespace would make the
operator configure that namespace's pods as peers and copy the Tunnel's PSK, CA bundle
or manual keys into their Secrets. The other namespace must agree first, in the style
of Gateway API's ReferenceGrant: its Namespace carries the annotation
``kipsec.io/allow-tunnels-from`` listing the namespaces whose Tunnels may select its
pods, comma-separated (``"a, b"``), or ``*`` for every namespace. The Tunnel's own
namespace always consents.

An annotation, not a label: a label value can hold neither a comma nor ``*`` and stops
at 63 characters, so a list of namespaces would need an invented separator. Nobody
selects namespaces by this value, which is what labels are for. Setting it means
updating the Namespace object, which Kubernetes grants cluster administrators, not a
namespace's own admins (a RoleBinding cannot reach a cluster-scoped object).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ALLOW_TUNNELS_FROM = "kipsec.io/allow-tunnels-from"
"""Namespace annotation: the namespaces whose Tunnels may select this namespace's pods."""

EVERY_NAMESPACE = "*"


def allowed_from(namespace: Mapping[str, Any] | None) -> frozenset[str]:
    """The namespaces `namespace` (a Namespace object) lists in its annotation.

    Entries are trimmed and empty ones dropped; a malformed annotation (not a string)
    allows nothing, because consent must be explicit.
    """
    metadata = namespace.get("metadata") if isinstance(namespace, Mapping) else None
    annotations = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    value = annotations.get(ALLOW_TUNNELS_FROM) if isinstance(annotations, Mapping) else None
    if not isinstance(value, str):
        return frozenset()
    return frozenset(entry.strip() for entry in value.split(",") if entry.strip())


def consents(name: str, namespace: Mapping[str, Any] | None, tunnel_namespace: str) -> bool:
    """Does namespace `name` (its object `namespace`, None when unknown) let Tunnels of
    `tunnel_namespace` select its pods?"""
    if name == tunnel_namespace:
        return True
    allowed = allowed_from(namespace)
    return EVERY_NAMESPACE in allowed or tunnel_namespace in allowed


def refusal(field: str, name: str, tunnel_namespace: str) -> str:
    """The status message for a namespace that does not consent (`field` is the side's
    `namespaceSelector` path, e.g. ``spec.selector.to.namespaceSelector``)."""
    return (
        f'{field}: namespace "{name}" does not allow Tunnels from "{tunnel_namespace}" '
        f"(annotation {ALLOW_TUNNELS_FROM})"
    )


__all__ = ["ALLOW_TUNNELS_FROM", "EVERY_NAMESPACE", "allowed_from", "consents", "refusal"]
