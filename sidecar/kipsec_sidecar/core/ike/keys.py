"""IKEv2 key derivation: prf, prf+, SKEYSEED and the keys of IKE and Child SAs.

RFC 7296 section 2.13 (prf+), 2.14 (the IKE SA keys), 2.17 (Child SA KEYMAT) and
2.18 (rekeying an IKE SA). Sizes come from :mod:`kipsec_sidecar.core.algorithms`, the
registry shared with ESP, so the SK payload and the ESP SAs cut keys the same way:
an AEAD cipher's key material includes its 4-byte salt (RFC 5282 section 7.1, RFC 7634
section 2.1) and an AEAD suite has no SK_ai / SK_ar.

Every PRF kipsec negotiates is an HMAC, which takes a key of any length, so the RFC's
special cases for fixed-key PRFs (the AES-XCBC truncation of Ni | Nr in section 2.14)
never apply: the full Ni | Nr is the key.

Key bytes never appear in a ``repr``: the dataclasses here print their field sizes only,
so a key cannot leak through a log line or an assertion message.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, fields

from .. import algorithms
from ..errors import LocalProtocolError

MAX_PRF_PLUS_BLOCKS = 255
"""prf+ counts its blocks in one octet (RFC 7296 section 2.13)."""

SPI_LENGTH = 8


def prf(prf_id: int, key: bytes, data: bytes, *, legacy_sha1: bool = False) -> bytes:
    """prf(key, data) for a negotiated PRF transform (HMAC with the transform's hash).

    Raises RefusedAlgorithm (PRF-HMAC-MD5, and PRF-HMAC-SHA1 unless ``legacy_sha1``) or
    UnsupportedAlgorithm for unknown ids. IKEv1 computes its SKEYIDs through here too.
    """
    spec = algorithms.prf(prf_id, legacy_sha1=legacy_sha1)
    return hmac.digest(key, data, spec.hash_name)


def prf_plus(prf_id: int, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+(key, seed) truncated to ``length`` bytes (RFC 7296 section 2.13).

    T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n). The counter is one octet, so at
    most 255 blocks can be produced; asking for more is a local error (LocalProtocolError),
    never a silent wrap of the counter.
    """
    spec = algorithms.prf(prf_id)
    if length < 0:
        raise LocalProtocolError(f"prf+ length {length} is negative")
    if length > MAX_PRF_PLUS_BLOCKS * spec.out_len:
        raise LocalProtocolError(
            f"prf+ cannot produce {length} bytes with {spec.name}: "
            f"at most {MAX_PRF_PLUS_BLOCKS} blocks of {spec.out_len}"
        )
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(key, block + seed + bytes([counter]), spec.hash_name)
        out += block
        counter += 1
    return bytes(out[:length])


def _sizes_repr(obj: object) -> str:
    parts = ", ".join(
        f"{f.name}=<{len(getattr(obj, f.name))} bytes>"
        for f in fields(obj)  # type: ignore[arg-type]
    )
    return f"{type(obj).__name__}({parts})"


@dataclass(frozen=True, slots=True, repr=False)
class IkeKeys:
    """The seven keys of an IKE SA (RFC 7296 section 2.14).

    ``sk_d`` derives Child SA keys; ``sk_ai``/``sk_ar`` protect integrity of the SK
    payload (empty for an AEAD cipher); ``sk_ei``/``sk_er`` encrypt it (AEAD: key plus
    4-byte salt); ``sk_pi``/``sk_pr`` go into the AUTH computation (section 2.15). The
    ``i`` keys protect what the original initiator sends.
    """

    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes

    def __repr__(self) -> str:
        return _sizes_repr(self)


@dataclass(frozen=True, slots=True, repr=False)
class ChildKeys:
    """Keying material of a Child SA pair (RFC 7296 section 2.17).

    ``encr_i``/``integ_i`` protect the initiator-to-responder SA, ``encr_r``/``integ_r``
    the responder-to-initiator one. ``encr_*`` includes the salt of an AEAD cipher;
    ``integ_*`` is empty for AEAD.
    """

    encr_i: bytes
    integ_i: bytes
    encr_r: bytes
    integ_r: bytes

    def __repr__(self) -> str:
        return _sizes_repr(self)


@dataclass(frozen=True, slots=True)
class _IkeKeySizes:
    prf: int
    integ: int
    encr: int

    @property
    def total(self) -> int:
        return 3 * self.prf + 2 * self.integ + 2 * self.encr


def _ike_key_sizes(
    prf_id: int, encr_id: int, encr_key_bits: int, integ_id: int | None
) -> _IkeKeySizes:
    prf_spec = algorithms.prf(prf_id)
    encr_spec, integ_spec = algorithms.check_suite(encr_id, integ_id)
    if encr_key_bits % 8 or encr_key_bits // 8 not in encr_spec.key_lens:
        raise LocalProtocolError(
            f"{encr_spec.name} has no {encr_key_bits}-bit key; "
            f"valid: {[n * 8 for n in encr_spec.key_lens]}"
        )
    return _IkeKeySizes(
        prf=prf_spec.out_len,
        integ=integ_spec.key_len if integ_spec is not None else 0,
        encr=encr_spec.keymat_len(encr_key_bits // 8),
    )


def _check_spis(spi_i: bytes, spi_r: bytes) -> None:
    if len(spi_i) != SPI_LENGTH or len(spi_r) != SPI_LENGTH:
        raise LocalProtocolError(
            f"IKE SPIs are {SPI_LENGTH} bytes, got {len(spi_i)} and {len(spi_r)}"
        )


def _split_ike_keys(prf_id: int, skeyseed: bytes, seed: bytes, sizes: _IkeKeySizes) -> IkeKeys:
    stream = prf_plus(prf_id, skeyseed, seed, sizes.total)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        pos += n
        return stream[pos - n : pos]

    return IkeKeys(
        sk_d=take(sizes.prf),
        sk_ai=take(sizes.integ),
        sk_ar=take(sizes.integ),
        sk_ei=take(sizes.encr),
        sk_er=take(sizes.encr),
        sk_pi=take(sizes.prf),
        sk_pr=take(sizes.prf),
    )


def derive_ike_keys(
    prf_id: int,
    encr_id: int,
    encr_key_bits: int,
    integ_id: int | None,
    shared_secret: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> tuple[bytes, IkeKeys]:
    """SKEYSEED and the keys of a new IKE SA (RFC 7296 section 2.14).

    SKEYSEED = prf(Ni | Nr, g^ir); {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
    = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr). ``encr_key_bits`` is the negotiated key
    length (the Key Length attribute, or the cipher's only size); ``integ_id`` is None
    or NONE for AEAD. ``shared_secret`` is g^ir as :mod:`.dh` returns it; nonces are the
    Nonce payload data; SPIs are the 8-byte header SPIs.

    Raises RefusedAlgorithm / UnsupportedAlgorithm for a suite the registry refuses, and
    LocalProtocolError for an impossible key length or SPI length.
    """
    sizes = _ike_key_sizes(prf_id, encr_id, encr_key_bits, integ_id)
    _check_spis(spi_i, spi_r)
    skeyseed = prf(prf_id, nonce_i + nonce_r, shared_secret)
    keys = _split_ike_keys(prf_id, skeyseed, nonce_i + nonce_r + spi_i + spi_r, sizes)
    return skeyseed, keys


def derive_rekeyed_ike_keys(
    old_prf_id: int,
    old_sk_d: bytes,
    new_prf_id: int,
    new_encr_id: int,
    new_encr_key_bits: int,
    new_integ_id: int | None,
    shared_secret: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> tuple[bytes, IkeKeys]:
    """SKEYSEED and keys of an IKE SA created by rekeying (RFC 7296 section 2.18).

    SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) with the OLD SA's PRF; the keys
    then come from prf+ with the NEW SA's PRF over Ni | Nr | SPIi | SPIr, where the
    nonces are those of the CREATE_CHILD_SA exchange and the SPIs are the new SA's
    (``spi_i`` is the SPI chosen by the initiator of the rekey exchange).
    """
    sizes = _ike_key_sizes(new_prf_id, new_encr_id, new_encr_key_bits, new_integ_id)
    _check_spis(spi_i, spi_r)
    skeyseed = prf(old_prf_id, old_sk_d, shared_secret + nonce_i + nonce_r)
    keys = _split_ike_keys(new_prf_id, skeyseed, nonce_i + nonce_r + spi_i + spi_r, sizes)
    return skeyseed, keys


def derive_child_keys(
    prf_id: int,
    sk_d: bytes,
    nonce_i: bytes,
    nonce_r: bytes,
    encr_keymat_len: int,
    integ_key_len: int,
    shared_secret: bytes | None = None,
) -> ChildKeys:
    """Keying material for a Child SA pair (RFC 7296 section 2.17).

    KEYMAT = prf+(SK_d, Ni | Nr), or prf+(SK_d, g^ir (new) | Ni | Nr) when the
    CREATE_CHILD_SA exchange carried KE payloads (PFS). It is cut in the order
    encr_i, integ_i, encr_r, integ_r. Lengths are in bytes:
    ``encryption(id).keymat_len(key_bits // 8)`` (key plus AEAD salt) and
    ``integrity(id).key_len`` (0 for AEAD). For the first Child SA, created in
    IKE_AUTH, the nonces are those of IKE_SA_INIT; for later ones, those of the
    CREATE_CHILD_SA exchange.
    """
    if encr_keymat_len < 0 or integ_key_len < 0:
        raise LocalProtocolError("Child SA key lengths must not be negative")
    seed = (shared_secret or b"") + nonce_i + nonce_r
    per_direction = encr_keymat_len + integ_key_len
    stream = prf_plus(prf_id, sk_d, seed, 2 * per_direction)
    e, i = encr_keymat_len, integ_key_len
    return ChildKeys(
        encr_i=stream[:e],
        integ_i=stream[e : e + i],
        encr_r=stream[e + i : 2 * e + i],
        integ_r=stream[2 * e + i :],
    )
