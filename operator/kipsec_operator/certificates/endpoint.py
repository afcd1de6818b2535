"""``GET /v1/identity`` and ``POST /v1/csr``: the HTTP shape of the CSR exchange.

Both take ``Authorization: Bearer <projected ServiceAccount token, audience kipsec>``.
``GET /v1/identity`` answers what the pod is entitled to ask for:
``{"uri", "ips", "privateKey": {"algorithm", "size"}}`` (from :func:`.csr.entitlement`),
so the sidecar builds a CSR the operator will accept without knowing the
TunnelCertificate. ``POST /v1/csr`` takes ``{"csr": "<PEM>"}`` and answers (JSON):

* 200 ``{"certificate", "caBundle", "notAfter", "renewalTime"}``;
* 400 malformed body, 401 no bearer token or the token did not authenticate,
  403 refused (the reason names the failed check), 409 retryable (pod IP not yet
  reported), 503 ``ca-unavailable`` (retryable: the issuer's Secret is missing or holds
  no usable CA, or the CA has expired or expires within the shortest renewal interval;
  the reason names the Secret) and ``api-unavailable`` (retryable: the API
  server did not answer a read); errors are ``{"code", "reason", "retryable"}``. No
  value of a spec answers 500: a bad one is a 403 naming its field.

:func:`handle_csr_post` is the whole flow with the Kubernetes calls injected through
:class:`CsrBackend`, so a test drives it with dicts and the server adapter (kopf's or
aiohttp's) stays a few lines. The token is passed to the TokenReview and nowhere else:
never logged, never in a response.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from .ca import CertificateAuthority, Rng
from .csr import (
    AUDIENCE,
    MAX_CSR_SIZE,
    Approved,
    Entitlement,
    Refused,
    bound_pod,
    decide_csr,
    entitlement,
    sign_approved,
)
from .expiry import ca_unusable
from .issue import IssuedCertificate
from .terms import issuer_secret_field

MAX_BODY_SIZE = MAX_CSR_SIZE + 1024

_STATUS_BY_CODE = {
    "bad-request": 400,
    "unauthenticated": 401,
    "ca-unavailable": 503,
    "api-unavailable": 503,
}


class CsrBackend(Protocol):
    """The Kubernetes reads the endpoint needs; the operator implements it on its client."""

    async def review_token(self, token_review: Mapping[str, Any]) -> Mapping[str, Any]:
        """Create the TokenReview; return its ``status``."""
        ...

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    async def get_namespace(self, name: str) -> Mapping[str, Any] | None: ...

    async def list_tunnel_certificates(self) -> Sequence[Mapping[str, Any]]: ...

    async def signing_ca(
        self, issuer_secret: str | None, namespace: str
    ) -> tuple[CertificateAuthority, bytes]:
        """The CA that signs (operator CA when ``issuer_secret`` is None) and the PEM
        trust bundle to return; raises LookupError when it cannot be loaded."""
        ...


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def token_review(token: str, audience: str = AUDIENCE) -> dict[str, Any]:
    """The TokenReview object to create for ``token`` (authentication.k8s.io/v1)."""
    return {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": [audience]},
    }


def parse_csr_body(body: bytes) -> str | Refused:
    """The PEM CSR from a request body, or a Refused('bad-request', …)."""
    if len(body) > MAX_BODY_SIZE:
        return Refused("bad-request", f"body larger than {MAX_BODY_SIZE} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Refused("bad-request", "body is not JSON")
    if not isinstance(doc, dict) or not isinstance(doc.get("csr"), str):
        return Refused("bad-request", 'body must be {"csr": "<PEM>"}')
    return str(doc["csr"])


def refusal_response(refused: Refused) -> tuple[int, dict[str, Any]]:
    status = _STATUS_BY_CODE.get(refused.code, 409 if refused.retryable else 403)
    return status, {"code": refused.code, "reason": refused.reason, "retryable": refused.retryable}


def api_unavailable(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The answer when the API server cannot be read: 503, retryable. The sidecar backs
    off and asks again; a 500 would read as the operator's own fault."""
    refused = Refused(
        "api-unavailable",
        f"the operator cannot read the API server ({type(exc).__name__}); retry",
        retryable=True,
    )
    return refusal_response(refused)


def issued_response(issued: IssuedCertificate, bundle_pem: bytes) -> tuple[int, dict[str, Any]]:
    return 200, {
        "certificate": issued.cert_pem().decode("ascii"),
        "caBundle": bundle_pem.decode("ascii"),
        "notAfter": issued.not_after.isoformat(),
        "renewalTime": issued.renewal_time.isoformat(),
    }


def _token_pod(status: Mapping[str, Any]) -> tuple[str, str] | None:
    user = status.get("user")
    if not isinstance(user, Mapping):
        return None
    username = user.get("username")
    extra = user.get("extra")
    if not isinstance(username, str) or not isinstance(extra, Mapping):
        return None
    namespace = username.removeprefix("system:serviceaccount:").partition(":")[0]
    names = extra.get("authentication.kubernetes.io/pod-name")
    if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
        return None
    return namespace, names[0]


