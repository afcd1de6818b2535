"""Which Tunnels and TunnelCertificates select a pod, given the pod's Namespace.

Label selector semantics come from :mod:`kipsec_operator.reconcile.selectors` (one
definition of "matched" for the whole operator); this module adds the ``Side`` rule of
the CRDs: ``namespaceSelector`` unset means the resource's own namespace only, ``{}``
every namespace. Objects arrive as dicts; a malformed selector selects nothing instead
of raising, because the webhook must answer every request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..reconcile.consent import consents
from ..reconcile.selectors import labels_of, matches


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _safe_matches(selector: object, labels: Mapping[str, str]) -> bool:
    if not isinstance(selector, Mapping):
        return False
    try:
        return matches(selector, labels)
    except (KeyError, ValueError, TypeError, AttributeError):
        return False


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str(_mapping(obj.get("metadata")).get("namespace") or "")


def side_selects(
    side: object,
    owner_namespace: str,
    pod: Mapping[str, Any],
    namespace: Mapping[str, Any] | None,
) -> bool:
    """Does a ``Side`` (podSelector, namespaceSelector) of a resource in
    ``owner_namespace`` select ``pod``? ``namespace`` is the pod's Namespace object
    (its name stands in for a pod CREATE without ``metadata.namespace``); without it
    only a Side without namespaceSelector can match."""
    side = _mapping(side)
    if not side:
        return False
    pod_ns = _pod_namespace(pod, namespace)
    ns_selector = side.get("namespaceSelector")
    if ns_selector is None:
        if pod_ns != owner_namespace:
            return False
    elif namespace is None or not _safe_matches(ns_selector, labels_of(namespace)):
        return False
    return _safe_matches(side.get("podSelector", {}), _string_labels(pod))


def _pod_namespace(pod: Mapping[str, Any], namespace: Mapping[str, Any] | None) -> str:
    return namespace_of(pod) or str(_mapping(_mapping(namespace).get("metadata")).get("name") or "")


def _string_labels(obj: Mapping[str, Any]) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in labels_of(obj).items()}
    except (TypeError, ValueError, AttributeError):
        return {}


def tunnel_selects(
    tunnel: Mapping[str, Any], pod: Mapping[str, Any], namespace: Mapping[str, Any] | None
) -> bool:
    """Does either side (``spec.selector.from`` / ``.to``) of ``tunnel`` select ``pod``?
    A ``to`` naming ``externalPeers`` holds no pods.

    A pod of another namespace is selected only when its namespace consents
    (:mod:`kipsec_operator.reconcile.consent`), as the operator renders it."""
    selector = _mapping(_mapping(tunnel.get("spec")).get("selector"))
    owner = namespace_of(tunnel)
    if not consents(_pod_namespace(pod, namespace), namespace, owner):
        return False
    sides = [selector.get("from")]
    to = selector.get("to")
    if not (isinstance(to, Mapping) and to.get("externalPeers")):  # else no pods on `to`
        sides.append(to)
    return any(side_selects(side, owner, pod, namespace) for side in sides)


def selecting_tunnels(
    tunnels: Sequence[Mapping[str, Any]],
    pod: Mapping[str, Any],
    namespace: Mapping[str, Any] | None,
) -> list[Mapping[str, Any]]:
    return [t for t in tunnels if isinstance(t, Mapping) and tunnel_selects(t, pod, namespace)]


def certificate_selects(
    tunnel_certificate: Mapping[str, Any],
    pod: Mapping[str, Any],
    namespace: Mapping[str, Any] | None,
) -> bool:
    """Does a TunnelCertificate's ``spec.selector`` select ``pod``?"""
    side = _mapping(tunnel_certificate.get("spec")).get("selector")
    return side_selects(side, namespace_of(tunnel_certificate), pod, namespace)
