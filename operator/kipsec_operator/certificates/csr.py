"""Deciding whether to sign a pod's CSR: the requester must be that pod, asking for its own name.

The exchange (see docs/identities.md): the sidecar generates its key, builds a CSR, and
``POST /v1/csr`` to the operator with its projected ServiceAccount token (audience
``kipsec``) as the bearer token. The operator sends the token to the TokenReview API;
for a projected token the review names the pod it is bound to (name and uid, in
``status.user.extra``). The handler fetches that pod and the TunnelCertificates of its
namespace and calls :func:`decide_csr`, which checks, in this order:

1. the review authenticated the token, for audience ``kipsec``, as a ServiceAccount;
2. the token is bound to a pod (a legacy Secret-based token is not: refused);
3. that pod exists, has the uid the token names (not a deleted namesake), runs as the
   token's ServiceAccount, is not terminating or finished, and has its IPs;
4. exactly one TunnelCertificate selects the pod (``spec.selector``), and it is valid;
5. the CSR parses, its signature verifies (the requester holds the key), its key has
   the algorithm and size the TunnelCertificate demands, and its SANs are exactly the
   identity the operator assigns: the SPIFFE URI and the pod's IPs, nothing more.

Only the CSR's public key is used for signing; the CSR subject is ignored (the operator
sets it). A refusal carries a machine ``code``, a human ``reason`` that names what
failed (never the token), and ``retryable`` for conditions that can clear by
themselves (pod IP not reported yet).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography import x509

from ..webhook.selection import certificate_selects, namespace_of
from .ca import CertificateAuthority, Rng
from .identity import IdentityError, IpAddress, PodIdentity, san_set_of
from .issue import IssuedCertificate, issue_certificate
from .keys import PublicKey, spec_of
from .terms import CertificateTerms, TermsError, certificate_terms

AUDIENCE = "kipsec"
MAX_CSR_SIZE = 16 * 1024
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
EXTRA_POD_NAME = "authentication.kubernetes.io/pod-name"
EXTRA_POD_UID = "authentication.kubernetes.io/pod-uid"


@dataclass(frozen=True)
class Approved:
    """The CSR may be signed: for ``identity``, with the terms of ``terms``."""

    identity: PodIdentity
    public_key: PublicKey
    terms: CertificateTerms
    pod_namespace: str
    pod_name: str
    pod_uid: str


#: Every code a CSR refusal can carry (the CSR endpoint's and the checks' here). The
#: operator's refusal counter starts every one at 0, so a dashboard shows "none" rather
#: than "no data"; a test keeps the list equal to the codes the code can return.
REFUSAL_CODES = (
    "ambiguous",
    "api-unavailable",
    "bad-csr",
    "bad-request",
    "ca-unavailable",
    "identity-mismatch",
    "invalid-identity",
    "invalid-tunnelcertificate",
    "key-type",
    "not-a-service-account",
    "not-pod-bound",
    "not-selected",
    "pod-finished",
    "pod-mismatch",
    "pod-not-ready",
    "pod-terminating",
    "unauthenticated",
    "unknown-pod",
    "wrong-audience",
)


@dataclass(frozen=True)
class Refused:
    """The CSR is not signed. ``reason`` is safe to return to the caller and to log."""

    code: str
    reason: str
    retryable: bool = False
    about: tuple[tuple[str, str], tuple[str, str]] | None = None
    """(TunnelCertificate, pod) as (namespace, name) keys, when the refusal is about a
    pod a TunnelCertificate selects: the operator shows it in that TunnelCertificate's
    `Ready` condition (:mod:`.readiness`). Never sent to the caller."""


Decision = Approved | Refused


def _about(
    refused: Refused, tunnel_certificate: tuple[str, str], pod: Mapping[str, Any]
) -> Refused:
    """``refused`` attributed to ``tunnel_certificate`` and ``pod`` (see :attr:`Refused.about`)."""
    meta = _mapping(pod.get("metadata"))
    pod_key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
    return replace(refused, about=(tunnel_certificate, pod_key))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _single(extra: Mapping[str, Any], key: str) -> str | None:
    value = extra.get(key)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str) and value[0]:
        return value[0]
    return None


@dataclass(frozen=True)
class _Requester:
    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str


def _requester(status: Mapping[str, Any], audience: str) -> _Requester | Refused:
    if status.get("authenticated") is not True:
        error = status.get("error")
        detail = f": {error}" if isinstance(error, str) and error else ""
        return Refused(
            "unauthenticated", f"the token review did not authenticate the token{detail}"
        )
    audiences = status.get("audiences")
    if not isinstance(audiences, list) or audience not in audiences:
        return Refused("wrong-audience", f"the token is not valid for audience {audience!r}")
    user = _mapping(status.get("user"))
    username = user.get("username")
    if not isinstance(username, str) or not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return Refused("not-a-service-account", f"user {username!r} is not a ServiceAccount")
    namespace, sep, account = username[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
    if not sep or not namespace or not account:
        return Refused("not-a-service-account", f"user {username!r} is not a ServiceAccount")
    extra = _mapping(user.get("extra"))
    pod_name, pod_uid = _single(extra, EXTRA_POD_NAME), _single(extra, EXTRA_POD_UID)
    if pod_name is None or pod_uid is None:
        return Refused(
            "not-pod-bound",
            "the token is not bound to a pod: mount a projected ServiceAccount token "
            f"with audience {audience!r}",
        )
    return _Requester(namespace, account, pod_name, pod_uid)


def bound_pod(
    token_review_status: Mapping[str, Any],
    pod: Mapping[str, Any] | None,
    *,
    audience: str = AUDIENCE,
) -> tuple[str, str, str] | Refused:
    """Checks 1-3 of the module docstring only: the token is a projected ServiceAccount
    token bound to ``pod``, which is alive and has the token's uid. Returns the pod's
    (namespace, name, uid) — who asks, for endpoints that serve a pod its own data."""
    checked = _authenticated(token_review_status, pod, audience)
    if isinstance(checked, Refused):
        return checked
    requester = checked[0]
    return requester.namespace, requester.pod_name, requester.pod_uid


def _authenticated(
    token_review_status: Mapping[str, Any], pod: Mapping[str, Any] | None, audience: str
) -> tuple[_Requester, tuple[IpAddress, ...]] | Refused:
    """Checks 1-3: the requester and its pod's addresses, or the refusal."""
    requester = _requester(_mapping(token_review_status), audience)
    if isinstance(requester, Refused):
        return requester
    addresses = _check_pod(requester, pod)
    if isinstance(addresses, Refused):
        return addresses
    return requester, addresses


