"""The Endpoint: routing by SPI, stateless cookies, refusal of unknown peers and garbage."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kipsec_sidecar.core.ike.config import IkeConfig
from kipsec_sidecar.core.ike.constants import NotifyType
from kipsec_sidecar.core.ike.endpoint import COOKIE_THRESHOLD, Endpoint
from kipsec_sidecar.core.ike.engine import IkeSa
from kipsec_sidecar.core.ike.events import ChildSaEstablished, IkeSaEstablished
from kipsec_sidecar.core.ike.message import Message, decode_message, encode_message
from support.ike_pair import (
    I2R,
    INITIATOR_ADDR,
    RESPONDER_ADDR,
    IkePair,
    SeededRng,
    child_config,
    mirrored,
    psk_config,
)


def configs() -> tuple[IkeConfig, IkeConfig]:
    i = psk_config("a.example", "b.example")
    r = psk_config(
        "b.example", "a.example", children=(mirrored(child_config()),), local_addr=RESPONDER_ADDR
    )
    return i, r


def test_a_late_copy_of_ike_sa_init_creates_no_second_sa() -> None:
    first: list[bytes] = []

    def tap(d: str, i: int, data: bytes) -> list[bytes]:
        if (d, i) == (I2R, 0):
            first.append(data)
        return [data]

    pair = IkePair(*configs(), tap=tap)
    pair.run(5)
    pair.deliver(I2R, first[0])
    assert len({id(sa) for sa in pair.endpoint.sas.values()}) == 1
    assert pair.responder.stats.dropped_out_of_window == 1
    assert pair.wire == []


def test_garbage_and_unknown_spis_are_dropped_and_counted() -> None:
    endpoint = Endpoint(configs()[1], rng=SeededRng(1))
    endpoint.receive_datagram(b"\x01" * 20, INITIATOR_ADDR, 0.0)
    endpoint.receive_datagram(bytes(range(40)), INITIATOR_ADDR, 0.0)
    assert endpoint.dropped == 2
    assert endpoint.datagrams_to_send(0.0) == [] and endpoint.sas == {}


def test_a_peer_without_configuration_is_ignored() -> None:
    initiator_config, responder_config = configs()
    endpoint = Endpoint(lambda addr: None, rng=SeededRng(1))
    pair = IkePair(initiator_config, responder_config)
    (_, data) = pair.wire[0]
    endpoint.receive_datagram(data, INITIATOR_ADDR, 0.0)
    assert endpoint.sas == {} and endpoint.datagrams_to_send(0.0) == []


def test_cookie_of_the_previous_secret_is_accepted_older_ones_are_not() -> None:
    endpoint = Endpoint(configs()[1], rng=SeededRng(1), cookie_threshold=0, now=0.0)
    nonce, spi = b"n" * 32, b"s" * 8
    old = endpoint.cookie_for(nonce, INITIATOR_ADDR, spi)
    endpoint.handle_timer(300.0)
    current = endpoint.cookie_for(nonce, INITIATOR_ADDR, spi)
    assert current != old
    assert int.from_bytes(old[:2], "big") in endpoint._secrets
    endpoint.handle_timer(600.0)
    assert int.from_bytes(old[:2], "big") not in endpoint._secrets


def test_cookie_is_bound_to_the_initiator_address() -> None:
    endpoint = Endpoint(configs()[1], rng=SeededRng(1))
    nonce, spi = b"n" * 32, b"s" * 8
    assert endpoint.cookie_for(nonce, INITIATOR_ADDR, spi) != endpoint.cookie_for(
        nonce, ("10.9.9.9", 500), spi
    )


def test_two_endpoints_negotiate_with_each_other() -> None:
    initiator_config, responder_config = configs()
    a = Endpoint(initiator_config, rng=SeededRng(10))
    b = Endpoint(responder_config, rng=SeededRng(20))
    a.initiate(initiator_config, RESPONDER_ADDR, 0.0)
    for _ in range(4):
        for data, _addr in a.datagrams_to_send(0.0):
            b.receive_datagram(data, INITIATOR_ADDR, 0.0)
        for data, _addr in b.datagrams_to_send(0.0):
            a.receive_datagram(data, RESPONDER_ADDR, 0.0)
    events_a = [e for _, e in iter(a.next_event, None)]
    events_b = [e for _, e in iter(b.next_event, None)]
    for events in (events_a, events_b):
        assert [type(e) for e in events] == [IkeSaEstablished, ChildSaEstablished]


def test_cookie_reply_is_stateless_and_names_the_initiator_spi() -> None:
    pair = IkePair(*configs(), cookie_threshold=0)
    _, data = pair.wire.pop(0)
    pair.deliver(I2R, data)
    (_, answer) = pair.wire[0]
    reply = decode_message(answer)
    assert reply.spi_i == decode_message(data).spi_i and reply.spi_r == bytes(8)
    assert pair.endpoint.sas == {}


def _requests(count: int, config: IkeConfig, first: int = 0) -> list[bytes]:
    """``count`` IKE_SA_INIT requests, each from a new initiator (its own SPI and nonce)."""
    initiators = [
        IkeSa.initiator(config, RESPONDER_ADDR, rng=SeededRng(n), now=0.0)
        for n in range(first, first + count)
    ]
    return [sa.datagrams_to_send(0.0)[0][0] for sa in initiators]


def test_a_flood_beyond_the_threshold_gets_cookies_without_decoding_or_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    initiator_config, responder_config = configs()
    endpoint = Endpoint(responder_config, rng=SeededRng(1))
    assert endpoint.cookie_threshold == COOKIE_THRESHOLD == 10
    decoded: list[bytes] = []

    def counting_decode(data: bytes) -> Message:
        decoded.append(data)
        return decode_message(data)

    monkeypatch.setattr("kipsec_sidecar.core.ike.endpoint.decode_message", counting_decode)
    requests = _requests(40, initiator_config)
    for data in requests:
        endpoint.receive_datagram(data, INITIATOR_ADDR, 1.0)
    answers = endpoint.datagrams_to_send(1.0)
    # The first ten made half-open SAs; the other thirty cost a header walk and a hash.
    assert endpoint.half_open_count == 10 and len(set(endpoint.sas.values())) == 10
    assert len(decoded) == 10
    assert endpoint.cookies_sent == 30 and endpoint.dropped == 0
    cookies = [decode_message(data) for data, _ in answers[10:]]
    assert len(cookies) == 30
    assert all(reply.notify(NotifyType.COOKIE) is not None for reply in cookies)


def test_a_new_ike_sa_init_is_decoded_once_by_the_endpoint_and_its_sa(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The endpoint decodes a new request whole before it makes state; the new SA takes
    that decoding instead of decoding the same bytes again, and answers as before."""
    initiator_config, responder_config = configs()
    endpoint = Endpoint(responder_config, rng=SeededRng(1))
    decoded: list[bytes] = []

    def counting_decode(data: bytes) -> Message:
        decoded.append(data)
        return decode_message(data)

    monkeypatch.setattr("kipsec_sidecar.core.ike.endpoint.decode_message", counting_decode)
    monkeypatch.setattr("kipsec_sidecar.core.ike.engine.decode_message", counting_decode)
    (request,) = _requests(1, initiator_config)
    endpoint.receive_datagram(request, INITIATOR_ADDR, 1.0)
    assert decoded == [request]
    ((answer, addr),) = endpoint.datagrams_to_send(1.0)
    response = decode_message(answer)
    assert addr == INITIATOR_ADDR and response.is_response
    assert response.spi_i == decode_message(request).spi_i
    # A retransmission reaches the half-open SA, which answers it from its cache.
    endpoint.receive_datagram(request, INITIATOR_ADDR, 1.5)
    assert endpoint.datagrams_to_send(1.5) == [(answer, INITIATOR_ADDR)]
    assert len(set(endpoint.sas.values())) == 1


