"""Pod → the sidecar's configuration document, and the per-pod Secret that delivers it.

Delivery: one Secret per pod in the pod's namespace, named as the injecting webhook
recorded in the pod's `kipsec.io/config-secret` annotation (else
`kipsec-sidecar-<first 16 hex digits of the pod UID>`), owned by the pod (so the garbage
collector deletes it with the pod) and mounted by the injected sidecar at
:data:`MOUNT_PATH`. It holds `config.yaml` (the document, written as JSON — which is
YAML — because PyYAML's emitter costs milliseconds per pod) and the files the document
names: PSKs (`psk-<t>`), trust bundles (`ca-<t>.crt`), shared TLS certificates
(`tls-<t>.crt`/`.key`) and manual keys files (`manual-<p>.yaml`), where `<t>` is a
digest of the Tunnel and `<p>` of the peer, because Secret keys cannot hold `/` and
have a length limit. Values are copied as the API returned them (base64): the operator
never decodes a PSK. The document names these files by paths relative to itself (the
sidecar resolves them against the directory holding `config.yaml`), so the same bytes
work from the mounted Secret and from the copy the sidecar writes when it gets its
configuration from the operator's `/v1/config`. A certificate issued through a
TunnelCertificate is not in the Secret: the sidecar generates its key in the pod and
keeps key and certificate under :data:`IDENTITY_DIR`; the replica that signs it writes
the certificate (never a key) into the pod's Secret as :data:`POD_CERTIFICATE_KEY`, which
a pass keeps as it is (:func:`with_pod_certificate`), and with IKEv1 public-key
encryption each pod's Secret also holds its peers' certificates (`peer-<digest>.crt`,
named by `peerCertFile`; :mod:`.pod_certificates`). With TLS, every Secret also holds
:data:`OPERATOR_CA_KEY` (:func:`with_operator_ca`, added by the reconciler).

A selected pod without an IP yet gets its Secret without a document (a bootstrap
Secret, empty but for the operator's CA): the
kubelet mounts volumes before it creates the pod's sandbox, so without the Secret the
pod would never get the IP its document needs. `config.yaml` follows once it has one.

Everything here is deterministic (sorted peers, sorted keys, derived names), so an
unchanged cluster renders byte-identical Secrets and the operator writes nothing. Each
document is validated with the sidecar's own loader (once per shape, see :mod:`.shapes`):
what the operator writes is exactly what the sidecar accepts.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from kipsec_operator.crds.models import (
    ExternalPeerSpec,
    Lifetimes,
    Liveness,
    Proposals,
    SaAction,
    StartAction,
    TunnelSpec,
)
from kipsec_sidecar.config import API_VERSION, KIND
from kipsec_sidecar.config.errors import FieldError
from kipsec_sidecar.config.model import Start

from .cluster import Cluster, K8sObject, ObjectKey, PodRef, ip_version
from .document_text import document_text
from .external import ExternalLink, ca_bundle, external_links, sidecar_identity
from .manual import manual_link
from .peers import (
    Link,
    Links,
    TunnelLinks,
    all_links,
    selected,
    selectors,
    traffic_selectors,
    tunnel_links,
)
from .pod_certificates import peer_certificate
from .services import ServiceIndex
from .shapes import validate_document
from .validation import (
    ike_proposals,
    manual_algorithms,
    parse_spec,
    public_key_encryption,
    validate_tunnel,
)

MOUNT_PATH = "/etc/kipsec"
CONFIG_KEY = "config.yaml"
OPERATOR_CA_KEY = "operator-ca.crt"
"""The CA of the operator's serving certificate, in every pod's Secret (the bootstrap
one too), so the sidecar verifies the operator's TLS (CSR exchange, ``/v1/config``)."""
IDENTITY_DIR = "/var/run/kipsec/identity"
POD_CERTIFICATE_KEY = "pod.crt"
"""The pod's own operator-issued certificate in its Secret, written by the replica that
signed it and by nothing else: where its peers' copies come from."""
SECRET_PREFIX = "kipsec-sidecar-"  # noqa: S105 - a name prefix
MANAGED_BY = {"app.kubernetes.io/managed-by": "kipsec-operator"}
POD_ANNOTATION = "kipsec.io/pod"


