"""IKEv2 AUTH payloads: signed octets, shared-key MICs and every signature method."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from kipsec_sidecar.core.errors import AuthenticationFailed, LocalProtocolError
from kipsec_sidecar.core.ike import auth
from kipsec_sidecar.core.ike.constants import AuthMethod, HashAlgorithm, PrfId
from support.pki import KeyKind, make_key

OCTETS = b"IKE_SA_INIT message" + b"\x11" * 32 + b"\x22" * 32
SHA256 = HashAlgorithm.SHA2_256
SHA384 = HashAlgorithm.SHA2_384
SHA512 = HashAlgorithm.SHA2_512
IDENTITY = HashAlgorithm.IDENTITY

# --- signed octets and PSK ------------------------------------------------------------


def test_signed_octets_are_message_peer_nonce_and_mac_of_id_body() -> None:
    message, nonce, sk_p = b"\x01" * 40, b"\x02" * 32, b"\x03" * 32
    id_body = b"\x02\x00\x00\x00" + b"peer.example"
    expected = message + nonce + hmac.new(sk_p, id_body, hashlib.sha256).digest()
    assert auth.signed_octets(message, nonce, PrfId.HMAC_SHA2_256, sk_p, id_body) == expected


def test_psk_auth_data_is_prf_of_padded_key_over_octets() -> None:
    psk = b"correct horse battery staple"
    pad_key = hmac.new(psk, b"Key Pad for IKEv2", hashlib.sha384).digest()
    expected = hmac.new(pad_key, OCTETS, hashlib.sha384).digest()
    assert auth.psk_auth_data(PrfId.HMAC_SHA2_384, psk, OCTETS) == expected


def test_psk_round_trip_verifies() -> None:
    data = auth.psk_auth_data(PrfId.HMAC_SHA2_256, b"secret", OCTETS)
    auth.verify_psk(PrfId.HMAC_SHA2_256, b"secret", OCTETS, data)


def test_psk_with_a_different_key_fails() -> None:
    data = auth.psk_auth_data(PrfId.HMAC_SHA2_256, b"secret", OCTETS)
    with pytest.raises(AuthenticationFailed):
        auth.verify_psk(PrfId.HMAC_SHA2_256, b"Secret", OCTETS, data)


def test_psk_over_tampered_octets_fails() -> None:
    data = auth.psk_auth_data(PrfId.HMAC_SHA2_256, b"secret", OCTETS)
    with pytest.raises(AuthenticationFailed):
        auth.verify_psk(PrfId.HMAC_SHA2_256, b"secret", OCTETS + b"\x00", data)


def test_truncated_psk_auth_data_fails() -> None:
    data = auth.psk_auth_data(PrfId.HMAC_SHA2_256, b"secret", OCTETS)
    with pytest.raises(AuthenticationFailed):
        auth.verify_psk(PrfId.HMAC_SHA2_256, b"secret", OCTETS, data[:-1])


# --- RFC 7427 Appendix A encodings ---------------------------------------------------

RFC7427_APPENDIX_A = {
    # A.1.2 / A.1.3 / A.1.4: sha{256,384,512}WithRSAEncryption
    "sha256WithRSAEncryption": "30 0d 06 09 2a 86 48 86 f7 0d 01 01 0b 05 00",
    "sha384WithRSAEncryption": "30 0d 06 09 2a 86 48 86 f7 0d 01 01 0c 05 00",
    "sha512WithRSAEncryption": "30 0d 06 09 2a 86 48 86 f7 0d 01 01 0d 05 00",
    # A.2.2: dsa-with-sha256
    "dsa-with-sha256": "30 0b 06 09 60 86 48 01 65 03 04 03 02",
    # A.3.2 / A.3.3 / A.3.4: ecdsa-with-sha{256,384,512}
    "ecdsa-with-sha256": "30 0a 06 08 2a 86 48 ce 3d 04 03 02",
    "ecdsa-with-sha384": "30 0a 06 08 2a 86 48 ce 3d 04 03 03",
    "ecdsa-with-sha512": "30 0a 06 08 2a 86 48 ce 3d 04 03 04",
    # A.4.3: RSASSA-PSS with SHA-256 (MGF1 SHA-256, salt 32, trailer 1)
    "RSASSA-PSS with SHA-256": (
        "30 46 06 09 2a 86 48 86 f7 0d 01 01 0a 30 39 a0 0f 30 0d 06 09 60 86 48 01 65 03 04"
        "02 01 05 00 a1 1c 30 1a 06 09 2a 86 48 86 f7 0d 01 01 08 30 0d 06 09 60 86 48 01 65"
        "03 04 02 01 05 00 a2 03 02 01 20 a3 03 02 01 01"
    ),
    # RFC 8420 section 2 (RFC 8410 OID): id-Ed25519
    "Ed25519": "30 05 06 03 2b 65 70",
}


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


@pytest.mark.parametrize(
    ("name", "scheme"),
    [
        (
            "sha256WithRSAEncryption",
            auth.SignatureScheme(auth.KeyKind.RSA, SHA256, auth.Padding.PKCS1V15),
        ),
        (
            "sha384WithRSAEncryption",
            auth.SignatureScheme(auth.KeyKind.RSA, SHA384, auth.Padding.PKCS1V15),
        ),
        (
            "sha512WithRSAEncryption",
            auth.SignatureScheme(auth.KeyKind.RSA, SHA512, auth.Padding.PKCS1V15),
        ),
        ("dsa-with-sha256", auth.SignatureScheme(auth.KeyKind.DSA, SHA256)),
        ("ecdsa-with-sha256", auth.SignatureScheme(auth.KeyKind.ECDSA, SHA256)),
        ("ecdsa-with-sha384", auth.SignatureScheme(auth.KeyKind.ECDSA, SHA384)),
        ("ecdsa-with-sha512", auth.SignatureScheme(auth.KeyKind.ECDSA, SHA512)),
        (
            "RSASSA-PSS with SHA-256",
            auth.SignatureScheme(auth.KeyKind.RSA, SHA256, auth.Padding.PSS, 32, SHA256),
        ),
        ("Ed25519", auth.SignatureScheme(auth.KeyKind.ED25519, IDENTITY)),
    ],
)
def test_algorithm_identifier_is_byte_identical_to_the_rfc(
    name: str, scheme: auth.SignatureScheme
) -> None:
    expected = _hex(RFC7427_APPENDIX_A[name])
    assert auth.algorithm_identifier(scheme) == expected
    assert auth.parse_algorithm_identifier(expected) == scheme


def test_method_14_auth_data_is_length_then_algorithm_identifier_then_signature() -> None:
    key = make_key("rsa")
    data = auth.Signer(key).sign(OCTETS, AuthMethod.DIGITAL_SIGNATURE, SHA256)
    algid = _hex(RFC7427_APPENDIX_A["sha256WithRSAEncryption"])
    assert data[0] == len(algid) == 15
    assert data[1:16] == algid
    # The rest is a plain PKCS#1 v1.5 signature that any RSA library verifies.
    key.public_key().verify(data[16:], OCTETS, padding.PKCS1v15(), hashes.SHA256())


def test_pss_parameters_without_trailer_or_null_are_parsed() -> None:
    hash_id = "30 0b 06 09 60 86 48 01 65 03 04 02 02"  # SHA-384, parameters absent
    params = (
        f"a0 0d {hash_id} a1 1a 30 18 06 09 2a 86 48 86 f7 0d 01 01 08 {hash_id} a2 03 02 01 30"
    )
    der = _hex(f"30 3d 06 09 2a 86 48 86 f7 0d 01 01 0a 30 30 {params}")
    scheme = auth.parse_algorithm_identifier(der)
    assert scheme == auth.SignatureScheme(auth.KeyKind.RSA, SHA384, auth.Padding.PSS, 48, SHA384)


def test_pss_with_default_sha1_parameters_is_refused() -> None:
    with pytest.raises(AuthenticationFailed, match="SHA-1"):
        auth.parse_algorithm_identifier(_hex("30 0d 06 09 2a 86 48 86 f7 0d 01 01 0a 30 00"))


@pytest.mark.parametrize(
    "der",
    [
        "30 0d 06 09 2a 86 48 86 f7 0d 01 01 05 05 00",  # sha1WithRSAEncryption
        "30 09 06 07 2a 86 48 ce 3d 04 01",  # ecdsa-with-SHA1
        "30 09 06 07 2a 86 48 ce 38 04 03",  # dsa-with-sha1
    ],
)
def test_sha1_algorithm_identifiers_are_refused(der: str) -> None:
    with pytest.raises(AuthenticationFailed, match="SHA-1"):
        auth.parse_algorithm_identifier(_hex(der))


def test_unknown_algorithm_identifier_is_refused() -> None:
    with pytest.raises(AuthenticationFailed, match="unknown signature algorithm"):
        auth.parse_algorithm_identifier(_hex("30 05 06 03 2b 65 6f"))  # id-X448: no signatures


# --- sign / verify round trips ----------------------------------------------------------

ROUND_TRIPS: list[tuple[int, KeyKind, int | None]] = [
    (AuthMethod.RSA_SIGNATURE, "rsa", None),
    (AuthMethod.DSS_SIGNATURE, "dsa1024", None),
    (AuthMethod.DSS_SIGNATURE, "dsa", None),
    (AuthMethod.ECDSA_SHA256_P256, "ec256", None),
    (AuthMethod.ECDSA_SHA384_P384, "ec384", None),
    (AuthMethod.ECDSA_SHA512_P521, "ec521", None),
    (AuthMethod.DIGITAL_SIGNATURE, "rsa", SHA256),
    (AuthMethod.DIGITAL_SIGNATURE, "rsa", SHA384),
    (AuthMethod.DIGITAL_SIGNATURE, "rsa", SHA512),
    (AuthMethod.DIGITAL_SIGNATURE, "ec256", SHA256),
    (AuthMethod.DIGITAL_SIGNATURE, "ec384", SHA384),
    (AuthMethod.DIGITAL_SIGNATURE, "ec521", SHA512),
    (AuthMethod.DIGITAL_SIGNATURE, "ec256", SHA512),
    (AuthMethod.DIGITAL_SIGNATURE, "dsa", SHA256),
    (AuthMethod.DIGITAL_SIGNATURE, "ed25519", IDENTITY),
    (AuthMethod.DIGITAL_SIGNATURE, "ed448", IDENTITY),
]
PSS_HASHES = [SHA256, SHA384, SHA512]


def _ids(case: tuple[int, str, int | None]) -> str:
    return f"m{case[0]}-{case[1]}-h{case[2]}"


@pytest.mark.parametrize("case", ROUND_TRIPS, ids=_ids)
def test_signature_round_trip(case: tuple[int, KeyKind, int | None]) -> None:
    method, kind, hash_alg = case
    key = make_key(kind)
    data = auth.Signer(key).sign(OCTETS, method, hash_alg)
    auth.verify_signature(method, key.public_key(), OCTETS, data)


@pytest.mark.parametrize("hash_alg", PSS_HASHES)
def test_rsa_pss_round_trip(hash_alg: int) -> None:
    key = make_key("rsa")
    data = auth.Signer(key, rsa_pss=True).sign(OCTETS, AuthMethod.DIGITAL_SIGNATURE, hash_alg)
    assert data[1:].startswith(auth.rsa_pss_algorithm_identifier(hash_alg))
    auth.verify_signature(AuthMethod.DIGITAL_SIGNATURE, key.public_key(), OCTETS, data)


@pytest.mark.parametrize("case", ROUND_TRIPS, ids=_ids)
def test_signature_from_another_key_fails(case: tuple[int, KeyKind, int | None]) -> None:
    method, kind, hash_alg = case
    data = auth.Signer(make_key(kind)).sign(OCTETS, method, hash_alg)
    other = make_key(kind, slot=9)
    with pytest.raises(AuthenticationFailed):
        auth.verify_signature(method, other.public_key(), OCTETS, data)


@pytest.mark.parametrize("case", ROUND_TRIPS, ids=_ids)
def test_signature_over_tampered_octets_fails(case: tuple[int, KeyKind, int | None]) -> None:
    method, kind, hash_alg = case
    key = make_key(kind)
    data = auth.Signer(key).sign(OCTETS, method, hash_alg)
    tampered = bytes([OCTETS[0] ^ 1]) + OCTETS[1:]
    with pytest.raises(AuthenticationFailed):
        auth.verify_signature(method, key.public_key(), tampered, data)


def test_rsa_pss_with_wrong_salt_length_fails() -> None:
    key = make_key("rsa")
    data = auth.Signer(key, rsa_pss=True).sign(OCTETS, AuthMethod.DIGITAL_SIGNATURE, SHA256)
    algid = auth.rsa_pss_algorithm_identifier(SHA256)
    lying = algid.replace(b"\xa2\x03\x02\x01\x20", b"\xa2\x03\x02\x01\x10")
    with pytest.raises(AuthenticationFailed):
        auth.verify_signature(
            AuthMethod.DIGITAL_SIGNATURE,
            key.public_key(),
            OCTETS,
            bytes([len(lying)]) + lying + data[1 + len(algid) :],
        )


def test_classic_dss_signature_is_r_and_s_of_20_bytes_each() -> None:
    key = make_key("dsa1024")
    data = auth.Signer(key).sign(OCTETS, AuthMethod.DSS_SIGNATURE)
    assert len(data) == 40
    der = encode_dss_signature(int.from_bytes(data[:20], "big"), int.from_bytes(data[20:], "big"))
    key.public_key().verify(der, OCTETS, hashes.SHA1())


@pytest.mark.parametrize(
    ("method", "kind", "width", "hash_cls"),
    [
        (AuthMethod.ECDSA_SHA256_P256, "ec256", 32, hashes.SHA256),
        (AuthMethod.ECDSA_SHA384_P384, "ec384", 48, hashes.SHA384),
        (AuthMethod.ECDSA_SHA512_P521, "ec521", 66, hashes.SHA512),
    ],
)
def test_rfc4754_signature_is_fixed_width_r_and_s(
    method: int, kind: KeyKind, width: int, hash_cls: type[hashes.HashAlgorithm]
) -> None:
    key = make_key(kind)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    data = auth.Signer(key).sign(OCTETS, method)
    assert len(data) == 2 * width
    r, s = int.from_bytes(data[:width], "big"), int.from_bytes(data[width:], "big")
    key.public_key().verify(encode_dss_signature(r, s), OCTETS, ec.ECDSA(hash_cls()))


def test_rsa_signature_checked_with_an_ec_key_fails_on_key_type() -> None:
    data = auth.Signer(make_key("rsa")).sign(OCTETS, AuthMethod.DIGITAL_SIGNATURE, SHA256)
    with pytest.raises(AuthenticationFailed, match="RSA signature but the peer's key is"):
        auth.verify_signature(
            AuthMethod.DIGITAL_SIGNATURE, make_key("ec256").public_key(), OCTETS, data
        )


def test_ecdsa_p256_method_with_a_p384_key_fails() -> None:
    data = auth.Signer(make_key("ec384")).sign(OCTETS, AuthMethod.ECDSA_SHA384_P384)
    with pytest.raises(AuthenticationFailed, match="secp256r1"):
        auth.verify_signature(
            AuthMethod.ECDSA_SHA256_P256, make_key("ec384").public_key(), OCTETS, data
        )


def test_classic_rsa_method_with_a_dsa_key_fails() -> None:
    data = auth.Signer(make_key("rsa")).sign(OCTETS, AuthMethod.RSA_SIGNATURE)
    with pytest.raises(AuthenticationFailed):
        auth.verify_signature(AuthMethod.RSA_SIGNATURE, make_key("dsa").public_key(), OCTETS, data)


def test_shared_key_method_is_not_a_signature_method() -> None:
    with pytest.raises(AuthenticationFailed, match="not a signature method"):
        auth.verify_signature(AuthMethod.SHARED_KEY_MIC, make_key("rsa").public_key(), OCTETS, b"x")


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x0f" + b"\x30" * 3])
def test_method_14_data_shorter_than_its_algorithm_identifier_fails(data: bytes) -> None:
    with pytest.raises(AuthenticationFailed):
        auth.verify_signature(
            AuthMethod.DIGITAL_SIGNATURE, make_key("ec256").public_key(), OCTETS, data
        )


def test_signing_with_a_method_that_does_not_fit_the_key_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        auth.Signer(make_key("ec256")).sign(OCTETS, AuthMethod.RSA_SIGNATURE)
    with pytest.raises(LocalProtocolError):
        auth.Signer(make_key("ec384")).sign(OCTETS, AuthMethod.ECDSA_SHA256_P256)
    with pytest.raises(LocalProtocolError):
        auth.Signer(make_key("ed25519")).sign(OCTETS, AuthMethod.DIGITAL_SIGNATURE, SHA256)
    with pytest.raises(LocalProtocolError):
        auth.Signer(make_key("rsa")).sign(OCTETS, AuthMethod.DIGITAL_SIGNATURE, None)


def test_signer_repr_does_not_show_the_key() -> None:
    assert repr(auth.Signer(make_key("rsa"))) == "Signer(RSA, preferred_method=None)"


# --- choosing a method ------------------------------------------------------------------


def test_supported_hashes_are_sha2_and_identity_without_sha1() -> None:
    assert set(auth.SUPPORTED_HASHES) == {SHA256, SHA384, SHA512, IDENTITY}


def test_rfc7427_is_chosen_when_the_peer_announced_a_usable_hash() -> None:
    assert auth.choose_auth_method(make_key("rsa"), {SHA512, SHA256}, None) == (14, SHA256)


def test_ecdsa_prefers_the_hash_matching_its_curve() -> None:
    assert auth.choose_auth_method(make_key("ec384"), {SHA256, SHA384}, None) == (14, SHA384)


def test_classic_method_when_the_peer_sent_no_hash_algorithms() -> None:
    assert auth.choose_auth_method(make_key("rsa"), set(), None) == (1, None)
    assert auth.choose_auth_method(make_key("dsa"), set(), None) == (3, None)
    assert auth.choose_auth_method(make_key("ec256"), set(), None) == (9, None)
    assert auth.choose_auth_method(make_key("ec384"), set(), None) == (10, None)
    assert auth.choose_auth_method(make_key("ec521"), set(), None) == (11, None)


def test_classic_method_when_the_peer_only_offers_sha1() -> None:
    assert auth.choose_auth_method(make_key("rsa"), {HashAlgorithm.SHA1}, None) == (1, None)


def test_configured_classic_method_wins_over_rfc7427() -> None:
    assert auth.choose_auth_method(make_key("rsa"), {SHA256}, AuthMethod.RSA_SIGNATURE) == (1, None)


def test_configured_method_that_does_not_fit_the_key_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        auth.choose_auth_method(make_key("rsa"), set(), AuthMethod.ECDSA_SHA256_P256)


def test_ed25519_uses_method_14_with_identity() -> None:
    assert auth.choose_auth_method(make_key("ed25519"), {SHA256, IDENTITY}, None) == (14, IDENTITY)


def test_ed25519_without_peer_identity_support_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="IDENTITY"):
        auth.choose_auth_method(make_key("ed25519"), {SHA256}, None)


def test_curve_without_classic_method_needs_rfc7427() -> None:
    key = ec.generate_private_key(ec.SECP256K1())
    assert auth.choose_auth_method(key, {SHA256}, None) == (14, SHA256)
    with pytest.raises(LocalProtocolError, match="RFC 7427"):
        auth.choose_auth_method(key, set(), None)


def test_signer_choose_uses_its_preferred_method() -> None:
    signer = auth.Signer(make_key("ec256"), AuthMethod.ECDSA_SHA256_P256)
    assert signer.choose({SHA256}) == (9, None)


@pytest.mark.parametrize(
    ("kind", "signed", "claimed"),
    [
        ("rsa", "sha256WithRSAEncryption", "sha384WithRSAEncryption"),
        ("ec256", "ecdsa-with-sha256", "ecdsa-with-sha512"),
    ],
)
def test_signature_relabelled_with_another_hash_fails(
    kind: KeyKind, signed: str, claimed: str
) -> None:
    key = make_key(kind)
    data = auth.Signer(key).sign(OCTETS, AuthMethod.DIGITAL_SIGNATURE, SHA256)
    original, relabelled = _hex(RFC7427_APPENDIX_A[signed]), _hex(RFC7427_APPENDIX_A[claimed])
    assert data[1 : 1 + len(original)] == original
    forged = bytes([len(relabelled)]) + relabelled + data[1 + len(original) :]
    with pytest.raises(AuthenticationFailed):
        auth.verify_signature(AuthMethod.DIGITAL_SIGNATURE, key.public_key(), OCTETS, forged)
