"""CREATE_CHILD_SA through the engine: more children, PFS, rekeys, collisions, lifetimes."""

from __future__ import annotations

import contextlib
from typing import Any

from kipsec_sidecar.core.errors import KipsecError
from kipsec_sidecar.core.ike.config import ChildConfig, ChildProposal, Lifetime
from kipsec_sidecar.core.ike.constants import DhGroup, ExchangeType, NotifyType
from kipsec_sidecar.core.ike.engine import IkeSa
from kipsec_sidecar.core.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaRekeyed,
    IkeSaRekeyed,
    NegotiationFailed,
)
from kipsec_sidecar.core.ike.message import Message, decode_header
from kipsec_sidecar.core.ike.payloads import KePayload, NotifyPayload
from kipsec_sidecar.core.ike.sk import unprotect
from support.ike_pair import I2R, R2I, RESPONDER_ADDR, IkePair, child_config, mirrored, psk_config

PFS = (ChildProposal(dh=(DhGroup.CURVE25519,)),)
TWO = child_config("two", "10.3.0.0/24", "10.4.0.0/24")
TWO_ON_DEMAND = child_config("two", "10.3.0.0/24", "10.4.0.0/24", start=False)


def established(
    initiator_children: tuple[ChildConfig, ...] = (child_config(),),
    responder_children: tuple[ChildConfig, ...] | None = None,
    **common: Any,
) -> IkePair:
    responder_children = responder_children or tuple(mirrored(c) for c in initiator_children)
    i = psk_config("a.example", "b.example", children=initiator_children, **common)
    r = psk_config(
        "b.example", "a.example", children=responder_children, local_addr=RESPONDER_ADDR, **common
    )
    pair = IkePair(i, r)
    pair.run(5)
    assert pair.initiator.established and pair.responder.established
    return pair


def only_child(sa: IkeSa, name: str = "pods"):  # type: ignore[no-untyped-def]
    (child,) = [c for c in sa.children.values() if c.name == name]
    return child


def assert_paired(pair: IkePair) -> None:
    """Both sides hold the same children, each one's inbound SPI the other's outbound."""
    mine = {(c.spi_in, c.spi_out) for c in pair.initiator.children.values()}
    theirs = {(c.spi_out, c.spi_in) for c in pair.responder.children.values()}
    assert mine == theirs


def capture_requests(pair: IkePair) -> list[Message]:
    """Record the initiator's encrypted requests, opened with the responder's keys."""
    opened: list[Message] = []

    def tap(d: str, i: int, data: bytes) -> list[bytes]:
        if d == I2R and not decode_header(data).is_response:
            sk_in = pair.responder.current.sk_in
            assert sk_in is not None
            opened.append(unprotect(data, sk_in))
        return [data]

    pair.tap = tap
    return opened


def test_initiate_child_adds_a_second_child() -> None:
    pair = established((child_config(), TWO_ON_DEMAND))
    assert len(pair.initiator.children) == 1
    pair.initiator.initiate_child("two", pair.now)
    pair.run(5)
    assert {c.name for c in pair.initiator.children.values()} == {"pods", "two"}
    assert_paired(pair)
    assert [e.name for e in pair.r.of(ChildSaEstablished)] == ["pods", "two"]


def test_every_configured_child_is_created_after_ike_auth() -> None:
    pair = established((child_config(), TWO))
    assert [e.name for e in pair.i.of(ChildSaEstablished)] == ["pods", "two"]
    assert_paired(pair)


def test_child_with_pfs_sends_a_ke() -> None:
    two = child_config("two", "10.3.0.0/24", "10.4.0.0/24", proposals=PFS, start=False)
    pair = established((child_config(), two))
    requests = capture_requests(pair)
    pair.initiator.initiate_child("two", pair.now)
    pair.run(5)
    assert requests[0].exchange == ExchangeType.CREATE_CHILD_SA
    ke = requests[0].get(KePayload)
    assert ke is not None and ke.group == DhGroup.CURVE25519
    assert only_child(pair.responder, "two")
    assert_paired(pair)


def test_child_rekey_without_pfs_reports_new_then_deletes_old() -> None:
    pair = established()
    old = only_child(pair.initiator)
    pair.initiator.rekey_child(old.spi_in, pair.now)
    pair.run(5)
    new = only_child(pair.initiator)
    assert new.spi_in != old.spi_in and new.encr_key_out != old.encr_key_out
    events = [type(e) for e in pair.i.events[2:]]
    assert events == [ChildSaEstablished, ChildSaRekeyed, ChildSaDeleted]
    established_event = pair.i.of(ChildSaEstablished)[1]
    assert established_event.replaces == old.spi_in
    assert pair.i.of(ChildSaDeleted)[0].spi_in == old.spi_in
    assert pair.i.of(ChildSaDeleted)[0].reason == "rekeyed"
    assert [type(e) for e in pair.r.events[2:]] == [
        ChildSaEstablished,
        ChildSaRekeyed,
        ChildSaDeleted,
    ]
    assert_paired(pair)


