"""Peers outside the cluster: ExternalPeer checks and the links of the pods to them.

An ExternalPeer is a security gateway (and the subnets behind it) or a single host that
IKE reaches at `spec.address`. A Tunnel names it in `spec.selector.to.externalPeers`;
every `from` pod with an IP then gets one peer entry for it in its sidecar document
(:func:`~.render.render_pod`), named :func:`external_peer_name` — three path segments,
so it can never equal a pod peer's `namespace/pod`.

What the schema cannot check is checked here, each problem naming the field: the
subnets are CIDRs, do not overlap the cluster's pod or Service ranges (the chart's
`clusterNetworks`, and any pod address or ClusterIP the operator sees) nor the subnets of
an ExternalPeer of the same namespace that comes first in name order (the later one is
refused, the first keeps working, as with pod pairs claimed by two Tunnels); a DNS name
resolves (the operator resolves it with a bounded timeout and re-resolves it on a timer:
:attr:`~.cluster.Cluster.resolved`); the PSK Secret, the CA Secret and the
TunnelCertificate exist. An invalid ExternalPeer is configured in no pod, and a Tunnel
naming it is refused with a condition naming the list entry; other Tunnels are
unaffected.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from kipsec_operator.crds.models import ExternalPeerSpec, TunnelSpec
from kipsec_sidecar.config.errors import FieldError

from .cluster import Cluster, K8sObject, ObjectKey, PodRef, ip_version
from .validation import (
    check_lifetimes,
    check_proposals,
    external_peer_names,
    parse_model,
    psk_problems,
    secret_problem,
)

NAME_PREFIX = "externalpeer"
"""First segment of an external peer's name in sidecar documents and reports."""

Checked = ExternalPeerSpec | list[FieldError]
"""An ExternalPeer's parsed spec when it can be used, else its problems."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def external_peer_name(key: ObjectKey) -> str:
    """`externalpeer/<namespace>/<name>`: the peer name in sidecar documents and metrics."""
    return f"{NAME_PREFIX}/{key[0]}/{key[1]}"


def parse_external_peer(obj: K8sObject) -> ExternalPeerSpec | list[FieldError]:
    """The ExternalPeer's spec as the model (defaults filled in), or its schema errors."""
    return parse_model(obj, ExternalPeerSpec)


