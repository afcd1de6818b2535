"""IKEv2 Diffie-Hellman key exchange: the KE payload data and the shared secret g^ir.

Every group kipsec speaks is here, with its exact wire format, because the format is
where implementations disagree with each other:

* MODP (RFC 3526 groups 14 and 15): the public value and the shared secret are
  big-endian integers left-padded with zeros to the length of the prime (RFC 7296
  section 3.4 and 2.14). The arithmetic is Python's ``pow``: cryptography deprecates
  finite-field DH, and the private exponent is ephemeral (used for one public value
  and one shared secret), so the non-constant-time exponentiation exposes nothing an
  observer could average over.
* ECP (RFC 5903 groups 19 and 20): the public value is x | y without the SEC 1 0x04
  prefix, each coordinate padded to the field length; the shared secret is the x
  coordinate only (RFC 5903 section 7). Peer points are checked to be on the curve
  (RFC 6989 section 2.3).
* Curve25519 / Curve448 (RFC 8031): the raw 32/56-byte u-coordinates; an all-zero
  shared secret (a small-order peer point) is refused (RFC 8031 section 2.3).

Private keys come only from the injected ``rng`` so that a test replaying the same
bytes gets the same keys; the daemon passes ``os.urandom``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519

from ..errors import (
    LocalProtocolError,
    RefusedAlgorithm,
    RemoteProtocolError,
    UnsupportedAlgorithm,
)
from .constants import DhGroup


class InvalidKeyExchange(RemoteProtocolError):
    """The peer's KE data is not a valid public value for the negotiated group.

    The engine answers it as a protocol error (INVALID_SYNTAX in IKE_SA_INIT); it never
    reaches key derivation.
    """

    def __init__(self, group: int, reason: str) -> None:
        super().__init__(f"KE data for DH group {group}: {reason}")
        self.group = group
        self.reason = reason


class KeyExchange(Protocol):
    """One side of an ephemeral Diffie-Hellman exchange.

    ``public_bytes`` goes into our KE payload; ``shared_secret`` takes the peer's KE
    payload data and returns g^ir, ready for SKEYSEED (RFC 7296 section 2.14).
    """

    group: int

    @property
    def public_bytes(self) -> bytes:
        """The KE payload data: MODP padded g^x, ECP x|y, or the raw X25519/X448 key."""
        ...

    def shared_secret(self, peer_public: bytes) -> bytes:
        """g^ir in the RFC's format; raises :class:`InvalidKeyExchange` on a bad peer value."""
        ...


SUPPORTED_GROUPS: tuple[int, ...] = (
    DhGroup.CURVE25519,
    DhGroup.CURVE448,
    DhGroup.ECP_256,
    DhGroup.ECP_384,
    DhGroup.MODP_2048,
    DhGroup.MODP_3072,
)
"""Groups kipsec implements, most preferred first (the order of a default proposal)."""

SAFE_GROUPS = "curve25519 (group 31) or MODP-2048 (group 14)"

_REFUSED: dict[int, str] = {
    1: "MODP-768 (DH group 1)",
    DhGroup.MODP_1024: "MODP-1024 (DH group 2)",
    5: "MODP-1536 (DH group 5)",
}

# RFC 3526 section 3 and 4 primes; the generator is 2 for both.
_MODP_2048_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
_MODP_3072_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
    16,
)


@dataclass(frozen=True, slots=True)
class ModpGroup:
    """A safe-prime MODP group and the private exponent size kipsec draws for it.

    ``exponent_bytes`` follows RFC 3526's table (an exponent of at least twice the
    group's strength in bits): 320 bits for 2048, 432 bits for 3072.
    """

    prime: int
    generator: int
    exponent_bytes: int

    @property
    def length(self) -> int:
        return (self.prime.bit_length() + 7) // 8


MODP_GROUPS: dict[int, ModpGroup] = {
    DhGroup.MODP_2048: ModpGroup(_MODP_2048_P, 2, 40),
    DhGroup.MODP_3072: ModpGroup(_MODP_3072_P, 2, 54),
}

ECP_CURVES: dict[int, ec.EllipticCurve] = {
    DhGroup.ECP_256: ec.SECP256R1(),
    DhGroup.ECP_384: ec.SECP384R1(),
}

# Order n of the ECP base points (FIPS 186-4 D.1.2.3 and D.1.2.4).
_ECP_ORDERS: dict[int, int] = {
    DhGroup.ECP_256: int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551", 16),
    DhGroup.ECP_384: int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
}

_MONTGOMERY_LENGTHS: dict[int, int] = {DhGroup.CURVE25519: 32, DhGroup.CURVE448: 56}

_MAX_DRAWS = 64
"""Rejection-sampling bound: an ``rng`` that keeps returning out-of-range values is broken."""


def _check_group(group: int) -> None:
    if group in _REFUSED:
        raise RefusedAlgorithm(_REFUSED[group], SAFE_GROUPS)
    if group not in SUPPORTED_GROUPS:
        raise UnsupportedAlgorithm(f"Diffie-Hellman group {group} is not implemented")


def public_length(group: int) -> int:
    """Length in bytes of a KE payload's data for ``group``.

    Lets the engine reject a peer's KE payload of the wrong size before doing any
    arithmetic. Raises RefusedAlgorithm / UnsupportedAlgorithm like :func:`generate`.
    """
    _check_group(group)
    if group in MODP_GROUPS:
        return MODP_GROUPS[group].length
    if group in ECP_CURVES:
        return 2 * _coordinate_length(ECP_CURVES[group])
    return _MONTGOMERY_LENGTHS[group]


def _coordinate_length(curve: ec.EllipticCurve) -> int:
    return (curve.key_size + 7) // 8


