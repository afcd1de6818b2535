"""Which pods' configuration a change touches — exactly those, and no other.

The candidates are the pods of every Tunnel the change can concern (before and after
it): the Tunnel itself; the Tunnels selecting a changed pod; the Tunnels referencing a
changed Secret or TunnelCertificate; the Tunnels with a namespace selector when a
namespace changes; the Tunnels holding a pod behind a changed Service or EndpointSlice
(their `services` sections); the Tunnels naming an ExternalPeer whose check result
changed (:func:`external_check_changes`). The candidates are then rendered before and
after, and only those whose Secret differs are returned, so a no-op change (a label
nobody selects, a Secret nobody references) writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kipsec_operator.crds.models import ExternalPeerSpec, TunnelSpec

from .cluster import Cluster, ObjectKey
from .external import parse_external_peer
from .peers import selected
from .render import plan
from .services import service_of_slice
from .validation import external_peer_names, parse_spec

Kind = Literal[
    "Pod",
    "Tunnel",
    "Secret",
    "ConfigMap",
    "Namespace",
    "TunnelCertificate",
    "ExternalPeer",
    "Service",
    "EndpointSlice",
]


@dataclass(frozen=True)
class Change:
    """An object that was added, edited or deleted (`namespace` is the name for a
    Namespace)."""

    kind: Kind
    namespace: str
    name: str = ""

    @property
    def key(self) -> ObjectKey:
        return (self.namespace, self.name)


def _names_external(spec: TunnelSpec, namespace: str, cluster: Cluster, change: Change) -> bool:
    """Whether the Tunnel (in `namespace`) names an ExternalPeer that `change` is, or
    whose Secret, ConfigMap or TunnelCertificate it is."""
    if change.namespace != namespace:
        return False
    for name in external_peer_names(spec):
        if change.kind == "ExternalPeer" and name == change.name:
            return True
        peer = cluster.external_peers.get((namespace, name))
        if peer is not None and change.kind in ("Secret", "ConfigMap", "TunnelCertificate"):
            parsed = parse_external_peer(peer)
            if not isinstance(parsed, list) and change.name in _external_refs(parsed, change):
                return True
    return False


def _external_refs(spec: ExternalPeerSpec, change: Change) -> set[str]:
    """The names of the objects of `change`'s kind that the ExternalPeer reads."""
    auth = spec.authentication
    certificate = auth.certificate
    if change.kind == "Secret":
        if auth.psk is not None:
            return {auth.psk.secret_ref.name}
        ca = certificate.ca_secret_ref if certificate else None
        return {ca.name} if ca else set()
    if change.kind == "ConfigMap":
        ca_map = certificate.ca_config_map_ref if certificate else None
        return {ca_map.name} if ca_map else set()
    return {certificate.tunnel_certificate_ref.name} if certificate else set()


def _references(spec: TunnelSpec, change: Change) -> bool:
    if change.kind == "Secret":
        names = set()
        auth = spec.authentication
        if auth is not None and auth.psk is not None:
            names.add(auth.psk.secret_ref.name)
        if auth is not None and auth.certificate is not None:
            for ref in (auth.certificate.secret_ref, auth.certificate.ca_secret_ref):
                if ref is not None:
                    names.add(ref.name)
        if spec.manual is not None:
            names.add(spec.manual.secret_ref.name)
        return change.name in names
    if change.kind == "TunnelCertificate":
        auth = spec.authentication
        ref = auth.certificate.tunnel_certificate_ref if auth and auth.certificate else None
        return ref is not None and ref.name == change.name
    if change.kind == "Namespace":
        sides = [spec.selector.from_, spec.selector.to]
        return any(side is not None and side.namespace_selector is not None for side in sides)
    return False


def _behind_service(cluster: Cluster, change: Change) -> set[ObjectKey]:
    """For a Service or EndpointSlice change, the pods that are the Service's endpoints
    in `cluster`: their peers are the pods whose `services` section may change."""
    if change.kind == "Service":
        service: str | None = change.name
    elif change.kind == "EndpointSlice":
        endpoint_slice = cluster.endpoint_slices.get(change.key)
        service = service_of_slice(endpoint_slice) if endpoint_slice is not None else None
    else:
        return set()
    addresses = {
        address
        for key, endpoint_slice in cluster.endpoint_slices.items()
        if key[0] == change.namespace and service_of_slice(endpoint_slice) == service
        for endpoint in endpoint_slice.get("endpoints") or []
        for address in endpoint.get("addresses") or []
    }
    if not addresses:
        return set()
    return {
        key
        for key in cluster.pods
        if (ref := cluster.ref(key)) is not None and addresses.intersection(ref.ips)
    }


def candidates(cluster: Cluster, change: Change) -> set[ObjectKey]:
    """The pods whose configuration `change` may touch, judged in `cluster`."""
    found: set[ObjectKey] = set()
    if change.kind == "Pod":
        found.add(change.key)
    behind = _behind_service(cluster, change)
    for key, tunnel in cluster.tunnels.items():
        parsed = parse_spec(tunnel)
        if isinstance(parsed, list):
            continue
        from_keys, to_keys = selected(tunnel, parsed, cluster)
        members = {*from_keys, *to_keys}
        concerned = (
            (change.kind == "Tunnel" and key == change.key)
            or (change.kind == "Pod" and change.key in members)
            or (
                change.kind in ("Secret", "TunnelCertificate")
                and key[0] == change.namespace
                and _references(parsed, change)
            )
            or (change.kind == "Namespace" and _references(parsed, change))
            or _names_external(parsed, key[0], cluster, change)
            or bool(behind & members)
        )
        if concerned:
            found |= members
    return found


def external_check_changes(before: Cluster, after: Cluster) -> set[ObjectKey]:
    """The pods of the Tunnels (before or after) that name an ExternalPeer whose check
    result differs between `before` and `after`.

    An ExternalPeer's validity depends on more than its own objects: its subnets must not
    overlap an earlier ExternalPeer of its namespace, a pod's address or a ClusterIP. So
    deleting one peer can make another valid, and a new pod can make a peer invalid;
    comparing the check results catches every such case without listing them."""
    if not before.external_peers and not after.external_peers:
        return set()
    old, new = before.external_checks, after.external_checks
    changed = {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
    found: set[ObjectKey] = set()
    for cluster in (before, after):
        for key, tunnel in cluster.tunnels.items():
            parsed = parse_spec(tunnel)
            if isinstance(parsed, list):
                continue
            if any((key[0], name) in changed for name in external_peer_names(parsed)):
                found.update(selected(tunnel, parsed, cluster)[0])
    return found


def affected_pods(
    before: Cluster, after: Cluster, change: Change
) -> dict[ObjectKey, dict[str, Any] | None]:
    """Pods whose configuration Secret differs after `change` → the Secret to apply.

    None means the pod should have no configuration Secret any more (it was deleted —
    the garbage collector removes the Secret — or no valid Tunnel selects it now).
    """
    keys = candidates(before, change) | candidates(after, change)
    keys |= external_check_changes(before, after)
    old = plan(before, only=keys).secrets()
    new = plan(after, only=keys).secrets()
    return {key: new.get(key) for key in sorted(keys) if old.get(key) != new.get(key)}


def changed_configs(
    before: Mapping[ObjectKey, Mapping[str, Any]], after: Mapping[ObjectKey, Mapping[str, Any]]
) -> set[ObjectKey]:
    """Brute force: pods whose Secret differs between two full renderings' `secrets()`."""
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


__all__ = [
    "Change",
    "Kind",
    "affected_pods",
    "candidates",
    "changed_configs",
    "external_check_changes",
]
