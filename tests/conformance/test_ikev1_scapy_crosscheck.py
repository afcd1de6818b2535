"""The ISAKMP codec against scapy's independent one (scapy.layers.isakmp).

scapy decodes what kipsec encodes (header, SA, proposals, transforms and their
attributes, KE, ID, Nonce, HASH, SIG, Notification, Delete, Vendor ID), and kipsec
decodes what scapy builds. scapy names phase 1 attributes only (it reads every
transform with the phase 1 table), so quick mode transforms are compared by number.
"""

from __future__ import annotations

import pytest
from scapy.compat import raw
from scapy.layers import isakmp as sc

from kipsec_sidecar.core.ike.constants import DhGroup, EncrId, IntegId, PrfId
from kipsec_sidecar.core.ike.payloads import VendorIdPayload
from kipsec_sidecar.core.ikev1.constants import (
    AuthMethod,
    EncapsulationMode,
    ExchangeType,
    Flag,
    HashAlgorithm,
    IdType,
    NotifyType,
    ProtocolId,
)
from kipsec_sidecar.core.ikev1.message import Message, decode_message, encode_message
from kipsec_sidecar.core.ikev1.payloads import (
    DeletePayload,
    HashPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotificationPayload,
    Proposal,
    SaPayload,
    SigPayload,
)
from kipsec_sidecar.core.ikev1.policy import Phase1Suite, Phase2Suite, phase1_suite

CKY_I = bytes.fromhex("c0c1c2c3c4c5c6c7")
CKY_R = bytes.fromhex("d0d1d2d3d4d5d6d7")
SUITE = Phase1Suite(
    EncrId.AES_CBC, 256, HashAlgorithm.SHA2_256, PrfId.HMAC_SHA2_256,
    AuthMethod.PRE_SHARED_KEY, DhGroup.MODP_2048, 28800, None,
)  # fmt: skip
SCAPY_SUITE = [
    ("Encryption", "AES-CBC"),
    ("KeyLength", 256),
    ("Hash", "SHA2-256"),
    ("Authentication", "PSK"),
    ("GroupDesc", "2048MODPgr"),
    ("LifeType", "Seconds"),
    ("LifeDuration", 28800),
]


def test_scapy_decodes_a_kipsec_main_mode_sa_message() -> None:
    sa = SaPayload((Proposal(1, ProtocolId.ISAKMP, b"", (SUITE.to_transform(1),)),))
    msg = Message(CKY_I, bytes(8), ExchangeType.MAIN, 0, (sa, VendorIdPayload(b"kipsec")))
    pkt = sc.ISAKMP(encode_message(msg))
    assert (pkt.init_cookie, pkt.resp_cookie, pkt.version, pkt.exch_type) == (
        CKY_I,
        bytes(8),
        0x10,
        2,
    )
    assert pkt.length == len(raw(pkt))
    sa_layer = pkt[sc.ISAKMP_payload_SA]
    assert (sa_layer.doi, sa_layer.situation) == (1, 1)
    proposal = sa_layer.prop
    assert (proposal.proposal, proposal.proto, proposal.SPIsize, proposal.trans_nb) == (
        1,
        1,
        0,
        1,
    )
    transform = proposal.trans
    assert (transform.transform_count, transform.transform_id) == (1, 1)
    assert transform.transforms == SCAPY_SUITE
    assert pkt[sc.ISAKMP_payload_VendorID].VendorID == b"kipsec"


def test_scapy_decodes_a_kipsec_quick_mode_proposal_by_number() -> None:
    esp = Phase2Suite(
        ProtocolId.ESP, EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, EncapsulationMode.TUNNEL
    )
    sa = SaPayload((Proposal(1, ProtocolId.ESP, b"\xca\xfe\x00\x01", (esp.to_transform(1),)),))
    msg = Message(CKY_I, CKY_R, ExchangeType.QUICK, 0x1234, (HashPayload(b"\x01" * 32), sa))
    pkt = sc.ISAKMP(encode_message(msg))
    assert (pkt.exch_type, pkt.id) == (32, 0x1234)
    proposal = pkt[sc.ISAKMP_payload_Proposal]
    assert (proposal.proto, proposal.SPIsize, proposal.SPI) == (3, 4, b"\xca\xfe\x00\x01")
    assert proposal.trans.transform_id == EncrId.AES_CBC
    assert len(proposal.trans.transforms) == 3  # mode, auth algorithm, key length


