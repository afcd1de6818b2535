"""Main mode authenticated with public-key encryption (RFC 2409 sections 5.2 and 5.3):
the functions the engine calls to seal and open the encrypted payloads.

Method 4: the Nonce and ID payload bodies travel encrypted under the peer's RSA
public key (PKCS#1 v1.5, the only padding the RFC's peers know), each payload keeping
its generic header in clear: :func:`seal_rsa` / :func:`open_rsa`.

Method 5 (revised): only the nonce goes under RSA; the KE, ID (and CERT) bodies are
encrypted with the negotiated cipher under Ke_i / Ke_r, derived from the nonce and the
sender's cookie: :func:`revised_keys`, :func:`seal_symmetric` / :func:`open_symmetric`.
The symmetric encryption is AES-CBC from :mod:`.encryption` with an all-zero IV (each
Ke is used once per direction); the body is padded to the block size, the last octet
holding the number of padding octets including itself, so a KE or ID body whose last
byte is zero still comes back exactly. strongSwan has no public-key-encryption mode,
so these conventions are tested kipsec to kipsec (tests/unit/test_ikev1_pubkey.py).

The optional HASH(1) of both methods names the certificate whose key encrypted the
nonce: :func:`certificate_hash`. A ciphertext that does not open raises
:class:`~kipsec_sidecar.core.errors.AuthenticationFailed` without saying why; but a
wrong key does not always show here: OpenSSL answers a bad PKCS#1 v1.5 ciphertext
with random plaintext (implicit rejection, against Bleichenbacher-style oracles), and
a wrong Ke may leave a plausible padding octet. Then a wrong nonce or ID comes out and
the HASH_I / HASH_R check is what fails, so the engine must treat both the same way.
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .. import algorithms
from ..errors import AuthenticationFailed, KipsecError, LocalProtocolError
from ..ike.keys import prf
from .encryption import cbc_decrypt, cbc_encrypt
from .keys import expand
from .payloads import Payload, SealedPayload, decode_body, encode_body, payload_type

_ZERO_IV = bytes(16)
_BLOCK = 16


def certificate_hash(prf_id: int, certificate_der: bytes, *, legacy_sha1: bool = False) -> bytes:
    """HASH(1) of methods 4 and 5: the negotiated hash of the certificate (DER) whose
    public key encrypted the nonce."""
    name = algorithms.prf(prf_id, legacy_sha1=legacy_sha1).hash_name
    return hashlib.new(name, certificate_der).digest()


def seal_rsa(payload: Payload, public_key: rsa.RSAPublicKey) -> SealedPayload:
    """The payload with its body encrypted under the peer's RSA key (PKCS#1 v1.5).

    LocalProtocolError when the body is too long for the key (an ID of a 1024-bit key
    holds at most 117 bytes).
    """
    body = encode_body(payload)
    limit = public_key.key_size // 8 - 11
    if len(body) > limit:
        raise LocalProtocolError(
            f"a {len(body)}-byte body does not fit a {public_key.key_size}-bit RSA key"
        )
    return SealedPayload(payload_type(payload), public_key.encrypt(body, padding.PKCS1v15()))


def open_rsa(sealed: SealedPayload, private_key: rsa.RSAPrivateKey) -> Payload:
    """Decrypt and decode a payload sealed by :func:`seal_rsa`.

    AuthenticationFailed when it does not decrypt or the plaintext is not a valid body.
    """
    try:
        body = private_key.decrypt(sealed.data, padding.PKCS1v15())
        return decode_body(sealed.payload_type, body)
    except (ValueError, KipsecError) as exc:
        raise AuthenticationFailed("a payload encrypted to our public key does not open") from exc


def revised_key(
    prf_id: int, nonce: bytes, cookie: bytes, key_len: int, *, legacy_sha1: bool = False
) -> bytes:
    """Ke_i (``nonce`` Ni_b, ``cookie`` CKY-I) or Ke_r (Nr_b, CKY-R) of RFC 2409 section
    5.3: the first ``key_len`` bytes of Ne = prf(nonce, cookie), or of its Appendix B
    expansion (K1 = prf(Ne, 0), ...) when Ne is shorter. The initiator needs Ke_i before
    it knows Nr, hence one key at a time."""
    ne = prf(prf_id, nonce, cookie, legacy_sha1=legacy_sha1)
    if key_len <= len(ne):
        return ne[:key_len]
    return expand(prf_id, ne, key_len, legacy_sha1=legacy_sha1)


def revised_keys(
    prf_id: int,
    ni: bytes,
    nr: bytes,
    cky_i: bytes,
    cky_r: bytes,
    key_len: int,
    *,
    legacy_sha1: bool = False,
) -> tuple[bytes, bytes]:
    """(Ke_i, Ke_r) of RFC 2409 section 5.3 (:func:`revised_key` of each side)."""
    return (
        revised_key(prf_id, ni, cky_i, key_len, legacy_sha1=legacy_sha1),
        revised_key(prf_id, nr, cky_r, key_len, legacy_sha1=legacy_sha1),
    )


def seal_symmetric(payload: Payload, key: bytes) -> SealedPayload:
    """The payload with its body AES-CBC-encrypted under Ke_i or Ke_r (method 5)."""
    body = encode_body(payload)
    pad = _BLOCK - len(body) % _BLOCK
    return SealedPayload(
        payload_type(payload), cbc_encrypt(key, _ZERO_IV, body + bytes(pad - 1) + bytes((pad,)))
    )


def open_symmetric(sealed: SealedPayload, key: bytes) -> Payload:
    """Decrypt and decode a payload sealed by :func:`seal_symmetric`.

    AuthenticationFailed when the ciphertext or its padding is wrong (a wrong Ke looks
    like that) or the plaintext is not a valid body.
    """
    try:
        plain = cbc_decrypt(key, _ZERO_IV, sealed.data, "sealed.length")
        pad = plain[-1]
        if not 1 <= pad <= _BLOCK:
            raise AuthenticationFailed("bad padding")
        return decode_body(sealed.payload_type, plain[:-pad])
    except KipsecError as exc:
        if isinstance(exc, LocalProtocolError):
            raise
        raise AuthenticationFailed("a payload encrypted under Ke does not open") from exc
