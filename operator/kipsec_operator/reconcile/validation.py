"""Checks of a Tunnel that its CRD schema cannot express, each naming the field at fault.

The API server enforces the schema and the CEL rules of :mod:`kipsec_operator.crds`;
what needs other objects (a referenced Secret exists and holds the key) or the
sidecar's algorithm tables (a proposal string names usable algorithms, with the same
refusal messages the sidecar gives) is checked here. The operator re-checks the schema's
rules too, so that a Tunnel stored under an older CRD is still reported, not rendered.

The result is a list of :class:`~kipsec_sidecar.config.errors.FieldError`
(`spec.authentication.psk.secretRef.name: Secret "x" not found`) for a status condition
and an Event. Messages never contain secret values, only the fields that hold them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, Literal, TypeVar

from cryptography import x509
from pydantic import BaseModel, ValidationError

from kipsec_operator.crds.models import (
    DEFAULT_IKE_PROPOSALS,
    Lifetimes,
    Liveness,
    Proposals,
    SecretKeyRef,
    TunnelSpec,
)
from kipsec_sidecar.config.errors import FieldError, join_path
from kipsec_sidecar.config.proposals import (
    LEGACY_SHA1_DEPRECATION,
    ProposalError,
    parse_child_proposal,
    parse_ike_proposal,
    parse_manual_algorithms,
)
from kipsec_sidecar.config.psk import psk_bytes, strip_line_ending
from kipsec_sidecar.config.units import parse_duration
from kipsec_sidecar.core.ike.config import IKEV1_EDDSA_MESSAGE, ikev1_proposal_problem

from .cluster import Cluster, K8sObject, key_of
from .messages import pydantic_errors

MANUAL_KEY = "key"
MANUAL_PREVIOUS_KEY = "previousKey"
MIN_MANUAL_KEY_BYTES = 32
TLS_SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 - a Secret type

DEFAULT_MANUAL_ENCRYPTION = "aes256gcm16"
DEFAULT_MANUAL_AH_INTEGRITY = "sha256"


_Spec = TypeVar("_Spec", bound=BaseModel)


def parse_spec(tunnel: K8sObject) -> TunnelSpec | list[FieldError]:
    """The Tunnel's spec as the model (defaults filled in), or its schema errors."""
    return parse_model(tunnel, TunnelSpec)


def parse_model(obj: K8sObject, model: type[_Spec]) -> _Spec | list[FieldError]:
    """`obj`'s spec as `model` (defaults filled in), or its schema errors.

    Memoized on the spec's content (a pass asks for every Tunnel's spec several times,
    and pydantic validation was the larger part of that); the model is shared, so
    callers must not modify it.
    """
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [FieldError("spec", "required: a mapping")]
    try:
        text = json.dumps(spec, sort_keys=True)
    except (TypeError, ValueError):  # not JSON (never from the API): validate uncached
        return _parse_spec(spec, model)
    parsed = _parse_spec_text(text, model)
    return list(parsed) if isinstance(parsed, tuple) else parsed


@lru_cache(maxsize=4096)
def _parse_spec_text(text: str, model: type[_Spec]) -> _Spec | tuple[FieldError, ...]:
    parsed = _parse_spec(json.loads(text), model)
    return tuple(parsed) if isinstance(parsed, list) else parsed


def _parse_spec(spec: dict[str, Any], model: type[_Spec]) -> _Spec | list[FieldError]:
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        return [
            FieldError(join_path("spec", p.path), p.message) for p in pydantic_errors(exc, model)
        ]


def validate_tunnel(tunnel: K8sObject, cluster: Cluster) -> list[FieldError]:
    """Every problem of `tunnel` in the context of `cluster` (empty: it can be rendered)."""
    parsed = parse_spec(tunnel)
    if isinstance(parsed, list):
        return parsed
    namespace = key_of(tunnel)[0]
    return list(_check(parsed, namespace, cluster))


