"""Refused algorithms are refused with the safe alternative named, never silently."""

from __future__ import annotations

import pytest

from kipsec_sidecar.core import algorithms
from kipsec_sidecar.core.errors import RefusedAlgorithm, UnsupportedAlgorithm
from kipsec_sidecar.core.ike.constants import EncrId, IntegId, PrfId


@pytest.mark.parametrize("encr", [EncrId.DES, EncrId.DES3, EncrId.NULL])
def test_weak_or_null_encryption_is_refused_naming_aes_gcm(encr: EncrId) -> None:
    with pytest.raises(RefusedAlgorithm, match="AES-GCM"):
        algorithms.encryption(encr)


def test_md5_integrity_and_prf_are_refused() -> None:
    with pytest.raises(RefusedAlgorithm, match="SHA2-256"):
        algorithms.integrity(IntegId.HMAC_MD5_96)
    with pytest.raises(RefusedAlgorithm, match="SHA2-256"):
        algorithms.prf(PrfId.HMAC_MD5)


def test_cbc_without_integrity_is_refused() -> None:
    with pytest.raises(RefusedAlgorithm, match="without integrity"):
        algorithms.check_suite(EncrId.AES_CBC, None)


def test_aead_with_integrity_transform_is_rejected() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        algorithms.check_suite(EncrId.AES_GCM_16, IntegId.HMAC_SHA2_256_128)


def test_unknown_transform_is_unsupported_not_refused() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        algorithms.encryption(999)


def test_aead_keymat_includes_the_salt() -> None:
    spec, integ = algorithms.check_suite(EncrId.AES_GCM_16, None)
    assert integ is None and spec.keymat_len(32) == 36
    cbc, hmac_spec = algorithms.check_suite(EncrId.AES_CBC, IntegId.HMAC_SHA2_512_256)
    assert cbc.keymat_len(16) == 16 and hmac_spec is not None and hmac_spec.icv_len == 32


def test_sha1_prf_only_for_an_explicit_legacy_peer() -> None:
    with pytest.raises(RefusedAlgorithm, match="SHA2-256"):
        algorithms.prf(PrfId.HMAC_SHA1)
    assert algorithms.prf(PrfId.HMAC_SHA1, legacy_sha1=True).hash_name == "sha1"
    # the flag opens SHA-1 only: MD5 stays refused
    with pytest.raises(RefusedAlgorithm):
        algorithms.prf(PrfId.HMAC_MD5, legacy_sha1=True)
