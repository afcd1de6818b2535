"""The IKEv2 AUTH payload: what is signed, pre-shared key MACs and digital signatures.

RFC 7296 section 2.15 defines the octets each side authenticates (its first message,
the peer's nonce and a MAC over its own ID payload); section 3.8 the classic methods
(1: RSA PKCS#1 v1.5 with SHA-1, 2: shared key MIC, 3: DSS with SHA-1); RFC 4754 the
ECDSA methods 9/10/11 (r | s, fixed width, hash tied to the curve); RFC 7427 method 14
(Digital Signature), whose AUTH data starts with the signature's AlgorithmIdentifier
and whose hash is negotiated with the SIGNATURE_HASH_ALGORITHMS notify; RFC 8420 puts
Ed25519 / Ed448 under method 14 with the IDENTITY "hash".

The AlgorithmIdentifiers are a handful of fixed DER strings (RFC 7427 Appendix A), so
they are written and compared as bytes; only RSASSA-PSS carries parameters worth
parsing (hash, MGF1 hash, salt length), and a minimal DER reader does that.

Every failure of the peer's AUTH data, however malformed, raises
:class:`~kipsec_sidecar.core.errors.AuthenticationFailed` with a reason; the engine
answers AUTHENTICATION_FAILED and never echoes the reason to the peer.
"""

from __future__ import annotations

import hmac
from collections.abc import Set
from dataclasses import dataclass
from enum import Enum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ..buffer import Reader
from ..errors import AuthenticationFailed, KipsecError, LocalProtocolError, UnsupportedAlgorithm
from .constants import AuthMethod, HashAlgorithm
from .keys import prf

PrivateKey = (
    rsa.RSAPrivateKey
    | dsa.DSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
"""Private key types that can sign an AUTH payload."""

SUPPORTED_HASHES: tuple[int, ...] = (
    HashAlgorithm.SHA2_256,
    HashAlgorithm.SHA2_384,
    HashAlgorithm.SHA2_512,
    HashAlgorithm.IDENTITY,
)
"""What kipsec lists in its SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 section 4).

SHA-1 is not offered (RFC 8247 section 3.2); IDENTITY enables Ed25519/Ed448 (RFC 8420).
"""

KEY_PAD = b"Key Pad for IKEv2"
"""RFC 7296 section 2.15: the pad that turns a shared secret into a MAC key."""


# --- signed octets and PSK ---------------------------------------------------------


def signed_octets(
    message: bytes, peer_nonce: bytes, prf_id: int, sk_p: bytes, id_body: bytes
) -> bytes:
    """The octets an AUTH payload covers (RFC 7296 section 2.15).

    ``message`` is the sender's whole first message (IKE_SA_INIT request or response,
    header included, as sent on the wire); ``peer_nonce`` is the OTHER side's Nonce
    data; ``sk_p`` is SK_pi for the initiator's AUTH, SK_pr for the responder's;
    ``id_body`` is the sender's ID payload without its generic header (ID Type, three
    reserved bytes, identification data).
    """
    return message + peer_nonce + prf(prf_id, sk_p, id_body)


def psk_auth_data(prf_id: int, psk: bytes, octets: bytes) -> bytes:
    """AUTH data for method 2: prf(prf(Shared Secret, "Key Pad for IKEv2"), octets)."""
    return prf(prf_id, prf(prf_id, psk, KEY_PAD), octets)


def verify_psk(prf_id: int, psk: bytes, octets: bytes, auth_data: bytes) -> None:
    """Check a method-2 AUTH payload in constant time; AuthenticationFailed on mismatch."""
    expected = psk_auth_data(prf_id, psk, octets)
    if not hmac.compare_digest(expected, auth_data):
        raise AuthenticationFailed("shared key MIC does not match")


# --- signature schemes -------------------------------------------------------------


class KeyKind(Enum):
    RSA = "RSA"
    DSA = "DSA"
    ECDSA = "ECDSA"
    ED25519 = "Ed25519"
    ED448 = "Ed448"


class Padding(Enum):
    PKCS1V15 = "pkcs1"
    PSS = "pss"


_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA1: hashes.SHA1,
    HashAlgorithm.SHA2_256: hashes.SHA256,
    HashAlgorithm.SHA2_384: hashes.SHA384,
    HashAlgorithm.SHA2_512: hashes.SHA512,
}


