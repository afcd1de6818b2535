"""IKEv1 transforms map onto the shared registry and are refused with its named errors."""

from __future__ import annotations

import pytest

from kipsec_sidecar.core.errors import ParseError, RefusedAlgorithm, UnsupportedAlgorithm
from kipsec_sidecar.core.ike.constants import DhGroup, EncrId, IntegId, PrfId
from kipsec_sidecar.core.ikev1.constants import (
    AuthMethod,
    EncapsulationMode,
    HashAlgorithm,
    PayloadType,
    Phase1Attr,
    Phase1Encryption,
    ProtocolId,
)
from kipsec_sidecar.core.ikev1.payloads import (
    Attribute,
    Proposal,
    SaPayload,
    Transform,
    decode_body,
    encode_body,
)
from kipsec_sidecar.core.ikev1.policy import Phase1Suite, Phase2Suite, phase1_suite, phase2_suite

PSK_AES256_SHA256 = Phase1Suite(
    EncrId.AES_CBC, 256, HashAlgorithm.SHA2_256, PrfId.HMAC_SHA2_256,
    AuthMethod.PRE_SHARED_KEY, DhGroup.MODP_2048, 28800, None,
)  # fmt: skip


def with_attr(t: Transform, attr: int, value: int) -> Transform:
    attrs = tuple(Attribute(a.type, value) if a.type == attr else a for a in t.attributes)
    return Transform(t.number, t.transform_id, attrs)


def test_a_phase1_suite_round_trips_through_its_transform() -> None:
    t = PSK_AES256_SHA256.to_transform()
    assert phase1_suite(t) == PSK_AES256_SHA256
    assert PSK_AES256_SHA256.encryption_key_len == 32


def test_a_long_lifetime_goes_as_a_variable_attribute() -> None:
    suite = Phase1Suite(
        EncrId.AES_CBC, 128, HashAlgorithm.SHA2_512, PrfId.HMAC_SHA2_512,
        AuthMethod.RSA_SIGNATURE, DhGroup.ECP_256, 86400, 1_000_000,
    )  # fmt: skip
    assert phase1_suite(suite.to_transform()) == suite


@pytest.mark.parametrize(
    ("attr", "value", "named"),
    [
        (Phase1Attr.ENCRYPTION, Phase1Encryption.DES_CBC, "DES"),
        (Phase1Attr.ENCRYPTION, Phase1Encryption.DES3_CBC, "3DES"),
        (Phase1Attr.HASH, HashAlgorithm.MD5, "MD5"),
        (Phase1Attr.HASH, HashAlgorithm.SHA1, "SHA1"),
        (Phase1Attr.GROUP_DESCRIPTION, DhGroup.MODP_1024, "MODP-1024"),
        (Phase1Attr.GROUP_DESCRIPTION, 5, "MODP-1536"),
    ],
)
def test_weak_phase1_algorithms_are_refused_by_name(attr: int, value: int, named: str) -> None:
    with pytest.raises(RefusedAlgorithm, match=named):
        phase1_suite(with_attr(PSK_AES256_SHA256.to_transform(), attr, value))


def test_sha1_passes_only_when_named_as_legacy() -> None:
    t = with_attr(PSK_AES256_SHA256.to_transform(), Phase1Attr.HASH, HashAlgorithm.SHA1)
    assert phase1_suite(t, legacy_sha1=True).prf_id == PrfId.HMAC_SHA1


def test_unknown_cipher_and_missing_attributes() -> None:
    t = with_attr(
        PSK_AES256_SHA256.to_transform(), Phase1Attr.ENCRYPTION, Phase1Encryption.BLOWFISH_CBC
    )
    with pytest.raises(UnsupportedAlgorithm):
        phase1_suite(t)
    bare = Transform(
        1,
        1,
        (
            Attribute(Phase1Attr.ENCRYPTION, Phase1Encryption.AES_CBC),
            Attribute(Phase1Attr.KEY_LENGTH, 128),
        ),
    )
    with pytest.raises(ParseError) as info:
        phase1_suite(bare)
    assert info.value.field == "transform.hash"


ESP_CBC = Phase2Suite(
    ProtocolId.ESP, EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128,
    EncapsulationMode.TUNNEL, DhGroup.ECP_256, 3600, None,
)  # fmt: skip
ESP_GCM = Phase2Suite(ProtocolId.ESP, EncrId.AES_GCM_16, 256, None, EncapsulationMode.UDP_TUNNEL)
AH = Phase2Suite(ProtocolId.AH, None, 0, IntegId.HMAC_SHA2_512_256, EncapsulationMode.TRANSPORT)


@pytest.mark.parametrize("suite", [ESP_CBC, ESP_GCM, AH], ids=["esp-cbc", "esp-gcm", "ah"])
def test_phase2_suites_round_trip_through_the_wire(suite: Phase2Suite) -> None:
    sa = SaPayload((Proposal(1, suite.protocol, b"\x00\x00\x10\x01", (suite.to_transform(),)),))
    received = decode_body(PayloadType.SA, encode_body(sa))
    assert isinstance(received, SaPayload)
    assert phase2_suite(suite.protocol, received.proposals[0].transforms[0]) == suite


def test_phase2_keymat_sizes_come_from_the_registry() -> None:
    assert ESP_CBC.keymat_lens == (16, 32)
    assert ESP_GCM.keymat_lens == (36, 0)
    assert AH.keymat_lens == (0, 64)


def test_esp_without_integrity_and_3des_are_refused() -> None:
    no_integ = Phase2Suite(ProtocolId.ESP, EncrId.AES_CBC, 128, None, EncapsulationMode.TUNNEL)
    with pytest.raises(RefusedAlgorithm):
        phase2_suite(ProtocolId.ESP, no_integ.to_transform())
    des3 = ESP_CBC.to_transform()
    with pytest.raises(RefusedAlgorithm, match="3DES"):
        phase2_suite(ProtocolId.ESP, Transform(1, EncrId.DES3, des3.attributes))


def test_aes_without_a_key_length_is_malformed() -> None:
    t = PSK_AES256_SHA256.to_transform()
    bare = Transform(
        t.number, t.transform_id, tuple(a for a in t.attributes if a.type != Phase1Attr.KEY_LENGTH)
    )
    with pytest.raises(ParseError) as info:
        phase1_suite(bare)
    assert info.value.field == "transform.key_length"
