"""The one registry of encryption and integrity transforms that ESP, AH and IKEv2 share.

ESP and the IKEv2 SK payload use the same transform identifiers (RFC 7296 section
3.3.2) and the same key, salt, IV and ICV sizes, so both read them here. Refused
algorithms are refused here too, with a message naming the safe alternative
(DESIGN.md: DES, 3DES, MD5 and ESP without integrity are never accepted silently).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RefusedAlgorithm, UnsupportedAlgorithm
from .ike.constants import EncrId, IntegId, PrfId

SAFE_ENCRYPTION = "AES-GCM-16 (aes256gcm16) or ChaCha20-Poly1305"
SAFE_INTEGRITY = "HMAC-SHA2-256-128 (sha256) or an AEAD cipher such as AES-GCM-16"


@dataclass(frozen=True, slots=True)
class EncrSpec:
    """Sizes of an encryption transform, in bytes.

    ``salt_len`` is the part of the key material that is not the cipher key (RFC 4106
    and RFC 7634: 4 bytes taken from the end of the keying material). ``icv_len`` is
    non-zero only for AEAD ciphers, which need no separate integrity transform.
    """

    name: str
    key_lens: tuple[int, ...]
    default_key_len: int
    salt_len: int
    iv_len: int
    block_size: int
    icv_len: int
    key_length_attribute: bool  # must the proposal carry a Key Length attribute?

    @property
    def aead(self) -> bool:
        return self.icv_len > 0

    def keymat_len(self, key_len: int) -> int:
        """Bytes of keying material for one direction: key plus salt."""
        return key_len + self.salt_len


@dataclass(frozen=True, slots=True)
class IntegSpec:
    """An HMAC integrity transform: key length, truncated ICV length and hash name."""

    name: str
    key_len: int
    icv_len: int
    hash_name: str


@dataclass(frozen=True, slots=True)
class PrfSpec:
    """An HMAC pseudo-random function: hash name and its output (= preferred key) length."""

    name: str
    hash_name: str
    out_len: int


ENCRYPTION: dict[int, EncrSpec] = {
    EncrId.AES_GCM_16: EncrSpec("aes-gcm-16", (16, 24, 32), 32, 4, 8, 4, 16, True),
    EncrId.CHACHA20_POLY1305: EncrSpec("chacha20-poly1305", (32,), 32, 4, 8, 4, 16, False),
    EncrId.AES_CBC: EncrSpec("aes-cbc", (16, 24, 32), 16, 0, 16, 16, 0, True),
}

INTEGRITY: dict[int, IntegSpec] = {
    IntegId.HMAC_SHA2_256_128: IntegSpec("hmac-sha2-256-128", 32, 16, "sha256"),
    IntegId.HMAC_SHA2_384_192: IntegSpec("hmac-sha2-384-192", 48, 24, "sha384"),
    IntegId.HMAC_SHA2_512_256: IntegSpec("hmac-sha2-512-256", 64, 32, "sha512"),
}

PRF: dict[int, PrfSpec] = {
    PrfId.HMAC_SHA2_256: PrfSpec("prf-hmac-sha2-256", "sha256", 32),
    PrfId.HMAC_SHA2_384: PrfSpec("prf-hmac-sha2-384", "sha384", 48),
    PrfId.HMAC_SHA2_512: PrfSpec("prf-hmac-sha2-512", "sha512", 64),
}

_REFUSED_ENCR: dict[int, str] = {
    EncrId.DES: "DES",
    EncrId.DES3: "3DES",
}
_REFUSED_INTEG: dict[int, str] = {
    IntegId.HMAC_MD5_96: "HMAC-MD5-96",
}
_REFUSED_PRF: dict[int, str] = {
    PrfId.HMAC_MD5: "PRF-HMAC-MD5",
}

# SHA-1 PRFs exist only for a peer named explicitly as legacy (IKEv1 appliances that
# offer nothing else, issue 11); without that, they are refused like MD5.
LEGACY_PRF: dict[int, PrfSpec] = {
    PrfId.HMAC_SHA1: PrfSpec("prf-hmac-sha1", "sha1", 20),
}


def encryption(encr_id: int) -> EncrSpec:
    """The spec of an encryption transform; raises RefusedAlgorithm or UnsupportedAlgorithm."""
    if encr_id in _REFUSED_ENCR:
        raise RefusedAlgorithm(_REFUSED_ENCR[encr_id], SAFE_ENCRYPTION)
    if encr_id == EncrId.NULL:
        raise RefusedAlgorithm("ENCR_NULL (ESP without encryption)", SAFE_ENCRYPTION)
    spec = ENCRYPTION.get(encr_id)
    if spec is None:
        raise UnsupportedAlgorithm(f"encryption transform {encr_id} is not implemented")
    return spec


def integrity(integ_id: int) -> IntegSpec:
    """The spec of an integrity transform; raises RefusedAlgorithm or UnsupportedAlgorithm."""
    if integ_id in _REFUSED_INTEG:
        raise RefusedAlgorithm(_REFUSED_INTEG[integ_id], SAFE_INTEGRITY)
    spec = INTEGRITY.get(integ_id)
    if spec is None:
        raise UnsupportedAlgorithm(f"integrity transform {integ_id} is not implemented")
    return spec


def prf(prf_id: int, *, legacy_sha1: bool = False) -> PrfSpec:
    """The spec of a PRF transform; raises RefusedAlgorithm or UnsupportedAlgorithm.

    ``legacy_sha1`` admits PRF-HMAC-SHA1 (the caller logs the warning); without it,
    SHA-1 is refused with a message saying how to name it for a legacy peer.
    """
    if prf_id in _REFUSED_PRF:
        raise RefusedAlgorithm(_REFUSED_PRF[prf_id], "PRF-HMAC-SHA2-256")
    spec = PRF.get(prf_id)
    if spec is not None:
        return spec
    if prf_id in LEGACY_PRF:
        if not legacy_sha1:
            raise RefusedAlgorithm(
                LEGACY_PRF[prf_id].name.upper(),
                "PRF-HMAC-SHA2-256 (an IKEv1 peer may name SHA-1 explicitly as legacy)",
            )
        return LEGACY_PRF[prf_id]
    raise UnsupportedAlgorithm(f"PRF transform {prf_id} is not implemented")


def keymat_lens(encr_id: int | None, key_bits: int, integ_id: int | None) -> tuple[int, int]:
    """(encryption keying material incl. an AEAD salt, integrity key) in bytes, per
    direction, for an ESP/AH SA; 0 for a transform that is absent (AH, AEAD).

    IKEv2 children and IKEv1 quick mode SAs cut their KEYMAT with these sizes.
    """
    encr = 0 if encr_id is None else encryption(encr_id).keymat_len(key_bits // 8)
    integ = 0 if integ_id is None else integrity(integ_id).key_len
    return encr, integ


def check_suite(encr_id: int, integ_id: int | None) -> tuple[EncrSpec, IntegSpec | None]:
    """Validate an encryption + integrity pair for ESP or the IKE SK payload.

    An AEAD cipher must come without a separate integrity transform; a non-AEAD cipher
    must have one (ESP without integrity is refused, RFC 4303 section 3.2 allows it,
    kipsec does not).
    """
    spec = encryption(encr_id)
    if spec.aead:
        if integ_id not in (None, IntegId.NONE):
            raise UnsupportedAlgorithm(
                f"{spec.name} is an AEAD cipher and takes no integrity transform"
            )
        return spec, None
    if integ_id in (None, IntegId.NONE):
        raise RefusedAlgorithm(f"{spec.name} without integrity", SAFE_INTEGRITY)
    assert integ_id is not None
    return spec, integrity(integ_id)
