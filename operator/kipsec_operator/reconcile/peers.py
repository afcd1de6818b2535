"""Who talks to whom: the pods a Tunnel selects, their links, and the traffic each protects.

A Tunnel with `from` and `to` links every `from` pod with every `to` pod (both ends get
a link, so each sidecar knows its peer); without `to` it is a mesh of the `from` pods.
A pod that appears on both sides is linked in both directions once, as in a mesh.

A pair of pods joined by two Tunnels keeps the link of the first Tunnel in
(namespace, name) order: the sidecar has one SA pair per peer. The later Tunnel reports
the conflict in its status (:attr:`Links.conflicts`).

Traffic selectors are the pods' own addresses (/32 or /128 — transport mode protects
exactly the endpoints), narrowed by the Tunnel's `traffic` rules. A port narrows the
`to` side (it is the destination port, as in a NetworkPolicy). In a mesh there is no
`to` side, and one SA pair per peer cannot express "their port 443 or ours", so a mesh
narrows by protocol only: it protects more traffic than the ports, never less.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from kipsec_operator.crds.models import Side, TrafficRule, TunnelSpec

from .cluster import Cluster, K8sObject, ObjectKey, PodRef, ip_version, key_of
from .consent import consents, refusal
from .selectors import matches

Role = Literal["from", "to", "mesh"]

_PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True, order=True)
class Link:
    """One end of a protected pod pair: `local`'s view of `remote` under `tunnel`."""

    tunnel: ObjectKey
    local: PodRef
    remote: PodRef
    role: Role
    """Which side `local` is on (`mesh` when the pair is linked both ways)."""
    pair: tuple[ObjectKey, ObjectKey] = field(init=False, repr=False, compare=False)
    """(local, remote) pod keys, built once: every pass merges every Tunnel's links by
    this pair (:func:`all_links`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pair", (self.local.key, self.remote.key))

    @property
    def remote_address(self) -> str:
        """The peer's address of our primary IP version (links exist only when it has one)."""
        address = self.remote.ip_of_version(ip_version(self.local.primary_ip))
        assert address is not None
        return address


@dataclass(frozen=True)
class TunnelIndex:
    """The Tunnels that may select a pod, found from the pod's labels alone.

    A side selects a pod only if the pod carries every `matchLabels` pair of the side's
    `podSelector`, so each side is indexed under one of its pairs (a side without
    `matchLabels` may select any pod). Built from parsed specs once per set of Tunnel
    objects (:meth:`current`): a pass with more than a few pod changes asked every
    Tunnel of the cluster for its pods to find the few that select one of them.
    """

    tunnels: Mapping[ObjectKey, K8sObject]
    """The Tunnel objects the index was built from."""
    specs: Mapping[ObjectKey, TunnelSpec]
    """Their parsed specs (the valid ones)."""
    by_pair: Mapping[tuple[str, str], frozenset[ObjectKey]]
    anywhere: frozenset[ObjectKey]
    """Tunnels with a side that has no `matchLabels` (they may select any pod)."""

    @classmethod
    def of(
        cls, tunnels: Mapping[ObjectKey, K8sObject], specs: Mapping[ObjectKey, TunnelSpec]
    ) -> TunnelIndex:
        """The index of `tunnels`; `specs` holds the valid ones' parsed specs (a Tunnel
        without one selects nothing)."""
        by_pair: dict[tuple[str, str], set[ObjectKey]] = {}
        anywhere: set[ObjectKey] = set()
        for key, spec in specs.items():
            sides: list[Side] = [spec.selector.from_]
            if spec.selector.to is not None and spec.selector.to.selects_pods:
                sides.append(spec.selector.to)
            for side in sides:
                pairs = side.pod_selector.match_labels
                if pairs:
                    by_pair.setdefault(min(pairs.items()), set()).add(key)
                else:
                    anywhere.add(key)
        return cls(
            dict(tunnels),
            dict(specs),
            {pair: frozenset(keys) for pair, keys in by_pair.items()},
            frozenset(anywhere),
        )

    def spec_of(self, key: ObjectKey, tunnel: K8sObject) -> TunnelSpec | None:
        """The parsed spec the index holds for `tunnel` when its spec is the one it was
        built from (a status written replaces the object, not the spec), else None."""
        known = self.tunnels.get(key)
        if known is None or key not in self.specs:
            return None
        if known is tunnel or known.get("spec") == tunnel.get("spec"):
            return self.specs[key]
        return None

    def current(self, tunnels: Mapping[ObjectKey, K8sObject]) -> bool:
        """Whether `tunnels` are the very objects the index was built from."""
        return len(tunnels) == len(self.tunnels) and all(
            self.tunnels.get(key) is tunnel for key, tunnel in tunnels.items()
        )

    def may_select(self, labels: Mapping[str, str]) -> set[ObjectKey]:
        """The Tunnels that may select a pod with `labels` (a superset of those that do)."""
        found = set(self.anywhere)
        for pair in labels.items():
            found.update(self.by_pair.get(pair, ()))
        return found


