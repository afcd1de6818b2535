"""The SIG payload of main mode: signing HASH_I / HASH_R (RFC 2409 section 5.1).

IKEv1 signs the prf output HASH_I (HASH_R) itself, not the exchange octets as IKEv2:

* RSA signatures (method 3): PKCS#1 v1.5 type 1 padding of the bare hash, *without*
  a DigestInfo (what strongSwan calls SIGN_RSA_EMSA_PKCS1_NULL). cryptography cannot
  sign without a DigestInfo, so the padded block is exponentiated here, with the
  Chinese remainder theorem (p, q, dP, dQ, qInv: two half-size exponentiations,
  several times faster than one with d), blinded with a fresh random factor (the time
  taken does not follow the message) and checked with the public exponent before it
  leaves (a faulty result, as a CRT fault would give, never goes out). Verification
  uses cryptography's ``recover_data_from_signature`` and a constant-time comparison.
* ECDSA (RFC 4754, methods 9/10/11): HASH_I itself is the digest that is signed (no
  second hash: strongSwan's SIGN_ECDSA_WITH_NULL, which is what it sends and checks in
  IKEv1), encoded r | s at the width of the curve's order.
* DSS (method 2): DSA over HASH_I taken as an already computed digest (its length
  names the hash: 20 bytes SHA-1, 32 SHA-256, ...), encoded r | s at the width of q.
  strongSwan has no DSA: tested kipsec to kipsec only.

Every failure of the peer's signature raises
:class:`~kipsec_sidecar.core.errors.AuthenticationFailed`.
"""

from __future__ import annotations

import hmac
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ..errors import AuthenticationFailed, LocalProtocolError
from ..ike import auth
from .constants import AuthMethod

SIGNATURE_METHODS = frozenset(
    {
        AuthMethod.DSS_SIGNATURE,
        AuthMethod.RSA_SIGNATURE,
        AuthMethod.ECDSA_SHA256_P256,
        AuthMethod.ECDSA_SHA384_P384,
        AuthMethod.ECDSA_SHA512_P521,
    }
)
_ECDSA_METHODS = SIGNATURE_METHODS - {AuthMethod.DSS_SIGNATURE, AuthMethod.RSA_SIGNATURE}
_DIGESTS: dict[int, hashes.HashAlgorithm] = {
    20: hashes.SHA1(),  # noqa: S303 - the length of a legacy SHA-1 HASH_I
    32: hashes.SHA256(),
    48: hashes.SHA384(),
    64: hashes.SHA512(),
}
_PKCS1_OVERHEAD = 11


def _rsa_block(hash_value: bytes, size: int) -> int:
    if len(hash_value) > size - _PKCS1_OVERHEAD:
        raise LocalProtocolError("the hash does not fit the RSA key")
    filler = b"\xff" * (size - 3 - len(hash_value))
    return int.from_bytes(b"\x00\x01" + filler + b"\x00" + hash_value, "big")


def _rsa_sign(key: rsa.RSAPrivateKey, hash_value: bytes) -> bytes:
    numbers = key.private_numbers()
    n, e = numbers.public_numbers.n, numbers.public_numbers.e
    size = (n.bit_length() + 7) // 8
    m = _rsa_block(hash_value, size)
    while True:
        r = secrets.randbelow(n - 2) + 2
        try:
            r_inv = pow(r, -1, n)
            break
        except ValueError:  # r shares a factor with n: astronomically unlikely
            continue
    blinded = m * pow(r, e, n) % n
    # CRT: two half-size exponentiations instead of one full one (about 3x faster)
    s1 = pow(blinded % numbers.p, numbers.dmp1, numbers.p)
    s2 = pow(blinded % numbers.q, numbers.dmq1, numbers.q)
    h = numbers.iqmp * (s1 - s2) % numbers.p
    s = (s2 + h * numbers.q) * r_inv % n
    if pow(s, e, n) != m:
        raise LocalProtocolError("the RSA signature did not check out")
    return s.to_bytes(size, "big")


def _digest(hash_value: bytes) -> hashes.HashAlgorithm:
    found = _DIGESTS.get(len(hash_value))
    if found is None:
        raise LocalProtocolError(f"no digest is {len(hash_value)} bytes long")
    return found


def sign_hash(private_key: auth.PrivateKey, method: int, hash_value: bytes) -> bytes:
    """The SIG payload data for HASH_I / HASH_R under ``method``.

    LocalProtocolError when the method does not fit the key (a configuration error).
    """
    if method == AuthMethod.RSA_SIGNATURE and isinstance(private_key, rsa.RSAPrivateKey):
        return _rsa_sign(private_key, hash_value)
    if method == AuthMethod.DSS_SIGNATURE and isinstance(private_key, dsa.DSAPrivateKey):
        der = private_key.sign(hash_value, utils.Prehashed(_digest(hash_value)))
        r, s = utils.decode_dss_signature(der)
        width = (private_key.parameters().parameter_numbers().q.bit_length() + 7) // 8
        return r.to_bytes(width, "big") + s.to_bytes(width, "big")
    if method in _ECDSA_METHODS and isinstance(private_key, ec.EllipticCurvePrivateKey):
        der = private_key.sign(hash_value, ec.ECDSA(utils.Prehashed(_digest(hash_value))))
        r, s = utils.decode_dss_signature(der)
        width = (private_key.curve.key_size + 7) // 8
        return r.to_bytes(width, "big") + s.to_bytes(width, "big")
    raise LocalProtocolError(
        f"auth method {method} cannot sign with a {type(private_key).__name__}"
    )


def verify_hash(
    public_key: CertificatePublicKeyTypes, method: int, hash_value: bytes, signature: bytes
) -> None:
    """Check the peer's SIG payload over HASH_I / HASH_R; AuthenticationFailed if not."""
    try:
        if method in _ECDSA_METHODS and isinstance(public_key, ec.EllipticCurvePublicKey):
            width = (public_key.curve.key_size + 7) // 8
            if len(signature) != 2 * width:
                raise AuthenticationFailed("ECDSA signature of the wrong length")
            der = utils.encode_dss_signature(
                int.from_bytes(signature[:width], "big"), int.from_bytes(signature[width:], "big")
            )
            public_key.verify(der, hash_value, ec.ECDSA(utils.Prehashed(_digest(hash_value))))
            return
        if method == AuthMethod.RSA_SIGNATURE and isinstance(public_key, rsa.RSAPublicKey):
            if len(signature) != (public_key.key_size + 7) // 8:
                raise AuthenticationFailed("RSA signature of the wrong length")
            recovered = public_key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
            if not hmac.compare_digest(recovered, hash_value):
                raise AuthenticationFailed("RSA signature does not verify")
            return
        if method == AuthMethod.DSS_SIGNATURE and isinstance(public_key, dsa.DSAPublicKey):
            width = (public_key.parameters().parameter_numbers().q.bit_length() + 7) // 8
            if len(signature) != 2 * width:
                raise AuthenticationFailed("DSS signature of the wrong length")
            der = utils.encode_dss_signature(
                int.from_bytes(signature[:width], "big"), int.from_bytes(signature[width:], "big")
            )
            public_key.verify(der, hash_value, utils.Prehashed(_digest(hash_value)))
            return
    except (InvalidSignature, ValueError, LocalProtocolError) as exc:
        raise AuthenticationFailed(f"auth method {method}: signature does not verify") from exc
    raise AuthenticationFailed(
        f"auth method {method} does not fit the peer's {type(public_key).__name__}"
    )
