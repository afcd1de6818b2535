"""TunnelCertificate lifetimes are held to bounds, and its `Ready` condition tells the truth.

`duration: 1s, renewBefore: 0s` once made every pod renew several times a second, and
`duration: 876000000h` raised a ValueError that turned `GET /v1/identity` into a 500;
a deleted CA Secret left `Ready=True AllPodsIssued` after every certificate expired.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from kipsec_operator.certificates.ca import CertificateAuthority, generate_ca
from kipsec_operator.certificates.csr import Refused
from kipsec_operator.certificates.endpoint import handle_csr_post, handle_identity_get
from kipsec_operator.certificates.expiry import ca_unusable
from kipsec_operator.certificates.readiness import MAX_NAMED_PODS, readiness
from kipsec_operator.certificates.terms import TermsError, certificate_terms, lifetime_problem
from support.local_issuer import LocalBackend, pod, token_review, tunnel_certificate

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("duration", "renew_before", "field", "words"),
    [
        ("1s", "0s", "spec.duration", "outside 1h to 720h"),
        ("59m", "5m", "spec.duration", "outside 1h to 720h"),
        ("721h", "8h", "spec.duration", "outside 1h to 720h"),
        ("876000000h", "8h", "spec.duration", "longer than ten years"),
        ("24h", "0s", "spec.renewBefore", "shorter than 5m"),
        ("24h", "4m59s", "spec.renewBefore", "shorter than 5m"),
        ("1h", "51m", "spec.renewBefore", "less than 10m"),
        ("24h", "24h", "spec.renewBefore", "less than 10m"),
        ("24h", "876000000h", "spec.renewBefore", "longer than ten years"),
    ],
)
def test_lifetimes_outside_the_bounds_are_a_problem_naming_the_field(
    duration: str, renew_before: str, field: str, words: str
) -> None:
    problem = lifetime_problem(duration, renew_before)
    assert problem is not None and problem.startswith(f"{field}: ")
    assert words in problem


@pytest.mark.parametrize(
    ("duration", "renew_before"), [("1h", "5m"), ("1h", "50m"), ("24h", "8h"), ("720h", "240h")]
)
def test_lifetimes_within_the_bounds_are_accepted(duration: str, renew_before: str) -> None:
    assert lifetime_problem(duration, renew_before) is None


@pytest.mark.parametrize("duration", ["1s", "876000000h", "9999999999999999h"])
def test_certificate_terms_raise_only_terms_error(duration: str) -> None:
    with pytest.raises(TermsError, match=r"^spec\.duration: "):
        certificate_terms(tunnel_certificate(duration=duration, renew_before="8h"))


# --- no spec value makes the endpoint answer 500 ------------------------------------------


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return generate_ca(NOW - timedelta(days=1), timedelta(days=365), lambda n: b"\x07" * n)


def backend(ca: CertificateAuthority, duration: str, renew_before: str) -> LocalBackend:
    cart = pod("cart-0", "10.1.0.5")
    return LocalBackend(
        ca=ca,
        pods=[cart],
        tunnel_certificates=[tunnel_certificate(duration=duration, renew_before=renew_before)],
        reviews={"tok": token_review(cart)},
    )


@pytest.mark.parametrize(
    ("duration", "renew_before"), [("876000000h", "8h"), ("1s", "0s"), ("24h", "876000000h")]
)
def test_the_identity_and_csr_endpoints_refuse_bad_lifetimes_with_403(
    ca: CertificateAuthority, duration: str, renew_before: str
) -> None:
    reported: list[Refused] = []
    status, body = asyncio.run(
        handle_identity_get("Bearer tok", backend(ca, duration, renew_before), reported.append)
    )
    assert (status, body["code"]) == (403, "invalid-tunnelcertificate")
    assert "spec." in body["reason"]
    csr = json.dumps({"csr": "-----BEGIN CERTIFICATE REQUEST-----"}).encode()
    status, body = asyncio.run(
        handle_csr_post(
            csr, "Bearer tok", backend(ca, duration, renew_before), NOW, lambda n: b"\x01" * n
        )
    )
    assert (status, body["code"]) == (403, "invalid-tunnelcertificate")
    (refused,) = reported
    assert refused.about == (("shop", "ids"), ("shop", "cart-0"))
    assert "about" not in body


class NoIssuerSecret(LocalBackend):
    async def signing_ca(
        self, issuer_secret: str | None, namespace: str
    ) -> tuple[CertificateAuthority, bytes]:
        raise LookupError("spec.issuer.caSecretRef: Secret shop/shop-ca not found")


def test_a_missing_issuer_secret_is_a_retryable_refusal_about_the_pod(
    ca: CertificateAuthority,
) -> None:
    from kipsec_sidecar.identity import IdentityRequest, build_csr, generate_key

    request = IdentityRequest.from_strings("cluster.local", "shop", "cart", ["10.1.0.5"])
    csr = json.dumps({"csr": build_csr(generate_key(), request).decode()}).encode()
    cart = pod("cart-0", "10.1.0.5")
    missing = NoIssuerSecret(ca, [cart], [tunnel_certificate()], {"tok": token_review(cart)})
    reported: list[Refused] = []
    status, body = asyncio.run(
        handle_csr_post(csr, "Bearer tok", missing, NOW, lambda n: b"\x01" * n, reported.append)
    )
    assert (status, body["code"], body["retryable"]) == (503, "ca-unavailable", True)
    assert "Secret shop/shop-ca not found" in body["reason"]
    assert reported[0].about == (("shop", "ids"), ("shop", "cart-0"))


def test_an_unauthenticated_request_is_about_no_tunnelcertificate(
    ca: CertificateAuthority,
) -> None:
    reported: list[Refused] = []
    asyncio.run(handle_identity_get("Bearer nobody", backend(ca, "24h", "8h"), reported.append))
    assert [r.about for r in reported] == [None]


# --- Ready -----------------------------------------------------------------------------------

A, B, C = ("shop", "a"), ("shop", "b"), ("shop", "c")
LATER = NOW + timedelta(hours=1)


def test_all_pods_with_current_certificates_are_ready() -> None:
    verdict = readiness([A, B], {A: LATER, B: LATER}, {}, NOW)
    assert (verdict.ready, verdict.reason) == (True, "AllPodsIssued")
    assert verdict.message == "2 of 2 selected pods hold a current certificate"


def test_expired_certificates_do_not_count() -> None:
    verdict = readiness([A, B], {A: LATER, B: NOW - timedelta(seconds=1)}, {}, NOW)
    assert (verdict.ready, verdict.reason) == (False, "PodsPending")
    assert verdict.message == "1 of 2 selected pods hold a current certificate (1 expired)"


def test_an_invalid_spec_comes_first_and_names_the_field() -> None:
    verdict = readiness(
        [A], {A: LATER}, {}, NOW, invalid_spec="spec.duration: 1s is outside 1h to 720h"
    )
    assert (verdict.ready, verdict.reason) == (False, "InvalidSpec")
    assert verdict.message.startswith("spec.duration: ")


def test_an_unusable_issuer_is_not_ready_even_with_current_certificates() -> None:
    problem = "spec.issuer.caSecretRef: Secret shop/shop-ca not found"
    verdict = readiness([A], {A: LATER}, {}, NOW, issuer_problem=problem)
    assert (verdict.ready, verdict.reason, verdict.message) == (False, "IssuerUnavailable", problem)


def test_a_refused_pod_without_a_certificate_is_named() -> None:
    verdict = readiness([A, B], {A: LATER}, {B: "key-type: the CSR key is RSA 2048"}, NOW)
    assert (verdict.ready, verdict.reason) == (False, "IssuanceFailed")
    assert "pod shop/b: key-type: the CSR key is RSA 2048" in verdict.message
    assert verdict.message.startswith("1 of 2 selected pods hold a current certificate")


def test_a_refusal_of_a_pod_holding_a_current_certificate_or_not_selected_is_ignored() -> None:
    refused = {A: "pod-not-ready: retry", C: "key-type: wrong"}
    verdict = readiness([A, B], {A: LATER, B: LATER}, refused, NOW)
    assert verdict.reason == "AllPodsIssued"


def test_many_refused_pods_are_counted_not_all_named() -> None:
    pods = [("shop", f"p{i}") for i in range(MAX_NAMED_PODS + 2)]
    verdict = readiness(pods, {}, dict.fromkeys(pods, "bad-csr: no"), NOW)
    assert verdict.message.endswith("; and 2 more")
    assert verdict.message.count("pod shop/") == MAX_NAMED_PODS


def test_no_selected_pods() -> None:
    assert readiness([], {}, {}, NOW).reason == "NoPodsSelected"


# --- a CA that cannot sign any more ------------------------------------------------------------


def test_an_expired_or_nearly_expired_ca_cannot_sign() -> None:
    where = "spec.issuer.caSecretRef: Secret shop/shop-ca"
    expired = ca_unusable(NOW - timedelta(seconds=1), NOW, where)
    assert expired is not None and expired.startswith(f"{where}: the CA expired at ")
    soon = ca_unusable(NOW + timedelta(minutes=9), NOW, where)
    assert soon is not None and "too soon" in soon
    assert ca_unusable(NOW + timedelta(minutes=10), NOW, where) is None


def test_the_csr_endpoint_refuses_to_sign_with_an_expired_ca() -> None:
    from kipsec_sidecar.identity import IdentityRequest, build_csr, generate_key

    old = generate_ca(NOW - timedelta(days=2), timedelta(days=1), lambda n: b"\x03" * n)
    request = IdentityRequest.from_strings("cluster.local", "shop", "cart", ["10.1.0.5"])
    csr = json.dumps({"csr": build_csr(generate_key(), request).decode()}).encode()
    status, body = asyncio.run(
        handle_csr_post(csr, "Bearer tok", backend(old, "24h", "8h"), NOW, lambda n: b"\x01" * n)
    )
    assert (status, body["code"], body["retryable"]) == (503, "ca-unavailable", True)
    assert "the operator's CA: the CA expired at " in body["reason"]
