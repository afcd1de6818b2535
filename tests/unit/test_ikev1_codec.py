"""The ISAKMP codec: every payload round-trips, received bytes are kept for the HASH
payloads, and malformed input raises ParseError naming the field."""

from __future__ import annotations

import pytest

from kipsec_sidecar.core.errors import LocalProtocolError, ParseError
from kipsec_sidecar.core.ike.constants import CertEncoding, DhGroup, EncrId
from kipsec_sidecar.core.ike.payloads import (
    CertPayload,
    CertReqPayload,
    UnknownPayload,
    VendorIdPayload,
)
from kipsec_sidecar.core.ikev1.constants import (
    AuthMethod,
    ExchangeType,
    Flag,
    HashAlgorithm,
    IdType,
    NotifyType,
    PayloadType,
    Phase1Attr,
    Phase1Encryption,
    Phase2Attr,
    ProtocolId,
)
from kipsec_sidecar.core.ikev1.message import (
    HEADER_LEN,
    InvalidMajorVersion,
    Message,
    decode_header,
    decode_message,
    decode_payloads,
    encode_message,
    encode_payloads,
)
from kipsec_sidecar.core.ikev1.payloads import (
    Attribute,
    DeletePayload,
    HashPayload,
    IdPayload,
    KePayload,
    NatDPayload,
    NatOaPayload,
    NoncePayload,
    NotificationPayload,
    Payload,
    Proposal,
    SaPayload,
    SealedPayload,
    SigPayload,
    Transform,
    decode_body,
    encode_body,
    payload_type,
)

CKY_I = bytes.fromhex("0102030405060708")
CKY_R = bytes.fromhex("1112131415161718")

PHASE1_SA = SaPayload(
    (
        Proposal(
            1,
            ProtocolId.ISAKMP,
            b"",
            (
                Transform(
                    1,
                    1,
                    (
                        Attribute(Phase1Attr.ENCRYPTION, Phase1Encryption.AES_CBC),
                        Attribute(Phase1Attr.KEY_LENGTH, 256),
                        Attribute(Phase1Attr.HASH, HashAlgorithm.SHA2_256),
                        Attribute(Phase1Attr.AUTH_METHOD, AuthMethod.PRE_SHARED_KEY),
                        Attribute(Phase1Attr.GROUP_DESCRIPTION, DhGroup.MODP_2048),
                        Attribute(Phase1Attr.LIFE_TYPE, 1),
                        Attribute(Phase1Attr.LIFE_DURATION, (86400).to_bytes(4, "big")),
                    ),
                ),
            ),
        ),
    )
)
PHASE2_SA = SaPayload(
    (
        Proposal(
            1,
            ProtocolId.ESP,
            b"\xc0\xff\xee\x01",
            (
                Transform(1, EncrId.AES_CBC, (Attribute(Phase2Attr.KEY_LENGTH, 128),)),
                Transform(2, EncrId.AES_CBC, (Attribute(Phase2Attr.KEY_LENGTH, 256),)),
            ),
        ),
        Proposal(1, ProtocolId.AH, b"\xc0\xff\xee\x02", (Transform(1, 5),)),
        Proposal(2, ProtocolId.ESP, b"\xc0\xff\xee\x03", (Transform(1, EncrId.AES_GCM_16),)),
    )
)