def is_managed(obj: Mapping[str, Any]) -> bool:
    """Whether `obj` carries the operator's :data:`MANAGED_BY` labels (a per-pod Secret)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())


def sidecar_start(wanted: StartAction) -> Start | None:
    """The peer's `start` in the document: None for `auto` (the sidecar's default)."""
    return None if wanted == "auto" else wanted


def sa_actions(close_action: SaAction | None, dpd_action: SaAction | None) -> dict[str, str]:
    """The peer's `closeAction` and `dpdAction` in the document, those the resource
    sets (unset, the sidecar derives them from `start`, as the CRD documents)."""
    actions = {"closeAction": close_action, "dpdAction": dpd_action}
    return {key: value for key, value in actions.items() if value is not None}


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:12]


def secret_name(pod: PodRef) -> str:
    """The name of the pod's configuration Secret: the webhook's choice, else from the UID."""
    if pod.config_secret:
        return pod.config_secret
    uid = pod.uid.replace("-", "").lower()
    return SECRET_PREFIX + (uid[:16] if uid else _digest(pod.namespace, pod.name))


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


@dataclass(frozen=True)
class PodConfig:
    """The rendered configuration of one pod: the document and the Secret's data."""

    pod: PodRef
    document: Mapping[str, Any]
    files: Mapping[str, str]
    """Secret data keys → base64 values, `config.yaml` included."""

    @property
    def secret_name(self) -> str:
        return secret_name(self.pod)

    def secret(self) -> dict[str, Any]:
        """The Secret manifest to apply (owned by the pod, garbage-collected with it)."""
        return secret_manifest(self.pod, self.files)


