"""Public-key encryption authentication (methods 4 and 5): sealed payloads open only
with the right key, the decoded payload is exactly what was sealed, and NAT-D hashes."""

from __future__ import annotations

import hashlib
from functools import cache

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from kipsec_sidecar.core.errors import AuthenticationFailed, LocalProtocolError
from kipsec_sidecar.core.ike.constants import PrfId
from kipsec_sidecar.core.ikev1.constants import EncapsulationMode, IdType, PayloadType
from kipsec_sidecar.core.ikev1.message import Message, decode_message, encode_message
from kipsec_sidecar.core.ikev1.natt import is_udp_encapsulated, nat_d_hash, plain_mode, udp_mode
from kipsec_sidecar.core.ikev1.payloads import IdPayload, KePayload, NoncePayload, SealedPayload
from kipsec_sidecar.core.ikev1.pubkey import (
    certificate_hash,
    open_rsa,
    open_symmetric,
    revised_keys,
    seal_rsa,
    seal_symmetric,
)

CKY_I, CKY_R = b"i" * 8, b"r" * 8
NONCE = NoncePayload(bytes(range(32)))
IDENT = IdPayload(IdType.FQDN, b"peer.example.org")


@cache
def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@pytest.mark.parametrize("payload", [NONCE, IDENT], ids=["nonce", "id"])
def test_method4_payloads_open_with_the_private_key(payload: NoncePayload | IdPayload) -> None:
    sealed = seal_rsa(payload, rsa_key().public_key())
    assert sealed.data != payload.data and len(sealed.data) == 256
    assert open_rsa(sealed, rsa_key()) == payload


def test_a_sealed_message_travels_and_opens() -> None:
    public = rsa_key().public_key()
    payloads = (KePayload(b"\x05" * 256), seal_rsa(IDENT, public), seal_rsa(NONCE, public))
    msg = Message(CKY_I, CKY_R, 2, 0, payloads)
    received = decode_message(encode_message(msg), sealed={PayloadType.ID, PayloadType.NONCE})
    sealed = received.all(SealedPayload)
    assert [open_rsa(s, rsa_key()) for s in sealed] == [IDENT, NONCE]


def test_the_wrong_private_key_does_not_yield_the_payload() -> None:
    # OpenSSL's implicit rejection (the Marvin countermeasure) turns a bad PKCS#1 v1.5
    # ciphertext into random plaintext rather than an error: the nonce comes out wrong
    # and HASH_I / HASH_R fail later, or it does not even decode.
    sealed = seal_rsa(NONCE, rsa_key().public_key())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    try:
        opened = open_rsa(sealed, other)
    except AuthenticationFailed:
        return
    assert opened != NONCE


def test_a_body_too_long_for_the_key_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        seal_rsa(IdPayload(IdType.FQDN, b"x" * 300), rsa_key().public_key())


@pytest.mark.parametrize(
    "payload",
    [KePayload(b"\x07" * 256), IdPayload(IdType.IPV4_ADDR, b"\x0a\x00\x00\x00"), NONCE],
    ids=["ke", "id-ending-in-zero", "block-aligned"],
)
def test_method5_symmetric_payloads_round_trip_exactly(
    payload: KePayload | IdPayload | NoncePayload,
) -> None:
    ke_i, _ = revised_keys(PrfId.HMAC_SHA2_256, NONCE.data, b"n" * 16, CKY_I, CKY_R, 32)
    sealed = seal_symmetric(payload, ke_i)
    assert len(sealed.data) % 16 == 0
    assert open_symmetric(sealed, ke_i) == payload


def test_method5_with_the_wrong_key_does_not_yield_the_payload() -> None:
    ke_i, ke_r = revised_keys(PrfId.HMAC_SHA2_256, NONCE.data, b"n" * 16, CKY_I, CKY_R, 16)
    assert ke_i != ke_r
    sealed = seal_symmetric(IDENT, ke_i)
    try:
        opened = open_symmetric(sealed, ke_r)
    except AuthenticationFailed:
        return
    assert opened != IDENT  # the padding octet happened to fit: HASH_I fails instead


def test_certificate_hash_is_the_negotiated_hash_of_the_der() -> None:
    assert certificate_hash(PrfId.HMAC_SHA2_384, b"DER") == hashlib.sha384(b"DER").digest()


def test_nat_d_hash_covers_cookies_address_and_port() -> None:
    got = nat_d_hash(PrfId.HMAC_SHA2_256, CKY_I, CKY_R, "192.0.2.7", 4500)
    assert got == hashlib.sha256(CKY_I + CKY_R + bytes([192, 0, 2, 7]) + b"\x11\x94").digest()
    assert got != nat_d_hash(PrfId.HMAC_SHA2_256, CKY_I, CKY_R, "192.0.2.7", 500)


def test_udp_encapsulation_modes() -> None:
    assert udp_mode(EncapsulationMode.TUNNEL) == EncapsulationMode.UDP_TUNNEL
    assert plain_mode(EncapsulationMode.UDP_TRANSPORT_DRAFT) == EncapsulationMode.TRANSPORT
    assert is_udp_encapsulated(EncapsulationMode.UDP_TUNNEL)
    assert not is_udp_encapsulated(EncapsulationMode.TUNNEL)
