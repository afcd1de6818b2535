"""A snapshot of the Kubernetes objects the reconcile functions read.

The kopf handlers keep an index of pods, namespaces, Tunnels, TunnelCertificates,
Secrets, ConfigMaps (for ExternalPeers' CA bundles), Services and EndpointSlices (as
the API returns them: camelCase dicts) and
hand a :class:`Cluster` to the pure functions of this package, which never call the
API. Keys are `(namespace, name)`; namespaces are keyed by name.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from .selectors import matches

ObjectKey = tuple[str, str]
"""(namespace, name) of a namespaced object."""

K8sObject = Mapping[str, Any]

CONFIG_SECRET_ANNOTATION = "kipsec.io/config-secret"  # noqa: S105 - an annotation key
"""Set on a pod by the injecting webhook: the name of its configuration Secret, chosen at
admission because a pod has neither its final name nor its UID then."""

_KINDS = {
    "Pod": "pods",
    "Namespace": "namespaces",
    "Tunnel": "tunnels",
    "TunnelCertificate": "tunnel_certificates",
    "ExternalPeer": "external_peers",
    "Secret": "secrets",
    "ConfigMap": "config_maps",
    "Service": "services",
    "EndpointSlice": "endpoint_slices",
}


@lru_cache(maxsize=65536)
def ip_version(address: str) -> int:
    """4 or 6 for a textual IP address (memoized: a pass asks about each pod's addresses
    once per link, and `ipaddress` parsing was most of the per-link cost)."""
    return ipaddress.ip_address(address).version


@lru_cache(maxsize=65536)
def normalized_ip(address: str) -> str:
    """The canonical text of an IP address (raises ValueError for anything else);
    memoized: every watch event of a pod asks about its addresses."""
    return str(ipaddress.ip_address(address))


def key_of(obj: K8sObject) -> ObjectKey:
    """(namespace, name) of an object dict."""
    metadata = obj.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


@dataclass(frozen=True)
class Cluster:
    """The objects a reconcile reads; build it with :meth:`of`.

    `trust_bundles` maps a TunnelCertificate's key to the PEM bundle (old and new CA
    during a CA rotation) of its issuer, as the certificates module publishes it; the
    operator's CA is not a Kubernetes object this package reads.

    `resolved` maps the DNS names of ExternalPeers' `spec.address` to the addresses the
    operator resolved (absent or empty: unresolvable); `cluster_networks` are the pod
    and Service ranges an external peer's subnets must not overlap (chart values). Both
    come from the operator, not from Kubernetes objects. `pod_certificates` come from
    the operator's own configuration Secrets, which are not in `secrets`.
    """

    pods: Mapping[ObjectKey, K8sObject] = field(default_factory=dict)
    namespaces: Mapping[str, K8sObject] = field(default_factory=dict)
    tunnels: Mapping[ObjectKey, K8sObject] = field(default_factory=dict)
    tunnel_certificates: Mapping[ObjectKey, K8sObject] = field(default_factory=dict)
    secrets: Mapping[ObjectKey, K8sObject] = field(default_factory=dict)
    config_maps: Mapping[ObjectKey, K8sObject] = field(default_factory=dict)
    services: Mapping[ObjectKey, K8sObject] = field(default_factory=dict)
    endpoint_slices: Mapping[ObjectKey, K8sObject] = field(default_factory=dict)
    trust_bundles: Mapping[ObjectKey, str] = field(default_factory=dict)
    external_peers: Mapping[ObjectKey, K8sObject] = field(default_factory=dict)
    resolved: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    cluster_networks: tuple[str, ...] = ()
    pod_certificates: Mapping[ObjectKey, str] = field(default_factory=dict)
    """Per pod, its current operator-issued certificate (base64 PEM) as its own
    configuration Secret holds it (:mod:`.pod_certificates`)."""

    @classmethod
    def of(
        cls,
        objects: Iterable[K8sObject],
        trust_bundles: Mapping[ObjectKey, str] | None = None,
        *,
        resolved: Mapping[str, tuple[str, ...]] | None = None,
        cluster_networks: Iterable[str] = (),
        pod_certificates: Mapping[ObjectKey, str] | None = None,
    ) -> Cluster:
        """A snapshot of `objects` (any mix of the kinds above; others are ignored)."""
        buckets: dict[str, dict[Any, K8sObject]] = {name: {} for name in _KINDS.values()}
        for obj in objects:
            bucket = _KINDS.get(str(obj.get("kind")))
            if bucket is None:
                continue
            key = key_of(obj)
            buckets[bucket][key[1] if bucket == "namespaces" else key] = obj
        return cls(
            **buckets,
            trust_bundles=dict(trust_bundles or {}),
            resolved=dict(resolved or {}),
            cluster_networks=tuple(cluster_networks),
            pod_certificates=dict(pod_certificates or {}),
        )

    @cached_property
    def pods_by_namespace(self) -> dict[str, list[tuple[ObjectKey, Mapping[str, str]]]]:
        """Per namespace, its pods' keys and labels, sorted (built once per snapshot)."""
        index: dict[str, list[tuple[ObjectKey, Mapping[str, str]]]] = {}
        for key, labels in sorted(self._labels.items()):
            index.setdefault(key[0], []).append((key, labels))
        return index

    @cached_property
    def _label_index(self) -> dict[str, dict[tuple[str, str], set[ObjectKey]]]:
        """Per namespace, (label, value) → the keys of the pods carrying it (unsorted:
        a pass builds it for every snapshot, and sorting every pod cost more than the
        few selections it serves)."""
        index: dict[str, dict[tuple[str, str], set[ObjectKey]]] = {}
        for key, labels in self._labels.items():
            by_label = index.setdefault(key[0], {})
            for pair in labels.items():
                by_label.setdefault(pair, set()).add(key)
        return index

    def pods_matching(self, namespace: str, selector: Mapping[str, Any]) -> list[ObjectKey]:
        """Keys of the pods of `namespace` that `selector` selects, in key order.

        `matchLabels` narrows through a label index first, so a selector costs the pods
        it names, not every pod of the namespace (a pass evaluates every Tunnel's).
        """
        wanted = list((selector.get("matchLabels") or {}).items())
        if wanted:
            by_label = self._label_index.get(namespace, {})
            sets = sorted((by_label.get(pair, set()) for pair in wanted), key=len)
            keys = set.intersection(*sets) if sets[0] else set()
            labels = self._labels
            return sorted(key for key in keys if matches(selector, labels[key]))
        pods = self.pods_by_namespace.get(namespace, [])
        return [key for key, labels in pods if matches(selector, labels)]

    @cached_property
    def _labels(self) -> dict[ObjectKey, Mapping[str, str]]:
        """Per pod, its labels (the object's own mapping: nothing here modifies it)."""
        return {
            key: (pod.get("metadata") or {}).get("labels") or {} for key, pod in self.pods.items()
        }

    @property
    def pod_labels(self) -> Mapping[ObjectKey, Mapping[str, str]]:
        """Per pod, its labels (built once per snapshot)."""
        return self._labels

    def ref(self, key: ObjectKey, *, require_ip: bool = True) -> PodRef | None:
        """:func:`pod_ref` of the pod `key` (None when unknown), computed once per snapshot."""
        if key not in self._refs:
            pod = self.pods.get(key)
            self._refs[key] = None if pod is None else pod_ref(pod, require_ip=False)
        found = self._refs[key]
        if require_ip and found is not None and not found.ips:
            return None
        return found

    @cached_property
    def _refs(self) -> dict[ObjectKey, PodRef | None]:
        return {}

    @cached_property
    def external_checks(self) -> Mapping[ObjectKey, Any]:
        """Per ExternalPeer, its parsed spec when valid, else its problems
        (:func:`.external.check_external_peers`, computed once per snapshot)."""
        from .external import check_external_peers

        return check_external_peers(self)

    def namespace_labels(self, name: str) -> dict[str, str]:
        """Labels of namespace `name` (empty when unknown)."""
        obj = self.namespaces.get(name)
        return dict(((obj or {}).get("metadata") or {}).get("labels") or {})

    def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The base64 `data` of a Secret (None when there is no such Secret)."""
        obj = self.secrets.get((namespace, name))
        if obj is None:
            return None
        data: Mapping[str, str] = obj.get("data") or {}
        return data

    def config_map_data(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        """A ConfigMap's `data` (UTF-8 text) and `binaryData` (base64) as bytes, one
        mapping (None when there is no such ConfigMap; undecodable binaryData is left
        out, as if the key were missing)."""
        obj = self.config_maps.get((namespace, name))
        if obj is None:
            return None
        found = {str(k): str(v).encode() for k, v in (obj.get("data") or {}).items()}
        for key, value in (obj.get("binaryData") or {}).items():
            try:
                found[str(key)] = base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                continue
        return found


@dataclass(frozen=True, order=True)
class PodRef:
    """What the reconcile needs of a pod: where it is, who it is, its addresses."""

    namespace: str
    name: str
    uid: str
    ips: tuple[str, ...]
    service_account: str = "default"
    node: str = ""
    config_secret: str | None = None
    """The configuration Secret's name the webhook chose (annotation), if any."""
    key: ObjectKey = field(init=False, repr=False, compare=False)
    """(namespace, name), built once: a pass merging every Tunnel's links asks each
    link's two pods for it (a property built a tuple per call, 4 % of the operator)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.namespace, self.name))

    @property
    def peer_name(self) -> str:
        """`namespace/name`: the peer name in sidecar documents and metrics."""
        return f"{self.namespace}/{self.name}"

    @property
    def primary_ip(self) -> str:
        """status.podIP: the address used for identity and for peers of its family."""
        return self.ips[0]

    def ip_of_version(self, version: int) -> str | None:
        """The pod's first address of IP `version` (4 or 6), if any."""
        for ip in self.ips:
            if ip_version(ip) == version:
                return ip
        return None


