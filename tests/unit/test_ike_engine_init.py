"""IKE_SA_INIT through the engine: happy path, INVALID_KE, COOKIE, NAT detection, refusals."""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

import pytest

import kipsec_sidecar.core.ike.engine  # noqa: F401  (first: ike_sa_init is in an import cycle)
from kipsec_sidecar.core.ike import ike_sa_init
from kipsec_sidecar.core.ike.config import Encryption, IkeConfig, IkeProposal
from kipsec_sidecar.core.ike.constants import (
    NON_ESP_MARKER,
    DhGroup,
    EncrId,
    ExchangeType,
    IntegId,
    NotifyType,
    PayloadType,
)
from kipsec_sidecar.core.ike.events import (
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaEstablished,
    NegotiationFailed,
)
from kipsec_sidecar.core.ike.message import Message, decode_message, encode_message
from kipsec_sidecar.core.ike.payloads import (
    KePayload,
    NoncePayload,
    NotifyPayload,
    UnknownPayload,
)
from support.ike_pair import (
    I2R,
    NAT_ADDR,
    R2I,
    RESPONDER_ADDR,
    IkePair,
    child_config,
    mirrored,
    psk_config,
)


def configs(**responder_overrides: Any) -> tuple[IkeConfig, IkeConfig]:
    i = psk_config("a.example", "b.example")
    r = psk_config(
        "b.example",
        "a.example",
        children=(mirrored(child_config()),),
        local_addr=RESPONDER_ADDR,
        **responder_overrides,
    )
    return i, r


def test_psk_handshake_establishes_both_sides_with_mirrored_child_keys() -> None:
    pair = IkePair(*configs())
    pair.run(5)
    assert pair.initiator.established and pair.responder.established
    (ci,) = pair.i.of(ChildSaEstablished)
    (cr,) = pair.r.of(ChildSaEstablished)
    assert (ci.spi_in, ci.spi_out) == (cr.spi_out, cr.spi_in)
    assert ci.encr_key_out == cr.encr_key_in and ci.encr_key_in == cr.encr_key_out
    assert len(ci.encr_key_out) == 36  # AES-256-GCM key plus 4-byte salt
    assert ci.encr_key_out != ci.encr_key_in


def test_ike_sa_established_comes_before_the_child_and_names_both_identities() -> None:
    pair = IkePair(*configs())
    pair.run(5)
    assert isinstance(pair.i.events[0], IkeSaEstablished)
    assert isinstance(pair.i.events[1], ChildSaEstablished)
    established = pair.i.events[0]
    assert (established.local_id, established.remote_id) == ("a.example", "b.example")
    assert established.spi_i == pair.responder.spi_i and established.spi_r == pair.responder.spi_r


def test_handshake_takes_exactly_two_round_trips() -> None:
    pair = IkePair(*configs())
    pair.run(5)
    assert pair.counts == {I2R: 2, R2I: 2}


def test_child_event_repr_hides_keys() -> None:
    pair = IkePair(*configs())
    pair.run(5)
    (child,) = pair.i.of(ChildSaEstablished)
    assert child.encr_key_out.hex() not in repr(child)
    assert "encr_key_out" not in repr(child) and "integ_key_in" not in repr(child)


def test_invalid_ke_makes_the_initiator_retry_with_the_responders_group() -> None:
    i, r = configs(proposals=(IkeProposal(dh=(DhGroup.ECP_256,)),))
    sent: list[bytes] = []

    def tap(direction: str, index: int, data: bytes) -> list[bytes]:
        sent.append(data) if direction == I2R else None
        return [data]

    pair = IkePair(i, r, tap=tap)
    pair.run(5)
    first, retry = decode_message(sent[0]), decode_message(sent[1])
    assert first.get(KePayload).group == DhGroup.CURVE25519  # type: ignore[union-attr]
    assert retry.get(KePayload).group == DhGroup.ECP_256  # type: ignore[union-attr]
    assert first.spi_i == retry.spi_i
    assert first.get(NoncePayload) == retry.get(NoncePayload)
    assert pair.initiator.established
    assert pair.i.of(IkeSaEstablished)[0].dh_group == DhGroup.ECP_256