@dataclass(frozen=True)
class Links:
    """Every link of the cluster, per local pod, and the links dropped as conflicts."""

    by_pod: Mapping[ObjectKey, tuple[Link, ...]] = field(default_factory=dict)
    conflicts: tuple[Link, ...] = ()
    by_tunnel: Mapping[ObjectKey, Sequence[Link]] | None = field(default=None, compare=False)
    """The same links per Tunnel, in any order, when the caller has them
    (:func:`all_links` does): else built from `by_pod` on first use."""

    @cached_property
    def _by_tunnel(self) -> Mapping[ObjectKey, Sequence[Link]]:
        if self.by_tunnel is not None:
            return self.by_tunnel
        index: dict[ObjectKey, list[Link]] = {}
        for links in self.by_pod.values():
            for link in links:
                index.setdefault(link.tunnel, []).append(link)
        return index

    def of_tunnel(self, tunnel: ObjectKey) -> list[Link]:
        """The links `tunnel` contributes (conflicts excluded), ordered (sorted when
        asked: a pass with only pod changes asks about the Tunnels they touch, and
        indexing and sorting every Tunnel's links was 4 % of the operator at 5,000 pods)."""
        return sorted(self._by_tunnel.get(tunnel, ()))


def _namespaces(side: Side, tunnel_namespace: str, cluster: Cluster) -> list[str]:
    """The namespaces one side's `namespaceSelector` matches (consenting or not)."""
    if side.namespace_selector is None:
        return [tunnel_namespace]
    namespace_selector = side.namespace_selector.model_dump(by_alias=True)
    return [
        name
        for name in cluster.pods_by_namespace
        if name in cluster.namespaces
        and matches(namespace_selector, cluster.namespace_labels(name))
    ]


def _side(side: Side, tunnel_namespace: str, cluster: Cluster) -> list[ObjectKey]:
    """The pods of one side in the namespaces that consent (:mod:`.consent`), in key order."""
    pod_selector = side.pod_selector.model_dump(by_alias=True)
    found = [
        key
        for name in _namespaces(side, tunnel_namespace, cluster)
        if consents(name, cluster.namespaces.get(name), tunnel_namespace)
        for key in cluster.pods_matching(name, pod_selector)
    ]
    return sorted(found)


def refusals(tunnel: K8sObject, spec: TunnelSpec, cluster: Cluster) -> list[str]:
    """One status message per (side, namespace) whose pods `tunnel` would select but
    whose namespace does not consent. A namespace without matching pods is not named:
    an empty `namespaceSelector` would otherwise name every namespace of the cluster."""
    namespace = key_of(tunnel)[0]
    sides = [("from", spec.selector.from_), ("to", spec.selector.to)]
    return [
        refusal(f"spec.selector.{role}.namespaceSelector", name, namespace)
        for role, side in sides
        if side is not None and side.namespace_selector is not None
        for name in _namespaces(side, namespace, cluster)
        if not consents(name, cluster.namespaces.get(name), namespace)
        and cluster.pods_matching(name, side.pod_selector.model_dump(by_alias=True))
    ]