@dataclass(frozen=True, slots=True)
class SignatureScheme:
    """A fully specified signature algorithm: key type, hash and (for RSA) padding.

    Under method 14 ECDSA/DSA signatures are DER (Ecdsa-Sig-Value / Dss-Sig-Value);
    under the classic methods they are raw r | s of fixed width. ``salt_length`` and
    ``mgf_hash`` matter for RSASSA-PSS only.
    """

    key: KeyKind
    hash: int  # HashAlgorithm
    padding: Padding | None = None
    salt_length: int = 0
    mgf_hash: int = 0

    def hash_algorithm(self) -> hashes.HashAlgorithm:
        return _HASHES[self.hash]()


# OIDs, as the content octets of an OBJECT IDENTIFIER.
_OID_RSA_PSS = bytes.fromhex("2a864886f70d01010a")
_OID_MGF1 = bytes.fromhex("2a864886f70d010108")
_OID_HASH: dict[int, bytes] = {
    HashAlgorithm.SHA1: bytes.fromhex("2b0e03021a"),
    HashAlgorithm.SHA2_256: bytes.fromhex("608648016503040201"),
    HashAlgorithm.SHA2_384: bytes.fromhex("608648016503040202"),
    HashAlgorithm.SHA2_512: bytes.fromhex("608648016503040203"),
}
_HASH_BY_OID: dict[bytes, int] = {oid: h for h, oid in _OID_HASH.items()}
_HASH_LEN: dict[int, int] = {
    HashAlgorithm.SHA2_256: 32,
    HashAlgorithm.SHA2_384: 48,
    HashAlgorithm.SHA2_512: 64,
}

_RSA_PKCS1: dict[int, SignatureScheme] = {
    HashAlgorithm.SHA2_256: SignatureScheme(KeyKind.RSA, HashAlgorithm.SHA2_256, Padding.PKCS1V15),
    HashAlgorithm.SHA2_384: SignatureScheme(KeyKind.RSA, HashAlgorithm.SHA2_384, Padding.PKCS1V15),
    HashAlgorithm.SHA2_512: SignatureScheme(KeyKind.RSA, HashAlgorithm.SHA2_512, Padding.PKCS1V15),
}
_ECDSA: dict[int, SignatureScheme] = {h: SignatureScheme(KeyKind.ECDSA, h) for h in _HASH_LEN}
_DSA: dict[int, SignatureScheme] = {h: SignatureScheme(KeyKind.DSA, h) for h in _HASH_LEN}
_ED25519 = SignatureScheme(KeyKind.ED25519, HashAlgorithm.IDENTITY)
_ED448 = SignatureScheme(KeyKind.ED448, HashAlgorithm.IDENTITY)

ALGORITHM_IDENTIFIERS: dict[SignatureScheme, bytes] = {
    # RFC 7427 A.1: sha{256,384,512}WithRSAEncryption, NULL parameters.
    _RSA_PKCS1[HashAlgorithm.SHA2_256]: bytes.fromhex("300d06092a864886f70d01010b0500"),
    _RSA_PKCS1[HashAlgorithm.SHA2_384]: bytes.fromhex("300d06092a864886f70d01010c0500"),
    _RSA_PKCS1[HashAlgorithm.SHA2_512]: bytes.fromhex("300d06092a864886f70d01010d0500"),
    # RFC 7427 A.3: ecdsa-with-SHA{256,384,512}, absent parameters.
    _ECDSA[HashAlgorithm.SHA2_256]: bytes.fromhex("300a06082a8648ce3d040302"),
    _ECDSA[HashAlgorithm.SHA2_384]: bytes.fromhex("300a06082a8648ce3d040303"),
    _ECDSA[HashAlgorithm.SHA2_512]: bytes.fromhex("300a06082a8648ce3d040304"),
    # RFC 7427 A.2.2 (dsa-with-sha256) and its NIST siblings (RFC 5758 section 3.1).
    _DSA[HashAlgorithm.SHA2_256]: bytes.fromhex("300b0609608648016503040302"),
    _DSA[HashAlgorithm.SHA2_384]: bytes.fromhex("300b0609608648016503040303"),
    _DSA[HashAlgorithm.SHA2_512]: bytes.fromhex("300b0609608648016503040304"),
    # RFC 8420 section 2 / RFC 8410 section 3: id-Ed25519, id-Ed448.
    _ED25519: bytes.fromhex("300506032b6570"),
    _ED448: bytes.fromhex("300506032b6571"),
}
"""AlgorithmIdentifier DER that kipsec sends, per scheme (RSASSA-PSS is built)."""