def pod_addresses(pod: Mapping[str, Any]) -> tuple[IpAddress, ...]:
    """The pod's IPs from ``status.podIPs`` (or ``status.podIP``); unparseable ones skipped."""
    status = _mapping(pod.get("status"))
    raw = [_mapping(p).get("ip") for p in status.get("podIPs") or [] if isinstance(p, Mapping)]
    if not raw and status.get("podIP"):
        raw = [status.get("podIP")]
    addresses: list[IpAddress] = []
    for value in raw:
        try:
            address = ipaddress.ip_address(str(value))
        except ValueError:
            continue
        if address not in addresses:
            addresses.append(address)
    return tuple(addresses)


def _check_pod(
    requester: _Requester, pod: Mapping[str, Any] | None
) -> tuple[IpAddress, ...] | Refused:
    where = f"pod {requester.namespace}/{requester.pod_name}"
    if pod is None:
        return Refused("unknown-pod", f"{where} does not exist")
    meta = _mapping(pod.get("metadata"))
    spec = _mapping(pod.get("spec"))
    if meta.get("name") != requester.pod_name or meta.get("namespace") != requester.namespace:
        return Refused(
            "pod-mismatch",
            f"the token names {where}, not pod {meta.get('namespace')}/{meta.get('name')}",
        )
    if meta.get("uid") != requester.pod_uid:
        return Refused(
            "pod-mismatch",
            f"the token is bound to uid {requester.pod_uid}, {where} has uid {meta.get('uid')} "
            "(the pod was recreated)",
        )
    pod_account = spec.get("serviceAccountName") or "default"
    if pod_account != requester.service_account:
        return Refused(
            "pod-mismatch",
            f"{where} runs as ServiceAccount {pod_account!r}, "
            f"the token belongs to {requester.service_account!r}",
        )
    deletion = meta.get("deletionTimestamp")
    if deletion:
        return Refused("pod-terminating", f"{where} is being deleted (since {deletion})")
    phase = _mapping(pod.get("status")).get("phase")
    if phase in ("Succeeded", "Failed"):
        return Refused("pod-finished", f"{where} has finished (phase {phase})")
    return pod_addresses(pod)