def secret_manifest(pod: PodRef, files: Mapping[str, str]) -> dict[str, Any]:
    """The configuration Secret of `pod` holding `files` (base64 values)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(pod),
            "namespace": pod.namespace,
            "labels": dict(MANAGED_BY),
            "annotations": {POD_ANNOTATION: pod.name},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod.name,
                    "uid": pod.uid,
                    "blockOwnerDeletion": False,
                    "controller": False,
                }
            ],
        },
        "data": dict(sorted(files.items())),
    }


def with_pod_certificate(
    manifest: dict[str, Any], current: Mapping[str, str] | None
) -> dict[str, Any]:
    """`manifest` (a configuration Secret) with the :data:`POD_CERTIFICATE_KEY` that the
    Secret holds now (`current` data) kept: a pass never writes or removes it."""
    value = (current or {}).get(POD_CERTIFICATE_KEY)
    if value is None:
        return manifest
    data = {**(manifest.get("data") or {}), POD_CERTIFICATE_KEY: value}
    return {**manifest, "data": dict(sorted(data.items()))}


def with_operator_ca(manifest: dict[str, Any], pem: str | None) -> dict[str, Any]:
    """`manifest` (a configuration Secret) with :data:`OPERATOR_CA_KEY` added; unchanged
    when the operator serves without TLS (`pem` None)."""
    if not pem:
        return manifest
    data = {**(manifest.get("data") or {}), OPERATOR_CA_KEY: _b64(pem)}
    return {**manifest, "data": dict(sorted(data.items()))}


@dataclass(frozen=True)
class TunnelPart:
    """What a pass derived from one Tunnel alone: its spec (or its problems), the pods
    its sides select, and its links before conflicts with other Tunnels are resolved.

    A later pass may reuse it (:func:`plan`'s `reuse`) when the caller knows that
    nothing it was derived from changed: the same Tunnel object (checked here), the
    same Secrets, TunnelCertificates, trust bundles, ExternalPeers and Namespaces, and
    none of the pods it selected or would now select changed.
    """

    tunnel: K8sObject
    spec: TunnelSpec | None
    problems: list[FieldError]
    sides: tuple[list[ObjectKey], list[ObjectKey]] = ([], [])
    links: TunnelLinks = field(default_factory=TunnelLinks)


@dataclass(frozen=True)
class Rendering:
    """The whole desired state: valid Tunnels, their problems, links, per-pod configs."""

    specs: Mapping[ObjectKey, TunnelSpec]
    problems: Mapping[ObjectKey, list[FieldError]]
    links: Links
    selected: Mapping[ObjectKey, frozenset[ObjectKey]]
    """Per valid Tunnel, the pods its sides select (with or without an IP)."""
    pods: Mapping[ObjectKey, PodConfig] = field(default_factory=dict)
    pending: Mapping[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    """Bootstrap Secrets (no data) of selected pods that have no IP yet."""
    external: Mapping[ObjectKey, tuple[ExternalLink, ...]] = field(default_factory=dict)
    """Per pod, its links to ExternalPeers."""
    external_conflicts: tuple[tuple[ExternalLink, ObjectKey], ...] = ()
    """Links to ExternalPeers not made because an earlier Tunnel made them, with that
    Tunnel (:attr:`.external.ExternalLinks.conflicts`)."""
    uncertified: tuple[ExternalLink, ...] = ()
    """Links to ExternalPeers not made because the peer's TunnelCertificate does not
    select the pod (:attr:`.external.ExternalLinks.uncertified`)."""
    parts: Mapping[ObjectKey, TunnelPart] = field(default_factory=dict)
    """Per Tunnel, what it alone gave (for a later pass to reuse)."""

    @cached_property
    def _external_by_peer(self) -> dict[ObjectKey, list[ExternalLink]]:
        index: dict[ObjectKey, list[ExternalLink]] = {}
        for links in self.external.values():
            for link in links:
                index.setdefault(link.peer, []).append(link)
        return {peer: sorted(links) for peer, links in index.items()}

    def of_external_peer(self, peer: ObjectKey) -> list[ExternalLink]:
        """The pods' links to the ExternalPeer `peer`, ordered."""
        return list(self._external_by_peer.get(peer, ()))

    def external_of_tunnel(self, tunnel: ObjectKey) -> list[ExternalLink]:
        """The links to ExternalPeers that `tunnel` asks for, ordered."""
        return sorted(
            link for links in self.external.values() for link in links if link.tunnel == tunnel
        )

    def secrets(self) -> dict[ObjectKey, dict[str, Any]]:
        """Every configuration Secret that should exist, by pod."""
        found = dict(self.pending)
        found.update((key, config.secret()) for key, config in self.pods.items())
        return dict(sorted(found.items()))


def plan(
    cluster: Cluster,
    only: Iterable[ObjectKey] | None = None,
    *,
    reuse: Mapping[ObjectKey, TunnelPart] | None = None,
) -> Rendering:
    """Validate every Tunnel, link the pods and render the pods in `only` (default all).

    A pod gets a configuration when a valid Tunnel selects it and it has an IP; a
    selected pod without an IP gets an empty bootstrap Secret (:attr:`Rendering.pending`)
    and is rendered once it has one. `reuse` holds :class:`TunnelPart` s of an earlier
    pass that are still true (the caller's judgement, see there); a part is taken only
    for the very Tunnel object it was derived from. Validating, selecting and linking
    every Tunnel on every pass cost most of a pass at thousands of pods.
    """
    specs: dict[ObjectKey, TunnelSpec] = {}
    problems: dict[ObjectKey, list[FieldError]] = {}
    chosen: dict[ObjectKey, frozenset[ObjectKey]] = {}
    sides: dict[ObjectKey, tuple[list[ObjectKey], list[ObjectKey]]] = {}
    parts: dict[ObjectKey, TunnelPart] = {}
    for key, tunnel in sorted(cluster.tunnels.items()):
        part = (reuse or {}).get(key)
        if part is None or part.tunnel is not tunnel:
            part = _tunnel_part(tunnel, cluster)
        parts[key] = part
        if part.spec is None:
            problems[key] = part.problems
            continue
        specs[key] = part.spec
        sides[key] = part.sides
        chosen[key] = frozenset([*part.sides[0], *part.sides[1]])
    per_tunnel = {key: part.links for key, part in parts.items() if part.spec is not None}
    links = all_links(cluster, specs, sides, per_tunnel)
    external = external_links(cluster, specs, sides)
    in_scope = set().union(*chosen.values()) if chosen else set()
    wanted = sorted(in_scope if only is None else in_scope & set(only))
    pods: dict[ObjectKey, PodConfig] = {}
    pending: dict[ObjectKey, dict[str, Any]] = {}
    services = ServiceIndex.of(cluster)
    for pod_key in wanted:
        ref = cluster.ref(pod_key, require_ip=False)
        if ref is None:
            continue
        if not ref.ips:
            pending[pod_key] = secret_manifest(ref, {})
            continue
        pods[pod_key] = render_pod(
            ref,
            links.by_pod.get(pod_key, ()),
            specs,
            cluster,
            services=services,
            external=external.by_pod.get(pod_key, ()),
        )
    return Rendering(
        specs,
        problems,
        links,
        chosen,
        pods,
        pending,
        external.by_pod,
        external.conflicts,
        external.uncertified,
        parts,
    )


def _tunnel_part(tunnel: K8sObject, cluster: Cluster) -> TunnelPart:
    found = validate_tunnel(tunnel, cluster)
    parsed = parse_spec(tunnel)
    if found or isinstance(parsed, list):
        return TunnelPart(tunnel, None, found)
    sides = selected(tunnel, parsed, cluster)
    return TunnelPart(
        tunnel, parsed, [], sides, TunnelLinks.of(tunnel_links(tunnel, parsed, cluster, sides))
    )


def render_pod(
    pod: PodRef,
    links: Iterable[Link],
    specs: Mapping[ObjectKey, TunnelSpec],
    cluster: Cluster,
    *,
    services: ServiceIndex | None = None,
    external: Iterable[ExternalLink] = (),
) -> PodConfig:
    """The configuration of `pod` from its links (to pods, and to ExternalPeers:
    `external`); validated by the sidecar's loader.

    `services` is the cluster's :class:`~.services.ServiceIndex` (built here when not
    given; :func:`plan` builds it once for every pod): the Services backed by the
    pod's peers go into the document's `services` section.

    Raises :class:`~kipsec_sidecar.config.ConfigError` only for a defect (a Tunnel that
    passed :func:`~.validation.validate_tunnel` must render to a valid document).
    """
    files: dict[str, str] = {}
    peers = []
    shared_certificate = False
    local_auth: dict[str, Any] | None = None
    for link in sorted(links, key=lambda item: item.remote.peer_name):
        spec = specs[link.tunnel]
        auth = spec.authentication
        if auth is not None and auth.certificate is not None and auth.certificate.secret_ref:
            shared_certificate = True
        if public_key_encryption(spec) is not None and local_auth is None:
            # The pod needs its certificate before any peer can have it: `local.auth`
            # makes the sidecar enroll even while every peer is left out.
            local_auth = _auth(link, spec, cluster, files, _digest(*link.tunnel))
        peer = _peer(link, spec, cluster, files)
        if peer is not None:
            peers.append(peer)
    for external_link in external:
        peers.append(_external_peer(external_link, specs[external_link.tunnel], cluster, files))
    local: dict[str, Any] = {"addresses": list(pod.ips)}
    if not shared_certificate:
        local["identity"] = {"address": pod.primary_ip}
    if local_auth is not None:
        local["auth"] = local_auth
    document: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        # A restarted sidecar container must not let the app's traffic out in clear.
        "failClosedOnExit": True,
        "local": local,
        "peers": peers,
    }
    if peers:
        index = services if services is not None else ServiceIndex.of(cluster)
        translated = index.document(peer["address"] for peer in peers)
        if translated:
            document["services"] = translated
    validate_document(document, source=f"pod {pod.peer_name}")
    text = document_text(document) + "\n"
    files[CONFIG_KEY] = _b64(text)
    return PodConfig(pod=pod, document=document, files=files)