_SCHEME_BY_ALGORITHM_IDENTIFIER: dict[bytes, SignatureScheme] = {
    der: scheme for scheme, der in ALGORITHM_IDENTIFIERS.items()
}
# RFC 4055 section 5 requires NULL parameters for sha*WithRSAEncryption, but some
# encoders omit them; accepting the absent form costs nothing and is unambiguous.
for _scheme in _RSA_PKCS1.values():
    _with_null = ALGORITHM_IDENTIFIERS[_scheme]
    _SCHEME_BY_ALGORITHM_IDENTIFIER[b"\x30\x0b" + _with_null[2:13]] = _scheme

_REFUSED_SHA1_IDENTIFIERS = {
    bytes.fromhex("300d06092a864886f70d0101050500"): "sha1WithRSAEncryption",
    bytes.fromhex("300906072a8648ce3d0401"): "ecdsa-with-SHA1",
    bytes.fromhex("300906072a8648ce380403"): "dsa-with-sha1",
}


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _hash_algorithm_identifier(hash_alg: int) -> bytes:
    return _der(0x30, _der(0x06, _OID_HASH[hash_alg]) + b"\x05\x00")


def rsa_pss_algorithm_identifier(hash_alg: int) -> bytes:
    """RSASSA-PSS AlgorithmIdentifier: ``hash_alg`` for hash and MGF1, salt = hash length.

    Encoded exactly as RFC 7427 Appendix A.4.3 prints it for SHA-256 (NULL hash
    parameters and an explicit trailerField of 1), so peers that compare the blob
    byte-for-byte, as some implementations do, recognise it.
    """
    hash_id = _hash_algorithm_identifier(hash_alg)
    params = (
        _der(0xA0, hash_id)
        + _der(0xA1, _der(0x30, _der(0x06, _OID_MGF1) + hash_id))
        + _der(0xA2, _der(0x02, bytes([_HASH_LEN[hash_alg]])))
        + _der(0xA3, _der(0x02, b"\x01"))
    )
    return _der(0x30, _der(0x06, _OID_RSA_PSS) + _der(0x30, params))


def algorithm_identifier(scheme: SignatureScheme) -> bytes:
    """The DER AlgorithmIdentifier kipsec puts in a method-14 AUTH payload for ``scheme``."""
    if scheme.padding is Padding.PSS:
        return rsa_pss_algorithm_identifier(scheme.hash)
    try:
        return ALGORITHM_IDENTIFIERS[scheme]
    except KeyError:
        raise UnsupportedAlgorithm(f"no AlgorithmIdentifier for {scheme}") from None


# --- a minimal DER reader, for AlgorithmIdentifier and RSASSA-PSS parameters ---------