def manual_algorithms(spec: TunnelSpec) -> tuple[str | None, str | None]:
    """The (encryption, integrity) of manual keying with the defaults applied."""
    assert spec.manual is not None
    encryption, integrity = spec.manual.encryption, spec.manual.integrity
    if spec.protocol == "esp" and encryption is None:
        encryption = DEFAULT_MANUAL_ENCRYPTION
    if spec.protocol == "ah" and integrity is None:
        integrity = DEFAULT_MANUAL_AH_INTEGRITY
    return encryption, integrity


def _check(spec: TunnelSpec, namespace: str, cluster: Cluster) -> Iterator[FieldError]:
    yield from _check_selector(spec)
    if external_peer_names(spec):
        yield from _check_external(spec, namespace, cluster)
        return
    if spec.keying == "ike" and spec.authentication is None:
        yield FieldError("spec.authentication", "required with keying: ike")
    if spec.keying == "manual" and spec.manual is None:
        yield FieldError("spec.manual", "required with keying: manual")
    if spec.keying != "manual" and spec.manual is not None:
        yield FieldError("spec.manual", "only with keying: manual")
    if spec.protocol == "ah" and spec.encapsulation == "udp":
        yield FieldError(
            "spec.encapsulation",
            "AH cannot be UDP-encapsulated: it authenticates the IP addresses a NAT "
            "rewrites; use encapsulation: raw (or protocol: esp)",
        )
    if spec.keying != "ike" and public_key_encryption(spec) is not None:
        yield FieldError(PUBLIC_KEY_ENCRYPTION, "only with keying: ike (manual keying has no IKE)")
    if spec.keying != "ike" and spec.ike_version != 2:
        yield FieldError("spec.ikeVersion", "only with keying: ike (manual keying has no IKE)")
    if spec.keying == "ike":
        if spec.authentication is not None:
            yield from _check_authentication(spec, namespace, cluster)
            certificate = spec.authentication.certificate
            if certificate is not None and certificate.tunnel_certificate_ref is not None:
                yield from check_ikev1_key(
                    spec.ike_version, namespace, certificate.tunnel_certificate_ref.name, cluster
                )
            yield from _check_public_key_encryption(spec, namespace, cluster)
        yield from check_proposals(spec.proposals, spec.protocol, ike_version=spec.ike_version)
    if spec.keying == "manual" and spec.manual is not None:
        yield from _check_manual(spec, namespace, cluster)
    yield from check_lifetimes(spec.lifetimes, spec.liveness, ike=spec.keying == "ike")
    yield from _check_traffic(spec)


def check_ikev1_key(
    ike_version: int, namespace: str, name: str, cluster: Cluster
) -> Iterator[FieldError]:
    """With IKEv1, the TunnelCertificate `name` must issue keys IKEv1 can sign with (the
    sidecar's refusal of EdDSA, told before any pod gets a key it cannot use)."""
    if ike_version != 1:
        return
    found = cluster.tunnel_certificates.get((namespace, name)) or {}
    key = (found.get("spec") or {}).get("privateKey") or {}
    if key.get("algorithm") == "Ed25519":
        yield FieldError(
            "spec.ikeVersion",
            f'TunnelCertificate "{name}" issues Ed25519 keys: {IKEV1_EDDSA_MESSAGE}',
        )


TUNNEL_CERTIFICATE_REF = "spec.authentication.certificate.tunnelCertificateRef.name"


def check_pod_ips(namespace: str, name: str, cluster: Cluster) -> Iterator[FieldError]:
    """The TunnelCertificate `name` that a Tunnel or ExternalPeer presents must put the
    pod IPs in its certificates: every document the operator renders names the pod by
    its address (`local.identity`, and each pod peer's `identity`), which the sidecar
    refuses unless the certificate carries it, and public-key encryption hands a pod's
    certificate to its peers only if it names the pod's address
    (:func:`.pod_certificates.peer_certificate`). With `includePodIps: false` the pods
    would get a document they refuse, or silently no peers: refused here instead."""
    found = cluster.tunnel_certificates.get((namespace, name)) or {}
    identity = (found.get("spec") or {}).get("identity") or {}
    if identity.get("includePodIps", True) is False:
        yield FieldError(
            TUNNEL_CERTIFICATE_REF,
            f'TunnelCertificate "{name}" has spec.identity.includePodIps: false, but kipsec '
            "peers identify each other by the pod IPs in their certificates (and public-key "
            "encryption hands out only certificates naming the peer's address): set it to "
            "true, or use another TunnelCertificate",
        )