def is_ip(text: str) -> bool:
    """Whether `text` is an IP address literal (not a DNS name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def addresses_of(spec: ExternalPeerSpec, cluster: Cluster) -> tuple[str, ...]:
    """Where `spec.address` points: itself when an IP, else what the operator resolved."""
    if is_ip(spec.address):
        return (str(ipaddress.ip_address(spec.address)),)
    return tuple(cluster.resolved.get(spec.address.lower().rstrip("."), ()))


def check_external_peers(cluster: Cluster) -> dict[ObjectKey, Checked]:
    """Every ExternalPeer of `cluster`, checked in (namespace, name) order, so that of two
    with overlapping subnets the later one is refused."""
    taken: dict[str, list[tuple[str, Network]]] = {}
    found: dict[ObjectKey, Checked] = {}
    for key, obj in sorted(cluster.external_peers.items()):
        parsed = parse_external_peer(obj)
        if isinstance(parsed, list):
            found[key] = parsed
            continue
        mine = taken.get(key[0], [])
        problems = list(_check(parsed, key, cluster, mine))
        if problems:
            found[key] = problems
            continue
        found[key] = parsed
        taken.setdefault(key[0], []).extend(
            (key[1], ipaddress.ip_network(text)) for text in parsed.subnets
        )
    return found


def _check(
    spec: ExternalPeerSpec, key: ObjectKey, cluster: Cluster, taken: list[tuple[str, Network]]
) -> Iterator[FieldError]:
    namespace = key[0]
    if spec.ike_version != 2:
        yield FieldError("spec.ikeVersion", "IKEv1 is not yet supported; use 2")
    if spec.initiator == "external" and spec.start not in ("auto", "none"):
        yield FieldError(
            "spec.start", "the pods never initiate with initiator: external; leave it unset"
        )
    addresses = addresses_of(spec, cluster)
    if not addresses:
        yield FieldError(
            "spec.address",
            f'"{spec.address}" does not resolve (the operator retries on its timer)',
        )
    version = ip_version(addresses[0]) if addresses else None
    yield from _check_subnets(spec, cluster, taken, version)
    yield from _check_identity(spec)
    auth = spec.authentication
    base = "spec.authentication"
    if (auth.psk is None) == (auth.certificate is None):
        yield FieldError(base, "give exactly one of psk, certificate")
    elif auth.psk is not None:
        yield from psk_problems(cluster, namespace, auth.psk.secret_ref, f"{base}.psk.secretRef")
    elif auth.certificate is not None:
        ca = auth.certificate.ca_secret_ref
        problem = secret_problem(
            cluster, namespace, ca.name, ca.key, f"{base}.certificate.caSecretRef"
        )
        if problem is not None:
            yield problem
        name = auth.certificate.tunnel_certificate_ref.name
        if (namespace, name) not in cluster.tunnel_certificates:
            yield FieldError(
                f"{base}.certificate.tunnelCertificateRef.name",
                f'TunnelCertificate "{name}" not found in namespace {namespace}',
            )
    yield from check_proposals(spec.proposals, "esp")
    yield from check_lifetimes(spec.lifetimes, spec.liveness, ike=True)


def _check_subnets(
    spec: ExternalPeerSpec,
    cluster: Cluster,
    taken: list[tuple[str, Network]],
    version: int | None,
) -> Iterator[FieldError]:
    reserved = [ipaddress.ip_network(text, strict=False) for text in cluster.cluster_networks]
    for index, text in enumerate(spec.subnets):
        where = f"spec.subnets[{index}]"
        try:
            subnet = ipaddress.ip_network(text)
        except ValueError as exc:
            yield FieldError(where, f"not a CIDR: {text[:49]!r} ({exc})")
            continue
        if version is not None and subnet.version != version:
            yield FieldError(
                where,
                f"{subnet} is IPv{subnet.version} but spec.address is IPv{version}; "
                "one family per ExternalPeer",
            )
            continue
        clash = _overlap(subnet, reserved, cluster)
        if clash is not None:
            yield FieldError(where, f"{subnet} overlaps {clash}")
            continue
        for other, network in taken:
            if subnet.overlaps(network):
                yield FieldError(
                    where, f'{subnet} overlaps {network} of ExternalPeer "{other}" (first wins)'
                )
                break


def _overlap(subnet: Network, reserved: list[Network], cluster: Cluster) -> str | None:
    """What of the cluster `subnet` overlaps: a configured range, a pod, a ClusterIP."""
    for network in reserved:
        if network.version == subnet.version and subnet.overlaps(network):
            return f"the cluster network {network} (clusterNetworks)"
    for key in cluster.pods:
        ref = cluster.ref(key)
        if ref is None:
            continue
        for ip in ref.ips:
            if ipaddress.ip_address(ip) in subnet:
                return f"the address {ip} of pod {ref.peer_name}"
    for (namespace, name), service in cluster.services.items():
        for ip in (service.get("spec") or {}).get("clusterIPs") or []:
            if is_ip(str(ip)) and ipaddress.ip_address(str(ip)) in subnet:
                return f"the ClusterIP {ip} of Service {namespace}/{name}"
    return None


def _check_identity(spec: ExternalPeerSpec) -> Iterator[FieldError]:
    identity = spec.identity
    if identity is None:
        return
    given = [name for name, value in identity.model_dump(by_alias=True).items() if value]
    if len(given) != 1:
        yield FieldError("spec.identity", "give exactly one of fqdn, address, email, dn, keyId")
    if identity.address is not None and not is_ip(identity.address):
        yield FieldError("spec.identity.address", f"not an IP address: {identity.address!r}")


def sidecar_identity(spec: ExternalPeerSpec, address: str) -> dict[str, Any] | None:
    """The document's `identity` of the peer: the spec's, else with PSK its address, else
    None (any certificate from the CA)."""
    if spec.identity is not None:
        return {k: v for k, v in spec.identity.model_dump(by_alias=True).items() if v}
    if spec.authentication.psk is not None:
        return {"address": address}
    return None


@dataclass(frozen=True, order=True)
class ExternalLink:
    """A pod's SA towards an ExternalPeer, asked for by `tunnel`."""

    tunnel: ObjectKey
    local: PodRef
    peer: ObjectKey
    address: str
    """The peer's address IKE goes to (of the pod's IP version)."""

    @property
    def peer_name(self) -> str:
        return external_peer_name(self.peer)


def external_links(
    cluster: Cluster,
    specs: Mapping[ObjectKey, TunnelSpec],
    sides: Mapping[ObjectKey, tuple[list[ObjectKey], list[ObjectKey]]],
) -> dict[ObjectKey, tuple[ExternalLink, ...]]:
    """Per pod, its links to ExternalPeers from the valid Tunnels `specs` (`sides`: the
    pods each selects). A pod linked to the same ExternalPeer by two Tunnels keeps the
    first Tunnel's link (one SA pair per peer)."""
    by_pod: dict[ObjectKey, list[ExternalLink]] = {}
    seen: set[tuple[ObjectKey, ObjectKey]] = set()
    checked = cluster.external_checks
    for tunnel in sorted(specs):
        names = external_peer_names(specs[tunnel])
        if not names:
            continue
        for name in names:
            peer = (tunnel[0], name)
            spec = checked.get(peer)
            if not isinstance(spec, ExternalPeerSpec):
                continue
            addresses = addresses_of(spec, cluster)
            for pod_key in sides[tunnel][0]:
                ref = cluster.ref(pod_key)
                if ref is None or (pod_key, peer) in seen:
                    continue
                address = next(
                    (a for a in addresses if ref.ip_of_version(ip_version(a)) is not None), None
                )
                if address is None:
                    continue
                seen.add((pod_key, peer))
                by_pod.setdefault(pod_key, []).append(ExternalLink(tunnel, ref, peer, address))
    return {key: tuple(sorted(links)) for key, links in by_pod.items()}


__all__ = [
    "NAME_PREFIX",
    "Checked",
    "ExternalLink",
    "addresses_of",
    "check_external_peers",
    "external_links",
    "external_peer_name",
    "is_ip",
    "parse_external_peer",
    "sidecar_identity",
]