PAYLOADS: list[Payload] = [
    PHASE1_SA,
    PHASE2_SA,
    KePayload(bytes(range(256))),
    IdPayload(IdType.IPV4_ADDR, bytes([192, 0, 2, 1])),
    IdPayload(IdType.IPV4_ADDR_SUBNET, bytes([10, 1, 0, 0, 255, 255, 0, 0]), 17, 500),
    IdPayload(IdType.FQDN, b"gw.example.org"),
    CertPayload(CertEncoding.X509_SIGNATURE, b"\x30\x03\x02\x01\x01"),
    CertReqPayload(CertEncoding.X509_SIGNATURE, b""),
    HashPayload(bytes(32)),
    SigPayload(b"\x01" * 64),
    NoncePayload(b"\x07" * 8),
    NoncePayload(b"\x07" * 256),
    NotificationPayload(
        NotifyType.R_U_THERE, ProtocolId.ISAKMP, CKY_I + CKY_R, b"\x00\x00\x00\x05"
    ),
    NotificationPayload(
        NotifyType.RESPONDER_LIFETIME, ProtocolId.ESP, b"\x01\x02\x03\x04", b"\x80\x01\x00\x01"
    ),
    NotificationPayload(NotifyType.NO_PROPOSAL_CHOSEN, ProtocolId.ISAKMP),
    DeletePayload(ProtocolId.ISAKMP, (CKY_I + CKY_R,)),
    DeletePayload(ProtocolId.ESP, (b"\x01\x02\x03\x04", b"\x05\x06\x07\x08")),
    VendorIdPayload(bytes.fromhex("4a131c81070358455c5728f20e95452f")),
    NatDPayload(bytes(20)),
    NatOaPayload(IdType.IPV4_ADDR, bytes([192, 168, 1, 5])),
    NatOaPayload(IdType.IPV6_ADDR, bytes(15) + b"\x01"),
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_every_payload_body_round_trips(payload: Payload) -> None:
    assert decode_body(payload_type(payload), encode_body(payload)) == payload


def test_a_message_round_trips_with_header_fields() -> None:
    msg = Message(CKY_I, CKY_R, ExchangeType.MAIN, 0, tuple(PAYLOADS), Flag.COMMIT)
    data = encode_message(msg)
    assert data[17] == 0x10  # version 1.0
    assert decode_message(data) == msg
    header = decode_header(data)
    assert (header.spi_i, header.spi_r, header.exchange, header.length) == (
        CKY_I,
        CKY_R,
        ExchangeType.MAIN,
        len(data),
    )


def test_the_phase1_sa_has_the_rfc_2408_layout() -> None:
    body = encode_body(PHASE1_SA)
    assert body[:8] == bytes.fromhex("0000000100000001")  # IPsec DOI, SIT_IDENTITY_ONLY
    # proposal: last, reserved, length, #1, PROTO_ISAKMP, SPI size 0, one transform
    assert body[8] == 0 and body[12:16] == bytes((1, 1, 0, 1))
    # transform: last, reserved, length, #1, KEY_IKE, reserved; then AES-CBC as TV
    assert body[16] == 0 and body[20:24] == bytes((1, 1, 0, 0))
    assert body[24:28] == bytes.fromhex("80010007")
    # the life duration as TLV with 4 bytes
    assert body.endswith(bytes.fromhex("000c000400015180"))


def test_attribute_formats_are_kept() -> None:
    life = PHASE1_SA.proposals[0].transforms[0].get(Phase1Attr.LIFE_DURATION)
    assert life is not None and life.as_int == 86400 and isinstance(life.value, bytes)
    tv = Attribute(Phase1Attr.LIFE_DURATION, 28800)
    assert tv.as_int == 28800


def test_received_payload_bytes_are_kept_for_hashing() -> None:
    msg = Message(
        CKY_I,
        CKY_R,
        ExchangeType.QUICK,
        7,
        (HashPayload(bytes(32)), PHASE2_SA, NoncePayload(b"n" * 16)),
    )
    decoded = decode_message(encode_message(msg))
    assert decoded.raw_after(0) == encode_payloads(msg.payloads[1:])[1]
    assert decoded.raw_body(1) == encode_body(PHASE2_SA)
    assert msg.raw_after(0) == decoded.raw_after(0)


def test_an_unknown_payload_type_is_kept() -> None:
    first, chain = encode_payloads([UnknownPayload(200, False, b"xyz"), HashPayload(b"h")])
    payloads, _ = decode_payloads(first, chain)
    assert payloads == (UnknownPayload(200, False, b"xyz"), HashPayload(b"h"))


def test_sealed_types_are_left_as_ciphertext() -> None:
    first, chain = encode_payloads(
        [KePayload(b"k"), SealedPayload(PayloadType.NONCE, b"\x01" * 512)]
    )
    payloads, _ = decode_payloads(first, chain, sealed={PayloadType.NONCE})
    assert payloads[1] == SealedPayload(PayloadType.NONCE, b"\x01" * 512)
    with pytest.raises(ParseError, match=r"nonce\.length"):
        decode_payloads(first, chain)


def test_the_draft_nat_payload_numbers_decode_as_nat_payloads() -> None:
    assert decode_body(PayloadType.NAT_D_DRAFT, b"\x01" * 20) == NatDPayload(b"\x01" * 20)


def test_ikev2_header_is_refused_with_the_version() -> None:
    data = bytearray(
        encode_message(Message(CKY_I, CKY_R, ExchangeType.MAIN, 0, (HashPayload(b"x"),)))
    )
    data[17] = 0x20
    with pytest.raises(InvalidMajorVersion):
        decode_header(bytes(data))


@pytest.mark.parametrize(
    ("body", "ptype", "field"),
    [
        (bytes.fromhex("00000002 00000001"), PayloadType.SA, "sa.doi"),
        (bytes.fromhex("00000001 00000002"), PayloadType.SA, "sa.situation"),
        (bytes.fromhex("00000001 00000001 00000008 01090001"), PayloadType.SA, "proposal.protocol"),
        (bytes.fromhex("00000001 00000001 00000008 01030001"), PayloadType.SA, "proposal.spi_size"),
        (b"\x01" * 7, PayloadType.NONCE, "nonce.length"),
        (bytes.fromhex("00000001 0310 0001 01020304"), PayloadType.DELETE, "delete.spi_size"),
        (bytes.fromhex("00000001 0304 0002 01020304"), PayloadType.DELETE, "delete.spi_count"),
        (bytes.fromhex("00000001 0303 000e"), PayloadType.NOTIFICATION, "notification.spi_size"),
        (bytes.fromhex("02000000 0102"), PayloadType.NAT_OA, "nat_oa.type"),
        (b"", PayloadType.HASH, "hash.data"),
    ],
)
def test_malformed_bodies_name_the_field(body: bytes, ptype: int, field: str) -> None:
    with pytest.raises(ParseError) as info:
        decode_body(ptype, body)
    assert info.value.field.startswith(field)


def test_proposal_numbers_must_not_decrease() -> None:
    sa = SaPayload((PHASE2_SA.proposals[2], PHASE2_SA.proposals[0]))
    with pytest.raises(LocalProtocolError):
        encode_body(sa)


def test_an_encrypted_message_is_not_decoded_in_clear() -> None:
    data = bytearray(
        encode_message(Message(CKY_I, CKY_R, ExchangeType.MAIN, 0, (HashPayload(b"x"),)))
    )
    data[19] |= Flag.ENCRYPTION
    with pytest.raises(ParseError, match=r"header\.flags"):
        decode_message(bytes(data))


def test_trailing_bytes_are_refused_in_clear_and_padding_when_decrypted() -> None:
    first, chain = encode_payloads([HashPayload(b"x")])
    with pytest.raises(ParseError):
        decode_payloads(first, chain + b"\x00\x00")
    payloads, _ = decode_payloads(first, chain + b"\x00\x00", padded=True)
    assert payloads == (HashPayload(b"x"),)
    assert HEADER_LEN == 28