def _pull_tlv(reader: Reader, field: str) -> tuple[int, bytes]:
    """One DER TLV: (tag, content). Definite lengths up to 2 length bytes only."""
    tag = reader.pull_uint8(field)
    first = reader.pull_uint8(field)
    if first < 0x80:
        length = first
    elif first == 0x81:
        length = reader.pull_uint8(field)
        if length < 0x80:
            raise AuthenticationFailed(f"{field}: non-minimal DER length")
    elif first == 0x82:
        length = reader.pull_uint16(field)
        if length < 0x100:
            raise AuthenticationFailed(f"{field}: non-minimal DER length")
    else:
        raise AuthenticationFailed(f"{field}: unsupported DER length form")
    return tag, reader.pull_bytes(length, field)


def _expect(reader: Reader, tag: int, field: str) -> bytes:
    got, content = _pull_tlv(reader, field)
    if got != tag:
        raise AuthenticationFailed(f"{field}: DER tag {got:#x}, expected {tag:#x}")
    return content


def _parse_hash_identifier(content: bytes, field: str) -> int:
    """A hash AlgorithmIdentifier's content: OID, then absent or NULL parameters."""
    reader = Reader(content)
    oid = _expect(reader, 0x06, field)
    if not reader.eof() and reader.pull_rest() != b"\x05\x00":
        raise AuthenticationFailed(f"{field}: unexpected hash parameters")
    try:
        return _HASH_BY_OID[oid]
    except KeyError:
        raise AuthenticationFailed(f"{field}: unknown hash OID {oid.hex()}") from None


def _parse_pss_params(params: bytes) -> SignatureScheme:
    """RSASSA-PSS-params (RFC 4055 section 3.1); absent fields take their defaults."""
    hash_alg: int = HashAlgorithm.SHA1
    mgf_hash: int = HashAlgorithm.SHA1
    salt = 20
    outer = Reader(params)
    reader = Reader(_expect(outer, 0x30, "RSASSA-PSS-params"))
    if not outer.eof():
        raise AuthenticationFailed("RSASSA-PSS-params: trailing bytes")
    last_tag = 0
    while not reader.eof():
        tag, content = _pull_tlv(reader, "RSASSA-PSS-params")
        if tag <= last_tag:
            raise AuthenticationFailed("RSASSA-PSS-params: fields out of order")
        last_tag = tag
        inner = Reader(content)
        if tag == 0xA0:
            hash_alg = _parse_hash_identifier(
                _expect(inner, 0x30, "hashAlgorithm"), "hashAlgorithm"
            )
        elif tag == 0xA1:
            mgf = Reader(_expect(inner, 0x30, "maskGenAlgorithm"))
            if _expect(mgf, 0x06, "maskGenAlgorithm") != _OID_MGF1:
                raise AuthenticationFailed("maskGenAlgorithm: only MGF1 is supported")
            mgf_hash = _parse_hash_identifier(
                _expect(mgf, 0x30, "maskGenAlgorithm"), "maskGenAlgorithm"
            )
            if not mgf.eof():
                raise AuthenticationFailed("maskGenAlgorithm: trailing bytes")
        elif tag == 0xA2:
            salt = _parse_small_integer(_expect(inner, 0x02, "saltLength"), "saltLength")
        elif tag == 0xA3:
            if _parse_small_integer(_expect(inner, 0x02, "trailerField"), "trailerField") != 1:
                raise AuthenticationFailed("trailerField: only trailerFieldBC (1) exists")
        else:
            raise AuthenticationFailed(f"RSASSA-PSS-params: unknown field {tag:#x}")
        if not inner.eof():
            raise AuthenticationFailed("RSASSA-PSS-params: trailing bytes in a field")
    if hash_alg not in _HASH_LEN or mgf_hash not in _HASH_LEN:
        raise AuthenticationFailed("RSASSA-PSS with SHA-1 is not accepted (RFC 8247)")
    return SignatureScheme(KeyKind.RSA, hash_alg, Padding.PSS, salt, mgf_hash)


def _parse_small_integer(content: bytes, field: str) -> int:
    if not 1 <= len(content) <= 2 or content[0] & 0x80:
        raise AuthenticationFailed(f"{field}: not a small non-negative INTEGER")
    return int.from_bytes(content, "big")


