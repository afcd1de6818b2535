"""Hostile bytes into the IKE crypto parsers: only the project's typed errors may come out.

Each target takes peer-controlled bytes: the AUTH payload data (``verify_signature``),
CERT payload data (``load_certificate``) and KE payload data (``shared_secret``).
"""

from __future__ import annotations

import contextlib
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipsec_sidecar.core.errors import AuthenticationFailed, CertificateError, KipsecError
from kipsec_sidecar.core.ike import auth, certs, dh
from kipsec_sidecar.core.ike.constants import AuthMethod
from support.pki import NOW, CertificateAuthority, KeyKind, make_key

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OCTETS = b"signed octets"
KEY_KINDS: list[KeyKind] = ["rsa", "dsa1024", "ec256", "ec384", "ed25519"]
METHODS = [int(m) for m in AuthMethod] + [0, 4, 12, 255]


@cache
def _valid_auth_data(kind: KeyKind) -> bytes:
    key = make_key(kind)
    method, hash_alg = auth.choose_auth_method(key, set(auth.SUPPORTED_HASHES), None)
    return auth.Signer(key).sign(OCTETS, method, hash_alg)


@cache
def _valid_certificate_der() -> bytes:
    return CertificateAuthority.root("fuzz root").issue("fuzz peer", dns=["fuzz.example"]).der


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    kind=st.sampled_from(KEY_KINDS),
    data=st.binary(max_size=600),
)
def test_verify_signature_with_random_auth_data_only_fails_authentication(
    method: int, kind: KeyKind, data: bytes
) -> None:
    with pytest.raises(AuthenticationFailed):
        auth.verify_signature(method, make_key(kind).public_key(), OCTETS, data)


@FUZZ
@given(
    kind=st.sampled_from(KEY_KINDS),
    position=st.integers(min_value=0, max_value=10_000),
    value=st.integers(min_value=0, max_value=255),
    cut=st.integers(min_value=0, max_value=10_000),
)
def test_verify_signature_with_mutated_valid_auth_data_only_fails_typed(
    kind: KeyKind, position: int, value: int, cut: int
) -> None:
    # Mutations of a real method-14 payload reach deep into the AlgorithmIdentifier parser.
    good = _valid_auth_data(kind)
    mutated = bytearray(good)
    mutated[position % len(good)] = value
    candidate = bytes(mutated[: max(1, cut % (len(good) + 1))])
    if candidate == good:
        return
    with pytest.raises(AuthenticationFailed):
        auth.verify_signature(
            AuthMethod.DIGITAL_SIGNATURE, make_key(kind).public_key(), OCTETS, candidate
        )


@FUZZ
@given(
    hash_oid_tail=st.binary(max_size=12),
    salt=st.binary(min_size=0, max_size=4),
    trailer=st.binary(max_size=4),
    extra=st.binary(max_size=8),
)
def test_rsa_pss_parameter_parser_only_fails_authentication(
    hash_oid_tail: bytes, salt: bytes, trailer: bytes, extra: bytes
) -> None:
    def tlv(tag: int, content: bytes) -> bytes:
        return bytes([tag, len(content)]) + content

    hash_id = tlv(0x30, tlv(0x06, bytes.fromhex("6086480165030402") + hash_oid_tail))
    params = (
        tlv(0xA0, hash_id)
        + tlv(0xA1, tlv(0x30, tlv(0x06, bytes.fromhex("2a864886f70d010108")) + hash_id))
        + tlv(0xA2, tlv(0x02, salt))
        + tlv(0xA3, tlv(0x02, trailer))
        + extra
    )
    algid = tlv(0x30, tlv(0x06, bytes.fromhex("2a864886f70d01010a")) + tlv(0x30, params))
    data = bytes([len(algid) % 256]) + algid + b"\x00" * 256
    with pytest.raises(AuthenticationFailed):
        auth.verify_signature(
            AuthMethod.DIGITAL_SIGNATURE, make_key("rsa").public_key(), OCTETS, data
        )


@FUZZ
@given(data=st.binary(max_size=2000))
def test_load_certificate_with_random_bytes_only_fails_malformed(data: bytes) -> None:
    with pytest.raises(CertificateError) as excinfo:
        certs.load_certificate(data)
    assert excinfo.value.reason == "malformed"


@FUZZ
@given(
    position=st.integers(min_value=0, max_value=100_000),
    value=st.integers(min_value=0, max_value=255),
)
def test_load_certificate_with_a_mutated_certificate_never_crashes(
    position: int, value: int
) -> None:
    der = bytearray(_valid_certificate_der())
    der[position % len(der)] = value
    try:
        cert = certs.load_certificate(bytes(der))
    except CertificateError:
        return
    # What loads must also survive the rest of the pipeline with typed errors only.
    with contextlib.suppress(KipsecError):
        certs.validate_chain(cert, [], [cert], NOW)
    for id_type in (1, 2, 3, 5, 9, 10, 11):
        certs.identity_matches(cert, id_type, b"fuzz.example")


@FUZZ
@given(group=st.sampled_from(dh.SUPPORTED_GROUPS), data=st.binary(max_size=500))
def test_shared_secret_with_random_peer_bytes_is_secret_or_typed_error(
    group: int, data: bytes
) -> None:
    kex = _kex(group)
    try:
        secret = kex.shared_secret(data)
    except dh.InvalidKeyExchange:
        return
    assert len(data) == dh.public_length(group)
    assert secret


@FUZZ
@given(group=st.sampled_from(dh.SUPPORTED_GROUPS), fill=st.integers(min_value=0, max_value=255))
def test_shared_secret_with_constant_peer_bytes_of_the_right_length(group: int, fill: int) -> None:
    data = bytes([fill]) * dh.public_length(group)
    with contextlib.suppress(dh.InvalidKeyExchange):
        assert _kex(group).shared_secret(data)


@cache
def _kex(group: int) -> dh.KeyExchange:
    return dh.generate(group, lambda n: bytes(range(1, n + 1)))
