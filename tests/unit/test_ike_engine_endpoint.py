"""The Endpoint: routing by SPI, stateless cookies, refusal of unknown peers and garbage."""

from __future__ import annotations

from kipsec_sidecar.core.ike.config import IkeConfig
from kipsec_sidecar.core.ike.endpoint import Endpoint
from kipsec_sidecar.core.ike.events import ChildSaEstablished, IkeSaEstablished
from kipsec_sidecar.core.ike.message import decode_message
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
