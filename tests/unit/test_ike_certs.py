"""Certificates for IKEv2: loading, chain validation and identity matching."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from kipsec_sidecar.core.errors import CertificateError, LocalProtocolError
from kipsec_sidecar.core.ike import certs
from kipsec_sidecar.core.ike.constants import IdType
from support.pki import NOW, CertificateAuthority, KeyKind, name, self_signed, tamper_signature


@pytest.fixture(scope="module")
def root() -> CertificateAuthority:
    return CertificateAuthority.root("kipsec test root")


@pytest.fixture(scope="module")
def inter(root: CertificateAuthority) -> CertificateAuthority:
    return root.intermediate("kipsec test intermediate")


def reason(excinfo: pytest.ExceptionInfo[CertificateError]) -> str:
    return excinfo.value.reason


# --- loading ---------------------------------------------------------------------------


def test_load_certificate_round_trips_der(root: CertificateAuthority) -> None:
    assert certs.load_certificate(root.der) == root.cert


@pytest.mark.parametrize("junk", [b"", b"\x30\x03\x02\x01\x01", b"not a certificate" * 10])
def test_load_certificate_rejects_junk_as_malformed(junk: bytes) -> None:
    with pytest.raises(CertificateError) as excinfo:
        certs.load_certificate(junk)
    assert reason(excinfo) == "malformed"


def test_load_certificate_rejects_truncated_der(root: CertificateAuthority) -> None:
    with pytest.raises(CertificateError) as excinfo:
        certs.load_certificate(root.der[:-10])
    assert reason(excinfo) == "malformed"


def test_load_certificate_rejects_oversized_input() -> None:
    with pytest.raises(CertificateError) as excinfo:
        certs.load_certificate(b"\x30" * (certs.MAX_CERTIFICATE_SIZE + 1))
    assert reason(excinfo) == "malformed"


# --- valid chains ------------------------------------------------------------------------


def test_chain_through_an_intermediate_validates(
    root: CertificateAuthority, inter: CertificateAuthority
) -> None:
    leaf = inter.issue("pod-a")
    certs.validate_chain(leaf.cert, [inter.cert], [root.cert], NOW)


def test_leaf_issued_directly_by_the_anchor_validates(root: CertificateAuthority) -> None:
    certs.validate_chain(root.issue("pod-b").cert, [], [root.cert], NOW)


def test_intermediates_in_any_order_with_extras_validate(
    root: CertificateAuthority, inter: CertificateAuthority
) -> None:
    second = inter.intermediate("kipsec second intermediate", key_slot=4)
    leaf = second.issue("pod-c")
    stranger = CertificateAuthority.root("unrelated root", key_slot=6).cert
    certs.validate_chain(leaf.cert, [stranger, inter.cert, second.cert], [root.cert], NOW)


@pytest.mark.parametrize("kind", ["rsa", "ec384", "ed25519", "dsa"])
def test_chains_signed_with_each_key_type_validate(kind: KeyKind) -> None:
    ca = CertificateAuthority.root(f"{kind} root", key_kind=kind)
    sub = ca.intermediate(f"{kind} intermediate", key_kind=kind, key_slot=1)
    leaf = sub.issue("pod", key_kind="ec256")
    certs.validate_chain(leaf.cert, [sub.cert], [ca.cert], NOW)


def test_rsa_pss_signed_chain_validates() -> None:
    ca = CertificateAuthority.root("pss root", key_kind="rsa", pss=True)
    leaf = ca.issue("pod")
    certs.validate_chain(leaf.cert, [], [ca.cert], NOW)


def test_pinned_self_signed_peer_validates_as_its_own_anchor() -> None:
    pinned = self_signed("pinned")
    certs.validate_chain(pinned.cert, [], [pinned.cert], NOW)


def test_path_length_allowing_one_intermediate_validates() -> None:
    ca = CertificateAuthority.root("pathlen-1 root", key_slot=7, path_length=1)
    sub = ca.intermediate("pathlen sub", key_slot=8)
    certs.validate_chain(sub.issue("pod").cert, [sub.cert], [ca.cert], NOW)


# --- validity ----------------------------------------------------------------------------


def test_expired_leaf_is_rejected(root: CertificateAuthority, inter: CertificateAuthority) -> None:
    leaf = inter.issue(
        "old", not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1)
    )
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(leaf.cert, [inter.cert], [root.cert], NOW)
    assert reason(excinfo) == "expired"


def test_not_yet_valid_leaf_is_rejected(
    root: CertificateAuthority, inter: CertificateAuthority
) -> None:
    leaf = inter.issue("future", not_before=NOW + timedelta(hours=1))
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(leaf.cert, [inter.cert], [root.cert], NOW)
    assert reason(excinfo) == "not-yet-valid"


def test_expired_intermediate_is_rejected(root: CertificateAuthority) -> None:
    sub = root.intermediate("expired sub", not_after=NOW - timedelta(seconds=1))
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(sub.issue("pod").cert, [sub.cert], [root.cert], NOW)
    assert reason(excinfo) == "expired"


def test_expired_anchor_is_rejected() -> None:
    ca = CertificateAuthority.root("expired root", key_slot=5, not_after=NOW - timedelta(days=1))
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(ca.issue("pod").cert, [], [ca.cert], NOW)
    assert reason(excinfo) == "expired"


def test_validity_boundaries_are_inclusive(root: CertificateAuthority) -> None:
    leaf = root.issue("edge", not_before=NOW, not_after=NOW + timedelta(seconds=1))
    certs.validate_chain(leaf.cert, [], [root.cert], NOW)
    certs.validate_chain(leaf.cert, [], [root.cert], NOW + timedelta(seconds=1))


def test_naive_now_is_a_local_error(root: CertificateAuthority) -> None:
    with pytest.raises(LocalProtocolError):
        certs.validate_chain(root.issue("pod").cert, [], [root.cert], datetime(2026, 6, 1))


# --- trust ---------------------------------------------------------------------------------


def test_leaf_from_another_ca_with_the_same_name_fails_signature(
    root: CertificateAuthority,
) -> None:
    impostor = CertificateAuthority.root("kipsec test root", key_slot=5)
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(impostor.issue("pod").cert, [], [root.cert], NOW)
    assert reason(excinfo) == "bad-signature"


def test_leaf_from_an_unknown_ca_is_untrusted(root: CertificateAuthority) -> None:
    other = CertificateAuthority.root("some other root", key_slot=5)
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(other.issue("pod").cert, [], [root.cert], NOW)
    assert reason(excinfo) == "untrusted"


def test_missing_intermediate_is_untrusted(
    root: CertificateAuthority, inter: CertificateAuthority
) -> None:
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(inter.issue("pod").cert, [], [root.cert], NOW)
    assert reason(excinfo) == "untrusted"


def test_tampered_leaf_signature_is_rejected(
    root: CertificateAuthority, inter: CertificateAuthority
) -> None:
    leaf = tamper_signature(inter.issue("pod").cert)
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(leaf, [inter.cert], [root.cert], NOW)
    assert reason(excinfo) == "bad-signature"


def test_tampered_intermediate_signature_is_rejected(
    root: CertificateAuthority, inter: CertificateAuthority
) -> None:
    leaf = inter.issue("pod")
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(leaf.cert, [tamper_signature(inter.cert)], [root.cert], NOW)
    assert reason(excinfo) == "bad-signature"


@pytest.mark.parametrize(
    ("ca", "basic_constraints", "key_cert_sign"),
    [(False, True, True), (True, False, True), (True, True, False)],
    ids=["ca-false", "no-basic-constraints", "no-key-cert-sign"],
)
def test_intermediate_that_is_not_a_ca_is_rejected(
    root: CertificateAuthority, ca: bool, basic_constraints: bool, key_cert_sign: bool
) -> None:
    sub = root.intermediate(
        "not really a CA", ca=ca, basic_constraints=basic_constraints, key_cert_sign=key_cert_sign
    )
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(sub.issue("pod").cert, [sub.cert], [root.cert], NOW)
    assert reason(excinfo) == "not-a-ca"


def test_leaf_used_as_an_issuer_is_rejected(root: CertificateAuthority) -> None:
    leaf = root.issue("a leaf")
    forged = CertificateAuthority(leaf.cert, leaf.key).issue("pod", key_slot=3)
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(forged.cert, [leaf.cert], [root.cert], NOW)
    assert reason(excinfo) == "not-a-ca"


def test_path_length_zero_forbids_an_intermediate() -> None:
    ca = CertificateAuthority.root("pathlen-0 root", key_slot=7, path_length=0)
    sub = ca.intermediate("forbidden sub", key_slot=8)
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(sub.issue("pod").cert, [sub.cert], [ca.cert], NOW)
    assert reason(excinfo) == "not-a-ca"


def test_path_longer_than_the_depth_bound_is_rejected(root: CertificateAuthority) -> None:
    chain = [root.intermediate("level 1", key_slot=10)]
    for level in range(2, certs.MAX_CHAIN_DEPTH + 1):
        chain.append(chain[-1].intermediate(f"level {level}", key_slot=10 + level))
    leaf = chain[-1].issue("deep pod")
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(leaf.cert, [c.cert for c in chain], [root.cert], NOW)
    assert reason(excinfo) == "untrusted"
    # One level fewer fits within the bound.
    shorter = chain[-3].issue("less deep pod")
    certs.validate_chain(shorter.cert, [c.cert for c in chain[:-2]], [root.cert], NOW)


def test_unknown_critical_extension_is_rejected(root: CertificateAuthority) -> None:
    odd = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    leaf = root.issue("pod", extra_extensions=((odd, True),))
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(leaf.cert, [], [root.cert], NOW)
    assert reason(excinfo) == "untrusted"


def test_unknown_non_critical_extension_is_ignored(root: CertificateAuthority) -> None:
    odd = x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")
    certs.validate_chain(
        root.issue("pod", extra_extensions=((odd, False),)).cert, [], [root.cert], NOW
    )


def test_leaf_whose_key_usage_forbids_signatures_is_rejected(root: CertificateAuthority) -> None:
    encipher_only = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    leaf = root.issue("pod", key_usage=encipher_only)
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(leaf.cert, [], [root.cert], NOW)
    assert reason(excinfo) == "untrusted"


# --- identities ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def peer(root: CertificateAuthority) -> x509.Certificate:
    return root.issue(
        "pod-a",
        subject=name("pod-a", O="kipsec", OU="tests"),
        dns=["pod-a.ns.svc.cluster.local", "Pod-A.Example"],
        emails=["Alice@Example.org"],
        ips=["10.1.2.3", "fd00::17"],
        uris=["spiffe://cluster.local/ns/ns/sa/pod-a"],
    ).cert


@pytest.mark.parametrize(
    ("id_type", "id_data"),
    [
        (IdType.ID_FQDN, b"pod-a.ns.svc.cluster.local"),
        (IdType.ID_FQDN, b"pod-a.example"),  # case-insensitive
        (IdType.ID_FQDN, b"pod-a.example."),  # trailing root dot
        (IdType.ID_RFC822_ADDR, b"Alice@example.ORG"),  # domain case-insensitive
        (IdType.ID_IPV4_ADDR, ipaddress.IPv4Address("10.1.2.3").packed),
        (IdType.ID_IPV6_ADDR, ipaddress.IPv6Address("fd00::17").packed),
    ],
)
def test_identity_matching_a_san(peer: x509.Certificate, id_type: int, id_data: bytes) -> None:
    assert certs.identity_matches(peer, id_type, id_data)


@pytest.mark.parametrize(
    ("id_type", "id_data"),
    [
        (IdType.ID_FQDN, b"pod-b.ns.svc.cluster.local"),
        (IdType.ID_FQDN, b"pod-a"),  # the CN is not a DNS name (RFC 4945)
        (IdType.ID_FQDN, b"*.example"),
        (IdType.ID_FQDN, "pöd-a.example".encode()),
        (IdType.ID_RFC822_ADDR, b"alice@example.org"),  # local part is case-sensitive
        (IdType.ID_RFC822_ADDR, b"Alice"),
        (IdType.ID_IPV4_ADDR, ipaddress.IPv4Address("10.1.2.4").packed),
        (IdType.ID_IPV4_ADDR, b"\x0a\x01\x02"),  # wrong length
        (IdType.ID_IPV6_ADDR, ipaddress.IPv6Address("fd00::18").packed),
        (IdType.ID_IPV6_ADDR, ipaddress.IPv4Address("10.1.2.3").packed),
        (IdType.ID_DER_ASN1_DN, name("pod-b", O="kipsec", OU="tests").public_bytes()),
        (IdType.ID_DER_ASN1_DN, b"\x30\x00"),
        (IdType.ID_DER_ASN1_GN, b"spiffe://cluster.local/ns/ns/sa/pod-a"),
        (IdType.ID_KEY_ID, b"pod-a"),
    ],
)
def test_identity_not_in_the_certificate(
    peer: x509.Certificate, id_type: int, id_data: bytes
) -> None:
    assert not certs.identity_matches(peer, id_type, id_data)


def test_subject_dn_identity_matches_by_der(peer: x509.Certificate) -> None:
    der = name("pod-a", O="kipsec", OU="tests").public_bytes()
    assert certs.identity_matches(peer, IdType.ID_DER_ASN1_DN, der)


def test_fqdn_identity_never_matches_a_certificate_without_sans(root: CertificateAuthority) -> None:
    bare = root.issue("pod-a.example")
    assert not certs.identity_matches(bare.cert, IdType.ID_FQDN, b"pod-a.example")


def test_default_identity_is_the_subject_dn_and_matches(peer: x509.Certificate) -> None:
    id_type, id_data = certs.identity_for_certificate(peer)
    assert id_type == IdType.ID_DER_ASN1_DN
    assert id_data == peer.subject.public_bytes()
    assert certs.identity_matches(peer, id_type, id_data)


def test_load_certificate_rejects_an_unknown_version(root: CertificateAuthority) -> None:
    der = root.issue("pod").der
    v3 = bytes.fromhex("a003020102")  # tbsCertificate version [0] EXPLICIT INTEGER 2 (v3)
    assert v3 in der
    with pytest.raises(CertificateError) as excinfo:
        certs.load_certificate(der.replace(v3, bytes.fromhex("a003020107"), 1))
    assert reason(excinfo) == "malformed"


def test_path_search_over_a_cross_signed_maze_gives_up_quickly() -> None:
    # Twelve self-issued CAs sharing one name and key: every one verifies every other,
    # so an unbounded depth-first search would try 12 * 11 * 10 * ... paths.
    maze_root = CertificateAuthority.root("maze", key_slot=30)
    maze = [
        maze_root.intermediate("maze", key_slot=30, not_before=NOW - timedelta(days=i + 1))
        for i in range(12)
    ]
    leaf = maze_root.issue("pod in the maze")
    trusted = CertificateAuthority.root("the real root", key_slot=31)
    with pytest.raises(CertificateError) as excinfo:
        certs.validate_chain(leaf.cert, [m.cert for m in maze], [trusted.cert], NOW)
    assert reason(excinfo) == "untrusted"
