"""INFORMATIONAL through the engine: deletes, liveness, unknown critical payloads."""

from __future__ import annotations

from typing import Any

import pytest

from kipsec_sidecar.core.errors import LocalProtocolError
from kipsec_sidecar.core.ike.config import ChildConfig, ChildProposal, Lifetime
from kipsec_sidecar.core.ike.constants import DhGroup, ExchangeType, NotifyType
from kipsec_sidecar.core.ike.events import (
    ChildSaDeleted,
    IkeSaDeleted,
    PeerDead,
    ProtocolErrorEvent,
)
from kipsec_sidecar.core.ike.message import Message
from kipsec_sidecar.core.ike.payloads import (
    KePayload,
    NoncePayload,
    TsiPayload,
    TsrPayload,
    UnknownPayload,
)
from kipsec_sidecar.core.ike.proposals import child_sa_payload
from kipsec_sidecar.core.ike.sk import protect, unprotect
from support.ike_pair import (
    I2R,
    R2I,
    RESPONDER_ADDR,
    IkePair,
    SeededRng,
    child_config,
    mirrored,
    psk_config,
)


def established(children: tuple[ChildConfig, ...] = (child_config(),), **common: Any) -> IkePair:
    i = psk_config("a.example", "b.example", children=children, **common)
    r = psk_config(
        "b.example",
        "a.example",
        children=tuple(mirrored(c) for c in children),
        local_addr=RESPONDER_ADDR,
        **common,
    )
    pair = IkePair(i, r)
    pair.run(5)
    assert pair.initiator.established
    return pair


def test_deleting_a_child_removes_it_on_both_sides() -> None:
    pair = established()
    (spi,) = pair.initiator.children
    pair.initiator.delete_child(spi, pair.now)
    pair.run(5)
    assert pair.initiator.children == {} and pair.responder.children == {}
    assert pair.i.of(ChildSaDeleted)[0].reason == "deleted"
    assert pair.r.of(ChildSaDeleted)[0].reason == "deleted-by-peer"
    assert pair.initiator.established and pair.responder.established


def test_the_responder_can_delete_a_child_too() -> None:
    pair = established()
    (spi,) = pair.responder.children
    pair.responder.delete_child(spi, pair.now)
    pair.run(5)
    assert pair.initiator.children == {} and pair.responder.children == {}


def test_deleting_the_ike_sa_takes_every_child_with_it() -> None:
    pair = established()
    pair.initiator.delete(pair.now)
    pair.run(5)
    assert pair.initiator.closed and pair.responder.closed
    assert pair.i.of(IkeSaDeleted)[0].reason == "deleted"
    assert pair.r.of(IkeSaDeleted)[0].reason == "deleted-by-peer"
    assert pair.r.of(ChildSaDeleted)[0].reason == "ike-deleted"
    assert pair.endpoint.sas == {}


def test_deleting_the_ike_sa_without_an_answer_still_closes_it() -> None:
    pair = established()
    pair.tap = lambda d, i, data: []
    pair.initiator.delete(pair.now)
    pair.run(30)
    assert pair.initiator.closed
    assert pair.i.of(PeerDead) == []


def test_liveness_check_answered() -> None:
    pair = established()
    pair.initiator.send_liveness(pair.now)
    pair.run(5)
    assert pair.i.of(PeerDead) == []
    assert pair.initiator.current.next_mid == 3
    assert pair.responder.current.peer_mid == 3


def test_liveness_check_unanswered_declares_the_peer_dead() -> None:
    pair = established()
    pair.tap = lambda d, i, data: [data] if d == I2R else []
    pair.initiator.send_liveness(pair.now)
    pair.run(30)
    (dead,) = pair.i.of(PeerDead)
    assert dead.exchange == ExchangeType.INFORMATIONAL
    assert pair.initiator.closed
    assert pair.i.of(ChildSaDeleted)[0].reason == "ike-deleted"
    assert pair.i.of(IkeSaDeleted)[0].reason == "peer-dead"


def test_periodic_liveness_after_silence() -> None:
    pair = established(liveness_interval=10.0)
    pair.run(25)
    assert pair.responder.current.peer_mid >= 3  # at least one check after IKE_AUTH
    assert pair.initiator.established


def test_unknown_critical_payload_in_an_encrypted_request_is_refused_with_its_type() -> None:
    pair = established()
    ctx = pair.initiator.current
    assert ctx.sk_out is not None and ctx.sk_in is not None
    request = Message(
        ctx.spi_i,
        ctx.spi_r,
        ExchangeType.INFORMATIONAL,
        ctx.next_mid,
        False,
        True,
        (UnknownPayload(199, True, b"x"),),
    )
    pair.deliver(I2R, protect(request, ctx.sk_out, SeededRng(5)))
    ((direction, answer),) = pair.wire
    assert direction == R2I
    opened = unprotect(answer, ctx.sk_in)
    notify = opened.notify(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD)
    assert notify is not None and notify.data == bytes([199])
    assert pair.r.of(ProtocolErrorEvent)
    assert pair.responder.current.peer_mid == ctx.next_mid + 1


def test_actions_need_an_established_sa_and_known_names() -> None:
    pair = established()
    with pytest.raises(LocalProtocolError):
        pair.initiator.initiate_child("nope", pair.now)
    with pytest.raises(LocalProtocolError):
        pair.initiator.delete_child(b"\x00\x00\x00\x01", pair.now)
    i = psk_config("a.example", "b.example")
    fresh = IkePair(i, i).initiator
    with pytest.raises(LocalProtocolError):
        fresh.rekey_ike(0.0)


def test_hard_lifetime_of_the_ike_sa_deletes_everything() -> None:
    pair = established(lifetime=Lifetime(rekey_after=0, expire_after=10))
    pair.run(15)
    assert pair.initiator.closed and pair.responder.closed
    assert pair.i.of(IkeSaDeleted)[0].reason == "expired"
    assert pair.r.of(IkeSaDeleted)[0].reason == "expired"
    assert pair.i.of(ChildSaDeleted)[0].reason == "expired"
    assert pair.endpoint.sas == {}


def test_an_authenticated_request_with_a_bad_ke_value_is_answered_invalid_syntax() -> None:
    pfs = (ChildProposal(dh=(DhGroup.CURVE25519,)),)
    pair = established(children=(child_config(proposals=pfs),))
    ctx = pair.initiator.current
    assert ctx.sk_out is not None and ctx.sk_in is not None
    child = child_config(proposals=pfs)
    request = Message(
        ctx.spi_i,
        ctx.spi_r,
        ExchangeType.CREATE_CHILD_SA,
        ctx.next_mid,
        False,
        True,
        (
            child_sa_payload(pfs, b"\x01\x02\x03\x04", pfs=True),
            NoncePayload(bytes(32)),
            KePayload(DhGroup.CURVE25519, bytes(32)),
            TsiPayload(child.local_ts),
            TsrPayload(child.remote_ts),
        ),
    )
    pair.deliver(I2R, protect(request, ctx.sk_out, SeededRng(5)))
    ((_, answer),) = pair.wire
    assert unprotect(answer, ctx.sk_in).notify(NotifyType.INVALID_SYNTAX) is not None
    assert pair.responder.current.peer_mid == ctx.next_mid + 1
    assert pair.responder.established and pair.responder.stats.internal_errors == 0
