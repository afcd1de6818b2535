"""Every IKEv1 key derivation recomputed independently with plain hashlib/hmac from the
formulas of RFC 2409 (sections 5, 5.3, 5.5, 5.7 and Appendix B), for each method family
(signatures, pre-shared key, public-key encryption) and each SHA-2 hash; SHA-1 only
with the legacy flag."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from kipsec_sidecar.core.errors import RefusedAlgorithm
from kipsec_sidecar.core.ike.constants import PrfId
from kipsec_sidecar.core.ikev1 import keys

HASHES: dict[int, str] = {
    PrfId.HMAC_SHA2_256: "sha256",
    PrfId.HMAC_SHA2_384: "sha384",
    PrfId.HMAC_SHA2_512: "sha512",
}
NI = bytes.fromhex("a1" * 32)
NR = bytes.fromhex("b2" * 24)
CKY_I = bytes.fromhex("0011223344556677")
CKY_R = bytes.fromhex("8899aabbccddeeff")
G_XY = bytes(range(256))
KE_I = b"\x02" * 256
KE_R = b"\x03" * 256
PSK = b"correct horse battery staple"


def mac(name: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, name).digest()


def rfc_skeyid(family: str, name: str) -> bytes:
    if family == "signature":
        return mac(name, NI + NR, G_XY)
    if family == "psk":
        return mac(name, PSK, NI + NR)
    return mac(name, hashlib.new(name, NI + NR).digest(), CKY_I + CKY_R)


def kipsec_skeyid(family: str, prf_id: int, legacy: bool = False) -> bytes:
    if family == "signature":
        return keys.skeyid_signature(prf_id, NI, NR, G_XY, legacy_sha1=legacy)
    if family == "psk":
        return keys.skeyid_psk(prf_id, PSK, NI, NR, legacy_sha1=legacy)
    return keys.skeyid_public_key(prf_id, NI, NR, CKY_I, CKY_R, legacy_sha1=legacy)


FAMILIES = ["signature", "psk", "public-key"]


@pytest.mark.parametrize("prf_id", list(HASHES), ids=lambda p: HASHES[p])
@pytest.mark.parametrize("family", FAMILIES)
def test_skeyid_and_its_derivatives(family: str, prf_id: int) -> None:
    name = HASHES[prf_id]
    skeyid = rfc_skeyid(family, name)
    assert kipsec_skeyid(family, prf_id) == skeyid
    d = mac(name, skeyid, G_XY + CKY_I + CKY_R + b"\x00")
    a = mac(name, skeyid, d + G_XY + CKY_I + CKY_R + b"\x01")
    e = mac(name, skeyid, a + G_XY + CKY_I + CKY_R + b"\x02")
    got = keys.derive_phase1_keys(prf_id, skeyid, G_XY, CKY_I, CKY_R, 16)
    assert (got.skeyid_d, got.skeyid_a, got.skeyid_e) == (d, a, e)
    assert got.encryption_key == e[:16]


@pytest.mark.parametrize("family", FAMILIES)
def test_sha1_needs_the_legacy_flag_and_then_follows_the_rfc(family: str) -> None:
    with pytest.raises(RefusedAlgorithm):
        kipsec_skeyid(family, PrfId.HMAC_SHA1)
    assert kipsec_skeyid(family, PrfId.HMAC_SHA1, legacy=True) == rfc_skeyid(family, "sha1")


def test_md5_is_refused_by_the_registry() -> None:
    with pytest.raises(RefusedAlgorithm, match="MD5"):
        keys.skeyid_psk(PrfId.HMAC_MD5, PSK, NI, NR)


def test_a_cipher_key_longer_than_skeyid_e_is_expanded_as_appendix_b() -> None:
    # SHA-1 gives a 20-byte SKEYID_e: AES-256 needs K1 | K2 with K1 = prf(SKEYID_e, 0).
    skeyid = rfc_skeyid("psk", "sha1")
    got = keys.derive_phase1_keys(PrfId.HMAC_SHA1, skeyid, G_XY, CKY_I, CKY_R, 32, legacy_sha1=True)
    k1 = mac("sha1", got.skeyid_e, b"\x00")
    k2 = mac("sha1", got.skeyid_e, k1)
    assert got.encryption_key == (k1 + k2)[:32]
    assert "bytes" in repr(got) and got.skeyid_e.hex() not in repr(got)


@pytest.mark.parametrize("prf_id", list(HASHES), ids=lambda p: HASHES[p])
def test_hash_i_and_hash_r(prf_id: int) -> None:
    name = HASHES[prf_id]
    skeyid, sa_b, idi_b, idr_b = (
        b"S" * 32,
        b"SA-body",
        b"\x01\x00\x00\x00\xc0\x00\x02\x01",
        b"\x02\x00\x01\xf4gw",
    )
    assert keys.hash_i(prf_id, skeyid, KE_I, KE_R, CKY_I, CKY_R, sa_b, idi_b) == mac(
        name, skeyid, KE_I + KE_R + CKY_I + CKY_R + sa_b + idi_b
    )
    assert keys.hash_r(prf_id, skeyid, KE_I, KE_R, CKY_I, CKY_R, sa_b, idr_b) == mac(
        name, skeyid, KE_R + KE_I + CKY_R + CKY_I + sa_b + idr_b
    )


@pytest.mark.parametrize("prf_id", list(HASHES), ids=lambda p: HASHES[p])
def test_quick_mode_and_informational_hashes(prf_id: int) -> None:
    name = HASHES[prf_id]
    skeyid_a, mid, rest = b"A" * 32, 0xDEADBEEF, b"payloads after HASH"
    m = mid.to_bytes(4, "big")
    assert keys.quick_mode_hash1(prf_id, skeyid_a, mid, rest) == mac(name, skeyid_a, m + rest)
    assert keys.quick_mode_hash2(prf_id, skeyid_a, mid, NI, rest) == mac(
        name, skeyid_a, m + NI + rest
    )
    assert keys.quick_mode_hash3(prf_id, skeyid_a, mid, NI, NR) == mac(
        name, skeyid_a, b"\x00" + m + NI + NR
    )
    assert keys.informational_hash(prf_id, skeyid_a, mid, rest) == mac(name, skeyid_a, m + rest)


def rfc_keymat(name: str, skeyid_d: bytes, seed: bytes, length: int) -> bytes:
    out, block = b"", b""
    while len(out) < length:
        block = mac(name, skeyid_d, block + seed)
        out += block
    return out[:length]


@pytest.mark.parametrize("pfs", [False, True], ids=["no-pfs", "pfs"])
@pytest.mark.parametrize("prf_id", list(HASHES), ids=lambda p: HASHES[p])
def test_quick_mode_keymat_with_and_without_pfs(prf_id: int, pfs: bool) -> None:
    name = HASHES[prf_id]
    skeyid_d = b"D" * 32
    spi_i, spi_r = b"\xc0\x00\x00\x01", b"\xc0\x00\x00\x02"
    g_qm = b"\x42" * 256 if pfs else None
    prefix = g_qm or b""
    # AES-256 + HMAC-SHA2-512: 96 bytes per SA, more than one prf block for every hash.
    got = keys.quick_mode_child_keys(prf_id, skeyid_d, 3, spi_i, spi_r, NI, NR, 32, 64, g_qm)
    to_r = rfc_keymat(name, skeyid_d, prefix + b"\x03" + spi_r + NI + NR, 96)
    to_i = rfc_keymat(name, skeyid_d, prefix + b"\x03" + spi_i + NI + NR, 96)
    assert (got.encr_i, got.integ_i) == (to_r[:32], to_r[32:])
    assert (got.encr_r, got.integ_r) == (to_i[:32], to_i[32:])


def test_revised_mode_symmetric_keys_follow_section_5_3() -> None:
    from kipsec_sidecar.core.ikev1.pubkey import revised_keys

    ne_i = mac("sha256", NI, CKY_I)
    ne_r = mac("sha256", NR, CKY_R)
    ke_i, ke_r = revised_keys(PrfId.HMAC_SHA2_256, NI, NR, CKY_I, CKY_R, 16)
    assert (ke_i, ke_r) == (ne_i[:16], ne_r[:16])
    ke_i, _ = revised_keys(PrfId.HMAC_SHA2_256, NI, NR, CKY_I, CKY_R, 48)
    k1 = mac("sha256", ne_i, b"\x00")
    assert ke_i == (k1 + mac("sha256", ne_i, k1))[:48]