def parse_algorithm_identifier(der: bytes) -> SignatureScheme:
    """The signature scheme named by a method-14 AlgorithmIdentifier.

    Fixed identifiers are matched byte-for-byte (RFC 7427 Appendix A); RSASSA-PSS is
    parsed. Unknown, SHA-1 and malformed identifiers raise AuthenticationFailed.
    """
    scheme = _SCHEME_BY_ALGORITHM_IDENTIFIER.get(der)
    if scheme is not None:
        return scheme
    if der in _REFUSED_SHA1_IDENTIFIERS:
        raise AuthenticationFailed(
            f"{_REFUSED_SHA1_IDENTIFIERS[der]} is not accepted: SHA-1 signatures (RFC 8247)"
        )
    try:
        outer = Reader(der)
        reader = Reader(_expect(outer, 0x30, "AlgorithmIdentifier"))
        if not outer.eof():
            raise AuthenticationFailed("AlgorithmIdentifier: trailing bytes")
        oid = _expect(reader, 0x06, "AlgorithmIdentifier")
        if oid == _OID_RSA_PSS:
            return _parse_pss_params(reader.pull_rest())
    except AuthenticationFailed:
        raise
    except KipsecError as exc:  # ParseError from the bounds-checked Reader
        raise AuthenticationFailed(f"malformed AlgorithmIdentifier: {exc}") from exc
    raise AuthenticationFailed(f"unknown signature algorithm {der.hex()}")


# --- classic methods ---------------------------------------------------------------

_ECDSA_METHODS: dict[int, tuple[type[ec.EllipticCurve], int, int]] = {
    # method: (curve, hash, coordinate bytes) -- RFC 4754 section 3 and 7.
    AuthMethod.ECDSA_SHA256_P256: (ec.SECP256R1, HashAlgorithm.SHA2_256, 32),
    AuthMethod.ECDSA_SHA384_P384: (ec.SECP384R1, HashAlgorithm.SHA2_384, 48),
    AuthMethod.ECDSA_SHA512_P521: (ec.SECP521R1, HashAlgorithm.SHA2_512, 66),
}
_ECDSA_METHOD_BY_CURVE: dict[str, int] = {
    curve().name: method for method, (curve, _, _) in _ECDSA_METHODS.items()
}
_CURVE_HASH: dict[str, int] = {
    "secp256r1": HashAlgorithm.SHA2_256,
    "secp384r1": HashAlgorithm.SHA2_384,
    "secp521r1": HashAlgorithm.SHA2_512,
}


def _key_kind(key: object) -> KeyKind:
    table: tuple[tuple[tuple[type, ...], KeyKind], ...] = (
        ((rsa.RSAPrivateKey, rsa.RSAPublicKey), KeyKind.RSA),
        ((dsa.DSAPrivateKey, dsa.DSAPublicKey), KeyKind.DSA),
        ((ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey), KeyKind.ECDSA),
        ((ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey), KeyKind.ED25519),
        ((ed448.Ed448PrivateKey, ed448.Ed448PublicKey), KeyKind.ED448),
    )
    for types, kind in table:
        if isinstance(key, types):
            return kind
    raise UnsupportedAlgorithm(f"{type(key).__name__} cannot sign IKE AUTH payloads")


def _int_width(value: int) -> int:
    return (value.bit_length() + 7) // 8


def _dsa_width(key: dsa.DSAPrivateKey | dsa.DSAPublicKey) -> int:
    return _int_width(key.parameters().parameter_numbers().q)


def _raw_to_der(raw: bytes, width: int, what: str) -> bytes:
    if len(raw) != 2 * width:
        raise AuthenticationFailed(f"{what} signature is {len(raw)} bytes, expected {2 * width}")
    return encode_dss_signature(
        int.from_bytes(raw[:width], "big"), int.from_bytes(raw[width:], "big")
    )


def _der_to_raw(der: bytes, width: int) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(width, "big") + s.to_bytes(width, "big")


# --- signing -----------------------------------------------------------------------