async def handle_csr_post(
    body: bytes,
    authorization: str | None,
    backend: CsrBackend,
    now: datetime,
    rng: Rng,
    report: Callable[[Refused], None] | None = None,
    issued: Callable[[Approved, str], None] | None = None,
) -> tuple[int, dict[str, Any]]:
    """The whole ``POST /v1/csr``: returns (HTTP status, JSON body). Never raises for
    bad input; backend errors other than LookupError propagate (a 500 from the server).
    ``report`` is given every refusal (with :attr:`.csr.Refused.about` when it is about
    a selected pod), for the TunnelCertificate's status; ``issued`` every certificate
    signed (PEM) with the decision naming its pod, so it can be given to the pod's peers."""
    answer = await _csr_post(body, authorization, backend, now, rng)
    if isinstance(answer, Refused):
        if report is not None:
            report(answer)
        return refusal_response(answer)
    decision, response = answer
    if issued is not None:
        issued(decision, str(response[1]["certificate"]))
    return response


async def _csr_post(
    body: bytes, authorization: str | None, backend: CsrBackend, now: datetime, rng: Rng
) -> tuple[Approved, tuple[int, dict[str, Any]]] | Refused:
    csr_pem = parse_csr_body(body)
    if isinstance(csr_pem, Refused):
        return csr_pem
    reviewed = await _review(authorization, backend)
    if isinstance(reviewed, Refused):
        return reviewed
    status, pod, namespace = reviewed
    tunnel_certificates = await backend.list_tunnel_certificates()
    decision = decide_csr(csr_pem, status, pod, tunnel_certificates, now, namespace=namespace)
    if isinstance(decision, Refused):
        return decision
    try:
        ca, bundle = await backend.signing_ca(
            decision.terms.issuer_secret, decision.terms.namespace
        )
    except LookupError as exc:
        problem: str | None = str(exc)
    else:
        problem = ca_unusable(ca.not_after, now, _issuer_name(decision))
    if problem is not None:
        terms = (decision.terms.namespace, decision.terms.name)
        pod_key = (decision.pod_namespace, decision.pod_name)
        return Refused("ca-unavailable", problem, retryable=True, about=(terms, pod_key))
    return decision, issued_response(sign_approved(decision, ca, now, rng), bundle)


def _issuer_name(decision: Approved) -> str:
    secret = decision.terms.issuer_secret
    if secret is None:
        return "the operator's CA"
    return issuer_secret_field(decision.terms.namespace, secret)


def entitlement_response(entitled: Entitlement) -> tuple[int, dict[str, Any]]:
    key = entitled.terms.key
    private_key: dict[str, Any] = {"algorithm": key.algorithm}
    if key.algorithm != "Ed25519":
        private_key["size"] = key.size
    return 200, {
        "uri": entitled.identity.uri,
        "ips": [str(a) for a in entitled.identity.addresses],
        "privateKey": private_key,
    }


async def _review(
    authorization: str | None, backend: CsrBackend
) -> tuple[Mapping[str, Any], Mapping[str, Any] | None, Mapping[str, Any] | None] | Refused:
    token = bearer_token(authorization)
    if token is None:
        return Refused("unauthenticated", "no bearer token")
    status = await backend.review_token(token_review(token))
    named = _token_pod(status)
    if named is None:
        return status, None, None
    return status, await backend.get_pod(*named), await backend.get_namespace(named[0])


async def authenticate_pod(
    authorization: str | None, backend: CsrBackend
) -> tuple[tuple[str, str, str], Mapping[str, Any]] | Refused:
    """Who asks: the (namespace, name, uid) of the live pod the bearer token is bound to
    (TokenReview, then :func:`.csr.bound_pod`) and that pod as the API returned it (so
    the caller need not read it again), or the refusal."""
    reviewed = await _review(authorization, backend)
    if isinstance(reviewed, Refused):
        return reviewed
    status, pod, _ = reviewed
    who = bound_pod(status, pod)
    if isinstance(who, Refused):
        return who
    assert pod is not None  # bound_pod refuses a missing pod
    return who, pod


async def handle_identity_get(
    authorization: str | None,
    backend: CsrBackend,
    report: Callable[[Refused], None] | None = None,
) -> tuple[int, dict[str, Any]]:
    """The whole ``GET /v1/identity``: (HTTP status, JSON body); ``report`` as for
    :func:`handle_csr_post`."""
    reviewed = await _review(authorization, backend)
    if isinstance(reviewed, Refused):
        entitled: Entitlement | Refused = reviewed
    else:
        status, pod, namespace = reviewed
        tunnel_certificates = await backend.list_tunnel_certificates()
        entitled = entitlement(status, pod, tunnel_certificates, namespace=namespace)
    if isinstance(entitled, Refused):
        if report is not None:
            report(entitled)
        return refusal_response(entitled)
    return entitlement_response(entitled)