PUBLIC_KEY_ENCRYPTION = "spec.authentication.certificate.publicKeyEncryption"


def public_key_encryption(spec: TunnelSpec) -> Literal["rsa", "revised"] | None:
    """The Tunnel's `publicKeyEncryption` (None: not asked for)."""
    auth = spec.authentication
    certificate = auth.certificate if auth is not None else None
    return certificate.public_key_encryption if certificate is not None else None


def _check_public_key_encryption(
    spec: TunnelSpec, namespace: str, cluster: Cluster
) -> Iterator[FieldError]:
    """Public-key encryption needs what the operator can deliver: IKEv1, and a
    TunnelCertificate issuing RSA keys (it knows each pod's certificate from the CSRs it
    signs; a shared Secret's or an outside peer's it does not distribute)."""
    if public_key_encryption(spec) is None:
        return
    if spec.ike_version != 1:
        yield FieldError(
            PUBLIC_KEY_ENCRYPTION,
            "only with spec.ikeVersion: 1 (IKEv2 authenticates by signatures)",
        )
    auth = spec.authentication
    assert auth is not None and auth.certificate is not None
    ref = auth.certificate.tunnel_certificate_ref
    if ref is None:
        yield FieldError(PUBLIC_KEY_ENCRYPTION, "only with tunnelCertificateRef")
        return
    found = cluster.tunnel_certificates.get((namespace, ref.name)) or {}
    algorithm = ((found.get("spec") or {}).get("privateKey") or {}).get("algorithm", "ECDSA")
    if found and algorithm != "RSA":
        yield FieldError(
            PUBLIC_KEY_ENCRYPTION,
            f'TunnelCertificate "{ref.name}" issues {algorithm} keys: public-key encryption '
            "needs RSA keys (set its spec.privateKey.algorithm: RSA)",
        )


def external_peer_names(spec: TunnelSpec) -> list[str]:
    """The ExternalPeers the Tunnel's `to` names (empty: its sides are pods)."""
    to = spec.selector.to
    return list(to.external_peers) if to is not None else []


def _check_external(spec: TunnelSpec, namespace: str, cluster: Cluster) -> Iterator[FieldError]:
    """A Tunnel to ExternalPeers: IKE with ESP, the peers' own authentication, algorithms
    and lifetimes (one place for each), and every named peer present and valid."""
    to = spec.selector.to
    assert to is not None
    selector = to.pod_selector
    if to.namespace_selector is not None or selector.match_labels or selector.match_expressions:
        yield FieldError(
            "spec.selector.to.externalPeers",
            "cannot be combined with podSelector or namespaceSelector; link the pods in a "
            "second Tunnel",
        )
    if spec.keying != "ike":
        yield FieldError("spec.keying", "must be ike with spec.selector.to.externalPeers")
    if spec.protocol != "esp":
        yield FieldError("spec.protocol", "must be esp with spec.selector.to.externalPeers")
    if spec.ike_version != 2:
        yield FieldError(
            "spec.ikeVersion",
            "not used with spec.selector.to.externalPeers: set the ExternalPeer's spec.ikeVersion",
        )
    if spec.authentication is not None and public_key_encryption(spec) is not None:
        yield FieldError(
            PUBLIC_KEY_ENCRYPTION,
            "not with spec.selector.to.externalPeers: the operator does not know an "
            "ExternalPeer's certificate in advance",
        )
    elif spec.authentication is not None:
        yield FieldError(
            "spec.authentication",
            "not used with spec.selector.to.externalPeers: each ExternalPeer's "
            "spec.authentication applies; remove it",
        )
    checked = cluster.external_checks
    for index, name in enumerate(external_peer_names(spec)):
        where = f"spec.selector.to.externalPeers[{index}]"
        found = checked.get((namespace, name))
        if found is None:
            yield FieldError(where, f'ExternalPeer "{name}" not found in namespace {namespace}')
        elif isinstance(found, list):
            yield FieldError(
                where, f'ExternalPeer "{name}" is not valid (its status names the field)'
            )


