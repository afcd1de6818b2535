"""The wire and key layer composed by hand the way the exchanges use it: a PSK main
mode (messages 3-6) and a quick mode with PFS between two in-memory sides. Both sides
derive the same keys, open each other's encrypted messages with the chained IVs, and
check each other's HASH payloads; a wrong PSK shows up as a failed HASH_I."""

from __future__ import annotations

import hmac
import os

from kipsec_sidecar.core.errors import ParseError
from kipsec_sidecar.core.ike import dh
from kipsec_sidecar.core.ike.constants import DhGroup, EncrId, IntegId, PrfId
from kipsec_sidecar.core.ikev1 import keys
from kipsec_sidecar.core.ikev1.constants import (
    AuthMethod,
    EncapsulationMode,
    ExchangeType,
    HashAlgorithm,
    IdType,
    ProtocolId,
)
from kipsec_sidecar.core.ikev1.encryption import (
    decrypt_message,
    encrypt_message,
    phase1_iv,
    phase2_iv,
)
from kipsec_sidecar.core.ikev1.identity import selector_id
from kipsec_sidecar.core.ikev1.message import Message, decode_message, encode_message
from kipsec_sidecar.core.ikev1.payloads import (
    HashPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    Proposal,
    SaPayload,
)
from kipsec_sidecar.core.ikev1.policy import Phase1Suite, Phase2Suite, phase1_suite
from kipsec_sidecar.core.traffic_selectors import TrafficSelector

PRF = PrfId.HMAC_SHA2_256
SUITE = Phase1Suite(
    EncrId.AES_CBC, 256, HashAlgorithm.SHA2_256, PRF, AuthMethod.PRE_SHARED_KEY, DhGroup.ECP_256
)
CKY_I, CKY_R = os.urandom(8), os.urandom(8)


def side_keys(psk: bytes, ni: bytes, nr: bytes, g_xy: bytes) -> keys.Phase1Keys:
    skeyid = keys.skeyid_psk(PRF, psk, ni, nr)
    return keys.derive_phase1_keys(PRF, skeyid, g_xy, CKY_I, CKY_R, SUITE.encryption_key_len)


def run_main_mode(responder_psk: bytes) -> tuple[bool, keys.Phase1Keys, keys.Phase1Keys, bytes]:
    mm1 = Message(
        CKY_I,
        bytes(8),
        ExchangeType.MAIN,
        0,
        (SaPayload((Proposal(1, ProtocolId.ISAKMP, b"", (SUITE.to_transform(),)),)),),
    )
    received_mm1 = decode_message(encode_message(mm1))
    sa_i_body = received_mm1.raw_body(0)
    offer = received_mm1.get(SaPayload)
    assert offer is not None
    chosen = phase1_suite(offer.proposals[0].transforms[0])
    ke_i, ke_r = dh.generate(chosen.dh_group, os.urandom), dh.generate(chosen.dh_group, os.urandom)
    ni, nr = os.urandom(32), os.urandom(32)
    g_xy = ke_i.shared_secret(ke_r.public_bytes)
    assert g_xy == ke_r.shared_secret(ke_i.public_bytes)
    init = side_keys(b"the shared secret", ni, nr, g_xy)
    resp = side_keys(responder_psk, ni, nr, g_xy)
    iv_i = iv_r = phase1_iv(PRF, ke_i.public_bytes, ke_r.public_bytes)
    # MM5: initiator -> responder, encrypted with the initial IV
    id_i = IdPayload(IdType.FQDN, b"initiator.example")
    h_i = keys.hash_i(
        PRF, init.skeyid, ke_i.public_bytes, ke_r.public_bytes, CKY_I, CKY_R, sa_i_body, id_i.body()
    )
    mm5, iv_i = encrypt_message(
        Message(CKY_I, CKY_R, ExchangeType.MAIN, 0, (id_i, HashPayload(h_i))),
        init.encryption_key,
        iv_i,
    )
    try:
        opened, iv_r_next = decrypt_message(mm5, resp.encryption_key, iv_r)
    except ParseError:  # the wrong key turns the payload chain into garbage
        return False, init, resp, iv_i
    got_id = opened.get(IdPayload)
    got_hash = opened.get(HashPayload)
    assert got_id is not None and got_hash is not None
    expected = keys.hash_i(
        PRF,
        resp.skeyid,
        ke_i.public_bytes,
        ke_r.public_bytes,
        CKY_I,
        CKY_R,
        sa_i_body,
        opened.raw_body(0),
    )
    if not hmac.compare_digest(expected, got_hash.data):
        return False, init, resp, iv_i
    iv_r = iv_r_next
    # MM6: responder -> initiator, chained from MM5's last block
    id_r = IdPayload(IdType.FQDN, b"responder.example")
    h_r = keys.hash_r(
        PRF, resp.skeyid, ke_i.public_bytes, ke_r.public_bytes, CKY_I, CKY_R, sa_i_body, id_r.body()
    )
    mm6, iv_r = encrypt_message(
        Message(CKY_I, CKY_R, ExchangeType.MAIN, 0, (id_r, HashPayload(h_r))),
        resp.encryption_key,
        iv_r,
    )
    opened6, iv_i = decrypt_message(mm6, init.encryption_key, iv_i)
    assert iv_i == iv_r  # both sides now hold the last phase 1 IV
    check = keys.hash_r(
        PRF,
        init.skeyid,
        ke_i.public_bytes,
        ke_r.public_bytes,
        CKY_I,
        CKY_R,
        sa_i_body,
        opened6.raw_body(0),
    )
    assert opened6.get(HashPayload) == HashPayload(check)
    return True, init, resp, iv_i


