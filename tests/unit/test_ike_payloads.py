"""IKEv2 payload bodies (RFC 7296 section 3): round trips and the rules decode enforces."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kipsec_sidecar.core.errors import LocalProtocolError, ParseError
from kipsec_sidecar.core.ike.constants import (
    EncrId,
    IdType,
    PayloadType,
    ProtocolId,
    TransformType,
)
from kipsec_sidecar.core.ike.message import decode_payloads, encode_payloads
from kipsec_sidecar.core.ike.payloads import (
    PAYLOAD_TYPE,
    CertReqPayload,
    DeletePayload,
    IdiPayload,
    IdrPayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    Transform,
    TsiPayload,
    decode_body,
    encode_body,
)
from kipsec_sidecar.core.traffic_selectors import TrafficSelector
from support.ike_codec_strategies import PAYLOAD_STRATEGIES


@pytest.mark.parametrize("name", sorted(PAYLOAD_STRATEGIES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_payload_round_trips_through_a_chain(name: str, data: st.DataObject) -> None:
    payload: Payload = data.draw(PAYLOAD_STRATEGIES[name])
    first, wire = encode_payloads([payload])
    assert decode_payloads(first, wire) == (payload,)
    assert encode_payloads(decode_payloads(first, wire)) == (first, wire)


def test_payload_type_table_covers_every_class_of_the_payload_union() -> None:
    assert PAYLOAD_TYPE[SaPayload] == PayloadType.SA
    assert len(set(PAYLOAD_TYPE.values())) == len(PAYLOAD_TYPE)


# --- SA: proposals and transforms

# AES-GCM-16/256, PRF-SHA256, group 19 in one IKE proposal, laid out by hand from
# RFC 7296 figures 6 and 8.
SA_BODY = bytes.fromhex(
    "00000024"  # last proposal, length 36
    "01010003"  # proposal 1, IKE, SPI size 0, 3 transforms
    "0300000c" "01000014" "800e0100"  # more, len 12, ENCR 20, Key Length 256 (TV)
    "03000008" "02000005"  # more, len 8, PRF 5
    "00000008" "04000013"  # last, len 8, DH 19
)  # fmt: skip
SA = SaPayload(
    (
        Proposal(
            1,
            ProtocolId.IKE,
            b"",
            (
                Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
                Transform(TransformType.PRF, 5),
                Transform(TransformType.DH, 19),
            ),
        ),
    )
)


def test_sa_body_decodes_to_its_proposal() -> None:
    assert decode_body(PayloadType.SA, SA_BODY) == SA


def test_sa_body_encodes_to_the_rfc_layout() -> None:
    assert encode_body(SA) == SA_BODY


def _with(body: bytes, offset: int, value: int) -> bytes:
    return body[:offset] + bytes((value,)) + body[offset + 1 :]


def test_proposal_marker_other_than_0_or_2_is_rejected() -> None:
    with pytest.raises(ParseError, match=r"proposal\.last_substruc"):
        decode_body(PayloadType.SA, _with(SA_BODY, 0, 3))


def test_proposal_marker_saying_more_with_nothing_after_is_rejected() -> None:
    with pytest.raises(ParseError):
        decode_body(PayloadType.SA, _with(SA_BODY, 0, 2))


def test_transform_marker_other_than_0_or_3_is_rejected() -> None:
    with pytest.raises(ParseError, match=r"transform\.last_substruc"):
        decode_body(PayloadType.SA, _with(SA_BODY, 8, 2))


def test_last_transform_marker_before_the_count_is_reached_is_rejected() -> None:
    with pytest.raises(ParseError, match="proposal"):
        decode_body(PayloadType.SA, _with(SA_BODY, 20, 0))


def test_transform_count_larger_than_the_transforms_is_rejected() -> None:
    with pytest.raises(ParseError):
        decode_body(PayloadType.SA, _with(SA_BODY, 7, 4))


def test_proposal_numbers_must_be_consecutive() -> None:
    two = SaPayload((SA.proposals[0], Proposal(2, ProtocolId.IKE, b"", ())))
    wire = bytearray(encode_body(two))
    wire[36 + 4] = 3  # the second proposal starts after the first one's 36 bytes
    with pytest.raises(ParseError, match=r"proposal\.number"):
        decode_body(PayloadType.SA, bytes(wire))


def test_proposal_number_zero_is_rejected() -> None:
    with pytest.raises(ParseError, match=r"proposal\.number"):
        decode_body(PayloadType.SA, _with(SA_BODY, 4, 0))


def test_responder_single_proposal_keeps_its_original_number() -> None:
    chosen = SaPayload((Proposal(3, ProtocolId.ESP, b"\x01\x02\x03\x04", ()),))
    assert decode_body(PayloadType.SA, encode_body(chosen)) == chosen


@pytest.mark.parametrize(
    ("protocol", "spi_size"),
    [(ProtocolId.IKE, 4), (ProtocolId.ESP, 0), (ProtocolId.ESP, 8), (ProtocolId.AH, 0), (9, 0)],
)
def test_proposal_spi_size_must_fit_its_protocol(protocol: int, spi_size: int) -> None:
    body = (8 + spi_size).to_bytes(4, "big") + bytes((1, protocol, spi_size, 0)) + bytes(spi_size)
    with pytest.raises(ParseError, match="proposal"):
        decode_body(PayloadType.SA, body)


def test_ike_rekey_proposal_carries_an_eight_byte_spi() -> None:
    rekey = SaPayload((Proposal(1, ProtocolId.IKE, bytes(range(8)), ()),))
    assert decode_body(PayloadType.SA, encode_body(rekey)) == rekey


def test_encoding_a_proposal_with_a_wrong_spi_size_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        encode_body(SaPayload((Proposal(1, ProtocolId.ESP, b"\x00" * 8, ()),)))


def test_encoding_non_consecutive_proposal_numbers_is_a_local_error() -> None:
    p1 = Proposal(1, ProtocolId.ESP, b"\x00" * 4, ())
    p3 = Proposal(3, ProtocolId.ESP, b"\x00" * 4, ())
    with pytest.raises(LocalProtocolError):
        encode_body(SaPayload((p1, p3)))


def test_empty_sa_payload_is_rejected() -> None:
    with pytest.raises(ParseError):
        decode_body(PayloadType.SA, b"")


def test_unknown_transform_attributes_are_kept_through_a_re_encoding() -> None:
    # ENCR 12 with an unknown TV attribute 7, an unknown TLV attribute 9, then Key Length.
    transform = bytes.fromhex("000000160100000c8007000100090002abcd800e0080")
    body = bytes.fromhex("0000001e") + bytes((1, 1, 0, 1)) + transform
    (proposal,) = decode_body(PayloadType.SA, body).proposals  # type: ignore[union-attr]
    (decoded,) = proposal.transforms
    assert (decoded.type, decoded.id, decoded.key_length) == (TransformType.ENCR, 12, 128)
    assert decoded.other_attributes == bytes.fromhex("8007000100090002abcd")
    assert not decoded.understood
    reencoded = encode_body(SaPayload((proposal,)))
    assert decode_body(PayloadType.SA, reencoded) == SaPayload((proposal,))


def test_key_length_in_tlv_format_is_rejected() -> None:
    transform = bytes.fromhex("0000000e0100000c000e00020080")
    body = bytes.fromhex("00000016") + bytes((1, 1, 0, 1)) + transform
    with pytest.raises(ParseError, match="key_length"):
        decode_body(PayloadType.SA, body)


def test_key_length_given_twice_is_rejected() -> None:
    transform = bytes.fromhex("000000100100000c800e0080800e0100")
    body = bytes.fromhex("00000018") + bytes((1, 1, 0, 1)) + transform
    with pytest.raises(ParseError, match="key_length"):
        decode_body(PayloadType.SA, body)


# --- ID, Nonce, CERTREQ


def test_id_body_is_the_rest_of_id_payload_that_auth_signs() -> None:
    idi = IdiPayload(IdType.ID_FQDN, b"pod-a.example")
    assert idi.body() == b"\x02\x00\x00\x00pod-a.example"
    assert IdrPayload(IdType.ID_FQDN, b"pod-a.example").body() == idi.body()
    assert encode_body(idi) == idi.body()


@pytest.mark.parametrize("size", [0, 15, 257])
def test_nonce_outside_16_to_256_bytes_is_rejected(size: int) -> None:
    with pytest.raises(ParseError, match="nonce"):
        decode_body(PayloadType.NONCE, bytes(size))


@pytest.mark.parametrize("size", [16, 256])
def test_nonce_of_16_and_256_bytes_is_accepted(size: int) -> None:
    assert decode_body(PayloadType.NONCE, bytes(size)) == NoncePayload(bytes(size))


def test_certreq_with_several_ca_hashes_keeps_them_as_bytes() -> None:
    hashes = bytes(range(20)) + bytes(range(20, 40))
    assert decode_body(PayloadType.CERTREQ, b"\x04" + hashes) == CertReqPayload(4, hashes)


# --- Notify, Delete


def test_notify_about_an_esp_sa_carries_its_four_byte_spi() -> None:
    body = bytes.fromhex("030440090a0b0c0d")  # ESP, SPI size 4, REKEY_SA
    assert decode_body(PayloadType.NOTIFY, body) == NotifyPayload(
        16393, ProtocolId.ESP, b"\x0a\x0b\x0c\x0d"
    )


@pytest.mark.parametrize(("protocol", "spi_size"), [(0, 4), (3, 8), (2, 2), (7, 0)])
def test_notify_spi_size_must_fit_its_protocol(protocol: int, spi_size: int) -> None:
    body = bytes((protocol, spi_size)) + b"\x40\x00" + bytes(spi_size)
    with pytest.raises(ParseError, match="notify"):
        decode_body(PayloadType.NOTIFY, body)


def test_delete_of_the_ike_sa_has_no_spi() -> None:
    assert decode_body(PayloadType.DELETE, b"\x01\x00\x00\x00") == DeletePayload(ProtocolId.IKE, ())


def test_delete_of_esp_sas_lists_four_byte_spis() -> None:
    body = b"\x03\x04\x00\x02" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x02"
    assert decode_body(PayloadType.DELETE, body) == DeletePayload(
        ProtocolId.ESP, (b"\x00\x00\x00\x01", b"\x00\x00\x00\x02")
    )


@pytest.mark.parametrize(
    "body",
    [
        b"\x03\x04\x00\x02" + b"\x00\x00\x00\x01",  # count 2, one SPI
        b"\x03\x04\x00\x01" + b"\x00" * 5,  # trailing byte
        b"\x03\x08\x00\x01" + b"\x00" * 8,  # SPI size 8 for ESP
        b"\x01\x00\x00\x01",  # IKE with a count
        b"\x05\x04\x00\x00",  # unknown protocol
    ],
)
def test_delete_spi_size_and_count_must_agree(body: bytes) -> None:
    with pytest.raises(ParseError, match="delete"):
        decode_body(PayloadType.DELETE, body)


# --- TS


TSI_BODY = bytes.fromhex(
    "02000000"
    "0700" "0010" "0000ffff" "0a000000" "0affffff"  # IPv4 10.0.0.0/8, any protocol
    "0806" "0028" "01bb01bb" + "fd00" + "00" * 14 + "fd00" + "00" * 13 + "ff"  # IPv6, TCP 443
)  # fmt: skip


def test_ts_body_decodes_ipv4_and_ipv6_ranges() -> None:
    assert decode_body(PayloadType.TSi, TSI_BODY) == TsiPayload(
        (
            TrafficSelector.from_network("10.0.0.0/8"),
            TrafficSelector(
                ipaddress.IPv6Address("fd00::"), ipaddress.IPv6Address("fd00::ff"), 6, 443, 443
            ),
        )
    )


def test_unknown_ts_type_is_rejected() -> None:
    with pytest.raises(ParseError, match=r"ts\.type"):
        decode_body(PayloadType.TSi, _with(TSI_BODY, 4, 9))


def test_ts_length_not_matching_its_type_is_rejected() -> None:
    with pytest.raises(ParseError, match=r"ts\.length"):
        decode_body(PayloadType.TSi, _with(TSI_BODY, 7, 0x28))


def test_ts_count_larger_than_the_selectors_is_rejected() -> None:
    with pytest.raises(ParseError):
        decode_body(PayloadType.TSi, _with(TSI_BODY, 0, 3))


def test_ts_with_an_empty_address_range_is_rejected() -> None:
    body = bytes.fromhex("01000000070000100000ffff0a0000020a000001")
    with pytest.raises(ParseError, match=r"ts\.addresses"):
        decode_body(PayloadType.TSi, body)


def test_ts_with_an_empty_port_range_is_rejected() -> None:
    body = bytes.fromhex("0100000007000010ffff00000a0000010a000001")
    with pytest.raises(ParseError, match=r"ts\.ports"):
        decode_body(PayloadType.TSi, body)