def selects_any(
    tunnel: K8sObject, spec: TunnelSpec, cluster: Cluster, pods: Iterable[ObjectKey]
) -> bool:
    """Whether :func:`selected` would hold one of `pods` (pods of `cluster`), asked of
    those pods alone: a pass with a few pod changes asks every Tunnel this, and
    selecting each Tunnel's pods to find out was most of such a pass at 5,000 pods."""
    namespace = key_of(tunnel)[0]
    sides = [spec.selector.from_]
    if spec.selector.to is not None and spec.selector.to.selects_pods:
        sides.append(spec.selector.to)
    labels = cluster.pod_labels
    for side in sides:
        pod_selector: dict[str, Any] | None = None
        for key in pods:
            if key not in labels:
                continue
            name = key[0]
            if side.namespace_selector is None:
                if name != namespace:
                    continue
            elif name not in cluster.namespaces or not matches(
                side.namespace_selector.model_dump(by_alias=True), cluster.namespace_labels(name)
            ):
                continue
            if not consents(name, cluster.namespaces.get(name), namespace):
                continue
            if pod_selector is None:
                pod_selector = side.pod_selector.model_dump(by_alias=True)
            if matches(pod_selector, labels[key]):
                return True
    return False


def selected(
    tunnel: K8sObject, spec: TunnelSpec, cluster: Cluster
) -> tuple[list[ObjectKey], list[ObjectKey]]:
    """Keys of the pods on the `from` and `to` sides (any state; `to` = `from` for a mesh)."""
    namespace = key_of(tunnel)[0]
    chosen_from = _side(spec.selector.from_, namespace, cluster)
    if spec.selector.to is None:
        return chosen_from, list(chosen_from)
    if not spec.selector.to.selects_pods:  # external peers (:mod:`.external`)
        return chosen_from, []
    return chosen_from, _side(spec.selector.to, namespace, cluster)


def tunnel_links(
    tunnel: K8sObject,
    spec: TunnelSpec,
    cluster: Cluster,
    sides: tuple[list[ObjectKey], list[ObjectKey]] | None = None,
) -> list[Link]:
    """Every link of one Tunnel (before conflicts with other Tunnels are resolved).

    `sides` is :func:`selected`'s result when the caller has it already.
    """
    from_keys, to_keys = sides if sides is not None else selected(tunnel, spec, cluster)
    refs = {key: cluster.ref(key) for key in {*from_keys, *to_keys}}
    roles: dict[tuple[ObjectKey, ObjectKey], set[Role]] = {}
    mesh = spec.selector.to is None
    for a in from_keys:
        for b in to_keys:
            if a == b:
                continue
            roles.setdefault((a, b), set()).add("mesh" if mesh else "from")
            roles.setdefault((b, a), set()).add("mesh" if mesh else "to")
    links = []
    for (local_key, remote_key), found in sorted(roles.items()):
        local, remote = refs[local_key], refs[remote_key]
        if local is None or remote is None:
            continue
        if remote.ip_of_version(ip_version(local.primary_ip)) is None:
            continue
        role: Role = next(iter(found)) if len(found) == 1 else "mesh"
        links.append(Link(key_of(tunnel), local, remote, role))
    return links


