"""`CertificateExpiring`: the CA that signs a TunnelCertificate's pods expires within one
`spec.duration` (certificates are cut short to it); the clock is an argument."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kipsec_operator.certificates.expiry import ca_expiring
from kipsec_operator.certificates.terms import CertificateTerms, certificate_terms

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def terms(**issuer: Any) -> CertificateTerms:
    spec: dict[str, Any] = {
        "selector": {"podSelector": {"matchLabels": {"app": "cart"}}},
        "duration": "48h",
        "renewBefore": "12h",
    }
    if issuer:
        spec["issuer"] = {"type": "CASecret", "caSecretRef": issuer}
    return certificate_terms(
        {
            "apiVersion": "kipsec.io/v1alpha1",
            "kind": "TunnelCertificate",
            "metadata": {"name": "pods", "namespace": "shop"},
            "spec": spec,
        }
    )


def test_a_ca_that_outlives_one_certificate_duration_is_no_warning() -> None:
    assert ca_expiring(NOW + timedelta(hours=49), terms(), NOW) is None


def test_a_ca_expiring_within_the_duration_is_a_warning_naming_its_secret_and_end() -> None:
    not_after = NOW + timedelta(hours=47)

    message = ca_expiring(not_after, terms(name="shop-ca"), NOW)

    assert message is not None
    assert "Secret shop/shop-ca" in message and not_after.isoformat() in message


def test_the_warning_stays_the_same_as_the_clock_moves_so_it_is_posted_once() -> None:
    not_after = NOW + timedelta(hours=10)

    assert ca_expiring(not_after, terms(), NOW) == ca_expiring(
        not_after, terms(), NOW + timedelta(hours=1)
    )


def test_an_expired_ca_says_so() -> None:
    message = ca_expiring(NOW - timedelta(seconds=1), terms(), NOW)

    assert message is not None and "expired" in message and "operator's CA" in message