def test_responder_keeps_no_state_for_invalid_ke() -> None:
    i, r = configs(proposals=(IkeProposal(dh=(DhGroup.ECP_256,)),))
    pair = IkePair(i, r)
    pair.flush() if False else None
    direction, data = pair.wire.pop(0)
    pair.deliver(direction, data)
    assert pair.endpoint.sas == {}
    (answer,) = [decode_message(d) for _, d in pair.wire]
    notify = answer.notify(NotifyType.INVALID_KE_PAYLOAD)
    assert notify is not None and notify.data == (DhGroup.ECP_256).to_bytes(2, "big")
    assert answer.spi_r == bytes(8)


def test_cookie_round_trip_when_too_many_half_open_sas() -> None:
    sent: list[bytes] = []

    def tap(direction: str, index: int, data: bytes) -> list[bytes]:
        sent.append(data) if direction == I2R else None
        return [data]

    pair = IkePair(*configs(), cookie_threshold=0, tap=tap)
    pair.run(5)
    assert pair.endpoint.cookies_sent == 1
    retry = decode_message(sent[1])
    first = retry.payloads[0]
    assert isinstance(first, NotifyPayload) and first.notify_type == NotifyType.COOKIE
    assert pair.initiator.established and pair.responder.established


def test_a_forged_cookie_creates_no_state() -> None:
    pair = IkePair(*configs(), cookie_threshold=0)
    _, data = pair.wire.pop(0)
    request = decode_message(data)
    forged = Message(
        request.spi_i,
        request.spi_r,
        request.exchange,
        0,
        False,
        True,
        (NotifyPayload(NotifyType.COOKIE, data=bytes(18)), *request.payloads),
    )
    pair.deliver(I2R, encode_message(forged))
    assert pair.endpoint.sas == {}
    assert pair.endpoint.cookies_sent == 1


def test_nat_is_detected_on_both_sides_and_ike_moves_to_port_4500() -> None:
    sent: list[bytes] = []

    def tap(direction: str, index: int, data: bytes) -> list[bytes]:
        sent.append(data) if direction == I2R else None
        return [data]

    pair = IkePair(*configs(), nat=NAT_ADDR, tap=tap)
    pair.run(5)
    assert pair.initiator.established
    assert pair.initiator.nat_local and not pair.initiator.nat_remote
    assert pair.responder.nat_remote and not pair.responder.nat_local
    assert pair.i.of(IkeSaEstablished)[0].nat_detected
    assert pair.r.of(ChildSaEstablished)[0].nat_detected
    assert not sent[0].startswith(NON_ESP_MARKER)
    assert sent[1].startswith(NON_ESP_MARKER)
    assert pair.initiator.peer_addr == (RESPONDER_ADDR[0], 4500)
    assert pair.responder.peer_addr == (NAT_ADDR[0], NAT_ADDR[1] + 1)


def test_no_nat_without_translation() -> None:
    pair = IkePair(*configs())
    pair.run(5)
    assert not pair.initiator.nat_detected and not pair.responder.nat_detected


def test_no_proposal_chosen_for_the_ike_sa_fails_both_sides() -> None:
    cbc = IkeProposal(
        encryption=(Encryption(EncrId.AES_CBC, 128),), integrity=(IntegId.HMAC_SHA2_256_128,)
    )
    pair = IkePair(*configs(proposals=(cbc,)))
    pair.run(5)
    (failed,) = pair.i.of(NegotiationFailed)
    assert failed.notify == NotifyType.NO_PROPOSAL_CHOSEN and failed.by_peer
    assert pair.i.of(IkeSaDeleted)[0].reason == "negotiation-failed"
    assert pair.initiator.closed
    assert pair.r.of(NegotiationFailed)[0].exchange == ExchangeType.IKE_SA_INIT
    assert pair.endpoint.sas == {}


