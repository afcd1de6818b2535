"""What a TunnelCertificate asks for, read through its CRD model: key, lifetimes, issuer.

One function reads the spec so the rest of the package never guesses field names;
errors name the field (``spec.duration: …``). The lifetimes are held to the bounds the
CRD's CEL rules declare (:data:`LIFETIME_BOUNDS`, from the models, where the reasons are
written): an API server may still run an older CRD without them, and a value outside
them must become a refusal and an ``InvalidSpec`` condition, never date arithmetic that
overflows (``duration: 876000000h``) or a renewal several times a second
(``duration: 1s``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from kipsec_sidecar.config.units import format_duration, parse_duration

from ..crds.models import (
    MAX_CERTIFICATE_DURATION,
    MIN_CERTIFICATE_DURATION,
    MIN_RENEW_BEFORE,
    MIN_RENEWAL_INTERVAL,
    TunnelCertificateSpec,
)
from .keys import KeySpec, KeySpecError


class TermsError(ValueError):
    """A TunnelCertificate field kipsec cannot use; the message starts with the field path."""


@dataclass(frozen=True)
class LifetimeBounds:
    """What ``spec.duration`` and ``spec.renewBefore`` may be (see the models for why)."""

    min_duration: timedelta
    max_duration: timedelta
    min_renew_before: timedelta
    min_renewal_interval: timedelta
    """``duration - renewBefore``: how long a certificate is used before renewal."""


def _seconds(text: str) -> timedelta:
    return timedelta(seconds=parse_duration(text))


LIFETIME_BOUNDS = LifetimeBounds(
    min_duration=_seconds(MIN_CERTIFICATE_DURATION),
    max_duration=_seconds(MAX_CERTIFICATE_DURATION),
    min_renew_before=_seconds(MIN_RENEW_BEFORE),
    min_renewal_interval=_seconds(MIN_RENEWAL_INTERVAL),
)


def lifetime_problem(
    duration: str, renew_before: str, bounds: LifetimeBounds = LIFETIME_BOUNDS
) -> str | None:
    """What is wrong with the two lifetimes, starting with the field path; None when
    they are within ``bounds``. Never raises: a value too large for a duration at all
    is a problem like any other."""
    try:
        lifetime = _seconds(duration)
    except ValueError as exc:
        return f"spec.duration: {duration[:40]}: {exc}"
    if not bounds.min_duration <= lifetime <= bounds.max_duration:
        return (
            f"spec.duration: {duration[:40]} is outside {_text(bounds.min_duration)} to "
            f"{_text(bounds.max_duration)}"
        )
    try:
        before = _seconds(renew_before)
    except ValueError as exc:
        return f"spec.renewBefore: {renew_before[:40]}: {exc}"
    if before < bounds.min_renew_before:
        return (
            f"spec.renewBefore: {renew_before} is shorter than "
            f"{_text(bounds.min_renew_before)}, too little time to retry a failed renewal"
        )
    if lifetime - before < bounds.min_renewal_interval:
        return (
            f"spec.renewBefore: {renew_before} leaves less than "
            f"{_text(bounds.min_renewal_interval)} of spec.duration {duration} before "
            "renewal; make it shorter"
        )
    return None


def _text(value: timedelta) -> str:
    """A Go duration as the CRD takes it (hours, not days: Go has no day unit)."""
    seconds = value.total_seconds()
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    return format_duration(seconds)


def issuer_secret_field(namespace: str, name: str) -> str:
    """How messages name a CASecret issuer's Secret: the field, then the Secret."""
    return f"spec.issuer.caSecretRef: Secret {namespace}/{name}"


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
    problem = lifetime_problem(spec.duration, spec.renew_before, LIFETIME_BOUNDS)
    if problem is not None:
        raise TermsError(problem)
    duration = _seconds(spec.duration)
    renew_before = _seconds(spec.renew_before)
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
