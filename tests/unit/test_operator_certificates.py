"""Pod identities: the CA, the CSR decision, issuance, renewal and CA rotation.

The sidecar half (kipsec_sidecar.identity) makes the key and the CSR and checks the
answer; the operator half decides and signs; the sidecar's IKE path validation
(kipsec_sidecar.core.ike.certs) is the judge of whether the result is usable.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import random
import stat
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from kipsec_operator.certificates import ca as ca_mod
from kipsec_operator.certificates.ca import (
    CaSecretError,
    CaState,
    CertificateAuthority,
    fingerprint,
    from_secret_data,
    generate_ca,
    to_secret_data,
)
from kipsec_operator.certificates.csr import Approved, Refused, decide_csr, sign_approved
from kipsec_operator.certificates.endpoint import (
    handle_csr_post,
    handle_identity_get,
    parse_csr_body,
)
from kipsec_operator.certificates.identity import PodIdentity
from kipsec_operator.certificates.issue import issue_certificate
from kipsec_operator.certificates.rotation import (
    CaRotationPolicy,
    DropRetiredCas,
    NoCaChange,
    PrepareNextCa,
    PromotePendingCa,
    needs_renewal,
    renewal_time,
    rotate_ca,
)
from kipsec_sidecar import identity as sidecar_identity
from kipsec_sidecar.core.errors import CertificateError
from kipsec_sidecar.core.ike.certs import identity_matches, validate_chain
from kipsec_sidecar.core.ike.constants import IdType

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POD_IP = "10.1.0.5"


def rng(seed: int = 7) -> ca_mod.Rng:
    return random.Random(seed).randbytes


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return generate_ca(NOW - timedelta(days=1), timedelta(days=365), rng(1))


def make_pod(**changes: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "cart-0",
            "namespace": "shop",
            "uid": "1f7c6a2e-0000-4000-8000-000000000001",
            "labels": {"app": "cart"},
        },
        "spec": {"serviceAccountName": "cart", "containers": [{"name": "app", "image": "x"}]},
        "status": {"phase": "Running", "podIP": POD_IP, "podIPs": [{"ip": POD_IP}]},
    }
    for path, value in changes.items():
        target = pod
        *parents, leaf = path.split("__")
        for key in parents:
            target = target[key]
        target[leaf] = value
    return pod


def make_tc(name: str = "pods", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"podSelector": {"matchLabels": {"app": "cart"}}}}
    body.update(spec)
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "TunnelCertificate",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": body,
    }


def review(
    pod_name: str = "cart-0",
    uid: str = "1f7c6a2e-0000-4000-8000-000000000001",
    account: str = "system:serviceaccount:shop:cart",
) -> dict[str, Any]:
    return {
        "authenticated": True,
        "audiences": ["kipsec"],
        "user": {
            "username": account,
            "uid": "sa-uid",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:shop"],
            "extra": {
                "authentication.kubernetes.io/pod-name": [pod_name],
                "authentication.kubernetes.io/pod-uid": [uid],
            },
        },
    }


def sidecar_request(
    account: str = "cart", ips: Sequence[str] = (POD_IP,), namespace: str = "shop"
) -> sidecar_identity.IdentityRequest:
    return sidecar_identity.IdentityRequest.from_strings("cluster.local", namespace, account, ips)


@pytest.fixture(scope="module")
def pod_key() -> sidecar_identity.PrivateKey:
    return sidecar_identity.generate_key()


@pytest.fixture(scope="module")
def good_csr(pod_key: sidecar_identity.PrivateKey) -> bytes:
    return sidecar_identity.build_csr(pod_key, sidecar_request())


def approve(csr: bytes, **kwargs: Any) -> Approved:
    decision = decide_csr(
        csr,
        kwargs.get("status", review()),
        kwargs.get("pod", make_pod()),
        kwargs.get("tcs", [make_tc()]),
        NOW,
    )
    assert isinstance(decision, Approved), decision
    return decision


def refusal(csr: bytes, status: Any, pod: Any, tcs: Any) -> Refused:
    decision = decide_csr(csr, status, pod, tcs, NOW)
    assert isinstance(decision, Refused), decision
    return decision


# --- issuance: what the right pod gets ------------------------------------------------------


def test_a_csr_from_the_right_pod_yields_a_chain_the_sidecar_validates(
    ca: CertificateAuthority, good_csr: bytes
) -> None:
    issued = sign_approved(approve(good_csr), ca, NOW, rng())
    validate_chain(issued.cert, [], [ca.cert], NOW)


def test_the_issued_certificate_matches_the_pod_ip_and_subject_dn_identities(
    ca: CertificateAuthority, good_csr: bytes
) -> None:
    cert = sign_approved(approve(good_csr), ca, NOW, rng()).cert
    assert identity_matches(cert, IdType.ID_IPV4_ADDR, ipaddress.ip_address(POD_IP).packed)
    dn = x509.Name.from_rfc4514_string("CN=cart,OU=shop,O=cluster.local").public_bytes()
    assert identity_matches(cert, IdType.ID_DER_ASN1_DN, dn)
    assert not identity_matches(cert, IdType.ID_IPV4_ADDR, bytes([10, 1, 0, 6]))


def test_the_issued_certificate_carries_the_spiffe_uri_and_no_extended_key_usage(
    ca: CertificateAuthority, good_csr: bytes
) -> None:
    cert = sign_approved(approve(good_csr), ca, NOW, rng()).cert
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/shop/sa/cart"
    ]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


def test_the_certificate_is_signed_for_the_key_in_the_csr(
    ca: CertificateAuthority, good_csr: bytes, pod_key: sidecar_identity.PrivateKey
) -> None:
    cert = sign_approved(approve(good_csr), ca, NOW, rng()).cert
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert cert.public_key().public_bytes(der, spki) == pod_key.public_key().public_bytes(der, spki)


def test_the_leaf_lives_for_the_tunnelcertificate_duration(
    ca: CertificateAuthority, good_csr: bytes
) -> None:
    approved = approve(good_csr, tcs=[make_tc(duration="48h", renewBefore="12h")])
    issued = sign_approved(approved, ca, NOW, rng())
    assert issued.not_after == NOW + timedelta(hours=48)
    assert issued.renewal_time == NOW + timedelta(hours=36)


def test_a_leaf_never_outlives_its_ca(good_csr: bytes) -> None:
    short_ca = generate_ca(NOW, timedelta(hours=2), rng(3))
    issued = sign_approved(approve(good_csr), short_ca, NOW, rng())
    assert issued.not_after == short_ca.not_after


@pytest.mark.parametrize(("algorithm", "size"), [("RSA", 2048), ("Ed25519", None)])
def test_other_key_algorithms_are_issued_when_the_tunnelcertificate_asks_for_them(
    ca: CertificateAuthority, algorithm: sidecar_identity.KeyAlgorithm, size: int | None
) -> None:
    key = sidecar_identity.generate_key(algorithm, size)
    private_key: dict[str, Any] = {"algorithm": algorithm}
    if size is not None:
        private_key["size"] = size
    approved = approve(
        sidecar_identity.build_csr(key, sidecar_request()), tcs=[make_tc(privateKey=private_key)]
    )
    validate_chain(sign_approved(approved, ca, NOW, rng()).cert, [], [ca.cert], NOW)


def test_a_casecret_issuer_is_named_in_the_approval(good_csr: bytes) -> None:
    tc = make_tc(issuer={"type": "CASecret", "caSecretRef": {"name": "team-ca"}})
    assert approve(good_csr, tcs=[tc]).terms.issuer_secret == "team-ca"


def test_without_pod_ips_only_the_uri_is_asked_for(pod_key: sidecar_identity.PrivateKey) -> None:
    csr = sidecar_identity.build_csr(pod_key, sidecar_request(ips=()))
    tc = make_tc(identity={"includePodIps": False})
    assert approve(csr, tcs=[tc]).identity.addresses == ()


def test_sidecar_and_operator_build_the_same_workload_uri() -> None:
    operator_side = PodIdentity("cluster.local", "shop", "cart", ())
    assert sidecar_request().uri == operator_side.uri


def test_a_tunnelcertificate_with_a_namespace_selector_needs_the_pods_namespace(
    good_csr: bytes,
) -> None:
    tc = make_tc(
        selector={
            "podSelector": {"matchLabels": {"app": "cart"}},
            "namespaceSelector": {"matchLabels": {"team": "shop"}},
        }
    )
    tc["metadata"]["namespace"] = "kipsec-system"
    namespace = {"metadata": {"name": "shop", "labels": {"team": "shop"}}}
    decision = decide_csr(good_csr, review(), make_pod(), [tc], NOW, namespace=namespace)
    assert isinstance(decision, Approved)
    assert isinstance(decide_csr(good_csr, review(), make_pod(), [tc], NOW), Refused)


# --- refusals: anyone but that pod, asking for anything but its name ----------------------


def test_a_token_naming_another_pod_is_refused(good_csr: bytes) -> None:
    # The handler looks up the pod the token names; a mismatch means the lookup is wrong.
    refused = refusal(good_csr, review(pod_name="cart-1"), make_pod(), [make_tc()])
    assert refused.code == "pod-mismatch"
    assert "cart-1" in refused.reason


def test_a_token_bound_to_a_deleted_namesake_is_refused(good_csr: bytes) -> None:
    refused = refusal(good_csr, review(uid="old-uid"), make_pod(), [make_tc()])
    assert refused.code == "pod-mismatch"
    assert "recreated" in refused.reason


def test_a_token_of_another_service_account_is_refused(good_csr: bytes) -> None:
    status = review(account="system:serviceaccount:shop:admin")
    assert refusal(good_csr, status, make_pod(), [make_tc()]).code == "pod-mismatch"


def test_a_csr_asking_for_another_service_accounts_identity_is_refused(
    pod_key: sidecar_identity.PrivateKey,
) -> None:
    csr = sidecar_identity.build_csr(pod_key, sidecar_request(account="payments"))
    refused = refusal(csr, review(), make_pod(), [make_tc()])
    assert refused.code == "identity-mismatch"
    assert "spiffe://cluster.local/ns/shop/sa/payments" in refused.reason


def test_a_csr_asking_for_another_pods_ip_is_refused(pod_key: sidecar_identity.PrivateKey) -> None:
    csr = sidecar_identity.build_csr(pod_key, sidecar_request(ips=(POD_IP, "10.1.0.99")))
    refused = refusal(csr, review(), make_pod(), [make_tc()])
    assert refused.code == "identity-mismatch"
    assert "10.1.0.99" in refused.reason


def test_a_csr_with_an_extra_dns_name_is_refused(pod_key: sidecar_identity.PrivateKey) -> None:
    from cryptography.hazmat.primitives import hashes

    names = [
        x509.UniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/cart"),
        x509.IPAddress(ipaddress.ip_address(POD_IP)),
        x509.DNSName("bank.example"),
    ]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(pod_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    assert refusal(csr, review(), make_pod(), [make_tc()]).code == "identity-mismatch"


def test_an_unknown_pod_is_refused(good_csr: bytes) -> None:
    refused = refusal(good_csr, review(), None, [make_tc()])
    assert (refused.code, refused.reason) == ("unknown-pod", "pod shop/cart-0 does not exist")


def test_a_pod_no_tunnelcertificate_selects_is_refused(good_csr: bytes) -> None:
    pod = make_pod(metadata__labels={"app": "web"})
    assert refusal(good_csr, review(), pod, [make_tc()]).code == "not-selected"


def test_an_expired_token_is_refused_with_the_reviews_error(good_csr: bytes) -> None:
    status = {"authenticated": False, "error": "[invalid bearer token, token has expired]"}
    refused = refusal(good_csr, status, make_pod(), [make_tc()])
    assert refused.code == "unauthenticated"
    assert "token has expired" in refused.reason


def test_a_token_for_another_audience_is_refused(good_csr: bytes) -> None:
    status = review()
    status["audiences"] = ["https://kubernetes.default.svc"]
    assert refusal(good_csr, status, make_pod(), [make_tc()]).code == "wrong-audience"


def test_a_legacy_token_not_bound_to_a_pod_is_refused(good_csr: bytes) -> None:
    status = review()
    status["user"]["extra"] = {}
    assert refusal(good_csr, status, make_pod(), [make_tc()]).code == "not-pod-bound"


def test_a_terminating_pod_is_refused(good_csr: bytes) -> None:
    pod = make_pod(metadata__deletionTimestamp="2026-03-01T11:59:00Z")
    assert refusal(good_csr, review(), pod, [make_tc()]).code == "pod-terminating"


def test_a_pod_without_an_ip_yet_is_refused_as_retryable(good_csr: bytes) -> None:
    pod = make_pod(status={"phase": "Pending"})
    refused = refusal(good_csr, review(), pod, [make_tc()])
    assert (refused.code, refused.retryable) == ("pod-not-ready", True)


def test_a_key_weaker_than_the_tunnelcertificate_asks_is_refused(good_csr: bytes) -> None:
    tc = make_tc(privateKey={"algorithm": "ECDSA", "size": 384})
    refused = refusal(good_csr, review(), make_pod(), [tc])
    assert refused.code == "key-type"
    assert "ECDSA 256" in refused.reason and "ECDSA 384" in refused.reason


def test_a_pod_selected_by_two_tunnelcertificates_is_refused(good_csr: bytes) -> None:
    refused = refusal(good_csr, review(), make_pod(), [make_tc("a"), make_tc("b")])
    assert refused.code == "ambiguous"
    assert "shop/a, shop/b" in refused.reason


def test_an_invalid_tunnelcertificate_is_refused_naming_the_field(good_csr: bytes) -> None:
    refused = refusal(good_csr, review(), make_pod(), [make_tc(duration="1 day")])
    assert refused.code == "invalid-tunnelcertificate"
    assert "spec.duration" in refused.reason


def test_a_tampered_csr_is_refused(good_csr: bytes) -> None:
    der = x509.load_pem_x509_csr(good_csr).public_bytes(serialization.Encoding.DER)
    tampered = bytearray(der)
    tampered[-5] ^= 0x01  # inside the signature
    pem = x509.load_der_x509_csr(bytes(tampered)).public_bytes(serialization.Encoding.PEM)
    assert refusal(pem, review(), make_pod(), [make_tc()]).code == "bad-csr"


@pytest.mark.parametrize(
    "junk", [b"", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", b"x" * 20000]
)
def test_garbage_instead_of_a_csr_is_refused(junk: bytes) -> None:
    assert refusal(junk, review(), make_pod(), [make_tc()]).code == "bad-csr"


# --- the HTTP endpoint and the sidecar's view of the answer -----------------------------------


class FakeBackend:
    def __init__(self, ca: CertificateAuthority, status: Mapping[str, Any]) -> None:
        self.ca = ca
        self.status = status
        self.reviewed: list[Mapping[str, Any]] = []

    async def review_token(self, token_review: Mapping[str, Any]) -> Mapping[str, Any]:
        self.reviewed.append(token_review)
        return self.status

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        pod = make_pod()
        return pod if (namespace, name) == ("shop", "cart-0") else None

    async def get_namespace(self, name: str) -> Mapping[str, Any] | None:
        return {"metadata": {"name": name}}

    async def list_tunnel_certificates(self) -> Sequence[Mapping[str, Any]]:
        return [make_tc()]

    async def signing_ca(
        self, issuer_secret: str | None, namespace: str
    ) -> tuple[CertificateAuthority, bytes]:
        return self.ca, self.ca.cert_pem()


def post(backend: FakeBackend, body: bytes, auth: str | None) -> tuple[int, dict[str, Any]]:
    return asyncio.run(handle_csr_post(body, auth, backend, NOW, rng()))


def test_the_endpoint_answer_is_accepted_by_the_sidecar(
    ca: CertificateAuthority, good_csr: bytes, pod_key: sidecar_identity.PrivateKey
) -> None:
    backend = FakeBackend(ca, review())
    status, body = post(backend, json.dumps({"csr": good_csr.decode()}).encode(), "Bearer tok")
    assert status == 200
    issued = sidecar_identity.parse_response(json.dumps(body).encode(), pod_key)
    anchors = x509.load_pem_x509_certificates(issued.ca_bundle_pem)
    validate_chain(issued.certificate, [], anchors, NOW)
    assert backend.reviewed[0]["spec"] == {"token": "tok", "audiences": ["kipsec"]}


def test_the_endpoint_refuses_a_request_without_a_bearer_token(
    ca: CertificateAuthority, good_csr: bytes
) -> None:
    backend = FakeBackend(ca, review())
    status, body = post(backend, json.dumps({"csr": good_csr.decode()}).encode(), None)
    assert (status, body["code"]) == (401, "unauthenticated")
    assert backend.reviewed == []


def test_the_endpoint_answers_403_with_the_reason_for_another_pods_token(
    ca: CertificateAuthority, good_csr: bytes
) -> None:
    backend = FakeBackend(ca, review(pod_name="cart-9"))
    token = "eyJhbGciOiJSUzI1NiJ9.secret-token-body"
    status, body = post(backend, json.dumps({"csr": good_csr.decode()}).encode(), f"Bearer {token}")
    assert (status, body["code"]) == (403, "unknown-pod")
    assert "secret-token-body" not in json.dumps(body)


@pytest.mark.parametrize("body", [b"", b"[]", b'{"csr": 1}', b"\xff\xfe"])
def test_a_malformed_request_body_is_a_400(body: bytes) -> None:
    refused = parse_csr_body(body)
    assert isinstance(refused, Refused) and refused.code == "bad-request"


def test_the_sidecar_rejects_a_certificate_for_another_key(
    ca: CertificateAuthority, good_csr: bytes
) -> None:
    issued = sign_approved(approve(good_csr), ca, NOW, rng())
    body = json.dumps(
        {
            "certificate": issued.cert_pem().decode(),
            "caBundle": ca.cert_pem().decode(),
            "notAfter": issued.not_after.isoformat(),
            "renewalTime": issued.renewal_time.isoformat(),
        }
    ).encode()
    with pytest.raises(sidecar_identity.IdentityRequestError) as excinfo:
        sidecar_identity.parse_response(body, sidecar_identity.generate_key())
    assert excinfo.value.code == "bad-response"


def test_the_sidecar_turns_a_refusal_into_a_typed_error() -> None:
    body = json.dumps({"code": "pod-not-ready", "reason": "no IP", "retryable": True}).encode()
    error = sidecar_identity.parse_refusal(409, body)
    assert (error.code, error.reason, error.retryable) == ("pod-not-ready", "no IP", True)


def test_the_sidecar_stores_key_and_certificate_together(
    tmp_path: Path,
    ca: CertificateAuthority,
    good_csr: bytes,
    pod_key: sidecar_identity.PrivateKey,
) -> None:
    issued = sign_approved(approve(good_csr), ca, NOW, rng())
    answer = sidecar_identity.IssuedIdentity(
        issued.cert_pem(), ca.cert_pem(), issued.not_after, issued.renewal_time
    )
    sidecar_identity.store_identity(tmp_path, pod_key, answer)
    sidecar_identity.store_identity(tmp_path, pod_key, answer)  # a renewal replaces it
    assert (tmp_path / "tls.crt").read_bytes() == issued.cert_pem()
    assert stat.S_IMODE((tmp_path / "tls.key").stat().st_mode) == 0o600
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("..gen.")]) == 1


# --- renewal timing ---------------------------------------------------------------------------


def test_renewal_is_due_renew_before_the_end() -> None:
    start, end = NOW, NOW + timedelta(hours=24)
    assert renewal_time(start, end, timedelta(hours=8)) == NOW + timedelta(hours=16)


def test_a_renew_before_longer_than_the_lifetime_renews_at_two_thirds() -> None:
    start, end = NOW, NOW + timedelta(hours=24)
    assert renewal_time(start, end, timedelta(hours=30)) == NOW + timedelta(hours=16)


def test_needs_renewal_flips_at_the_renewal_time() -> None:
    start, end, before = NOW, NOW + timedelta(hours=24), timedelta(hours=8)
    assert not needs_renewal(start, end, before, NOW + timedelta(hours=15, minutes=59))
    assert needs_renewal(start, end, before, NOW + timedelta(hours=16))


def test_the_sidecar_renews_from_the_operators_renewal_time(
    ca: CertificateAuthority, good_csr: bytes
) -> None:
    issued = sign_approved(approve(good_csr), ca, NOW, rng())
    answer = sidecar_identity.IssuedIdentity(
        issued.cert_pem(), b"", issued.not_after, issued.renewal_time
    )
    assert not sidecar_identity.renewal_due(answer, issued.renewal_time - timedelta(seconds=1))
    assert sidecar_identity.renewal_due(answer, issued.renewal_time)


# --- the CA Secret ------------------------------------------------------------------------------


def test_the_ca_secret_round_trips(ca: CertificateAuthority) -> None:
    state = CaState(signing=ca)
    parsed = from_secret_data(to_secret_data(state))
    assert parsed.signing.cert == ca.cert
    assert parsed.bundle() == [ca.cert]


def test_a_corrupt_ca_key_names_the_data_key_and_not_its_content(ca: CertificateAuthority) -> None:
    data = to_secret_data(CaState(signing=ca))
    data["tls.key"] = data["tls.key"][:40] + "AAAA" + data["tls.key"][44:]
    with pytest.raises(CaSecretError) as excinfo:
        from_secret_data(data)
    assert str(excinfo.value).startswith("data.tls.key")
    assert data["tls.key"][:20] not in str(excinfo.value)


def test_a_ca_key_of_another_ca_is_refused(ca: CertificateAuthority) -> None:
    other = generate_ca(NOW, timedelta(days=30), rng(9))
    data = to_secret_data(CaState(signing=ca))
    data["tls.key"] = to_secret_data(CaState(signing=other))["tls.key"]
    with pytest.raises(CaSecretError, match=r"data\.tls\.key: does not belong to data\.tls\.crt"):
        from_secret_data(data)


# --- CA rotation --------------------------------------------------------------------------------

POLICY = CaRotationPolicy(
    ca_duration=timedelta(days=100),
    renew_before=timedelta(days=20),
    propagation=timedelta(hours=1),
    max_leaf_duration=timedelta(days=2),
)


def leaf_from(authority: CertificateAuthority, at: datetime) -> x509.Certificate:
    identity = PodIdentity("cluster.local", "shop", "cart", (ipaddress.ip_address(POD_IP),))
    key = sidecar_identity.generate_key()
    return issue_certificate(
        key.public_key(), identity, authority, at, rng(), duration=timedelta(days=1)
    ).cert


def validates(leaf: x509.Certificate, state: CaState, at: datetime) -> bool:
    try:
        validate_chain(leaf, [], state.bundle(), at)
    except CertificateError:
        return False
    return True


class Clock:
    """The CA's life, step by step, with a generator that counts new CAs."""

    def __init__(self) -> None:
        self.generated = 0

    def generate(self) -> CertificateAuthority:
        self.generated += 1
        return generate_ca(self.at, POLICY.ca_duration, rng(100 + self.generated))

    def step(self, state: CaState, at: datetime) -> tuple[CaState, list[Any]]:
        self.at = at
        return rotate_ca(state, at, POLICY, self.generate)