def _peer(
    link: Link, spec: TunnelSpec, cluster: Cluster, files: dict[str, str]
) -> dict[str, Any] | None:
    """The entry of a linked pod; None while public-key encryption lacks its certificate."""
    peer: dict[str, Any] = {
        "name": link.remote.peer_name,
        "address": link.remote_address,
        "mode": spec.mode,
        "protocol": spec.protocol,
        "keying": spec.keying,
        "encapsulation": spec.encapsulation or ("raw" if spec.protocol == "ah" else "udp"),
        "trafficSelectors": traffic_selectors(link, spec.traffic),
    }
    if spec.keying == "manual":
        peer["manual"] = _manual(link, spec, cluster, files)
        return peer
    tag = _digest(*link.tunnel)
    peer["auth"] = _auth(link, spec, cluster, files, tag)
    method = public_key_encryption(spec)
    if method is not None:
        peer_cert = _peer_certificate_file(link, spec, cluster, tag, files)
        if peer_cert is None:
            return None
        peer["auth"]["certificate"] |= {"publicKeyEncryption": method, "peerCertFile": peer_cert}
    auth = spec.authentication
    if auth is None or auth.certificate is None or auth.certificate.secret_ref is None:
        peer["identity"] = {"address": link.remote.primary_ip}
    peer.update(
        _ike_settings(
            spec.ike_version, spec.proposals, spec.lifetimes, spec.liveness, spec.protocol
        )
    )
    peer.update(_control(spec.start, spec.close_action, spec.dpd_action))
    return peer