def pod_ref(pod: K8sObject, *, require_ip: bool = True) -> PodRef | None:
    """The pod as a :class:`PodRef`, or None when it cannot take part yet or any more.

    A pod takes part once it has an IP (unless `require_ip` is false: then `ips` may be
    empty) and until it terminates. Host-network pods are left out: their address is
    the node's, which a pod sidecar cannot protect.
    """
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if metadata.get("deletionTimestamp") or spec.get("hostNetwork"):
        return None
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    ips = [entry.get("ip") for entry in status.get("podIPs") or [] if entry.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    if not ips and require_ip:
        return None
    try:
        normalized = tuple(normalized_ip(ip) for ip in ips)
    except ValueError:
        return None
    return PodRef(
        namespace=str(metadata.get("namespace") or ""),
        name=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        ips=normalized,
        service_account=str(spec.get("serviceAccountName") or "default"),
        node=str(spec.get("nodeName") or ""),
        config_secret=(metadata.get("annotations") or {}).get(CONFIG_SECRET_ANNOTATION) or None,
    )


__all__ = [
    "CONFIG_SECRET_ANNOTATION",
    "Cluster",
    "K8sObject",
    "ObjectKey",
    "PodRef",
    "ip_version",
    "key_of",
    "normalized_ip",
    "pod_ref",
]