def test_child_rekey_with_pfs_carries_a_ke() -> None:
    pair = established((child_config(proposals=PFS),))
    requests = capture_requests(pair)
    old = only_child(pair.initiator)
    pair.initiator.rekey_child(old.spi_in, pair.now)
    pair.run(5)
    rekey = requests[0]
    assert rekey.get(KePayload) is not None
    notify = rekey.notify(NotifyType.REKEY_SA)
    assert notify is not None and notify.spi == old.spi_in
    assert only_child(pair.initiator).spi_in != old.spi_in
    assert_paired(pair)


def test_invalid_ke_in_create_child_sa_is_retried_with_the_responders_group() -> None:
    ours = (ChildProposal(dh=(DhGroup.CURVE25519, DhGroup.ECP_256)),)
    theirs = (ChildProposal(dh=(DhGroup.ECP_256,)),)
    pair = established((child_config(proposals=ours),), (mirrored(child_config(proposals=theirs)),))
    requests = capture_requests(pair)
    pair.initiator.rekey_child(only_child(pair.initiator).spi_in, pair.now)
    pair.run(5)
    assert [r.get(KePayload).group for r in requests[:2]] == [DhGroup.CURVE25519, DhGroup.ECP_256]  # type: ignore[union-attr]
    assert len(pair.i.of(ChildSaRekeyed)) == 1
    assert_paired(pair)


def test_no_proposal_chosen_for_an_additional_child_leaves_the_rest_alone() -> None:
    pair = established(
        (child_config(), child_config("two", "10.3.0.0/24", "10.4.0.0/24", proposals=PFS)),
        (mirrored(child_config()), mirrored(TWO)),
    )
    (failed,) = pair.i.of(NegotiationFailed)
    assert (failed.exchange, failed.notify, failed.child) == (
        ExchangeType.CREATE_CHILD_SA,
        NotifyType.NO_PROPOSAL_CHOSEN,
        "two",
    )
    assert pair.initiator.established and len(pair.initiator.children) == 1


def test_ike_rekey_moves_children_to_new_spis_and_keys() -> None:
    pair = established()
    old_spis = (pair.initiator.spi_i, pair.initiator.spi_r)
    old_keys = pair.initiator.current.keys
    children = dict(pair.initiator.children)
    pair.initiator.rekey_ike(pair.now)
    pair.run(5)
    (event,) = pair.i.of(IkeSaRekeyed)
    assert (event.old_spi_i, event.old_spi_r) == old_spis
    assert (event.new_spi_i, event.new_spi_r) == (pair.initiator.spi_i, pair.initiator.spi_r)
    assert (pair.responder.spi_i, pair.responder.spi_r) == (
        pair.initiator.spi_i,
        pair.initiator.spi_r,
    )
    assert pair.initiator.current.keys.sk_d != old_keys.sk_d
    assert pair.initiator.children == children
    assert pair.r.of(IkeSaRekeyed)[0] == event
    assert pair.initiator.local_spis() == [pair.initiator.spi_i]


def test_after_an_ike_rekey_child_rekeys_and_liveness_use_the_new_sa() -> None:
    pair = established()
    pair.initiator.rekey_ike(pair.now)
    pair.run(5)
    pair.initiator.rekey_child(only_child(pair.initiator).spi_in, pair.now)
    pair.initiator.send_liveness(pair.now)
    pair.run(5)
    assert len(pair.i.of(ChildSaRekeyed)) == 1
    assert_paired(pair)
    assert pair.initiator.current.next_mid == 3  # rekey, delete of the old child, liveness


def test_the_responder_can_rekey_the_ike_sa_and_becomes_its_initiator() -> None:
    pair = established()
    pair.responder.rekey_ike(pair.now)
    pair.run(5)
    assert pair.responder.current.original_initiator
    assert not pair.initiator.current.original_initiator
    pair.initiator.send_liveness(pair.now)
    pair.run(5)
    assert pair.initiator.established and pair.responder.established
    assert pair.initiator.stats.dropped_unexpected == 0


def test_simultaneous_child_rekeys_leave_exactly_one_successor() -> None:
    pair = established()
    child = only_child(pair.initiator)
    pair.initiator.rekey_child(child.spi_in, pair.now)
    pair.responder.rekey_child(child.spi_out, pair.now)
    pair.run(5)
    survivor = only_child(pair.initiator)
    assert survivor.spi_in != child.spi_in
    assert_paired(pair)
    for side in (pair.i, pair.r):
        reasons = sorted(e.reason for e in side.of(ChildSaDeleted))
        assert reasons == ["redundant", "rekeyed"]
        assert len(side.of(ChildSaEstablished)) == 3  # the first and two successors