def test_a_request_echoing_its_cookie_gets_state_in_a_flood() -> None:
    initiator_config, responder_config = configs()
    endpoint = Endpoint(responder_config, rng=SeededRng(1), cookie_threshold=1)
    flood, (honest,) = _requests(1, initiator_config), _requests(1, initiator_config, 1)
    endpoint.receive_datagram(flood[0], INITIATOR_ADDR, 1.0)
    endpoint.datagrams_to_send(1.0)
    request = decode_message(honest)
    endpoint.receive_datagram(honest, INITIATOR_ADDR, 1.0)
    ((answer, _),) = endpoint.datagrams_to_send(1.0)
    cookie = decode_message(answer).payloads[0]
    again = replace(request, payloads=(cookie, *request.payloads))
    endpoint.receive_datagram(encode_message(again), INITIATOR_ADDR, 1.0)
    assert endpoint.half_open_count == 2 and endpoint.cookies_sent == 1


def test_requests_from_an_unknown_address_are_refused_and_counted_apart() -> None:
    initiator_config, _ = configs()
    endpoint = Endpoint(lambda addr: None, rng=SeededRng(1))
    for data in _requests(3, initiator_config):
        endpoint.receive_datagram(data, ("10.9.9.9", 500), 0.0)
    endpoint.receive_datagram(b"\x01" * 20, ("10.9.9.9", 500), 0.0)
    assert endpoint.refused == {"unknown_peer": 3, "malformed": 0, "unsupported_critical": 0}
    assert endpoint.dropped == 1 and endpoint.sas == {} and endpoint.cookies_sent == 0
