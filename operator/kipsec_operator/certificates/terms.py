"""What a TunnelCertificate asks for, read through its CRD model: key, lifetimes, issuer.

One function reads the spec so the rest of the package never guesses field names;
errors name the field (``spec.duration: …``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from kipsec_sidecar.config.units import parse_duration

from ..crds.models import TunnelCertificateSpec
from .keys import KeySpec, KeySpecError


class TermsError(ValueError):
    """A TunnelCertificate field kipsec cannot use; the message starts with the field path."""


@dataclass(frozen=True)
class CertificateTerms:
    """The parts of a TunnelCertificate that issuing needs."""

    name: str
    namespace: str
    key: KeySpec
    duration: timedelta
    renew_before: timedelta
    issuer_secret: str | None
    """The CA Secret (in the TunnelCertificate's namespace) that signs; None: the
    operator's own CA."""
    trust_domain: str
    include_pod_ips: bool


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"spec.{where}: {error['msg']}" if where else f"spec: {error['msg']}"


def certificate_terms(tc: Mapping[str, Any]) -> CertificateTerms:
    """Read a TunnelCertificate object; raises TermsError naming the field."""
    meta = _mapping(tc.get("metadata"))
    try:
        spec = TunnelCertificateSpec.model_validate(tc.get("spec"))
    except ValidationError as exc:
        raise TermsError(_first_error(exc)) from None
    try:
        key = KeySpec.parse(spec.private_key.algorithm, spec.private_key.size)
    except KeySpecError as exc:
        raise TermsError(f"spec.privateKey: {exc}") from None
    duration = timedelta(seconds=parse_duration(spec.duration))
    renew_before = timedelta(seconds=parse_duration(spec.renew_before))
    if renew_before >= duration:
        raise TermsError(
            f"spec.renewBefore: {spec.renew_before} is not shorter than spec.duration "
            f"{spec.duration}"
        )
    issuer_secret = None
    if spec.issuer.type == "CASecret":
        if spec.issuer.ca_secret_ref is None:
            raise TermsError("spec.issuer.caSecretRef: required with type CASecret")
        issuer_secret = spec.issuer.ca_secret_ref.name
    return CertificateTerms(
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        key=key,
        duration=duration,
        renew_before=renew_before,
        issuer_secret=issuer_secret,
        trust_domain=spec.identity.trust_domain,
        include_pod_ips=spec.identity.include_pod_ips,
    )
