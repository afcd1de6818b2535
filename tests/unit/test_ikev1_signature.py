"""SIG payloads over HASH_I: RSA without DigestInfo, DSS, ECDSA (RFC 4754)."""

from __future__ import annotations

import hashlib
from functools import cache

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from kipsec_sidecar.core.errors import AuthenticationFailed, LocalProtocolError
from kipsec_sidecar.core.ike.auth import PrivateKey
from kipsec_sidecar.core.ikev1.constants import AuthMethod
from kipsec_sidecar.core.ikev1.signature import sign_hash, verify_hash

HASH_I = hashlib.sha256(b"HASH_I input").digest()


@cache
def key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "dsa":
        return dsa.generate_private_key(key_size=2048)
    curve = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}[kind]
    return ec.generate_private_key(curve)


CASES = [
    ("rsa", AuthMethod.RSA_SIGNATURE),
    ("dsa", AuthMethod.DSS_SIGNATURE),
    ("p256", AuthMethod.ECDSA_SHA256_P256),
    ("p384", AuthMethod.ECDSA_SHA384_P384),
    ("p521", AuthMethod.ECDSA_SHA512_P521),
]


@pytest.mark.parametrize(("kind", "method"), CASES, ids=[c[0] for c in CASES])
def test_signatures_verify_and_tampering_fails(kind: str, method: int) -> None:
    private = key(kind)
    sig = sign_hash(private, method, HASH_I)
    verify_hash(private.public_key(), method, HASH_I, sig)
    with pytest.raises(AuthenticationFailed):
        verify_hash(private.public_key(), method, bytes(32), sig)
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    with pytest.raises(AuthenticationFailed):
        verify_hash(private.public_key(), method, HASH_I, bad)


def test_the_rsa_signature_is_the_bare_hash_padded_without_digest_info() -> None:
    private = key("rsa")
    assert isinstance(private, rsa.RSAPrivateKey)
    sig = sign_hash(private, AuthMethod.RSA_SIGNATURE, HASH_I)
    numbers = private.public_key().public_numbers()
    block = pow(int.from_bytes(sig, "big"), numbers.e, numbers.n).to_bytes(256, "big")
    assert block == b"\x00\x01" + b"\xff" * (256 - 3 - 32) + b"\x00" + HASH_I


def test_a_method_that_does_not_fit_the_key() -> None:
    with pytest.raises(LocalProtocolError):
        sign_hash(key("rsa"), AuthMethod.ECDSA_SHA256_P256, HASH_I)
    sig = sign_hash(key("p256"), AuthMethod.ECDSA_SHA256_P256, HASH_I)
    with pytest.raises(AuthenticationFailed):
        verify_hash(key("rsa").public_key(), AuthMethod.RSA_SIGNATURE, HASH_I, sig)
    with pytest.raises(AuthenticationFailed):
        verify_hash(key("p384").public_key(), AuthMethod.ECDSA_SHA256_P256, HASH_I, sig)
