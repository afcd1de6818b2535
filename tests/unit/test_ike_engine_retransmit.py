"""Loss, duplication, reordering and tampering on the wire; retransmission and windows."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kipsec_sidecar.core.ike.events import (
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaEstablished,
    PeerDead,
)
from support.ike_pair import (
    I2R,
    R2I,
    RESPONDER_ADDR,
    IkePair,
    Tap,
    child_config,
    mirrored,
    psk_config,
)


def pair_with(tap: Tap | None) -> IkePair:
    i = psk_config("a.example", "b.example")
    r = psk_config(
        "b.example", "a.example", children=(mirrored(child_config()),), local_addr=RESPONDER_ADDR
    )
    return IkePair(i, r, tap=tap)


def drop(direction: str, *indices: int) -> Tap:
    def tap(d: str, index: int, data: bytes) -> list[bytes]:
        return [] if d == direction and index in indices else [data]

    return tap


def tamper(direction: str, index: int) -> Tap:
    def tap(d: str, i: int, data: bytes) -> list[bytes]:
        if d == direction and i == index:
            return [data[:-1] + bytes([data[-1] ^ 0x01])]
        return [data]

    return tap


def assert_one_clean_handshake(pair: IkePair) -> None:
    assert pair.initiator.established and pair.responder.established
    assert len(pair.i.of(IkeSaEstablished)) == 1 and len(pair.r.of(IkeSaEstablished)) == 1
    assert len(pair.i.of(ChildSaEstablished)) == 1 and len(pair.r.of(ChildSaEstablished)) == 1
    assert len({id(sa) for sa in pair.endpoint.sas.values()}) == 1


@pytest.mark.parametrize(
    ("direction", "index"),
    [(I2R, 0), (R2I, 0), (I2R, 1), (R2I, 1)],
    ids=["init-request", "init-response", "auth-request", "auth-response"],
)
def test_a_lost_message_is_recovered_by_retransmission(direction: str, index: int) -> None:
    pair = pair_with(drop(direction, index))
    pair.run(5)
    assert_one_clean_handshake(pair)
    assert pair.initiator.stats.retransmissions == 1
    assert pair.now == pytest.approx(0.5)


@pytest.mark.parametrize("index", [0, 1], ids=["init", "auth"])
def test_a_lost_response_is_answered_from_the_cache_not_reprocessed(index: int) -> None:
    pair = pair_with(drop(R2I, index))
    pair.run(5)
    assert_one_clean_handshake(pair)
    assert pair.responder.stats.answered_from_cache == 1


def test_every_message_duplicated_still_gives_one_handshake() -> None:
    pair = pair_with(lambda d, i, data: [data, data])
    pair.run(5)
    assert_one_clean_handshake(pair)
    assert pair.responder.stats.answered_from_cache == 2
    # Two answers per request (one from the cache), each duplicated: 3 of 4 are extra.
    assert pair.initiator.stats.dropped_unexpected == 6


@pytest.mark.parametrize("direction", [I2R, R2I])
def test_a_tampered_ike_auth_message_is_dropped_and_the_retransmission_completes(
    direction: str,
) -> None:
    pair = pair_with(tamper(direction, 1))
    pair.run(5)
    assert_one_clean_handshake(pair)
    victim = pair.responder if direction == I2R else pair.initiator
    assert victim.stats.dropped_integrity == 1
    assert pair.initiator.stats.retransmissions == 1


def test_retransmissions_run_out_and_the_peer_is_dead() -> None:
    pair = pair_with(drop(I2R, 1, 2, 3, 4, 5, 6))
    pair.run(30)
    (dead,) = pair.i.of(PeerDead)
    assert dead.tries == 4  # the first send and three retransmissions
    assert pair.initiator.closed
    assert pair.i.of(IkeSaDeleted)[0].reason == "peer-dead"
    # 0.5 + 1 + 2 + 4 seconds of back-off after the first IKE_AUTH at t=0.
    assert pair.initiator.stats.retransmissions == 3


def test_retransmission_backs_off_exponentially() -> None:
    times: list[float] = []
    pair = pair_with(None)

    def tap(d: str, i: int, data: bytes) -> list[bytes]:
        if d == I2R:
            times.append(pair.now)
        return [] if d == I2R else [data]

    pair.tap = tap
    pair.run(30)
    assert times == pytest.approx([0.0, 0.5, 1.5, 3.5])


def test_a_delayed_copy_arriving_after_the_retransmission_is_answered_from_cache() -> None:
    pair = pair_with(None)

    def tap(d: str, i: int, data: bytes) -> list[bytes]:
        if d == I2R and i == 1:
            pair.held.append((d, data))
            return []
        return [data]

    pair.tap = tap
    pair.run(5)
    assert pair.initiator.established
    pair.release_held()
    pair.settle()
    assert pair.responder.stats.answered_from_cache == 1
    assert len(pair.r.of(ChildSaEstablished)) == 1


def test_a_stale_request_outside_the_window_is_dropped() -> None:
    captured: list[bytes] = []

    def tap(d: str, i: int, data: bytes) -> list[bytes]:
        if d == I2R:
            captured.append(data)
        return [data]

    pair = pair_with(tap)
    pair.run(5)
    pair.initiator.send_liveness(pair.now)
    pair.settle()
    pair.deliver(I2R, captured[1])  # the IKE_AUTH request, message ID 1; window is at 3
    assert pair.responder.stats.dropped_out_of_window == 1
    assert pair.responder.established


def test_an_unexpected_response_is_dropped() -> None:
    captured: list[bytes] = []

    def tap(d: str, i: int, data: bytes) -> list[bytes]:
        if d == R2I:
            captured.append(data)
        return [data]

    pair = pair_with(tap)
    pair.run(5)
    pair.deliver(R2I, captured[1])
    assert pair.initiator.stats.dropped_unexpected == 1
    assert pair.initiator.established


def lose_each_message_once() -> Tap:
    """Drop the first copy of every distinct datagram: each message needs one resend."""
    seen: set[bytes] = set()

    def tap(d: str, i: int, data: bytes) -> list[bytes]:
        if data in seen:
            return [data]
        seen.add(data)
        return []

    return tap


def duplicate_everything(d: str, i: int, data: bytes) -> list[bytes]:
    return [data, data]


Scenario = Callable[[IkePair], None]


def rekey_child(pair: IkePair) -> None:
    (spi,) = pair.initiator.children
    pair.initiator.rekey_child(spi, pair.now)


def rekey_ike(pair: IkePair) -> None:
    pair.initiator.rekey_ike(pair.now)


def responder_rekeys_ike(pair: IkePair) -> None:
    pair.responder.rekey_ike(pair.now)


def delete_child(pair: IkePair) -> None:
    (spi,) = pair.responder.children
    pair.responder.delete_child(spi, pair.now)


def liveness(pair: IkePair) -> None:
    pair.initiator.send_liveness(pair.now)


@pytest.mark.parametrize(
    "scenario", [rekey_child, rekey_ike, responder_rekeys_ike, delete_child, liveness]
)
@pytest.mark.parametrize("wire", [lose_each_message_once, lambda: duplicate_everything])
def test_later_exchanges_survive_loss_and_duplication(
    scenario: Scenario, wire: Callable[[], Tap]
) -> None:
    pair = pair_with(None)
    pair.run(5)
    children_before = len(pair.initiator.children)
    pair.tap = wire()
    scenario(pair)
    pair.run(30)
    assert pair.initiator.established and pair.responder.established
    mine = {(c.spi_in, c.spi_out) for c in pair.initiator.children.values()}
    theirs = {(c.spi_out, c.spi_in) for c in pair.responder.children.values()}
    assert mine == theirs
    expected = children_before - 1 if scenario is delete_child else children_before
    assert len(mine) == expected
    assert (pair.initiator.spi_i, pair.initiator.spi_r) == (
        pair.responder.spi_i,
        pair.responder.spi_r,
    )
    assert pair.i.of(PeerDead) == [] and pair.r.of(PeerDead) == []
    pair.tap = None
    liveness(pair)
    pair.run(5)
    assert pair.initiator.established and pair.responder.established