def test_psk_main_mode_then_quick_mode_with_pfs() -> None:
    ok, init, resp, last_iv = run_main_mode(b"the shared secret")
    assert ok
    assert (init.skeyid_d, init.skeyid_a, init.encryption_key) == (
        resp.skeyid_d,
        resp.skeyid_a,
        resp.encryption_key,
    )
    mid = 0x5A5A0001
    esp = Phase2Suite(
        ProtocolId.ESP,
        EncrId.AES_CBC,
        128,
        IntegId.HMAC_SHA2_256_128,
        EncapsulationMode.TUNNEL,
        DhGroup.ECP_256,
    )
    spi_i, spi_r = os.urandom(4), os.urandom(4)
    ni, nr = os.urandom(16), os.urandom(16)
    qke_i, qke_r = (
        dh.generate(DhGroup.ECP_256, os.urandom),
        dh.generate(DhGroup.ECP_256, os.urandom),
    )
    body = (
        SaPayload((Proposal(1, ProtocolId.ESP, spi_i, (esp.to_transform(),)),)),
        NoncePayload(ni),
        KePayload(qke_i.public_bytes),
        selector_id(TrafficSelector.from_network("10.1.0.0/16")),
        selector_id(TrafficSelector.from_network("10.2.0.0/16")),
    )
    draft = Message(CKY_I, CKY_R, ExchangeType.QUICK, mid, (HashPayload(bytes(32)), *body))
    h1 = keys.quick_mode_hash1(PRF, init.skeyid_a, mid, draft.raw_after(0))
    qm1, _ = encrypt_message(
        Message(CKY_I, CKY_R, ExchangeType.QUICK, mid, (HashPayload(h1), *body)),
        init.encryption_key,
        phase2_iv(PRF, last_iv, mid),
    )
    opened, _ = decrypt_message(qm1, resp.encryption_key, phase2_iv(PRF, last_iv, mid))
    assert opened.get(HashPayload) == HashPayload(
        keys.quick_mode_hash1(PRF, resp.skeyid_a, mid, opened.raw_after(0))
    )
    g_qm = qke_i.shared_secret(qke_r.public_bytes)
    lens = esp.keymat_lens
    mine = keys.quick_mode_child_keys(
        PRF, init.skeyid_d, ProtocolId.ESP, spi_i, spi_r, ni, nr, *lens, g_qm
    )
    theirs = keys.quick_mode_child_keys(
        PRF,
        resp.skeyid_d,
        ProtocolId.ESP,
        spi_i,
        spi_r,
        ni,
        nr,
        *lens,
        qke_r.shared_secret(qke_i.public_bytes),
    )
    assert mine == theirs and len(mine.encr_i) == 16 and len(mine.integ_i) == 32
    assert mine.encr_i != mine.encr_r  # each direction has its own SPI, so its own keys


def test_a_wrong_psk_fails_at_mm5() -> None:
    ok, init, resp, _ = run_main_mode(b"another secret")
    assert not ok
    assert init.skeyid != resp.skeyid
