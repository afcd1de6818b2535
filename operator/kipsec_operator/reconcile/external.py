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
from dataclasses import dataclass, field
from typing import Any

from kipsec_operator.crds.models import ExternalPeerCertificate, ExternalPeerSpec, TunnelSpec
from kipsec_operator.webhook.selection import certificate_selects
from kipsec_sidecar.config.errors import FieldError, join_path
from kipsec_sidecar.config.fields import ModelError
from kipsec_sidecar.config.model import Identity as SidecarIdentity

from .cluster import Cluster, K8sObject, ObjectKey, PodRef, ip_version
from .validation import (
    TUNNEL_CERTIFICATE_REF,
    check_ikev1_key,
    check_lifetimes,
    check_pod_ips,
    check_proposals,
    external_peer_names,
    parse_model,
    pem_bundle,
    psk_problems,
    secret_ca_bundle,
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
        bundle = ca_bundle(auth.certificate, namespace, cluster)
        if isinstance(bundle, FieldError):
            yield bundle
        name = auth.certificate.tunnel_certificate_ref.name
        if (namespace, name) not in cluster.tunnel_certificates:
            yield FieldError(
                TUNNEL_CERTIFICATE_REF,
                f'TunnelCertificate "{name}" not found in namespace {namespace}',
            )
        yield from check_pod_ips(namespace, name, cluster)
        yield from check_ikev1_key(spec.ike_version, namespace, name, cluster)
    yield from check_proposals(spec.proposals, "esp", ike_version=spec.ike_version)
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
    """The expected identity as the sidecar will read it (its own model, so its own
    rules and messages: an FQDN's syntax, an IP address, an RFC 4514 DN), and keyId
    only with PSK (a certificate cannot name a key id, RFC 4945)."""
    identity = spec.identity
    if identity is None:
        return
    given = {name: value for name, value in identity.model_dump(by_alias=True).items() if value}
    try:
        SidecarIdentity.model_validate(given)
    except ModelError as exc:
        for problem in exc.errors:
            yield FieldError(join_path("spec.identity", problem.path), problem.message)
        return
    if identity.key_id is not None and spec.authentication.certificate is not None:
        yield FieldError(
            "spec.identity.keyId",
            "a keyId identity only works with PSK authentication; with certificates use "
            "fqdn, address, email or dn",
        )


def ca_bundle(
    certificate: ExternalPeerCertificate, namespace: str, cluster: Cluster
) -> bytes | FieldError:
    """The PEM CA bundle the gateway's certificate must chain to, from the Secret or the
    ConfigMap the spec names, or the problem (naming the field) that makes it unusable:
    the object or key is missing, or the value holds no PEM certificate. The sidecar
    refuses its whole document over a CA file it cannot read, so a bundle that fails
    here is never rendered (the pod keeps its other peers)."""
    base = "spec.authentication.certificate"
    secret_ref, map_ref = certificate.ca_secret_ref, certificate.ca_config_map_ref
    if (secret_ref is None) == (map_ref is None):
        return FieldError(base, "give exactly one of caSecretRef, caConfigMapRef")
    if secret_ref is not None:
        return secret_ca_bundle(
            cluster, namespace, secret_ref.name, secret_ref.key, f"{base}.caSecretRef"
        )
    assert map_ref is not None
    path, name, key = f"{base}.caConfigMapRef", map_ref.name, map_ref.key
    data = cluster.config_map_data(namespace, name)
    if data is None:
        return FieldError(f"{path}.name", f'ConfigMap "{name}" not found in namespace {namespace}')
    if key not in data:
        return FieldError(f"{path}.key", f'ConfigMap "{name}" has no key "{key}"')
    return pem_bundle(data[key], f"{path}.key", f'ConfigMap "{name}" key "{key}"')


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


@dataclass(frozen=True)
class ExternalLinks:
    """The pods' links to ExternalPeers, and the links that were asked for but not made."""

    by_pod: Mapping[ObjectKey, tuple[ExternalLink, ...]] = field(default_factory=dict)
    """Per pod, its links, ordered."""
    conflicts: tuple[tuple[ExternalLink, ObjectKey], ...] = ()
    """Links a second Tunnel asked for (a pod already linked to that ExternalPeer by an
    earlier Tunnel in name order), each with the Tunnel whose link the pod keeps."""
    uncertified: tuple[ExternalLink, ...] = ()
    """Links of pods that the ExternalPeer's TunnelCertificate does not select: such a
    pod would have no certificate to present, so it gets no entry."""


def external_links(
    cluster: Cluster,
    specs: Mapping[ObjectKey, TunnelSpec],
    sides: Mapping[ObjectKey, tuple[list[ObjectKey], list[ObjectKey]]],
) -> ExternalLinks:
    """The links of the pods to ExternalPeers from the valid Tunnels `specs` (`sides`:
    the pods each selects). A pod linked to the same ExternalPeer by two Tunnels keeps
    the first Tunnel's link (one SA pair per peer); the second is a conflict its status
    names. With certificates, only pods the peer's TunnelCertificate selects are linked."""
    by_pod: dict[ObjectKey, list[ExternalLink]] = {}
    owner: dict[tuple[ObjectKey, ObjectKey], ObjectKey] = {}
    conflicts: list[tuple[ExternalLink, ObjectKey]] = []
    uncertified: list[ExternalLink] = []
    checked = cluster.external_checks
    for tunnel in sorted(specs):
        for name in external_peer_names(specs[tunnel]):
            peer = (tunnel[0], name)
            spec = checked.get(peer)
            if not isinstance(spec, ExternalPeerSpec):
                continue
            addresses = addresses_of(spec, cluster)
            certificate = _tunnel_certificate(spec, peer[0], cluster)
            for pod_key in sides[tunnel][0]:
                ref = cluster.ref(pod_key)
                if ref is None:
                    continue
                address = next(
                    (a for a in addresses if ref.ip_of_version(ip_version(a)) is not None), None
                )
                if address is None:
                    continue
                link = ExternalLink(tunnel, ref, peer, address)
                if (pod_key, peer) in owner:
                    conflicts.append((link, owner[(pod_key, peer)]))
                    continue
                if certificate is not None and not certificate_selects(
                    certificate, cluster.pods[pod_key], cluster.namespaces.get(pod_key[0])
                ):
                    uncertified.append(link)
                    continue
                owner[(pod_key, peer)] = tunnel
                by_pod.setdefault(pod_key, []).append(link)
    return ExternalLinks(
        {key: tuple(sorted(links)) for key, links in by_pod.items()},
        tuple(conflicts),
        tuple(uncertified),
    )


def _tunnel_certificate(
    spec: ExternalPeerSpec, namespace: str, cluster: Cluster
) -> K8sObject | None:
    """The TunnelCertificate whose certificates the pods present (None: PSK)."""
    certificate = spec.authentication.certificate
    if certificate is None:
        return None
    return cluster.tunnel_certificates.get((namespace, certificate.tunnel_certificate_ref.name))


__all__ = [
    "NAME_PREFIX",
    "Checked",
    "ExternalLink",
    "ExternalLinks",
    "addresses_of",
    "ca_bundle",
    "check_external_peers",
    "external_links",
    "external_peer_name",
    "is_ip",
    "parse_external_peer",
    "sidecar_identity",
]
