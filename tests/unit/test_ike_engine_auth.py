"""IKE_AUTH through the engine: PSK and certificates, failures, the first child SA."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from kipsec_sidecar.core.ike.config import (
    AuthConfig,
    ChildConfig,
    ChildProposal,
    Encryption,
    Identity,
    IkeConfig,
    IkeProposal,
)
from kipsec_sidecar.core.ike.constants import (
    AuthMethod,
    DhGroup,
    EncrId,
    ExchangeType,
    IntegId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
)
from kipsec_sidecar.core.ike.events import (
    AuthenticationFailedEvent,
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaEstablished,
    NegotiationFailed,
)
from kipsec_sidecar.core.ike.message import decode_header
from kipsec_sidecar.core.ike.payloads import AuthPayload
from kipsec_sidecar.core.ike.sk import unprotect
from kipsec_sidecar.core.traffic_selectors import TrafficSelector
from support.ike_pair import (
    FAST_RETRANSMISSION,
    I2R,
    INITIATOR_ADDR,
    RESPONDER_ADDR,
    IkePair,
    Tap,
    child_config,
    mirrored,
    psk_config,
)
from support.pki import NOW, CertificateAuthority, Issued, KeyKind

EPOCH = NOW.timestamp()


def psk_pair(
    *,
    initiator_child: ChildConfig | None = None,
    responder_child: ChildConfig | None = None,
    **responder: Any,
) -> IkePair:
    ic = initiator_child or child_config()
    rc = responder_child or mirrored(child_config())
    i = psk_config("a.example", "b.example", children=(ic,))
    r = psk_config("b.example", "a.example", children=(rc,), local_addr=RESPONDER_ADDR, **responder)
    return IkePair(i, r)


def cert_config(
    me: str,
    peer: str,
    leaf: Issued,
    anchors: tuple[CertificateAuthority, ...],
    *,
    method: int | None = None,
    rsa_pss: bool = False,
    remote_id: Identity | None = None,
    local_id: Identity | None = None,
    children: tuple[ChildConfig, ...] | None = None,
    **options: Any,
) -> IkeConfig:
    auth = AuthConfig(
        "signature",
        local_id=local_id or Identity.fqdn(me),
        remote_id=remote_id or Identity.fqdn(peer),
        private_key=leaf.key,
        certificates=(leaf.der,),
        trust_anchors=tuple(a.der for a in anchors),
        signature_method=method,
        rsa_pss=rsa_pss,
    )
    options.setdefault("local_addr", INITIATOR_ADDR)
    return IkeConfig(
        auth=auth,
        children=children or (child_config(),),
        retransmission=FAST_RETRANSMISSION,
        wall_clock_epoch=EPOCH,
        **options,
    )


ROOT = CertificateAuthority.root("kipsec engine test root")


def issue(name: str, key_kind: KeyKind = "ec256", slot: int = 2, **kw: Any) -> Issued:
    return ROOT.issue(name, key_kind=key_kind, key_slot=slot, dns=[name], **kw)


def auth_methods(pair: IkePair, captured: list[bytes]) -> int:
    """The AUTH method of the initiator's IKE_AUTH request, opened with the responder's keys."""
    sk_in = pair.responder.current.sk_in
    assert sk_in is not None
    request = unprotect(captured[1], sk_in)
    auth = request.get(AuthPayload)
    assert auth is not None
    return auth.method


def capture() -> tuple[list[bytes], Tap]:
    seen: list[bytes] = []

    def tap(direction: str, index: int, data: bytes) -> list[bytes]:
        if direction == I2R:
            seen.append(data)
        return [data]

    return seen, tap


@pytest.mark.parametrize(
    ("key_kind", "method", "pss", "expected"),
    [
        ("rsa", AuthMethod.DIGITAL_SIGNATURE, True, AuthMethod.DIGITAL_SIGNATURE),
        ("rsa", AuthMethod.DIGITAL_SIGNATURE, False, AuthMethod.DIGITAL_SIGNATURE),
        ("rsa", AuthMethod.RSA_SIGNATURE, False, AuthMethod.RSA_SIGNATURE),
        ("ec256", AuthMethod.ECDSA_SHA256_P256, False, AuthMethod.ECDSA_SHA256_P256),
        ("ec256", None, False, AuthMethod.DIGITAL_SIGNATURE),
        ("ed25519", None, False, AuthMethod.DIGITAL_SIGNATURE),
        ("dsa1024", AuthMethod.DSS_SIGNATURE, False, AuthMethod.DSS_SIGNATURE),
    ],
    ids=["rsa-pss-14", "rsa-pkcs1-14", "rsa-1", "ecdsa-9", "ecdsa-14", "ed25519-14", "dsa-3"],
)
def test_certificate_authentication(
    key_kind: KeyKind, method: int | None, pss: bool, expected: int
) -> None:
    a = issue("a.example", key_kind, slot=10)
    b = issue("b.example", key_kind, slot=11)
    i = cert_config(
        "a.example", "b.example", a, (ROOT,), method=method, rsa_pss=pss, fragmentation=False
    )
    r = cert_config(
        "b.example",
        "a.example",
        b,
        (ROOT,),
        method=method,
        rsa_pss=pss,
        children=(mirrored(child_config()),),
        local_addr=RESPONDER_ADDR,
        fragmentation=False,
    )
    seen, tap = capture()
    pair = IkePair(i, r, tap=tap)
    pair.run(5)
    assert pair.initiator.established and pair.responder.established
    assert pair.i.of(IkeSaEstablished)[0].remote_id == "b.example"
    assert len(pair.i.of(ChildSaEstablished)) == 1
    assert auth_methods(pair, seen) == expected


def cert_pair(
    a: Issued,
    b: Issued,
    *,
    initiator_anchors: tuple[CertificateAuthority, ...] = (ROOT,),
    responder_anchors: tuple[CertificateAuthority, ...] = (ROOT,),
    **kw: Any,
) -> IkePair:
    i = cert_config("a.example", "b.example", a, initiator_anchors, **kw)
    r = cert_config(
        "b.example",
        "a.example",
        b,
        responder_anchors,
        children=(mirrored(child_config()),),
        local_addr=RESPONDER_ADDR,
    )
    return IkePair(i, r)


def assert_rejected_by_responder(pair: IkePair, reason: str) -> None:
    pair.run(5)
    (event,) = pair.r.of(AuthenticationFailedEvent)
    assert event.reason == reason and not event.by_peer
    (told,) = pair.i.of(AuthenticationFailedEvent)
    assert told.by_peer
    assert pair.initiator.closed and pair.responder.closed
    assert pair.i.of(IkeSaDeleted)[0].reason == "authentication-failed"
    assert pair.i.of(ChildSaEstablished) == [] and pair.r.of(ChildSaEstablished) == []


def test_expired_certificate_is_rejected() -> None:
    old = ROOT.issue(
        "a.example",
        dns=["a.example"],
        key_slot=12,
        not_before=NOW - timedelta(days=60),
        not_after=NOW - timedelta(days=1),
    )
    assert_rejected_by_responder(cert_pair(old, issue("b.example", slot=11)), "expired")


def test_certificate_from_an_unknown_ca_is_rejected() -> None:
    other = CertificateAuthority.root("somebody else", key_slot=20)
    stranger = other.issue("a.example", dns=["a.example"], key_slot=12)
    assert_rejected_by_responder(cert_pair(stranger, issue("b.example", slot=11)), "untrusted")


def test_certificate_for_another_identity_is_rejected() -> None:
    wrong = issue("c.example", slot=12)
    pair = cert_pair(wrong, issue("b.example", slot=11))
    assert_rejected_by_responder(pair, "identity-mismatch")


def test_initiator_rejects_a_responder_it_does_not_trust_and_tells_it() -> None:
    other = CertificateAuthority.root("somebody else", key_slot=20)
    pair = cert_pair(
        issue("a.example", slot=10), issue("b.example", slot=11), initiator_anchors=(other,)
    )
    pair.run(5)
    (mine,) = pair.i.of(AuthenticationFailedEvent)
    assert mine.reason == "untrusted" and not mine.by_peer
    (theirs,) = pair.r.of(AuthenticationFailedEvent)
    assert theirs.by_peer
    assert pair.initiator.closed and pair.responder.closed


def test_bad_psk_fails_on_the_responder_and_is_notified_to_the_initiator() -> None:
    i = psk_config("a.example", "b.example", psk=b"the wrong secret!")
    r = psk_config(
        "b.example", "a.example", children=(mirrored(child_config()),), local_addr=RESPONDER_ADDR
    )
    pair = IkePair(i, r)
    assert_rejected_by_responder(pair, "psk")


def test_psk_peer_is_refused_where_signatures_are_required() -> None:
    i = psk_config("a.example", "b.example")
    r = cert_config(
        "b.example",
        "a.example",
        issue("b.example", slot=11),
        (ROOT,),
        children=(mirrored(child_config()),),
        local_addr=RESPONDER_ADDR,
    )
    assert_rejected_by_responder(IkePair(i, r), "method")


def test_unexpected_psk_identity_is_rejected() -> None:
    i = psk_config("z.example", "b.example")
    r = psk_config(
        "b.example", "a.example", children=(mirrored(child_config()),), local_addr=RESPONDER_ADDR
    )
    assert_rejected_by_responder(IkePair(i, r), "identity")


def test_child_no_proposal_chosen_leaves_the_ike_sa_up() -> None:
    cbc = ChildProposal(
        encryption=(Encryption(EncrId.AES_CBC, 128),), integrity=(IntegId.HMAC_SHA2_256_128,)
    )
    pair = psk_pair(responder_child=mirrored(child_config(proposals=(cbc,))))
    pair.run(5)
    assert pair.initiator.established and pair.responder.established
    (failed,) = pair.i.of(NegotiationFailed)
    assert (failed.notify, failed.child, failed.by_peer) == (
        NotifyType.NO_PROPOSAL_CHOSEN,
        "pods",
        True,
    )
    assert pair.i.of(ChildSaEstablished) == [] and pair.r.of(ChildSaEstablished) == []


def test_disjoint_selectors_are_ts_unacceptable() -> None:
    pair = psk_pair(responder_child=child_config(local="10.9.0.0/24", remote="10.8.0.0/24"))
    pair.run(5)
    (failed,) = pair.i.of(NegotiationFailed)
    assert failed.notify == NotifyType.TS_UNACCEPTABLE
    assert pair.initiator.established


def test_responder_narrows_the_selectors() -> None:
    pair = psk_pair(
        initiator_child=child_config(local="10.1.0.0/16", remote="10.2.0.0/16"),
        responder_child=child_config(local="10.2.3.0/24", remote="10.1.5.0/24"),
    )
    pair.run(5)
    (ci,) = pair.i.of(ChildSaEstablished)
    (cr,) = pair.r.of(ChildSaEstablished)
    assert ci.local_ts == (TrafficSelector.from_network("10.1.5.0/24"),)
    assert ci.remote_ts == (TrafficSelector.from_network("10.2.3.0/24"),)
    assert (cr.local_ts, cr.remote_ts) == (ci.remote_ts, ci.local_ts)


def test_transport_mode_is_negotiated_when_both_sides_want_it() -> None:
    pair = psk_pair(
        initiator_child=child_config(mode="transport"),
        responder_child=mirrored(child_config(mode="transport")),
    )
    pair.run(5)
    assert pair.i.of(ChildSaEstablished)[0].mode == "transport"
    assert pair.r.of(ChildSaEstablished)[0].mode == "transport"


def test_mode_mismatch_is_no_proposal_chosen() -> None:
    pair = psk_pair(initiator_child=child_config(mode="transport"))
    pair.run(5)
    assert pair.i.of(NegotiationFailed)[0].notify == NotifyType.NO_PROPOSAL_CHOSEN


def test_large_ike_auth_is_fragmented_when_both_support_it() -> None:
    a = issue("a.example", "rsa", slot=10)
    b = issue("b.example", "rsa", slot=11)
    i = cert_config("a.example", "b.example", a, (ROOT,), max_datagram=576)
    r = cert_config(
        "b.example",
        "a.example",
        b,
        (ROOT,),
        children=(mirrored(child_config()),),
        local_addr=RESPONDER_ADDR,
        max_datagram=576,
    )
    seen, tap = capture()
    pair = IkePair(i, r, tap=tap)
    pair.run(5)
    assert pair.initiator.established and pair.responder.established
    auth_fragments = [d for d in seen[1:] if decode_header(d).next_payload == PayloadType.SKF]
    assert len(auth_fragments) >= 3
    assert all(len(d) <= 576 for d in seen)


def test_no_fragmentation_when_the_peer_did_not_announce_it() -> None:
    a = issue("a.example", "rsa", slot=10)
    b = issue("b.example", "rsa", slot=11)
    i = cert_config("a.example", "b.example", a, (ROOT,), max_datagram=576)
    r = cert_config(
        "b.example",
        "a.example",
        b,
        (ROOT,),
        children=(mirrored(child_config()),),
        local_addr=RESPONDER_ADDR,
        fragmentation=False,
    )
    seen, tap = capture()
    pair = IkePair(i, r, tap=tap)
    pair.run(5)
    assert pair.initiator.established
    assert decode_header(seen[1]).next_payload == PayloadType.SK
    assert decode_header(seen[1]).exchange == ExchangeType.IKE_AUTH


def test_ike_sa_without_children_is_fine() -> None:
    i = replace(psk_config("a.example", "b.example"), children=())
    r = psk_config(
        "b.example", "a.example", children=(mirrored(child_config()),), local_addr=RESPONDER_ADDR
    )
    pair = IkePair(i, r)
    pair.run(5)
    assert pair.initiator.established and pair.responder.established
    assert pair.i.of(ChildSaEstablished) == []


def test_a_lost_fragment_is_recovered_by_retransmitting_the_whole_message() -> None:
    a = issue("a.example", "rsa", slot=10)
    b = issue("b.example", "rsa", slot=11)
    i = cert_config("a.example", "b.example", a, (ROOT,), max_datagram=576)
    r = cert_config(
        "b.example",
        "a.example",
        b,
        (ROOT,),
        children=(mirrored(child_config()),),
        local_addr=RESPONDER_ADDR,
        max_datagram=576,
    )
    pair = IkePair(i, r, tap=lambda d, n, data: [] if (d, n) == (I2R, 2) else [data])
    pair.run(5)
    assert pair.initiator.established and pair.responder.established
    assert pair.initiator.stats.retransmissions == 1


@pytest.mark.parametrize(
    ("ike", "child", "encr_key_len", "integ_key_len"),
    [
        (
            IkeProposal(
                encryption=(Encryption(EncrId.AES_CBC, 256),),
                integrity=(IntegId.HMAC_SHA2_256_128,),
                dh=(DhGroup.ECP_256,),
            ),
            ChildProposal(
                encryption=(Encryption(EncrId.AES_CBC, 128),),
                integrity=(IntegId.HMAC_SHA2_256_128,),
            ),
            16,
            32,
        ),
        (
            IkeProposal(encryption=(Encryption(EncrId.CHACHA20_POLY1305),)),
            ChildProposal(encryption=(Encryption(EncrId.CHACHA20_POLY1305),)),
            36,
            0,
        ),
        (
            IkeProposal(prf=(PrfId.HMAC_SHA2_512,), dh=(DhGroup.MODP_2048,)),
            ChildProposal(
                protocol=ProtocolId.AH, encryption=(), integrity=(IntegId.HMAC_SHA2_512_256,)
            ),
            0,
            64,
        ),
    ],
    ids=["cbc-hmac", "chacha20", "ah-modp2048"],
)
def test_other_suites_negotiate_and_key_the_child(
    ike: IkeProposal, child: ChildProposal, encr_key_len: int, integ_key_len: int
) -> None:
    cfg = child_config(proposals=(child,))
    i = psk_config("a.example", "b.example", children=(cfg,), proposals=(ike,))
    r = psk_config(
        "b.example",
        "a.example",
        children=(mirrored(cfg),),
        local_addr=RESPONDER_ADDR,
        proposals=(ike,),
    )
    pair = IkePair(i, r)
    pair.run(5)
    (ci,) = pair.i.of(ChildSaEstablished)
    (cr,) = pair.r.of(ChildSaEstablished)
    assert ci.protocol == child.protocol
    assert (len(ci.encr_key_out), len(ci.integ_key_out)) == (encr_key_len, integ_key_len)
    assert (ci.encr_key_out, ci.integ_key_out) == (cr.encr_key_in, cr.integ_key_in)