def psk_problems(
    cluster: Cluster, namespace: str, ref: SecretKeyRef, path: str
) -> Iterator[FieldError]:
    """Problems of a PSK Secret reference at `path` (`...psk.secretRef`): missing Secret
    or key, not base64, not a key the sidecar accepts (its own rule, psk_bytes: one line
    ending stripped, 0x/0s forms decoded, length after decoding); never the value."""
    problem = secret_problem(cluster, namespace, ref.name, ref.key, path)
    if problem is not None:
        yield problem
        return
    value = decoded_secret(cluster, namespace, ref.name, ref.key)
    if value is None:
        yield FieldError(f"{path}.key", f'Secret "{ref.name}" key "{ref.key}" is not base64')
    else:
        try:
            psk_bytes(strip_line_ending(value))
        except ValueError as error:
            yield FieldError(
                f"{path}.key", f'the PSK in Secret "{ref.name}" key "{ref.key}" {error}'
            )


def _check_selector(spec: TunnelSpec) -> Iterator[FieldError]:
    sides = [("from", spec.selector.from_)]
    if spec.selector.to is not None:
        sides.append(("to", spec.selector.to))
    for side_name, side in sides:
        selectors = [("podSelector", side.pod_selector)]
        if side.namespace_selector is not None:
            selectors.append(("namespaceSelector", side.namespace_selector))
        for selector_name, selector in selectors:
            for index, expression in enumerate(selector.match_expressions):
                wants_values = expression.operator in ("In", "NotIn")
                if wants_values != bool(expression.values):
                    yield FieldError(
                        join_path(
                            "spec.selector", side_name, selector_name, "matchExpressions", index
                        )
                        + ".values",
                        "must be non-empty for In and NotIn, and empty for Exists and DoesNotExist",
                    )


def secret_problem(
    cluster: Cluster, namespace: str, name: str, key: str, path: str
) -> FieldError | None:
    """A missing Secret is reported at `<path>.name`, a missing key at `<path>.key`."""
    data = cluster.secret_data(namespace, name)
    if data is None:
        return FieldError(f"{path}.name", f'Secret "{name}" not found in namespace {namespace}')
    if key not in data:
        return FieldError(f"{path}.key", f'Secret "{name}" has no key "{key}"')
    return None


def pem_certificates(data: bytes) -> list[x509.Certificate]:
    """The certificates of a PEM bundle, as the sidecar loads its CA files (empty: none,
    or not PEM)."""
    try:
        return x509.load_pem_x509_certificates(data)
    except Exception:  # cryptography raises several types for bad PEM
        return []


def pem_bundle(pem: bytes | None, where: str, what: str) -> bytes | FieldError:
    """`pem` if it holds a PEM CA certificate, else the problem at `where` (`what`
    names the value: `Secret "x" key "ca.crt"`). The sidecar refuses its whole document
    over a CA file it cannot read, so the operator tells it first."""
    if pem is None or not pem_certificates(pem):
        return FieldError(where, f"{what} holds no PEM CA certificate")
    return pem


def secret_ca_bundle(
    cluster: Cluster, namespace: str, name: str, key: str, path: str
) -> bytes | FieldError:
    """The PEM CA bundle in a Secret's `key` (a Tunnel's or an ExternalPeer's
    `caSecretRef` at `path`), or the problem: the Secret missing (`<path>.name`), the key
    missing, not base64 or holding no PEM certificate (`<path>.key`)."""
    problem = secret_problem(cluster, namespace, name, key, path)
    if problem is not None:
        return problem
    pem = decoded_secret(cluster, namespace, name, key)
    return pem_bundle(pem, f"{path}.key", f'Secret "{name}" key "{key}"')