def test_unknown_critical_payload_in_ike_sa_init_is_answered_with_its_type() -> None:
    pair = IkePair(*configs())
    _, data = pair.wire.pop(0)
    request = decode_message(data)
    bad = Message(
        request.spi_i,
        request.spi_r,
        request.exchange,
        0,
        False,
        True,
        (*request.payloads, UnknownPayload(222, True, b"?")),
    )
    pair.deliver(I2R, encode_message(bad))
    (answer,) = [decode_message(d) for _, d in pair.wire]
    notify = answer.notify(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD)
    assert notify is not None and notify.data == bytes([222])
    assert pair.endpoint.sas == {}


def test_unknown_non_critical_payload_is_ignored() -> None:
    pair = IkePair(*configs())
    _, data = pair.wire.pop(0)
    request = decode_message(data)
    extra = Message(
        request.spi_i,
        request.spi_r,
        request.exchange,
        0,
        False,
        True,
        (*request.payloads, UnknownPayload(222, False, b"?")),
    )
    pair.deliver(I2R, encode_message(extra))
    (answer,) = [decode_message(d) for _, d in pair.wire]
    assert (
        answer.get(KePayload) is not None
        and answer.notify(NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD) is None
    )


def test_init_request_altered_on_the_wire_fails_authentication() -> None:
    pair = IkePair(*configs())
    _, data = pair.wire.pop(0)
    request = decode_message(data)
    extra = Message(
        request.spi_i,
        request.spi_r,
        request.exchange,
        0,
        False,
        True,
        (*request.payloads, UnknownPayload(222, False, b"?")),
    )
    pair.wire.insert(0, (I2R, encode_message(extra)))
    pair.run(5)
    assert pair.initiator.closed and not pair.responder.established


def test_init_request_announces_fragmentation_and_nat_detection() -> None:
    pair = IkePair(*configs())
    request = decode_message(pair.wire[0][1])
    assert request.exchange == ExchangeType.IKE_SA_INIT
    for kind in (
        NotifyType.IKEV2_FRAGMENTATION_SUPPORTED,
        NotifyType.NAT_DETECTION_SOURCE_IP,
        NotifyType.NAT_DETECTION_DESTINATION_IP,
    ):
        assert request.notify(kind) is not None
    assert [p for p in request.payloads if isinstance(p, UnknownPayload)] == []
    assert PayloadType.SA  # the SA payload is first when there is no cookie


def test_the_same_seeds_give_the_same_bytes_on_the_wire() -> None:
    def wire_of(seed: int) -> list[bytes]:
        seen: list[bytes] = []

        def tap(d: str, i: int, data: bytes) -> list[bytes]:
            seen.append(data)
            return [data]

        pair = IkePair(*configs(), seed=seed, tap=tap)
        pair.run(5)
        return seen

    assert wire_of(7) == wire_of(7)
    assert wire_of(7) != wire_of(8)


@pytest.mark.parametrize("address", ["192.0.2.7", "2001:db8::7"])
def test_nat_hash_is_sha1_of_the_spis_the_address_and_the_port(address: str) -> None:
    """The address's bytes are cached per address string: the hash must not change."""
    spi_i, spi_r = b"i" * 8, b"r" * 8
    packed = ipaddress.ip_address(address).packed
    expected = hashlib.sha1(spi_i + spi_r + packed + (4500).to_bytes(2, "big")).digest()
    for _ in range(2):  # the second call is answered from the cache
        assert ike_sa_init.nat_hash(spi_i, spi_r, (address, 4500)) == expected
    assert ike_sa_init.nat_hash(spi_i, spi_r, (address, 500)) != expected


def test_nat_hash_of_something_that_is_not_an_address_raises() -> None:
    with pytest.raises(ValueError):
        ike_sa_init.nat_hash(b"i" * 8, b"r" * 8, ("not-an-address", 500))