def _ike_settings(
    ike_version: int,
    proposals: Proposals,
    lifetimes: Lifetimes,
    liveness: Liveness,
    protocol: Literal["esp", "ah"],
) -> dict[str, Any]:
    """A peer's `ikeVersion` (written only for 1, so IKEv2 documents are unchanged),
    `proposals`, `lifetimes` and `liveness` in the document."""
    version: dict[str, Any] = {"ikeVersion": 1} if ike_version == 1 else {}
    offered: dict[str, Any] = {}
    ike = ike_proposals(proposals, ike_version)
    if ike is not None:
        offered["ike"] = ike
    offered[protocol] = list(getattr(proposals, protocol))
    return {
        **version,
        "proposals": offered,
        "lifetimes": {
            "ikeSa": lifetimes.ike_sa,
            "childSa": lifetimes.child_sa,
            "rekeyMargin": lifetimes.rekey_margin,
        },
        "liveness": {"interval": liveness.interval, "timeout": liveness.timeout},
    }


def _control(start: StartAction, close: SaAction | None, dpd: SaAction | None) -> dict[str, Any]:
    """A peer's `start`, `closeAction` and `dpdAction`, where they differ from the
    sidecar's defaults."""
    control: dict[str, Any] = {}
    value = sidecar_start(start)
    if value is not None:
        control["start"] = value
    control.update(sa_actions(close, dpd))
    return control


def _external_peer(
    link: ExternalLink, tunnel: TunnelSpec, cluster: Cluster, files: dict[str, str]
) -> dict[str, Any]:
    """The entry of an ExternalPeer: tunnel mode between the pod and the subnets behind
    it; transport mode to a single host (no subnets) when the Tunnel's mode allows it."""
    spec = cluster.external_checks[link.peer]
    assert isinstance(spec, ExternalPeerSpec), "external_links links valid peers only"
    version = ip_version(link.address)
    bits = 32 if version == 4 else 128
    local_ip = link.local.ip_of_version(version)
    assert local_ip is not None
    remote = list(spec.subnets) or [f"{link.address}/{bits}"]
    single_host = not spec.subnets
    peer: dict[str, Any] = {
        "name": link.peer_name,
        "address": link.address,
        "mode": "transport" if single_host and tunnel.mode == "transport" else "tunnel",
        "protocol": "esp",
        "keying": "ike",
        "encapsulation": tunnel.encapsulation or "udp",
        "trafficSelectors": selectors(
            [f"{local_ip}/{bits}"], remote, tunnel.traffic, "from", version
        ),
    }
    identity = sidecar_identity(spec, link.address)
    if identity is not None:
        peer["identity"] = identity
    peer["auth"] = _external_auth(link, spec, cluster, files)
    peer.update(
        _ike_settings(spec.ike_version, spec.proposals, spec.lifetimes, spec.liveness, "esp")
    )
    start: StartAction = "none" if spec.initiator == "external" else spec.start
    peer.update(_control(start, spec.close_action, spec.dpd_action))
    return peer


def _external_auth(
    link: ExternalLink, spec: ExternalPeerSpec, cluster: Cluster, files: dict[str, str]
) -> dict[str, Any]:
    namespace = link.peer[0]
    tag = _digest("ExternalPeer", *link.peer)
    auth = spec.authentication
    if auth.psk is not None:
        ref = auth.psk.secret_ref
        return {
            "psk": {"secretFile": _copy(cluster, namespace, ref.name, ref.key, files, f"psk-{tag}")}
        }
    assert auth.certificate is not None
    bundle = ca_bundle(auth.certificate, namespace, cluster)
    assert isinstance(bundle, bytes), "external_links links valid peers only"
    files[f"ca-{tag}.crt"] = _b64(bundle)
    return {
        "certificate": {
            "certFile": f"{IDENTITY_DIR}/tls.crt",
            "keyFile": f"{IDENTITY_DIR}/tls.key",
            "caFiles": [f"ca-{tag}.crt"],
            "source": "operator",
            # The gateway trusts the TunnelCertificate's issuer, not caFiles (its own CA).
            "peerTrust": "own",
        }
    }


def _copy(
    cluster: Cluster, namespace: str, name: str, key: str, files: dict[str, str], file: str
) -> str:
    data = cluster.secret_data(namespace, name) or {}
    files[file] = str(data[key])
    return file