def test_scapy_decodes_the_other_payloads() -> None:
    payloads = (
        KePayload(b"\x11" * 256),
        NoncePayload(b"\x22" * 32),
        IdPayload(IdType.IPV4_ADDR, bytes([192, 0, 2, 1]), 17, 500),
        HashPayload(b"\x33" * 32),
        SigPayload(b"\x44" * 64),
        NotificationPayload(NotifyType.INITIAL_CONTACT, ProtocolId.ISAKMP, CKY_I + CKY_R),
        DeletePayload(ProtocolId.ESP, (b"\x01\x02\x03\x04",)),
    )
    pkt = sc.ISAKMP(encode_message(Message(CKY_I, CKY_R, ExchangeType.INFORMATIONAL, 9, payloads)))
    assert pkt[sc.ISAKMP_payload_KE].ke == b"\x11" * 256
    assert pkt[sc.ISAKMP_payload_Nonce].nonce == b"\x22" * 32
    ident = pkt[sc.ISAKMP_payload_ID]
    assert (ident.IDtype, ident.ProtoID, ident.Port, ident.IdentData) == (1, 17, 500, "192.0.2.1")
    assert pkt[sc.ISAKMP_payload_Hash].hash == b"\x33" * 32
    assert pkt[sc.ISAKMP_payload_SIG].sig == b"\x44" * 64
    notify = pkt[sc.ISAKMP_payload_Notify]
    assert (notify.doi, notify.proto, notify.notify_msg_type, notify.SPI) == (
        1,
        1,
        NotifyType.INITIAL_CONTACT,
        CKY_I + CKY_R,
    )
    delete = pkt[sc.ISAKMP_payload_Delete]
    assert (delete.proto, delete.SPIsize, delete.SPIcount) == (3, 4, 1)


@pytest.mark.parametrize("lifetime", [28800, 86400], ids=["tv-fits", "tlv-3-bytes"])
def test_kipsec_decodes_a_scapy_main_mode_message(lifetime: int) -> None:
    suite = [*SCAPY_SUITE[:-1], ("LifeDuration", lifetime)]
    pkt = (
        sc.ISAKMP(init_cookie=CKY_I, resp_cookie=bytes(8), exch_type=2, flags=0)
        / sc.ISAKMP_payload_SA(
            prop=sc.ISAKMP_payload_Proposal(
                trans_nb=1, trans=sc.ISAKMP_payload_Transform(transform_count=1, transforms=suite)
            )
        )
        / sc.ISAKMP_payload_KE(ke=b"\x55" * 256)
        / sc.ISAKMP_payload_Nonce(nonce=b"\x66" * 24)
        / sc.ISAKMP_payload_ID(IDtype=2, IdentData=b"gw.example.org")
        / sc.ISAKMP_payload_Hash(hash=b"\x77" * 32)
    )
    msg = decode_message(raw(pkt))
    assert (msg.cookie_i, msg.exchange, msg.flags & Flag.ENCRYPTION) == (CKY_I, 2, 0)
    sa = msg.get(SaPayload)
    assert sa is not None and len(sa.proposals) == 1
    transform = sa.proposals[0].transforms[0]
    expected = Phase1Suite(
        SUITE.encr_id, SUITE.key_bits, SUITE.hash_alg, SUITE.prf_id,
        SUITE.auth_method, SUITE.dh_group, lifetime, None,
    )  # fmt: skip
    assert phase1_suite(transform) == expected
    assert msg.get(KePayload) == KePayload(b"\x55" * 256)
    assert msg.get(NoncePayload) == NoncePayload(b"\x66" * 24)
    assert msg.get(IdPayload) == IdPayload(IdType.FQDN, b"gw.example.org")
    assert msg.get(HashPayload) == HashPayload(b"\x77" * 32)
    # the bytes kept for HASH_I are exactly scapy's SA body
    sa_bytes = raw(pkt[sc.ISAKMP_payload_SA])
    assert msg.raw_body(0) == sa_bytes[4 : int.from_bytes(sa_bytes[2:4], "big")]


def test_kipsec_decodes_scapy_notify_and_delete() -> None:
    pkt = (
        sc.ISAKMP(init_cookie=CKY_I, resp_cookie=CKY_R, exch_type=5, id=77)
        / sc.ISAKMP_payload_Notify(
            doi=1,
            proto=1,
            notify_msg_type=NotifyType.R_U_THERE,
            SPI=CKY_I + CKY_R,
            notify_data=(5).to_bytes(4, "big"),
        )
        / sc.ISAKMP_payload_Delete(doi=1, proto=3, SPIs=[b"\xaa\xbb\xcc\xdd"])
    )
    msg = decode_message(raw(pkt))
    assert msg.message_id == 77
    assert msg.notification(NotifyType.R_U_THERE) == NotificationPayload(
        NotifyType.R_U_THERE, ProtocolId.ISAKMP, CKY_I + CKY_R, (5).to_bytes(4, "big")
    )
    assert msg.get(DeletePayload) == DeletePayload(ProtocolId.ESP, (b"\xaa\xbb\xcc\xdd",))
