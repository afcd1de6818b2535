"""Private key algorithms a TunnelCertificate may ask for, and how to check a public key.

The same table serves the operator's own CA key and the check that a pod's CSR carries
the key type its TunnelCertificate demands (``spec.privateKey``), so a pod cannot pick a
weaker key than the user configured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

KeyAlgorithmName = Literal["ECDSA", "RSA", "Ed25519"]

ECDSA_CURVES: dict[int, ec.EllipticCurve] = {
    256: ec.SECP256R1(),
    384: ec.SECP384R1(),
}
RSA_SIZES = (2048, 3072, 4096)

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class KeySpecError(ValueError):
    """A key algorithm/size pair kipsec does not issue for; the message names both."""


@dataclass(frozen=True)
class KeySpec:
    """A private key algorithm and size, as in ``spec.privateKey`` (cert-manager style).

    ``size`` is the curve size for ECDSA (256, 384), the modulus for RSA (2048,
    3072, 4096) and ignored (0) for Ed25519.
    """

    algorithm: KeyAlgorithmName = "ECDSA"
    size: int = 256

    def __post_init__(self) -> None:
        if self.algorithm == "ECDSA" and self.size not in ECDSA_CURVES:
            raise KeySpecError(f"ECDSA size {self.size}: use 256 or 384")
        if self.algorithm == "RSA" and self.size not in RSA_SIZES:
            raise KeySpecError(f"RSA size {self.size}: use one of 2048, 3072, 4096")
        if self.algorithm not in ("ECDSA", "RSA", "Ed25519"):
            raise KeySpecError(f"algorithm {self.algorithm!r}: use ECDSA, RSA or Ed25519")

    @classmethod
    def parse(cls, algorithm: object, size: object) -> KeySpec:
        """Build from untrusted spec values (None means the default for the algorithm)."""
        algo = "ECDSA" if algorithm is None else str(algorithm)
        canonical = {"ecdsa": "ECDSA", "rsa": "RSA", "ed25519": "Ed25519"}.get(algo.lower())
        if canonical is None:
            raise KeySpecError(f"algorithm {algo!r}: use ECDSA, RSA or Ed25519")
        if canonical == "Ed25519":
            return cls("Ed25519", 0)
        default = 256 if canonical == "ECDSA" else 2048
        if size is None:
            return cls(canonical, default)  # type: ignore[arg-type]
        if isinstance(size, bool) or not isinstance(size, int):
            raise KeySpecError(f"size {size!r} is not an integer")
        return cls(canonical, size)  # type: ignore[arg-type]

    def generate(self) -> SigningKey:
        """A fresh private key from the OS generator (never from an injectable rng)."""
        if self.algorithm == "ECDSA":
            return ec.generate_private_key(ECDSA_CURVES[self.size])
        if self.algorithm == "RSA":
            return rsa.generate_private_key(public_exponent=65537, key_size=self.size)
        return ed25519.Ed25519PrivateKey.generate()

    def describe(self) -> str:
        return "Ed25519" if self.algorithm == "Ed25519" else f"{self.algorithm} {self.size}"


def spec_of(key: object) -> KeySpec | None:
    """The KeySpec a public key fits, or None for a key type kipsec does not issue for."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = key.curve.key_size
        if size in ECDSA_CURVES and key.curve.name == ECDSA_CURVES[size].name:
            return KeySpec("ECDSA", size)
        return None
    if isinstance(key, rsa.RSAPublicKey):
        return KeySpec("RSA", key.key_size) if key.key_size in RSA_SIZES else None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return KeySpec("Ed25519", 0)
    return None


def signature_hash(key: SigningKey) -> hashes.SHA256 | hashes.SHA384 | None:
    """The digest to sign with ``key``: matched to the curve strength; none for Ed25519."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()
    if isinstance(key, rsa.RSAPrivateKey):
        return hashes.SHA256()
    return None