def _draw(rng: Callable[[int], bytes], n: int, accept: Callable[[int], bool]) -> int:
    """An integer from ``n`` rng bytes, redrawn until ``accept`` holds (rejection sampling)."""
    for _ in range(_MAX_DRAWS):
        candidate = rng(n)
        if len(candidate) != n:
            raise LocalProtocolError(f"rng returned {len(candidate)} bytes, {n} requested")
        value = int.from_bytes(candidate, "big")
        if accept(value):
            return value
    raise LocalProtocolError("rng keeps returning unusable values")


class ModpKeyExchange:
    """Finite-field DH over an RFC 3526 safe prime."""

    __slots__ = ("_params", "_private", "_public", "group")

    def __init__(self, group: int, private_exponent: int) -> None:
        self.group = group
        self._params = MODP_GROUPS[group]
        self._private = private_exponent
        self._public = pow(self._params.generator, private_exponent, self._params.prime)

    def __repr__(self) -> str:
        return f"ModpKeyExchange(group={self.group})"

    @property
    def public_bytes(self) -> bytes:
        return self._public.to_bytes(self._params.length, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        params = self._params
        if len(peer_public) != params.length:
            raise InvalidKeyExchange(
                self.group, f"{len(peer_public)} bytes, expected {params.length}"
            )
        y = int.from_bytes(peer_public, "big")
        # RFC 6989 section 2.2: for a safe prime, 1 < y < p-1 rules out the only small
        # subgroup ({1, p-1}) and the degenerate value 0.
        if not 1 < y < params.prime - 1:
            raise InvalidKeyExchange(self.group, "public value outside 1 < y < p-1")
        return pow(y, self._private, params.prime).to_bytes(params.length, "big")


class EcpKeyExchange:
    """ECDH over a NIST prime curve with the RFC 5903 encoding."""

    __slots__ = ("_curve", "_private", "group")

    def __init__(self, group: int, private_scalar: int) -> None:
        self.group = group
        self._curve = ECP_CURVES[group]
        self._private = ec.derive_private_key(private_scalar, self._curve)

    def __repr__(self) -> str:
        return f"EcpKeyExchange(group={self.group})"

    @property
    def public_bytes(self) -> bytes:
        numbers = self._private.public_key().public_numbers()
        n = _coordinate_length(self._curve)
        return numbers.x.to_bytes(n, "big") + numbers.y.to_bytes(n, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        n = _coordinate_length(self._curve)
        if len(peer_public) != 2 * n:
            raise InvalidKeyExchange(self.group, f"{len(peer_public)} bytes, expected {2 * n}")
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, b"\x04" + peer_public)
            return self._private.exchange(ec.ECDH(), peer)
        except ValueError as exc:
            raise InvalidKeyExchange(self.group, "point is not on the curve") from exc


class MontgomeryKeyExchange:
    """X25519 / X448 (RFC 7748) with the RFC 8031 encoding."""

    __slots__ = ("_private", "group")

    def __init__(self, group: int, private_bytes: bytes) -> None:
        self.group = group
        self._private: x25519.X25519PrivateKey | x448.X448PrivateKey
        if group == DhGroup.CURVE25519:
            self._private = x25519.X25519PrivateKey.from_private_bytes(private_bytes)
        else:
            self._private = x448.X448PrivateKey.from_private_bytes(private_bytes)

    def __repr__(self) -> str:
        return f"MontgomeryKeyExchange(group={self.group})"

    @property
    def public_bytes(self) -> bytes:
        return self._private.public_key().public_bytes_raw()

    def shared_secret(self, peer_public: bytes) -> bytes:
        expected = _MONTGOMERY_LENGTHS[self.group]
        if len(peer_public) != expected:
            raise InvalidKeyExchange(self.group, f"{len(peer_public)} bytes, expected {expected}")
        try:
            if isinstance(self._private, x25519.X25519PrivateKey):
                secret = self._private.exchange(
                    x25519.X25519PublicKey.from_public_bytes(peer_public)
                )
            else:
                secret = self._private.exchange(x448.X448PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:
            # OpenSSL refuses the all-zero output of a small-order point itself.
            raise InvalidKeyExchange(self.group, "small-order point (all-zero secret)") from exc
        if not any(secret):
            raise InvalidKeyExchange(self.group, "small-order point (all-zero secret)")
        return secret


def generate(group: int, rng: Callable[[int], bytes]) -> KeyExchange:
    """A fresh key pair for ``group`` whose private key is derived only from ``rng``.

    ``rng(n)`` must return exactly ``n`` bytes. How the bytes become the key, so that a
    test can feed a published private key through ``rng``:

    * X25519 / X448: the first 32 / 56 bytes are the private key as RFC 7748 prints it.
    * ECP: a big-endian scalar of the order's length, redrawn while not in [1, n-1].
    * MODP: a big-endian exponent of ``ModpGroup.exponent_bytes``, redrawn while < 2.

    Raises RefusedAlgorithm for MODP-768/1024/1536 (naming the safe alternatives) and
    UnsupportedAlgorithm for groups kipsec does not implement.
    """
    _check_group(group)
    if group in MODP_GROUPS:
        params = MODP_GROUPS[group]
        exponent = _draw(rng, params.exponent_bytes, lambda x: x >= 2)
        return ModpKeyExchange(group, exponent)
    if group in ECP_CURVES:
        order = _ECP_ORDERS[group]
        scalar = _draw(rng, (order.bit_length() + 7) // 8, lambda d: 1 <= d < order)
        return EcpKeyExchange(group, scalar)
    length = _MONTGOMERY_LENGTHS[group]
    raw = rng(length)
    if len(raw) != length:
        raise LocalProtocolError(f"rng returned {len(raw)} bytes, {length} requested")
    return MontgomeryKeyExchange(group, raw)