def decoded_secret(cluster: Cluster, namespace: str, name: str, key: str) -> bytes | None:
    """The decoded value of a Secret's key (None: missing, or not base64)."""
    data = cluster.secret_data(namespace, name) or {}
    try:
        return base64.b64decode(data.get(key, ""), validate=True)
    except (binascii.Error, ValueError, TypeError):
        return None


def _check_authentication(
    spec: TunnelSpec, namespace: str, cluster: Cluster
) -> Iterator[FieldError]:
    auth = spec.authentication
    assert auth is not None
    base = "spec.authentication"
    if (auth.psk is None) == (auth.certificate is None):
        yield FieldError(base, "give exactly one of psk, certificate")
        return
    if auth.psk is not None:
        yield from psk_problems(cluster, namespace, auth.psk.secret_ref, f"{base}.psk.secretRef")
        return
    certificate = auth.certificate
    assert certificate is not None
    path = f"{base}.certificate"
    if (certificate.tunnel_certificate_ref is None) == (certificate.secret_ref is None):
        yield FieldError(path, "give exactly one of tunnelCertificateRef, secretRef")
        return
    if certificate.tunnel_certificate_ref is not None:
        name = certificate.tunnel_certificate_ref.name
        where = f"{path}.tunnelCertificateRef.name"
        if certificate.ca_secret_ref is not None:
            yield FieldError(f"{path}.caSecretRef", "only with secretRef")
        if (namespace, name) not in cluster.tunnel_certificates:
            yield FieldError(
                where, f'TunnelCertificate "{name}" not found in namespace {namespace}'
            )
        elif not cluster.trust_bundles.get((namespace, name)):
            yield FieldError(where, f'TunnelCertificate "{name}" has no CA bundle yet')
        yield from check_pod_ips(namespace, name, cluster)
        return
    assert certificate.secret_ref is not None
    name = certificate.secret_ref.name
    secret = cluster.secrets.get((namespace, name))
    if secret is None:
        yield FieldError(
            f"{path}.secretRef.name", f'Secret "{name}" not found in namespace {namespace}'
        )
        return
    if secret.get("type") != TLS_SECRET_TYPE:
        yield FieldError(
            f"{path}.secretRef.name", f'Secret "{name}" is not of type {TLS_SECRET_TYPE}'
        )
    for key in ("tls.crt", "tls.key"):
        if key not in (secret.get("data") or {}):
            yield FieldError(f"{path}.secretRef.name", f'Secret "{name}" has no key "{key}"')
    ca = certificate.ca_secret_ref
    if ca is not None:
        bundle = secret_ca_bundle(cluster, namespace, ca.name, ca.key, f"{path}.caSecretRef")
        if isinstance(bundle, FieldError):
            yield bundle
    elif "ca.crt" not in (secret.get("data") or {}):
        yield FieldError(
            f"{path}.caSecretRef",
            f'required: Secret "{name}" has no ca.crt to trust peers with',
        )
    else:  # the TLS Secret's own ca.crt is the CA file, checked the same way
        pem = decoded_secret(cluster, namespace, name, "ca.crt")
        bundle = pem_bundle(pem, f"{path}.secretRef.name", f'Secret "{name}" key "ca.crt"')
        if isinstance(bundle, FieldError):
            yield bundle


def ike_proposals(proposals: Proposals, ike_version: int) -> list[str] | None:
    """The IKE proposals a peer's document offers; None leaves them to the sidecar.

    With IKEv1, `proposals.ike` at the IKEv2 default (which the API server fills in
    when the field is unset) means "not chosen": the sidecar then offers its IKEv1
    default (:data:`~kipsec_sidecar.config.model.DEFAULT_IKEV1_PROPOSALS`), since the
    IKEv2 default is an AEAD cipher IKEv1 cannot use.
    """
    if ike_version == 1 and list(proposals.ike) == DEFAULT_IKE_PROPOSALS:
        return None
    return list(proposals.ike)