def _sign_with(key: PrivateKey, scheme: SignatureScheme, octets: bytes) -> bytes:
    """A raw signature (DER for (EC)DSA) of ``octets`` under ``scheme``."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign(octets)
    hash_algorithm = scheme.hash_algorithm()
    if isinstance(key, rsa.RSAPrivateKey):
        pad: padding.AsymmetricPadding
        if scheme.padding is Padding.PSS:
            pad = padding.PSS(padding.MGF1(_HASHES[scheme.mgf_hash]()), scheme.salt_length)
        else:
            pad = padding.PKCS1v15()
        return key.sign(octets, pad, hash_algorithm)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(octets, ec.ECDSA(hash_algorithm))
    return key.sign(octets, hash_algorithm)


class Signer:
    """Signs AUTH octets with one private key (RSA, DSA, ECDSA, Ed25519 or Ed448).

    ``preferred_method`` is the configured authentication method (None: RFC 7427 when
    the peer supports it, the classic method otherwise); ``rsa_pss`` makes an RSA key
    sign with RSASSA-PSS under method 14 instead of PKCS#1 v1.5. The key never leaves
    this object and never appears in its ``repr``.
    """

    __slots__ = ("_key", "preferred_method", "rsa_pss")

    def __init__(
        self,
        private_key: PrivateKey,
        preferred_method: int | None = None,
        *,
        rsa_pss: bool = False,
    ) -> None:
        _key_kind(private_key)
        self._key = private_key
        self.preferred_method = preferred_method
        self.rsa_pss = rsa_pss

    def __repr__(self) -> str:
        return f"Signer({_key_kind(self._key).value}, preferred_method={self.preferred_method})"

    def choose(self, peer_hash_algorithms: Set[int]) -> tuple[int, int | None]:
        """(method, hash) for this key against the peer's SIGNATURE_HASH_ALGORITHMS."""
        return choose_auth_method(self._key, peer_hash_algorithms, self.preferred_method)

    def sign(self, octets: bytes, method: int, hash_alg: int | None = None) -> bytes:
        """The AUTH payload data (not the payload header) for ``method``.

        Method 14 needs ``hash_alg`` (IDENTITY for Ed25519/Ed448) and returns
        ASN.1-length | AlgorithmIdentifier | signature; methods 1, 3, 9, 10, 11 return the
        bare signature in their RFC format. A method that does not fit the key raises
        LocalProtocolError (a configuration error, not the peer's fault).
        """
        key = self._key
        kind = _key_kind(key)
        if method == AuthMethod.DIGITAL_SIGNATURE:
            scheme = self._scheme(kind, hash_alg)
            algid = algorithm_identifier(scheme)
            return bytes([len(algid)]) + algid + _sign_with(key, scheme, octets)
        if method == AuthMethod.RSA_SIGNATURE and isinstance(key, rsa.RSAPrivateKey):
            return key.sign(octets, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 (RFC 7296)
        if method == AuthMethod.DSS_SIGNATURE and isinstance(key, dsa.DSAPrivateKey):
            return _der_to_raw(key.sign(octets, hashes.SHA1()), _dsa_width(key))  # noqa: S303
        if method in _ECDSA_METHODS and isinstance(key, ec.EllipticCurvePrivateKey):
            curve, hash_id, width = _ECDSA_METHODS[method]
            if not isinstance(key.curve, curve):
                raise LocalProtocolError(
                    f"auth method {method} needs a {curve().name} key, not {key.curve.name}"
                )
            der = key.sign(octets, ec.ECDSA(_HASHES[hash_id]()))
            return _der_to_raw(der, width)
        raise LocalProtocolError(f"auth method {method} cannot be used with a {kind.value} key")

    def _scheme(self, kind: KeyKind, hash_alg: int | None) -> SignatureScheme:
        if kind in (KeyKind.ED25519, KeyKind.ED448):
            if hash_alg not in (None, HashAlgorithm.IDENTITY):
                raise LocalProtocolError(f"{kind.value} signs with the IDENTITY hash only")
            return _ED25519 if kind is KeyKind.ED25519 else _ED448
        if hash_alg not in _HASH_LEN:
            raise LocalProtocolError(f"{kind.value} under RFC 7427 needs SHA2-256/384/512")
        assert hash_alg is not None
        if kind is KeyKind.RSA:
            if self.rsa_pss:
                return SignatureScheme(
                    KeyKind.RSA, hash_alg, Padding.PSS, _HASH_LEN[hash_alg], hash_alg
                )
            return _RSA_PKCS1[hash_alg]
        if kind is KeyKind.ECDSA:
            return _ECDSA[hash_alg]
        return _DSA[hash_alg]


_HASH_PREFERENCE = (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512)


def choose_auth_method(
    private_key: PrivateKey, peer_hash_algorithms: Set[int], preferred: int | None
) -> tuple[int, int | None]:
    """The (method, hash) to sign with, given what the peer announced.

    RFC 7427 (method 14) is used when the peer sent SIGNATURE_HASH_ALGORITHMS with a
    hash this key can use and the configuration did not ask for a classic method; the
    hash is the one matching an ECDSA key's curve when offered, else the first of
    SHA2-256/384/512 the peer lists. Otherwise the classic method of the key type:
    RSA 1, DSA 3, ECDSA P-256/384/521 9/10/11 (hash None). Ed25519/Ed448 exist only
    under method 14 with IDENTITY. Raises LocalProtocolError when no method fits.
    """
    kind = _key_kind(private_key)
    if kind in (KeyKind.ED25519, KeyKind.ED448):
        if preferred not in (None, AuthMethod.DIGITAL_SIGNATURE):
            raise LocalProtocolError(f"{kind.value} keys sign only with method 14")
        if HashAlgorithm.IDENTITY not in peer_hash_algorithms:
            raise LocalProtocolError(
                f"the peer does not accept {kind.value} signatures "
                "(no IDENTITY in SIGNATURE_HASH_ALGORITHMS, RFC 8420)"
            )
        return AuthMethod.DIGITAL_SIGNATURE, HashAlgorithm.IDENTITY
    if preferred in (None, AuthMethod.DIGITAL_SIGNATURE):
        candidates: list[int] = list(_HASH_PREFERENCE)
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            curve_hash = _CURVE_HASH.get(private_key.curve.name)
            if curve_hash is not None:
                candidates.remove(curve_hash)
                candidates.insert(0, curve_hash)
        for hash_alg in candidates:
            if hash_alg in peer_hash_algorithms:
                return AuthMethod.DIGITAL_SIGNATURE, hash_alg
    return _classic_method(private_key, kind, preferred), None


def _classic_method(private_key: PrivateKey, kind: KeyKind, preferred: int | None) -> int:
    if kind is KeyKind.RSA:
        method: int = AuthMethod.RSA_SIGNATURE
    elif kind is KeyKind.DSA:
        method = AuthMethod.DSS_SIGNATURE
    else:
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
        found = _ECDSA_METHOD_BY_CURVE.get(private_key.curve.name)
        if found is None:
            raise LocalProtocolError(
                f"no classic IKEv2 method for curve {private_key.curve.name}; "
                "the peer must support RFC 7427"
            )
        method = found
    if preferred not in (None, AuthMethod.DIGITAL_SIGNATURE, method):
        raise LocalProtocolError(
            f"auth method {preferred} cannot be used with a {kind.value} key (use {method})"
        )
    return method


# --- verification ------------------------------------------------------------------


def _require(public_key: object, types: tuple[type, ...], what: str) -> None:
    if not isinstance(public_key, types):
        raise AuthenticationFailed(
            f"{what} signature but the peer's key is {type(public_key).__name__}"
        )


def _verify_scheme(
    scheme: SignatureScheme, public_key: CertificatePublicKeyTypes, octets: bytes, sig: bytes
) -> None:
    if scheme.key is KeyKind.ED25519:
        _require(public_key, (ed25519.Ed25519PublicKey,), "Ed25519")
        assert isinstance(public_key, ed25519.Ed25519PublicKey)
        public_key.verify(sig, octets)
    elif scheme.key is KeyKind.ED448:
        _require(public_key, (ed448.Ed448PublicKey,), "Ed448")
        assert isinstance(public_key, ed448.Ed448PublicKey)
        public_key.verify(sig, octets)
    elif scheme.key is KeyKind.RSA:
        _require(public_key, (rsa.RSAPublicKey,), "RSA")
        assert isinstance(public_key, rsa.RSAPublicKey)
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
        if scheme.padding is Padding.PSS:
            pad = padding.PSS(padding.MGF1(_HASHES[scheme.mgf_hash]()), scheme.salt_length)
        public_key.verify(sig, octets, pad, scheme.hash_algorithm())
    elif scheme.key is KeyKind.ECDSA:
        _require(public_key, (ec.EllipticCurvePublicKey,), "ECDSA")
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        public_key.verify(sig, octets, ec.ECDSA(scheme.hash_algorithm()))
    else:
        _require(public_key, (dsa.DSAPublicKey,), "DSA")
        assert isinstance(public_key, dsa.DSAPublicKey)
        public_key.verify(sig, octets, scheme.hash_algorithm())


def _classic_scheme(
    method: int, public_key: CertificatePublicKeyTypes, auth_data: bytes
) -> tuple[SignatureScheme, bytes]:
    """Method 1/3/9/10/11 as a scheme plus the signature in the library's format."""
    if method == AuthMethod.RSA_SIGNATURE:
        return SignatureScheme(KeyKind.RSA, HashAlgorithm.SHA1, Padding.PKCS1V15), auth_data
    if method == AuthMethod.DSS_SIGNATURE:
        _require(public_key, (dsa.DSAPublicKey,), "DSS")
        assert isinstance(public_key, dsa.DSAPublicKey)
        der = _raw_to_der(auth_data, _dsa_width(public_key), "DSS")
        return SignatureScheme(KeyKind.DSA, HashAlgorithm.SHA1), der
    curve, hash_id, width = _ECDSA_METHODS[method]
    _require(public_key, (ec.EllipticCurvePublicKey,), "ECDSA")
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    if not isinstance(public_key.curve, curve):
        raise AuthenticationFailed(
            f"auth method {method} needs a {curve().name} key, "
            f"the peer's is {public_key.curve.name}"
        )
    return SignatureScheme(KeyKind.ECDSA, hash_id), _raw_to_der(auth_data, width, "ECDSA")


_CLASSIC_METHODS = frozenset({AuthMethod.RSA_SIGNATURE, AuthMethod.DSS_SIGNATURE, *_ECDSA_METHODS})


def verify_signature(
    method: int, public_key: CertificatePublicKeyTypes, octets: bytes, auth_data: bytes
) -> None:
    """Check the peer's signature AUTH payload data over ``octets``.

    ``public_key`` comes from the peer's validated certificate. Raises
    AuthenticationFailed, with a reason, for a bad signature, a malformed or unknown
    AlgorithmIdentifier, a key that does not fit the method or algorithm, or a method
    that is not a signature method. Never raises anything else for any ``auth_data``.
    """
    if method == AuthMethod.DIGITAL_SIGNATURE:
        if not auth_data or auth_data[0] == 0 or len(auth_data) < 1 + auth_data[0]:
            raise AuthenticationFailed("AUTH data too short for its AlgorithmIdentifier")
        algid_len = auth_data[0]
        scheme = parse_algorithm_identifier(auth_data[1 : 1 + algid_len])
        signature = auth_data[1 + algid_len :]
    elif method in _CLASSIC_METHODS:
        scheme, signature = _classic_scheme(method, public_key, auth_data)
    else:
        raise AuthenticationFailed(f"auth method {method} is not a signature method")
    try:
        _verify_scheme(scheme, public_key, octets, signature)
    except (InvalidSignature, ValueError, TypeError, OverflowError) as exc:
        raise AuthenticationFailed(f"{scheme.key.value} signature does not verify") from exc
