"""Peer garbage against the engine: random, mutated and authenticated-but-nonsense datagrams.

The engine must turn all of it into dropped packets, notifies and events: no exception
ever reaches the caller, and none is swallowed as an internal error either (the
``internal_errors`` counter, where a bug would hide, stays at zero).
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipsec_sidecar.core.errors import RemoteProtocolError
from kipsec_sidecar.core.ike.config import ChildProposal, IkeProposal
from kipsec_sidecar.core.ike.constants import ExchangeType
from kipsec_sidecar.core.ike.engine import IkeSa
from kipsec_sidecar.core.ike.message import Message
from kipsec_sidecar.core.ike.payloads import Payload, SaPayload
from kipsec_sidecar.core.ike.proposals import check_response, select_child, select_ike
from kipsec_sidecar.core.ike.sk import protect
from support.ike_codec_strategies import any_plain_payload, sa_payloads
from support.ike_pair import (
    I2R,
    RESPONDER_ADDR,
    IkePair,
    SeededRng,
    child_config,
    mirrored,
    psk_config,
)

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXCHANGES = st.sampled_from(
    [ExchangeType.IKE_AUTH, ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL, 0, 255]
)


def fresh_pair() -> IkePair:
    i = psk_config("a.example", "b.example")
    r = psk_config(
        "b.example", "a.example", children=(mirrored(child_config()),), local_addr=RESPONDER_ADDR
    )
    pair = IkePair(i, r)
    pair.run(5)
    return pair


def captured_requests() -> list[bytes]:
    """Real requests of a whole life: IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL."""
    seen: list[bytes] = []
    i = psk_config("a.example", "b.example")
    r = psk_config(
        "b.example", "a.example", children=(mirrored(child_config()),), local_addr=RESPONDER_ADDR
    )

    def tap(direction: str, index: int, data: bytes) -> list[bytes]:
        if direction == I2R:
            seen.append(data)
        return [data]

    pair = IkePair(i, r, tap=tap)
    pair.run(5)
    (spi,) = pair.initiator.children
    pair.initiator.rekey_child(spi, pair.now)
    pair.initiator.send_liveness(pair.now)
    pair.run(5)
    return seen


REQUESTS = captured_requests()
ESTABLISHED = fresh_pair()


def assert_clean(sa: IkeSa) -> None:
    assert sa.stats.internal_errors == 0, [
        e for e in iter(sa.next_event, None) if "internal" in repr(e)
    ]


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_are_dropped(data: bytes) -> None:
    ESTABLISHED.endpoint.receive_datagram(data, ("10.0.0.1", 500), 1.0)
    ESTABLISHED.responder.receive_datagram(data, ("10.0.0.1", 500), 1.0)
    assert_clean(ESTABLISHED.responder)


@FUZZ
@given(
    st.sampled_from(range(len(REQUESTS))),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(-40, 40),
)
def test_mutated_real_datagrams_are_dropped(
    which: int, flips: list[tuple[int, int]], resize: int
) -> None:
    data = bytearray(REQUESTS[which])
    for pos, value in flips:
        data[pos % len(data)] = value
    if resize < 0:
        del data[resize:]
    else:
        data += bytes(resize)
    pair = fresh_pair()
    pair.endpoint.receive_datagram(bytes(data), ("10.0.0.1", 500), pair.now)
    pair.responder.receive_datagram(bytes(data), ("10.0.0.1", 500), pair.now)
    assert_clean(pair.responder)


@FUZZ
@given(
    EXCHANGES,
    st.lists(any_plain_payload, max_size=6),
    st.integers(-1, 2),
    st.sampled_from([True, True, True, False]),  # mostly past the endpoint's routing
)
def test_authenticated_nonsense_requests_never_break_the_responder(
    exchange: int, payloads: list[Payload], mid_offset: int, initiator_flag: bool
) -> None:
    pair = fresh_pair()
    ctx = pair.initiator.current
    assert ctx.sk_out is not None
    msg = Message(
        ctx.spi_i,
        ctx.spi_r,
        exchange,
        max(0, ctx.next_mid + mid_offset),
        False,
        initiator_flag,
        tuple(payloads),
    )
    pair.deliver(I2R, protect(msg, ctx.sk_out, SeededRng(3)))
    pair.run(5)
    assert_clean(pair.responder)
    assert_clean(pair.initiator)


@FUZZ
@given(st.lists(any_plain_payload, max_size=6), st.booleans())
def test_authenticated_nonsense_responses_never_break_the_initiator(
    payloads: list[Payload], rekey_ike: bool
) -> None:
    pair = fresh_pair()
    pair.tap = lambda d, n, data: []  # the real answer never arrives
    if rekey_ike:
        pair.initiator.rekey_ike(pair.now)
    else:
        (spi,) = pair.initiator.children
        pair.initiator.rekey_child(spi, pair.now)
    pair.settle()
    ctx = pair.responder.current
    pending = pair.initiator.current.pending
    assert ctx.sk_out is not None and pending is not None
    msg = Message(
        ctx.spi_i, ctx.spi_r, pending.exchange, pending.message_id, True, False, tuple(payloads)
    )
    pair.tap = None
    pair.deliver("r2i", protect(msg, ctx.sk_out, SeededRng(4)))
    pair.run(30)
    assert_clean(pair.initiator)


@FUZZ
@given(st.lists(any_plain_payload, max_size=6))
def test_authenticated_nonsense_ike_auth_never_breaks_a_half_open_responder(
    payloads: list[Payload],
) -> None:
    i = psk_config("a.example", "b.example")
    r = psk_config(
        "b.example", "a.example", children=(mirrored(child_config()),), local_addr=RESPONDER_ADDR
    )
    pair = IkePair(i, r, tap=lambda d, n, data: [] if (d, n) == (I2R, 1) else [data])
    pair.settle()
    ctx = pair.initiator.current
    assert ctx.sk_out is not None
    msg = Message(ctx.spi_i, ctx.spi_r, ExchangeType.IKE_AUTH, 1, False, True, tuple(payloads))
    pair.deliver(I2R, protect(msg, ctx.sk_out, SeededRng(6)))
    assert_clean(pair.responder)


@FUZZ
@given(sa_payloads(), sa_payloads(), st.sampled_from([None, 19, 31, 14]), st.booleans())
def test_proposal_selection_never_raises(
    offered: SaPayload, answer: SaPayload, ke_group: int | None, pfs: bool
) -> None:
    select_ike(offered, [IkeProposal()], ke_group)
    select_child(offered, [ChildProposal(), ChildProposal(dh=(31,))], ke_group, pfs)
    with contextlib.suppress(RemoteProtocolError):
        check_response(offered, answer, spi_len=0)