def check_proposals(
    proposals: Proposals, protocol: Literal["esp", "ah"], *, ike_version: int = 2
) -> Iterator[FieldError]:
    """Proposal strings (`spec.proposals`) the sidecar cannot use, with its messages
    (the IKEv1 refusals too: the sidecar's own check, :func:`ikev1_proposal_problem`).

    SHA-1 in `proposals.ike` passes where the sidecar admits it, for IKEv1 only (its
    legacy opt-in, :func:`parse_ike_proposal` with ``legacy_sha1``; the resource then
    warns, :func:`deprecation_warnings`); with IKEv2 it keeps the refusal it always had,
    told where it would pass. `proposals.esp` / `.ah` never admit it."""
    for index, text in enumerate(ike_proposals(proposals, ike_version) or ()):
        where = f"spec.proposals.ike[{index}]"
        try:
            parsed = parse_ike_proposal(text, legacy_sha1=ike_version == 1)
        except ProposalError as exc:
            yield FieldError(where, str(exc) + _sha1_hint(text))
            continue
        problem = ikev1_proposal_problem(parsed) if ike_version == 1 else None
        if problem is not None:
            yield FieldError(where, f"with spec.ikeVersion 1: {problem}")
    for index, text in enumerate(getattr(proposals, protocol)):
        try:
            parse_child_proposal(text, protocol)
        except ProposalError as exc:
            yield FieldError(f"spec.proposals.{protocol}[{index}]", str(exc))


def _sha1_hint(text: str) -> str:
    """After an IKEv2 refusal: where `text` would pass (it passes with the legacy
    opt-in, so SHA-1 is what was refused), as the sidecar says it for its IKEv2 peers."""
    try:
        parse_ike_proposal(text, legacy_sha1=True)
    except ProposalError:
        return ""
    return " (SHA-1 is admitted only with spec.ikeVersion: 1, for a legacy peer)"


def _legacy_sha1_fields(proposals: Proposals, ike_version: int) -> list[str]:
    """The `spec.proposals.ike[i]` that name SHA-1 under the IKEv1 legacy opt-in (empty
    for IKEv2, where :func:`check_proposals` refuses them)."""
    if ike_version != 1:
        return []
    found = []
    for index, text in enumerate(ike_proposals(proposals, ike_version) or ()):
        try:
            legacy = parse_ike_proposal(text, legacy_sha1=True).legacy_sha1
        except ProposalError:
            continue
        if legacy:
            found.append(f"spec.proposals.ike[{index}]")
    return found


def deprecation_warnings(ike_version: int, proposals: Proposals) -> list[str]:
    """What a valid spec opts in to that is deprecated, each naming its field, for the
    status and a Warning Event: IKEv1 (RFC 9395), and SHA-1 in the phase 1 proposals
    that name it (the legacy opt-in, the same the sidecar warns about)."""
    if ike_version != 1:
        return []
    warnings = [
        "spec.ikeVersion: IKEv1 is deprecated (RFC 9395); use it only for a legacy peer "
        "that speaks nothing else"
    ]
    sha1 = _legacy_sha1_fields(proposals, ike_version)
    if sha1:
        warnings.append(
            f"{', '.join(sha1)}: IKEv1 phase 1 with SHA-1 because named there; "
            f"{LEGACY_SHA1_DEPRECATION}"
        )
    return warnings