@pytest.fixture(scope="module")
def first_ca() -> CertificateAuthority:
    return generate_ca(NOW, POLICY.ca_duration, rng(50))


def test_nothing_happens_before_the_ca_renewal_window(first_ca: CertificateAuthority) -> None:
    clock = Clock()
    state, steps = clock.step(CaState(signing=first_ca), NOW + timedelta(days=79))
    assert state.signing is first_ca and state.pending is None
    assert steps == [NoCaChange(first_ca.not_after - POLICY.renew_before)]


def test_the_next_ca_is_trusted_before_it_signs(first_ca: CertificateAuthority) -> None:
    clock = Clock()
    state, steps = clock.step(CaState(signing=first_ca), NOW + timedelta(days=80))
    assert isinstance(steps[0], PrepareNextCa)
    assert state.signing is first_ca
    assert state.pending is not None and state.bundle() == [first_ca.cert, state.pending.cert]


def test_rotation_overlap_then_the_old_ca_leaves_the_bundle(
    first_ca: CertificateAuthority,
) -> None:
    clock = Clock()
    t_prepare = NOW + timedelta(days=80)
    state, _ = clock.step(CaState(signing=first_ca), t_prepare)
    old_leaf = leaf_from(first_ca, t_prepare + timedelta(minutes=30))

    t_promote = t_prepare + POLICY.propagation
    state, steps = clock.step(state, t_promote)
    assert isinstance(steps[0], PromotePendingCa)
    assert state.signing is not first_ca
    new_leaf = leaf_from(state.signing, t_promote)

    during = t_promote + timedelta(hours=12)
    state, steps = clock.step(state, during)
    assert isinstance(steps[-1], NoCaChange) and len(steps) == 1
    assert validates(old_leaf, state, during) and validates(new_leaf, state, during)

    after = t_promote + POLICY.max_leaf_duration + ca_mod.CLOCK_SKEW
    state, steps = clock.step(state, after)
    assert isinstance(steps[0], DropRetiredCas)
    assert steps[0].fingerprints == frozenset({fingerprint(first_ca.cert)})
    assert state.bundle() == [state.signing.cert]
    newer_leaf = leaf_from(state.signing, after)
    assert validates(newer_leaf, state, after)
    assert not validates(leaf_from(first_ca, after), state, after)
    assert clock.generated == 1