@dataclass(frozen=True)
class TunnelLinks:
    """One Tunnel's links before conflicts are resolved, and the same per local pod (in
    their order): :func:`all_links` merges a Tunnel that shares no local pod with an
    earlier one by its pods, not link by link (a pass merges every Tunnel's)."""

    links: tuple[Link, ...] = ()
    by_local: Mapping[ObjectKey, tuple[Link, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, links: Iterable[Link]) -> TunnelLinks:
        found = tuple(links)
        by_local: dict[ObjectKey, list[Link]] = {}
        for link in found:
            by_local.setdefault(link.pair[0], []).append(link)
        return cls(found, {pod: tuple(mine) for pod, mine in by_local.items()})


def all_links(
    cluster: Cluster,
    specs: Mapping[ObjectKey, TunnelSpec],
    sides: Mapping[ObjectKey, tuple[list[ObjectKey], list[ObjectKey]]] | None = None,
    per_tunnel: Mapping[ObjectKey, TunnelLinks] | None = None,
) -> Links:
    """The links of every Tunnel in `specs` (the valid ones), conflicts resolved.

    `sides` maps Tunnels to :func:`selected`'s result where the caller has it already;
    `per_tunnel` maps Tunnels to their :func:`tunnel_links` where the caller has those.
    A pair of pods is linked by two Tunnels only if they share its local pod, so a
    Tunnel sharing no local pod with the Tunnels before it is merged whole.
    """
    by_pod: dict[ObjectKey, tuple[Link, ...] | list[Link]] = {}
    by_tunnel: dict[ObjectKey, Sequence[Link]] = {}
    conflicts: list[Link] = []
    # The pairs of a pod that two Tunnels share, made on its first overlap: a pod in many
    # overlapping Tunnels costs a set lookup per link, not a scan of the links before it.
    paired: dict[ObjectKey, set[tuple[ObjectKey, ObjectKey]]] = {}
    for key in sorted(specs):
        known = sides.get(key) if sides is not None else None
        found = per_tunnel.get(key) if per_tunnel is not None else None
        if found is None:
            found = TunnelLinks.of(tunnel_links(cluster.tunnels[key], specs[key], cluster, known))
        if by_pod.keys().isdisjoint(found.by_local):
            by_pod.update(found.by_local)  # shared tuples: never appended to in place
            by_tunnel[key] = found.links
            continue
        kept = []
        for link in found.links:
            local = link.pair[0]
            mine = by_pod.get(local, ())
            pairs = paired.get(local)
            if pairs is None:
                pairs = paired[local] = {other.pair for other in mine}
            if link.pair in pairs:
                conflicts.append(link)
                continue
            pairs.add(link.pair)
            kept.append(link)
            if isinstance(mine, list):
                mine.append(link)
            else:
                by_pod[local] = [*mine, link]
        by_tunnel[key] = found.links if len(kept) == len(found.links) else kept
    return Links(
        {k: v if isinstance(v, tuple) else tuple(v) for k, v in by_pod.items()},
        tuple(conflicts),
        by_tunnel,
    )


def traffic_selectors(link: Link, rules: Iterable[TrafficRule]) -> dict[str, list[Any]]:
    """The sidecar's `trafficSelectors` for `link`: host addresses narrowed by `rules`."""
    version = ip_version(link.local.primary_ip)
    bits = 32 if version == 4 else 128
    return selectors(
        [f"{link.local.primary_ip}/{bits}"],
        [f"{link.remote_address}/{bits}"],
        rules,
        link.role,
        version,
    )


def selectors(
    local_cidrs: list[str],
    remote_cidrs: list[str],
    rules: Iterable[TrafficRule],
    role: Role,
    version: int,
) -> dict[str, list[Any]]:
    """`trafficSelectors` between two lists of CIDRs narrowed by `rules`; a port narrows
    the `to` side (the remote one for `role` from, ours for `to`, neither in a mesh)."""
    rules = list(rules)
    if not rules or any(r.protocol == "Any" for r in rules):
        return {"local": list(local_cidrs), "remote": list(remote_cidrs)}
    local: list[dict[str, Any]] = []
    remote: list[dict[str, Any]] = []
    for traffic_rule in rules:
        protocol = _protocol_name(traffic_rule.protocol, version)
        ports = _ports(traffic_rule)
        for cidrs, target, narrowed in (
            (local_cidrs, local, role == "to"),
            (remote_cidrs, remote, role == "from"),
        ):
            for cidr in cidrs:
                entry: dict[str, Any] = {"cidr": cidr, "protocol": protocol}
                if ports is not None and narrowed:
                    entry["ports"] = ports
                if entry not in target:
                    target.append(entry)
    return {"local": local, "remote": remote}


def _protocol_name(protocol: str, version: int) -> str:
    if protocol == "ICMP":
        return "icmp" if version == 4 else "ipv6-icmp"
    return protocol.lower()


def _ports(traffic_rule: TrafficRule) -> int | str | None:
    if traffic_rule.port is None or traffic_rule.protocol not in _PORT_PROTOCOLS:
        return None
    if traffic_rule.end_port is None or traffic_rule.end_port == traffic_rule.port:
        return traffic_rule.port
    return f"{traffic_rule.port}-{traffic_rule.end_port}"


__all__ = [
    "Link",
    "Links",
    "Role",
    "TunnelIndex",
    "TunnelLinks",
    "all_links",
    "refusals",
    "selected",
    "selectors",
    "traffic_selectors",
    "tunnel_links",
]