def _select_terms(
    pod: Mapping[str, Any],
    namespace: Mapping[str, Any] | None,
    tunnel_certificates: Sequence[Mapping[str, Any]],
) -> CertificateTerms | Refused:
    meta = _mapping(pod.get("metadata"))
    where = f"pod {meta.get('namespace')}/{meta.get('name')}"
    selecting = [
        tc
        for tc in tunnel_certificates
        if isinstance(tc, Mapping) and certificate_selects(tc, pod, namespace)
    ]
    if not selecting:
        return Refused("not-selected", f"no TunnelCertificate selects {where}")
    if len(selecting) > 1:
        names = ", ".join(
            sorted(
                f"{namespace_of(t)}/{_mapping(t.get('metadata')).get('name')}" for t in selecting
            )
        )
        return Refused(
            "ambiguous",
            f"{where} is selected by several TunnelCertificates ({names}): make their "
            "selectors disjoint",
        )
    try:
        return certificate_terms(selecting[0])
    except TermsError as exc:
        name = str(_mapping(selecting[0].get("metadata")).get("name") or "")
        tc_namespace = namespace_of(selecting[0])
        refused = Refused(
            "invalid-tunnelcertificate", f"TunnelCertificate {tc_namespace}/{name}: {exc}"
        )
        return _about(refused, (tc_namespace, name), pod)


def _describe_sans(pairs: frozenset[tuple[str, str]]) -> str:
    return ", ".join(f"{kind}:{value}" for kind, value in sorted(pairs)) or "none"


def _check_csr(
    csr_pem: bytes | str, identity: PodIdentity, terms: CertificateTerms
) -> PublicKey | Refused:
    data = csr_pem.encode("ascii", "replace") if isinstance(csr_pem, str) else csr_pem
    if len(data) > MAX_CSR_SIZE:
        return Refused("bad-csr", f"the CSR is larger than {MAX_CSR_SIZE} bytes")
    try:
        csr = x509.load_pem_x509_csr(data)
        signature_ok = csr.is_signature_valid
        public_key = csr.public_key()
        san_ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return Refused(
            "identity-mismatch",
            f"the CSR has no SANs; ask for {_describe_sans(identity.san_set())}",
        )
    except Exception as exc:  # cryptography raises several types for malformed input
        return Refused("bad-csr", f"the CSR does not parse: {type(exc).__name__}")
    if not signature_ok:
        return Refused("bad-csr", "the CSR signature does not verify with its own key")
    requested = san_set_of(san_ext.value)
    wanted = identity.san_set()
    if requested != wanted:
        extra, missing = requested - wanted, wanted - requested
        return Refused(
            "identity-mismatch",
            f"the CSR asks for SANs the pod is not entitled to: extra [{_describe_sans(extra)}], "
            f"missing [{_describe_sans(missing)}]",
        )
    key_spec = spec_of(public_key)
    if key_spec != terms.key:
        got = key_spec.describe() if key_spec else type(public_key).__name__
        return Refused(
            "key-type",
            f"the CSR key is {got}; TunnelCertificate {terms.namespace}/{terms.name} "
            f"spec.privateKey asks for {terms.key.describe()}",
        )
    return public_key  # type: ignore[return-value]