def test_simultaneous_ike_rekeys_agree_on_one_new_ike_sa() -> None:
    pair = established()
    pair.initiator.rekey_ike(pair.now)
    pair.responder.rekey_ike(pair.now)
    pair.run(5)
    assert (pair.initiator.spi_i, pair.initiator.spi_r) == (
        pair.responder.spi_i,
        pair.responder.spi_r,
    )
    assert len(pair.i.of(IkeSaRekeyed)) == 1 and len(pair.r.of(IkeSaRekeyed)) == 1
    pair.initiator.send_liveness(pair.now)
    pair.responder.rekey_child(only_child(pair.responder).spi_in, pair.now)
    pair.run(5)
    assert_paired(pair)
    assert pair.initiator.established and pair.responder.established


def test_child_request_during_an_ike_rekey_gets_temporary_failure_and_is_retried() -> None:
    pair = established((child_config(), TWO_ON_DEMAND))
    refusals: list[int] = []

    def tap(d: str, i: int, data: bytes) -> list[bytes]:
        receiver = pair.initiator if d == R2I else pair.responder
        if decode_header(data).is_response and receiver.current.sk_in is not None:
            with contextlib.suppress(KipsecError):
                opened = unprotect(data, receiver.current.sk_in)
                refusals.extend(
                    n.notify_type
                    for n in opened.all(NotifyPayload)
                    if n.notify_type == NotifyType.TEMPORARY_FAILURE
                )
        return [data]

    pair.tap = tap
    start = pair.now
    pair.responder.rekey_ike(pair.now)
    pair.initiator.initiate_child("two", pair.now)
    pair.run(30)
    assert refusals, "one of the two requests must be refused with TEMPORARY_FAILURE"
    assert pair.now - start >= 2.0  # the retry waits temporary_failure_retry or more
    assert {c.name for c in pair.initiator.children.values()} == {"pods", "two"}
    assert_paired(pair)
    assert len(pair.i.of(IkeSaRekeyed)) == 1


def test_soft_lifetime_rekeys_the_child() -> None:
    short = Lifetime(rekey_after=10, expire_after=20, jitter=0.2)
    pair = established((child_config(lifetime=short),))
    first = only_child(pair.initiator)
    pair.run(12)
    assert len(pair.i.of(ChildSaRekeyed)) == 1
    assert only_child(pair.initiator).spi_in != first.spi_in
    assert_paired(pair)


def test_hard_lifetime_deletes_the_child() -> None:
    pair = established((child_config(lifetime=Lifetime(rekey_after=0, expire_after=10)),))
    pair.run(12)
    assert pair.initiator.children == {} and pair.responder.children == {}
    reasons = {e.reason for e in pair.i.of(ChildSaDeleted)} | {
        e.reason for e in pair.r.of(ChildSaDeleted)
    }
    assert "expired" in reasons


def test_soft_lifetime_rekeys_the_ike_sa() -> None:
    pair = established(lifetime=Lifetime(rekey_after=10, expire_after=30))
    pair.run(12)
    assert len(pair.i.of(IkeSaRekeyed)) == 1
    assert pair.initiator.established and pair.responder.established


def hold_first_request_from_responder(pair: IkePair) -> None:
    """Keep the responder's next request back until ``pair.release_held()``."""
    held = {"done": False}

    def tap(d: str, i: int, data: bytes) -> list[bytes]:
        if d == R2I and not held["done"] and not decode_header(data).is_response:
            held["done"] = True
            pair.held.append((d, data))
            return []
        return [data]

    pair.tap = tap


def test_a_late_colliding_ike_rekey_is_refused_and_both_sides_agree() -> None:
    pair = established()
    hold_first_request_from_responder(pair)
    pair.responder.rekey_ike(pair.now)
    pair.initiator.rekey_ike(pair.now)
    pair.settle()  # the initiator's rekey completes and it deletes the old IKE SA
    pair.release_held()  # the responder's rekey request arrives on the old, deleted SA
    pair.run(30)
    assert (pair.initiator.spi_i, pair.initiator.spi_r) == (
        pair.responder.spi_i,
        pair.responder.spi_r,
    )
    assert pair.initiator.established and pair.responder.established
    assert len(pair.i.of(IkeSaRekeyed)) == 1 and len(pair.r.of(IkeSaRekeyed)) == 1
    pair.responder.send_liveness(pair.now)
    pair.initiator.rekey_child(only_child(pair.initiator).spi_in, pair.now)
    pair.run(5)
    assert_paired(pair)
    assert pair.initiator.established and pair.responder.established


def test_a_late_colliding_child_rekey_is_child_sa_not_found_and_both_sides_agree() -> None:
    pair = established()
    child = only_child(pair.initiator)
    hold_first_request_from_responder(pair)
    pair.responder.rekey_child(child.spi_out, pair.now)
    pair.initiator.rekey_child(child.spi_in, pair.now)
    pair.settle()
    pair.release_held()
    pair.run(30)
    assert_paired(pair)
    assert only_child(pair.initiator).spi_in != child.spi_in
    assert pair.initiator.established and pair.responder.established