def _auth(
    link: Link, spec: TunnelSpec, cluster: Cluster, files: dict[str, str], tag: str
) -> dict[str, Any]:
    namespace = link.tunnel[0]
    auth = spec.authentication
    assert auth is not None
    if auth.psk is not None:
        ref = auth.psk.secret_ref
        path = _copy(cluster, namespace, ref.name, ref.key, files, f"psk-{tag}")
        return {"psk": {"secretFile": path}}
    certificate = auth.certificate
    assert certificate is not None
    if certificate.tunnel_certificate_ref is not None:
        bundle = cluster.trust_bundles[(namespace, certificate.tunnel_certificate_ref.name)]
        files[f"ca-{tag}.crt"] = _b64(bundle)
        return {
            "certificate": {
                "certFile": f"{IDENTITY_DIR}/tls.crt",
                "keyFile": f"{IDENTITY_DIR}/tls.key",
                "caFiles": [f"ca-{tag}.crt"],
                "source": "operator",
            }
        }
    assert certificate.secret_ref is not None
    tls = certificate.secret_ref.name
    ca = certificate.ca_secret_ref
    return {
        "certificate": {
            "certFile": _copy(cluster, namespace, tls, "tls.crt", files, f"tls-{tag}.crt"),
            "keyFile": _copy(cluster, namespace, tls, "tls.key", files, f"tls-{tag}.key"),
            "caFiles": [
                _copy(
                    cluster,
                    namespace,
                    ca.name if ca else tls,
                    ca.key if ca else "ca.crt",
                    files,
                    f"ca-{tag}.crt",
                )
            ],
        }
    }


def remote_certificate(link: Link, spec: TunnelSpec, cluster: Cluster) -> str | None:
    """The remote pod's certificate (base64 PEM) that public-key encryption gives the
    local pod of `link`, or None while the operator has no usable one for it
    (:func:`.pod_certificates.peer_certificate`): the link then waits, the entry left
    out of the document, and the Tunnel's status says so (`PeerCertificatesPending`)."""
    auth = spec.authentication
    ref = auth.certificate.tunnel_certificate_ref if auth and auth.certificate else None
    assert ref is not None, "validate_tunnel refuses publicKeyEncryption without it"
    value = cluster.pod_certificates.get(link.remote.key)
    bundle = cluster.trust_bundles.get((link.tunnel[0], ref.name), "")
    if value is None or not peer_certificate(value, link.remote.primary_ip, bundle):
        return None
    return value


def _peer_certificate_file(
    link: Link, spec: TunnelSpec, cluster: Cluster, tag: str, files: dict[str, str]
) -> str | None:
    """The file holding the remote pod's certificate (added to `files`), or None when
    the operator has no usable one for it yet (:func:`remote_certificate`).
    Named after its content, so the document changes when the peer's certificate does."""
    value = remote_certificate(link, spec, cluster)
    if value is None:
        return None
    name = f"peer-{_digest(tag, value)}.crt"
    files[name] = value
    return name


def _manual(
    link: Link, spec: TunnelSpec, cluster: Cluster, files: dict[str, str]
) -> dict[str, Any]:
    assert spec.manual is not None
    derived = manual_link(link, spec, cluster)
    assert derived is not None, "validate_tunnel accepted a manual Secret it cannot read"
    file = f"manual-{_digest(*link.tunnel, link.remote.peer_name)}.yaml"
    files[file] = _b64(derived.current.keys_document())
    manual: dict[str, Any] = {
        "spiIn": f"0x{derived.current.spi_in:08x}",
        "spiOut": f"0x{derived.current.spi_out:08x}",
        "replayWindow": spec.manual.replay_window,
        "keysFile": file,
    }
    encryption, integrity = manual_algorithms(spec)
    if encryption is not None:
        manual["encryption"] = encryption
    if integrity is not None:
        manual["integrity"] = integrity
    return manual


__all__ = [
    "CONFIG_KEY",
    "IDENTITY_DIR",
    "MANAGED_BY",
    "MOUNT_PATH",
    "OPERATOR_CA_KEY",
    "POD_ANNOTATION",
    "POD_CERTIFICATE_KEY",
    "SECRET_PREFIX",
    "PodConfig",
    "Rendering",
    "TunnelPart",
    "plan",
    "remote_certificate",
    "render_pod",
    "sa_actions",
    "secret_manifest",
    "secret_name",
    "sidecar_start",
    "with_operator_ca",
    "with_pod_certificate",
]
