"""IKEv2 header and payload chaining, checked against messages from a real implementation.

The captured datagrams are the IKE_SA_INIT request and response and an encrypted
INFORMATIONAL request of Wireshark's test capture
``test/captures/ikev2-decrypt-aes128ccm12.pcap`` (as embedded in scapy's
``test/contrib/ikev2.uts``), with the Ethernet, IPv4 and UDP headers removed.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from kipsec_sidecar.core.errors import LocalProtocolError, ParseError
from kipsec_sidecar.core.ike.constants import (
    DhGroup,
    ExchangeType,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
)
from kipsec_sidecar.core.ike.message import (
    HEADER_LEN,
    InvalidMajorVersion,
    Message,
    UnsupportedCriticalPayload,
    decode_header,
    decode_message,
    decode_payloads,
    encode_message,
    encode_payloads,
)
from kipsec_sidecar.core.ike.payloads import (
    EncryptedPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    Transform,
    UnknownPayload,
    VendorIdPayload,
)
from support.ike_codec_strategies import messages

CAPTURED_SA_INIT_REQUEST = bytes.fromhex(
    "ea684d21597afd3600000000000000002120220800000000000000f822000028"
    "00000024010100030300000c0100000f800e0080030000080200000500000008"
    "04000013280000480013000032c6dffe5c43b0d5811f7eaaa84c9f78bf99b906"
    "9c2b072e0b82f46bf6f66dd45f97ef89ee285fd5df527a44776b529fc9d8a909"
    "d842a6fb59b96a095395617229000024b655462d6f4b66f872ccd7f0f4b48577"
    "32921339cbaa5237edba244f262b68232900001c00004004949c9db5739d75a9"
    "74a49c184618369b34b7f9422900001c000040053e721b46be07d53111425d7f"
    "80d2c6e220c6072e000000100000402f0001000200030004"
)
CAPTURED_SA_INIT_RESPONSE = bytes.fromhex(
    "ea684d21597afd36d9fe2ab22dac23ac2120222000000000000000f022000028"
    "00000024010100030300000c0100000f800e0080030000080200000500000008"
    "0400001328000048001300002c66beadb6ce8535d6218cb401aa5a1eb4035b97"
    "caddaf36374a979c0446b8800506bf9d6f950952326bf3011913da93bb8e40f8"
    "15376be1a06801c0a63e3b54290000249e5d267379e681e7d38d81c710d38340"
    "1de7e3607b926d90a9958adcb52831aa2900001c000040047a0785273d592038"
    "29a697550f31cbb94eb72b432900001c00004005c3e58a8cc9933ce0b78f2a50"
    "e8de80134e12ce310000000800004014"
)
CAPTURED_INFORMATIONAL_REQUEST = bytes.fromhex(
    "ea684d21597afd36d9fe2ab22dac23ac2e202508000000020000003d2a000021"
    "cca0b35de5abc51c9987cbf1f5ecff210eb767cdb85179383b964d78e2"
)
SPI_I = bytes.fromhex("ea684d21597afd36")
SPI_R = bytes.fromhex("d9fe2ab22dac23ac")
AES_CCM_12 = 15  # the captured peer proposed ENCR_AES_CCM_12, not in kipsec's enum
CAPTURED_PROPOSAL = Proposal(
    1,
    ProtocolId.IKE,
    b"",
    (
        Transform(TransformType.ENCR, AES_CCM_12, 128),
        Transform(TransformType.PRF, PrfId.HMAC_SHA2_256),
        Transform(TransformType.DH, DhGroup.ECP_256),
    ),
)


def test_captured_sa_init_request_header() -> None:
    header = decode_header(CAPTURED_SA_INIT_REQUEST)
    assert header.spi_i == SPI_I
    assert header.spi_r == bytes(8)
    assert header.next_payload == PayloadType.SA
    assert header.exchange == ExchangeType.IKE_SA_INIT
    assert header.is_initiator and not header.is_response
    assert header.message_id == 0
    assert header.length == len(CAPTURED_SA_INIT_REQUEST) == 248


def test_captured_sa_init_request_payloads() -> None:
    msg = decode_message(CAPTURED_SA_INIT_REQUEST)
    assert msg.exchange == ExchangeType.IKE_SA_INIT
    assert msg.is_initiator and not msg.is_response
    assert msg.get(SaPayload) == SaPayload((CAPTURED_PROPOSAL,))
    ke = msg.get(KePayload)
    assert ke is not None and ke.group == DhGroup.ECP_256 and len(ke.data) == 64
    nonce = msg.get(NoncePayload)
    assert nonce is not None and nonce.data[:4] == bytes.fromhex("b655462d")
    assert len(msg.all(NotifyPayload)) == 3
    nat_src = msg.notify(NotifyType.NAT_DETECTION_SOURCE_IP)
    assert nat_src is not None and nat_src.data == bytes.fromhex(
        "949c9db5739d75a974a49c184618369b34b7f942"
    )
    sig_hash = msg.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS)
    assert sig_hash is not None and sig_hash.data == bytes.fromhex("0001000200030004")
    assert msg.notify(NotifyType.COOKIE) is None


def test_captured_sa_init_response_payloads() -> None:
    msg = decode_message(CAPTURED_SA_INIT_RESPONSE)
    assert (msg.spi_i, msg.spi_r) == (SPI_I, SPI_R)
    assert msg.is_response and not msg.is_initiator
    assert msg.get(SaPayload) == SaPayload((CAPTURED_PROPOSAL,))
    multiple_auth_supported = 16404
    assert msg.notify(multiple_auth_supported) == NotifyPayload(multiple_auth_supported)


@pytest.mark.parametrize("wire", [CAPTURED_SA_INIT_REQUEST, CAPTURED_SA_INIT_RESPONSE])
def test_captured_messages_reencode_byte_for_byte(wire: bytes) -> None:
    assert encode_message(decode_message(wire)) == wire


def test_captured_encrypted_message_leaves_the_sk_payload_sealed() -> None:
    msg = decode_message(CAPTURED_INFORMATIONAL_REQUEST)
    assert msg.exchange == ExchangeType.INFORMATIONAL and msg.message_id == 2
    assert msg.payloads == (
        EncryptedPayload(PayloadType.DELETE, CAPTURED_INFORMATIONAL_REQUEST[HEADER_LEN + 4 :]),
    )


@settings(max_examples=300, deadline=None)
@given(msg=messages())
def test_messages_round_trip(msg: Message) -> None:
    wire = encode_message(msg)
    assert decode_message(wire) == msg
    assert encode_message(decode_message(wire)) == wire


# --- header checks


def test_header_shorter_than_28_bytes_is_rejected() -> None:
    with pytest.raises(ParseError, match="header"):
        decode_header(CAPTURED_SA_INIT_REQUEST[:27])


@pytest.mark.parametrize(
    ("cut", "field"),
    [
        (0, "header.spi_i"),
        (12, "header.spi_r"),
        (16, "header.next_payload"),
        (17, "header.version"),
        (18, "header.exchange"),
        (19, "header.flags"),
        (22, "header.message_id"),
        (27, "header.length"),
    ],
)
def test_a_short_header_names_the_first_missing_field(cut: int, field: str) -> None:
    """A whole header is read in one unpack; a short one still says what is missing."""
    with pytest.raises(ParseError) as info:
        decode_header(CAPTURED_SA_INIT_REQUEST[:cut])
    assert info.value.field == field


def test_header_flags_give_the_direction_and_the_side() -> None:
    request, response = (
        decode_header(CAPTURED_SA_INIT_REQUEST),
        decode_header(CAPTURED_SA_INIT_RESPONSE),
    )
    assert (request.is_response, request.is_initiator) == (False, True)
    assert (response.is_response, response.is_initiator) == (True, False)
    assert decode_message(CAPTURED_SA_INIT_RESPONSE).flags == response.flags == 0x20


@pytest.mark.parametrize(
    ("left", "field"),
    [(1, "payload[1].critical"), (2, "payload[1].length"), (3, "payload[1].length")],
)
def test_a_short_generic_payload_header_names_the_missing_field(left: int, field: str) -> None:
    _, body = encode_payloads([NoncePayload(b"n" * 16)])
    chain = bytes([PayloadType.NONCE]) + body[1:] + bytes(left)  # a second payload, cut
    with pytest.raises(ParseError) as info:
        decode_payloads(PayloadType.NONCE, chain)
    assert info.value.field == field


def test_length_field_must_equal_the_datagram_length() -> None:
    with pytest.raises(ParseError, match=r"header\.length"):
        decode_header(CAPTURED_SA_INIT_REQUEST + b"\x00")


def test_major_version_other_than_2_is_reported_as_such() -> None:
    wire = bytearray(CAPTURED_SA_INIT_REQUEST)
    wire[17] = 0x30
    with pytest.raises(InvalidMajorVersion) as info:
        decode_header(bytes(wire))
    assert info.value.major == 3


def test_higher_minor_version_is_accepted() -> None:
    wire = bytearray(CAPTURED_SA_INIT_REQUEST)
    wire[17] = 0x21
    assert decode_header(bytes(wire)).exchange == ExchangeType.IKE_SA_INIT


def test_zero_initiator_spi_is_rejected() -> None:
    with pytest.raises(ParseError, match="spi_i"):
        decode_header(bytes(8) + CAPTURED_SA_INIT_REQUEST[8:])


def test_message_refuses_spis_that_are_not_eight_bytes() -> None:
    with pytest.raises(LocalProtocolError):
        Message(b"\x01" * 4, bytes(8), 34, 0, False, True, ())


# --- chaining rules


def _msg(*payloads: Payload) -> Message:
    return Message(SPI_I, SPI_R, ExchangeType.INFORMATIONAL, 1, False, True, payloads)


def test_unknown_non_critical_payload_is_kept() -> None:
    first, wire = encode_payloads([UnknownPayload(200, False, b"x"), VendorIdPayload(b"v")])
    assert decode_payloads(first, wire) == (
        UnknownPayload(200, False, b"x"),
        VendorIdPayload(b"v"),
    )


def test_unknown_critical_payload_raises_with_its_type() -> None:
    first, wire = encode_payloads([VendorIdPayload(b"v"), UnknownPayload(200, True, b"x")])
    with pytest.raises(UnsupportedCriticalPayload) as info:
        decode_payloads(first, wire)
    assert info.value.payload_type == 200


def test_critical_bit_on_a_known_payload_is_ignored() -> None:
    first, wire = encode_payloads([VendorIdPayload(b"v")])
    assert decode_payloads(first, wire[:1] + b"\x80" + wire[2:]) == (VendorIdPayload(b"v"),)


def test_payload_length_below_4_is_rejected() -> None:
    with pytest.raises(ParseError, match="length"):
        decode_payloads(PayloadType.VENDOR_ID, b"\x00\x00\x00\x03")


def test_payload_length_beyond_the_message_is_rejected() -> None:
    with pytest.raises(ParseError, match="length"):
        decode_payloads(PayloadType.VENDOR_ID, b"\x00\x00\x00\x09abc")


def test_bytes_after_the_last_payload_are_rejected() -> None:
    first, wire = encode_payloads([VendorIdPayload(b"v")])
    with pytest.raises(ParseError, match="after the last payload"):
        decode_payloads(first, wire + b"\x00")


def test_next_payload_pointing_past_the_end_is_rejected() -> None:
    _, wire = encode_payloads([VendorIdPayload(b"v")])
    with pytest.raises(ParseError):
        decode_payloads(PayloadType.VENDOR_ID, bytes((PayloadType.NONCE,)) + wire[1:])


def test_sk_payload_must_be_the_last_payload_on_decode() -> None:
    _, sk = encode_payloads([EncryptedPayload(PayloadType.IDi, b"\x00" * 40)])
    _, vid = encode_payloads([VendorIdPayload(b"v")])
    with pytest.raises(ParseError, match="last payload"):
        decode_payloads(PayloadType.SK, sk + vid)


def test_sk_payload_must_be_the_last_payload_on_encode() -> None:
    with pytest.raises(LocalProtocolError):
        encode_payloads([EncryptedPayload(PayloadType.IDi, b""), VendorIdPayload(b"v")])


def test_sk_next_payload_field_carries_the_first_inner_type() -> None:
    first, wire = encode_payloads([EncryptedPayload(PayloadType.IDi, b"abc")])
    assert first == PayloadType.SK
    assert wire == bytes((PayloadType.IDi, 0, 0, 7)) + b"abc"


def test_skf_fragment_number_above_the_total_is_rejected() -> None:
    body = b"\x00\x03\x00\x02" + b"data"
    with pytest.raises(ParseError, match="fragment_number"):
        decode_payloads(PayloadType.SKF, bytes((0, 0, 0, 4 + len(body))) + body)


def test_message_accessors_find_payloads_by_class_and_notify_type() -> None:
    cookie = NotifyPayload(NotifyType.COOKIE, data=b"c" * 16)
    msg = _msg(VendorIdPayload(b"1"), cookie, VendorIdPayload(b"2"))
    assert msg.get(VendorIdPayload) == VendorIdPayload(b"1")
    assert msg.all(VendorIdPayload) == [VendorIdPayload(b"1"), VendorIdPayload(b"2")]
    assert msg.get(KePayload) is None
    assert msg.notify(NotifyType.COOKIE) is cookie


def test_encoding_is_deterministic() -> None:
    msg = _msg(SaPayload((CAPTURED_PROPOSAL,)), NoncePayload(b"n" * 32))
    assert encode_message(msg) == encode_message(msg)