def _check_manual(spec: TunnelSpec, namespace: str, cluster: Cluster) -> Iterator[FieldError]:
    manual = spec.manual
    assert manual is not None
    encryption, integrity = manual_algorithms(spec)
    try:
        parse_manual_algorithms(encryption, integrity, spec.protocol)
    except ProposalError as exc:
        yield FieldError(f"spec.manual.{exc.field or 'encryption'}", str(exc))
    name = manual.secret_ref.name
    path = "spec.manual.secretRef.name"
    data = cluster.secret_data(namespace, name)
    if data is None:
        yield FieldError(path, f'Secret "{name}" not found in namespace {namespace}')
        return
    for key, required in ((MANUAL_KEY, True), (MANUAL_PREVIOUS_KEY, False)):
        if key not in data:
            if required:
                yield FieldError(path, f'Secret "{name}" has no key "{key}"')
            continue
        if master_key(data, key) is None:
            yield FieldError(
                path,
                f'Secret "{name}" key "{key}" must hold at least {MIN_MANUAL_KEY_BYTES} '
                "bytes in hex (the value is not shown)",
            )


def master_key(data: Mapping[str, Any], key: str) -> bytes | None:
    """The manual master key under `key` of a Secret's base64 `data`, or None if unusable.

    The Secret value is hex text (`openssl rand -hex 32`), so that it can be typed into
    `kubectl create secret generic --from-literal`.
    """
    try:
        text = base64.b64decode(str(data.get(key, "")), validate=True).decode("ascii")
        value = bytes.fromhex(text.strip().removeprefix("0x"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return value if len(value) >= MIN_MANUAL_KEY_BYTES else None


def check_lifetimes(lifetimes: Lifetimes, liveness: Liveness, *, ike: bool) -> Iterator[FieldError]:
    """`spec.lifetimes` and `spec.liveness` as the sidecar needs them (`ike`: a rekey
    margin is needed)."""
    try:
        margin = parse_duration(lifetimes.rekey_margin)
        child = parse_duration(lifetimes.child_sa)
        ike_sa = parse_duration(lifetimes.ike_sa)
    except ValueError as exc:
        yield FieldError("spec.lifetimes", str(exc))
        return
    for name, value in (("childSa", child), ("ikeSa", ike_sa)):
        if value <= 0:
            yield FieldError(f"spec.lifetimes.{name}", "must be longer than 0s")
    if ike and not 0 < margin < min(child, ike_sa):
        yield FieldError(
            "spec.lifetimes.rekeyMargin",
            f"must be positive and shorter than childSa ({lifetimes.child_sa}) and ikeSa "
            f"({lifetimes.ike_sa})",
        )
    try:
        if parse_duration(liveness.timeout) <= 0:
            yield FieldError("spec.liveness.timeout", "must be longer than 0s")
    except ValueError as exc:
        yield FieldError("spec.liveness.timeout", str(exc))


def _check_traffic(spec: TunnelSpec) -> Iterator[FieldError]:
    for index, traffic_rule in enumerate(spec.traffic):
        path = f"spec.traffic[{index}]"
        if traffic_rule.port is not None and traffic_rule.protocol not in ("TCP", "UDP", "SCTP"):
            yield FieldError(f"{path}.port", "only with protocol TCP, UDP or SCTP")
        if traffic_rule.end_port is not None and (
            traffic_rule.port is None or traffic_rule.end_port < traffic_rule.port
        ):
            yield FieldError(f"{path}.endPort", "needs port, and must not be below it")


__all__ = [
    "DEFAULT_MANUAL_AH_INTEGRITY",
    "DEFAULT_MANUAL_ENCRYPTION",
    "MANUAL_KEY",
    "MANUAL_PREVIOUS_KEY",
    "MIN_MANUAL_KEY_BYTES",
    "PUBLIC_KEY_ENCRYPTION",
    "TLS_SECRET_TYPE",
    "TUNNEL_CERTIFICATE_REF",
    "check_ikev1_key",
    "check_lifetimes",
    "check_pod_ips",
    "check_proposals",
    "decoded_secret",
    "deprecation_warnings",
    "external_peer_names",
    "ike_proposals",
    "manual_algorithms",
    "master_key",
    "parse_model",
    "parse_spec",
    "pem_bundle",
    "pem_certificates",
    "psk_problems",
    "public_key_encryption",
    "secret_ca_bundle",
    "secret_problem",
    "validate_tunnel",
]