def test_the_rotation_state_survives_the_secret(first_ca: CertificateAuthority) -> None:
    clock = Clock()
    state, _ = clock.step(CaState(signing=first_ca), NOW + timedelta(days=80))
    state, _ = clock.step(state, NOW + timedelta(days=80) + POLICY.propagation)
    parsed = from_secret_data(to_secret_data(state))
    assert [r.cert for r in parsed.retired] == [first_ca.cert]
    assert parsed.retired[0].retired_at == NOW + timedelta(days=80) + POLICY.propagation


def test_an_expired_signing_ca_is_replaced_at_once(first_ca: CertificateAuthority) -> None:
    clock = Clock()
    late = first_ca.not_after + timedelta(days=1)
    state, steps = clock.step(CaState(signing=first_ca), late)
    kinds = [type(s) for s in steps]
    assert kinds[:2] == [PrepareNextCa, PromotePendingCa]
    assert state.signing.not_after > late


def test_a_policy_whose_window_cannot_hold_a_leaf_is_refused() -> None:
    with pytest.raises(ValueError, match="renewBefore"):
        CaRotationPolicy(renew_before=timedelta(days=1), max_leaf_duration=timedelta(days=30))


# --- GET /v1/identity: the sidecar asks what it may ask for ----------------------------------


class Ecdsa384Backend(FakeBackend):
    async def list_tunnel_certificates(self) -> Sequence[Mapping[str, Any]]:
        return [make_tc(privateKey={"algorithm": "ECDSA", "size": 384})]


