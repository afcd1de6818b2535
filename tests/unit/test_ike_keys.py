"""IKEv2 key derivation checked against a second, independent reading of RFC 7296.

``Reference`` below is written from the RFC text alone, with ``hmac``/``hashlib`` and
no code shared with ``kipsec_sidecar.core.ike.keys`` (not even the algorithm registry:
its key sizes are typed in from RFC 4106, RFC 7634, RFC 3602 and RFC 4868).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kipsec_sidecar.core.errors import LocalProtocolError, RefusedAlgorithm, UnsupportedAlgorithm
from kipsec_sidecar.core.ike import keys
from kipsec_sidecar.core.ike.constants import EncrId, IntegId, PrfId

HASH_OF_PRF: dict[int, Callable[[], Any]] = {
    PrfId.HMAC_SHA2_256: hashlib.sha256,
    PrfId.HMAC_SHA2_384: hashlib.sha384,
    PrfId.HMAC_SHA2_512: hashlib.sha512,
}
# (encr id, key bits) -> bytes of keying material per direction (key + salt).
ENCR_KEYMAT: dict[tuple[int, int], int] = {
    (EncrId.AES_GCM_16, 128): 16 + 4,
    (EncrId.AES_GCM_16, 256): 32 + 4,
    (EncrId.CHACHA20_POLY1305, 256): 32 + 4,
    (EncrId.AES_CBC, 128): 16,
    (EncrId.AES_CBC, 256): 32,
}
INTEG_KEY: dict[int, int] = {
    IntegId.HMAC_SHA2_256_128: 32,
    IntegId.HMAC_SHA2_384_192: 48,
    IntegId.HMAC_SHA2_512_256: 64,
}


class Reference:
    """RFC 7296 sections 2.13, 2.14, 2.17 and 2.18, transcribed literally."""

    @staticmethod
    def prf(prf_id: int, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, HASH_OF_PRF[prf_id]).digest()

    @classmethod
    def prf_plus(cls, prf_id: int, k: bytes, s: bytes, n: int) -> bytes:
        # prf+ (K,S) = T1 | T2 | T3 | T4 | ...
        # T1 = prf (K, S | 0x01); T2 = prf (K, T1 | S | 0x02); ...
        blocks = [cls.prf(prf_id, k, s + b"\x01")]
        i = 2
        while sum(len(b) for b in blocks) < n:
            blocks.append(cls.prf(prf_id, k, blocks[-1] + s + bytes([i])))
            i += 1
        return b"".join(blocks)[:n]

    @classmethod
    def ike(
        cls,
        prf_id: int,
        encr_len: int,
        integ_len: int,
        gir: bytes,
        ni: bytes,
        nr: bytes,
        spii: bytes,
        spir: bytes,
    ) -> tuple[bytes, list[bytes]]:
        # SKEYSEED = prf(Ni | Nr, g^ir)
        skeyseed = cls.prf(prf_id, ni + nr, gir)
        return skeyseed, cls._split(prf_id, skeyseed, ni, nr, spii, spir, encr_len, integ_len)

    @classmethod
    def rekey(
        cls,
        old_prf: int,
        sk_d: bytes,
        new_prf: int,
        encr_len: int,
        integ_len: int,
        gir: bytes,
        ni: bytes,
        nr: bytes,
        spii: bytes,
        spir: bytes,
    ) -> tuple[bytes, list[bytes]]:
        # SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)
        skeyseed = cls.prf(old_prf, sk_d, gir + ni + nr)
        return skeyseed, cls._split(new_prf, skeyseed, ni, nr, spii, spir, encr_len, integ_len)

    @classmethod
    def _split(
        cls,
        prf_id: int,
        skeyseed: bytes,
        ni: bytes,
        nr: bytes,
        spii: bytes,
        spir: bytes,
        encr_len: int,
        integ_len: int,
    ) -> list[bytes]:
        # {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+ (SKEYSEED, Ni|Nr|SPIi|SPIr)
        p = HASH_OF_PRF[prf_id]().digest_size
        sizes = [p, integ_len, integ_len, encr_len, encr_len, p, p]
        stream = cls.prf_plus(prf_id, skeyseed, ni + nr + spii + spir, sum(sizes))
        out, pos = [], 0
        for size in sizes:
            out.append(stream[pos : pos + size])
            pos += size
        return out

    @classmethod
    def child(
        cls, prf_id: int, sk_d: bytes, ni: bytes, nr: bytes, e: int, i: int, gir: bytes = b""
    ) -> list[bytes]:
        # KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr): encr_i, integ_i, encr_r, integ_r
        km = cls.prf_plus(prf_id, sk_d, gir + ni + nr, 2 * (e + i))
        return [km[:e], km[e : e + i], km[e + i : 2 * e + i], km[2 * e + i :]]


NI = bytes(range(32))
NR = bytes(range(100, 132))
SPI_I = bytes.fromhex("0102030405060708")
SPI_R = bytes.fromhex("a1a2a3a4a5a6a7a8")
GIR = bytes(range(256))


def _as_list(k: keys.IkeKeys) -> list[bytes]:
    return [k.sk_d, k.sk_ai, k.sk_ar, k.sk_ei, k.sk_er, k.sk_pi, k.sk_pr]


SUITES = [
    (PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 256, None),
    (PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 128, IntegId.NONE),
    (PrfId.HMAC_SHA2_384, EncrId.CHACHA20_POLY1305, 256, None),
    (PrfId.HMAC_SHA2_512, EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256),
    (PrfId.HMAC_SHA2_256, EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128),
    (PrfId.HMAC_SHA2_384, EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_384_192),
]


def _expected_lengths(encr: int, bits: int, integ: int | None) -> tuple[int, int]:
    integ_len = INTEG_KEY.get(integ, 0) if integ is not None else 0
    return ENCR_KEYMAT[(encr, bits)], integ_len


@pytest.mark.parametrize(("prf_id", "encr", "bits", "integ"), SUITES)
def test_ike_keys_match_the_reference(prf_id: int, encr: int, bits: int, integ: int | None) -> None:
    encr_len, integ_len = _expected_lengths(encr, bits, integ)
    skeyseed, derived = keys.derive_ike_keys(prf_id, encr, bits, integ, GIR, NI, NR, SPI_I, SPI_R)
    ref_seed, ref_keys = Reference.ike(prf_id, encr_len, integ_len, GIR, NI, NR, SPI_I, SPI_R)
    assert skeyseed == ref_seed
    assert _as_list(derived) == ref_keys


def test_aead_suite_has_no_integrity_keys_and_salted_encryption_keys() -> None:
    _, derived = keys.derive_ike_keys(
        PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 256, None, GIR, NI, NR, SPI_I, SPI_R
    )
    assert derived.sk_ai == derived.sk_ar == b""
    assert len(derived.sk_ei) == len(derived.sk_er) == 36
    assert len(derived.sk_d) == len(derived.sk_pi) == len(derived.sk_pr) == 32


def test_sk_p_length_is_the_prf_output_length() -> None:
    _, derived = keys.derive_ike_keys(
        PrfId.HMAC_SHA2_512, EncrId.AES_GCM_16, 128, None, GIR, NI, NR, SPI_I, SPI_R
    )
    assert len(derived.sk_pi) == len(derived.sk_pr) == len(derived.sk_d) == 64


def test_the_full_nonces_are_the_skeyseed_key() -> None:
    # HMAC PRFs take the whole Ni | Nr as the key; no truncation to 64 bits (section 2.14).
    long_ni, long_nr = bytes(range(256)), bytes(reversed(range(256)))
    skeyseed, _ = keys.derive_ike_keys(
        PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 256, None, GIR, long_ni, long_nr, SPI_I, SPI_R
    )
    assert skeyseed == hmac.new(long_ni + long_nr, GIR, hashlib.sha256).digest()


@pytest.mark.parametrize(("prf_id", "encr", "bits", "integ"), SUITES)
def test_rekeyed_ike_keys_match_the_reference(
    prf_id: int, encr: int, bits: int, integ: int | None
) -> None:
    encr_len, integ_len = _expected_lengths(encr, bits, integ)
    old_sk_d = b"\x42" * 48
    skeyseed, derived = keys.derive_rekeyed_ike_keys(
        PrfId.HMAC_SHA2_384, old_sk_d, prf_id, encr, bits, integ, GIR, NI, NR, SPI_I, SPI_R
    )
    ref_seed, ref_keys = Reference.rekey(
        PrfId.HMAC_SHA2_384, old_sk_d, prf_id, encr_len, integ_len, GIR, NI, NR, SPI_I, SPI_R
    )
    assert skeyseed == ref_seed
    assert _as_list(derived) == ref_keys


def test_rekey_uses_the_old_prf_for_skeyseed_and_the_new_for_prf_plus() -> None:
    old_sk_d = b"\x07" * 32
    seed, _ = keys.derive_rekeyed_ike_keys(
        PrfId.HMAC_SHA2_256,
        old_sk_d,
        PrfId.HMAC_SHA2_512,
        EncrId.AES_GCM_16,
        256,
        None,
        GIR,
        NI,
        NR,
        SPI_I,
        SPI_R,
    )
    assert len(seed) == 32  # SHA-256 output: the old PRF made SKEYSEED


@pytest.mark.parametrize(
    ("e", "i", "pfs"), [(36, 0, False), (36, 0, True), (16, 32, False), (32, 64, True)]
)
def test_child_keys_match_the_reference(e: int, i: int, pfs: bool) -> None:
    sk_d = b"\x5a" * 32
    gir = GIR if pfs else b""
    derived = keys.derive_child_keys(PrfId.HMAC_SHA2_256, sk_d, NI, NR, e, i, GIR if pfs else None)
    assert [derived.encr_i, derived.integ_i, derived.encr_r, derived.integ_r] == Reference.child(
        PrfId.HMAC_SHA2_256, sk_d, NI, NR, e, i, gir
    )


def test_child_keys_with_pfs_differ_from_without() -> None:
    sk_d = b"\x5a" * 32
    plain = keys.derive_child_keys(PrfId.HMAC_SHA2_256, sk_d, NI, NR, 36, 0)
    pfs = keys.derive_child_keys(PrfId.HMAC_SHA2_256, sk_d, NI, NR, 36, 0, GIR)
    assert plain.encr_i != pfs.encr_i


@settings(max_examples=200, deadline=None)
@given(
    prf_id=st.sampled_from(sorted(HASH_OF_PRF)),
    key=st.binary(max_size=300),
    seed=st.binary(max_size=300),
    length=st.integers(min_value=0, max_value=2000),
)
def test_prf_plus_matches_the_reference_for_any_input(
    prf_id: int, key: bytes, seed: bytes, length: int
) -> None:
    assert keys.prf_plus(prf_id, key, seed, length) == Reference.prf_plus(prf_id, key, seed, length)


def test_prf_plus_refuses_more_than_255_blocks() -> None:
    assert len(keys.prf_plus(PrfId.HMAC_SHA2_256, b"k", b"s", 255 * 32)) == 255 * 32
    with pytest.raises(LocalProtocolError, match="255 blocks"):
        keys.prf_plus(PrfId.HMAC_SHA2_256, b"k", b"s", 255 * 32 + 1)


def test_prf_plus_output_is_a_prefix_of_longer_output() -> None:
    short = keys.prf_plus(PrfId.HMAC_SHA2_256, b"k", b"s", 40)
    assert keys.prf_plus(PrfId.HMAC_SHA2_256, b"k", b"s", 100)[:40] == short


def test_md5_prf_is_refused() -> None:
    with pytest.raises(RefusedAlgorithm):
        keys.prf(PrfId.HMAC_MD5, b"k", b"d")


def test_unknown_prf_is_unsupported() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        keys.prf(99, b"k", b"d")


def test_des_suite_is_refused() -> None:
    with pytest.raises(RefusedAlgorithm):
        keys.derive_ike_keys(
            PrfId.HMAC_SHA2_256,
            EncrId.DES3,
            192,
            IntegId.HMAC_SHA2_256_128,
            GIR,
            NI,
            NR,
            SPI_I,
            SPI_R,
        )


def test_cbc_without_integrity_is_refused() -> None:
    with pytest.raises(RefusedAlgorithm):
        keys.derive_ike_keys(
            PrfId.HMAC_SHA2_256, EncrId.AES_CBC, 128, None, GIR, NI, NR, SPI_I, SPI_R
        )


def test_impossible_key_length_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="no 100-bit key"):
        keys.derive_ike_keys(
            PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 100, None, GIR, NI, NR, SPI_I, SPI_R
        )


def test_spis_must_be_eight_bytes() -> None:
    with pytest.raises(LocalProtocolError, match="SPIs"):
        keys.derive_ike_keys(
            PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 256, None, GIR, NI, NR, b"\x01", SPI_R
        )


def test_repr_shows_sizes_not_key_bytes() -> None:
    _, derived = keys.derive_ike_keys(
        PrfId.HMAC_SHA2_256, EncrId.AES_GCM_16, 256, None, GIR, NI, NR, SPI_I, SPI_R
    )
    text = repr(derived)
    assert "sk_d=<32 bytes>" in text
    assert derived.sk_d.hex() not in text and repr(derived.sk_d) not in text
    child = keys.derive_child_keys(PrfId.HMAC_SHA2_256, derived.sk_d, NI, NR, 36, 0)
    assert repr(child) == (
        "ChildKeys(encr_i=<36 bytes>, integ_i=<0 bytes>, encr_r=<36 bytes>, integ_r=<0 bytes>)"
    )
    assert child.encr_i.hex() not in str(child)