@dataclass(frozen=True)
class Entitlement:
    """What the authenticated pod may ask for: its identity and the key its
    TunnelCertificate demands (served as ``GET /v1/identity`` so the sidecar never has to
    guess the trust domain or the key algorithm)."""

    identity: PodIdentity
    terms: CertificateTerms
    pod_namespace: str
    pod_name: str
    pod_uid: str


def entitlement(
    token_review_status: Mapping[str, Any],
    pod: Mapping[str, Any] | None,
    tunnel_certificates: Sequence[Mapping[str, Any]],
    *,
    namespace: Mapping[str, Any] | None = None,
    audience: str = AUDIENCE,
) -> Entitlement | Refused:
    """Checks 1-4 of the module docstring: who asks, and what it is entitled to."""
    checked = _authenticated(token_review_status, pod, audience)
    if isinstance(checked, Refused):
        return checked
    requester, addresses = checked
    assert pod is not None
    terms = _select_terms(pod, namespace, tunnel_certificates)
    if isinstance(terms, Refused):
        return terms
    if terms.include_pod_ips and not addresses:
        return Refused(
            "pod-not-ready",
            f"pod {requester.namespace}/{requester.pod_name} has no IP in status.podIPs yet; retry",
            retryable=True,
        )
    try:
        identity = PodIdentity(
            terms.trust_domain,
            requester.namespace,
            requester.service_account,
            addresses if terms.include_pod_ips else (),
        )
    except IdentityError as exc:
        return _about(Refused("invalid-identity", str(exc)), (terms.namespace, terms.name), pod)
    return Entitlement(identity, terms, requester.namespace, requester.pod_name, requester.pod_uid)


def decide_csr(
    csr_pem: bytes | str,
    token_review_status: Mapping[str, Any],
    pod: Mapping[str, Any] | None,
    tunnel_certificates: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    namespace: Mapping[str, Any] | None = None,
    audience: str = AUDIENCE,
) -> Decision:
    """Approve or refuse a pod's CSR; see the module docstring for the checks. Never raises.

    ``token_review_status`` is the ``status`` of the TokenReview the operator created
    with ``spec.audiences: [audience]``; ``pod`` is the pod the review names (None when
    the handler found none); ``namespace`` is the pod's Namespace object (needed only
    for TunnelCertificates with a ``namespaceSelector``); ``tunnel_certificates`` may
    hold any TunnelCertificates, only those whose ``spec.selector`` selects the pod count.
    ``now`` is not consulted by today's checks (token expiry is the TokenReview's job:
    an expired token is not authenticated); it is in the signature so time-based rules
    need no API change.
    """
    del now
    entitled = entitlement(
        token_review_status, pod, tunnel_certificates, namespace=namespace, audience=audience
    )
    if isinstance(entitled, Refused):
        return entitled
    public_key = _check_csr(csr_pem, entitled.identity, entitled.terms)
    if isinstance(public_key, Refused):
        assert pod is not None  # entitled: the pod exists
        return _about(public_key, (entitled.terms.namespace, entitled.terms.name), pod)
    return Approved(
        identity=entitled.identity,
        public_key=public_key,
        terms=entitled.terms,
        pod_namespace=entitled.pod_namespace,
        pod_name=entitled.pod_name,
        pod_uid=entitled.pod_uid,
    )


def sign_approved(
    approved: Approved, ca: CertificateAuthority, now: datetime, rng: Rng
) -> IssuedCertificate:
    """Sign an approved CSR with ``ca`` (the operator's signing CA or the issuer Secret's)."""
    return issue_certificate(
        approved.public_key,
        approved.identity,
        ca,
        now,
        rng,
        duration=approved.terms.duration,
        renew_before=approved.terms.renew_before,
    )