def test_the_identity_offer_leads_to_a_csr_the_operator_signs(ca: CertificateAuthority) -> None:
    backend = Ecdsa384Backend(ca, review())
    status, offer_body = asyncio.run(handle_identity_get("Bearer t", backend))
    assert status == 200
    offer = sidecar_identity.parse_offer(json.dumps(offer_body).encode())
    assert (offer.algorithm, offer.size) == ("ECDSA", 384)
    key = offer.generate_key()
    csr_body = json.dumps({"csr": offer.build_csr(key).decode()}).encode()
    status, body = post(backend, csr_body, "Bearer t")
    assert status == 200
    issued = sidecar_identity.parse_response(json.dumps(body).encode(), key)
    validate_chain(issued.certificate, [], [ca.cert], NOW)


def test_the_identity_offer_is_refused_to_an_unauthenticated_caller(
    ca: CertificateAuthority,
) -> None:
    backend = FakeBackend(ca, {"authenticated": False, "error": "invalid bearer token"})
    status, body = asyncio.run(handle_identity_get("Bearer t", backend))
    assert (status, body["code"]) == (401, "unauthenticated")


# --- untrusted input never raises -------------------------------------------------------------

_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    csr=st.binary(max_size=300), status=_JSONISH, pod=_JSONISH, tcs=st.lists(_JSONISH, max_size=2)
)
def test_decide_csr_refuses_junk_without_raising(
    csr: bytes, status: Any, pod: Any, tcs: list[Any]
) -> None:
    decision = decide_csr(
        csr,
        status if isinstance(status, dict) else {},
        pod if isinstance(pod, dict) else None,
        [t for t in tcs if isinstance(t, dict)],
        NOW,
    )
    assert isinstance(decision, Refused)


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=300))
def test_the_sidecar_parses_junk_answers_into_a_typed_error(body: bytes) -> None:
    with pytest.raises(sidecar_identity.IdentityRequestError):
        sidecar_identity.parse_offer(body)
