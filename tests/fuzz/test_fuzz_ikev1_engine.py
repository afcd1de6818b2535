"""Peer garbage against the IKEv1 engine: random bytes, mutated real datagrams and
authenticated nonsense (encrypted under the ISAKMP SA's keys with a correct HASH(1)).
Public-key encryption (methods 4 and 5): any handshake datagram mutated on the way (also
across a renewal, the renewed side trying its retired key), and message 3 with sealed
Nonce / ID bodies that are correctly encrypted to the responder's key but hold anything.

No exception reaches the caller, and none is swallowed as an internal error: the
``internal_errors`` counter, where a bug would hide, stays at zero on both sides.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipsec_sidecar.core.ike.events import ChildSaEstablished
from kipsec_sidecar.core.ikev1 import keys
from kipsec_sidecar.core.ikev1.constants import ExchangeType, PayloadType
from kipsec_sidecar.core.ikev1.engine import IsakmpSa
from kipsec_sidecar.core.ikev1.message import (
    Message,
    decode_message,
    encode_message,
    encode_payloads,
)
from kipsec_sidecar.core.ikev1.payloads import HashPayload, Payload, SealedPayload
from support.ike_pair import I2R, INITIATOR_ADDR, R2I, IkePair, pair_configs
from support.ikev1_public_key import RENEWAL, RSA_B, Renewed, public_key_pair, renewed_pair
from support.ikev1_strategies import payloads

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def established_pair() -> IkePair:
    pair = IkePair(*pair_configs(version=1), version=1)
    pair.run(10)
    assert pair.initiator.established and pair.responder.established
    return pair


def captured() -> list[bytes]:
    """Every datagram the initiator sends in a whole life: main mode, quick mode, Delete."""
    seen: list[bytes] = []

    def tap(direction: str, index: int, data: bytes) -> list[bytes]:
        if direction == I2R:
            seen.append(data)
        return [data]

    pair = IkePair(*pair_configs(version=1), version=1, tap=tap)
    pair.run(10)
    pair.initiator.delete(pair.now)
    pair.settle()
    return seen


CAPTURED = captured()


def assert_no_internal_error(pair: IkePair) -> None:
    for sa in (pair.initiator, pair.responder):
        assert isinstance(sa, IsakmpSa)
        assert sa.stats.internal_errors == 0


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    pair = established_pair()
    pair.endpoint.receive_datagram(data, INITIATOR_ADDR, pair.now)
    pair.initiator.receive_datagram(data, INITIATOR_ADDR, pair.now)
    assert_no_internal_error(pair)


@FUZZ
@given(st.sampled_from(CAPTURED), st.integers(0, 2000), st.integers(1, 255), st.booleans())
def test_mutated_real_datagrams(data: bytes, position: int, xor: int, truncate: bool) -> None:
    pair = established_pair()
    position %= len(data)
    mutated = (
        data[:position]
        if truncate
        else (data[:position] + bytes([data[position] ^ xor]) + data[position + 1 :])
    )
    pair.endpoint.receive_datagram(mutated, INITIATOR_ADDR, pair.now)
    pair.run(5)
    assert_no_internal_error(pair)


@FUZZ
@given(
    st.sampled_from([ExchangeType.QUICK, ExchangeType.INFORMATIONAL]),
    st.integers(1, 0xFFFFFFFF),
    st.lists(payloads, max_size=5),
)
def test_authenticated_nonsense(exchange: int, message_id: int, body: list[Payload]) -> None:
    """Correctly encrypted and hashed under the ISAKMP SA, but anything inside."""
    pair = established_pair()
    sender: IsakmpSa = pair.initiator
    assert sender.p1.keys is not None
    tail = encode_payloads(body)[1]
    hash1 = keys.quick_mode_hash1(sender.p1.prf_id, sender.p1.keys.skeyid_a, message_id, tail)
    msg = Message(
        sender.cookie_i, sender.cookie_r, exchange, message_id, (HashPayload(hash1), *body)
    )
    data = sender.seal(msg, message_id)
    sender.forget_exchange(message_id)
    pair.endpoint.receive_datagram(data, INITIATOR_ADDR, pair.now)
    pair.run(30)
    assert_no_internal_error(pair)


@FUZZ
@given(
    st.sampled_from([4, 5]),
    st.sampled_from([I2R, R2I]),
    st.integers(0, 3),
    st.integers(0, 2000),
    st.integers(1, 255),
    st.booleans(),
)
def test_public_key_encryption_with_a_mutated_handshake_datagram(
    method: int, direction: str, index: int, position: int, xor: int, truncate: bool
) -> None:
    def tap(way: str, at: int, data: bytes) -> list[bytes]:
        if (way, at) != (direction, index):
            return [data]
        where = position % len(data)
        if truncate:
            return [data[:where]]
        return [data[:where] + bytes([data[where] ^ xor]) + data[where + 1 :]]

    pair = public_key_pair(method, tap=tap)
    pair.run(60)
    assert_no_internal_error(pair)


@settings(FUZZ, max_examples=40)
@given(
    st.sampled_from([4, 5]),
    st.sampled_from(["responder", "initiator"]),
    st.sampled_from([I2R, R2I]),
    st.integers(0, 3),
    st.integers(0, 2000),
    st.integers(1, 255),
)
def test_public_key_encryption_across_a_renewal_with_a_mutated_handshake_datagram(
    method: int,
    renewed: Renewed,
    direction: str,
    index: int,
    position: int,
    xor: int,
) -> None:
    """Within the grace the renewed side opens messages 3 / 4 with two keys: a mutated
    one must fail cleanly under both (or be dropped and retransmitted)."""

    def tap(way: str, at: int, data: bytes) -> list[bytes]:
        if (way, at) != (direction, index):
            return [data]
        where = position % len(data)
        return [data[:where] + bytes([data[where] ^ xor]) + data[where + 1 :]]

    pair, _ = renewed_pair(method, renewed, start=RENEWAL + 10.0, tap=tap)
    pair.run(60)
    assert_no_internal_error(pair)


@FUZZ
@given(
    st.sampled_from([4, 5]),
    st.sampled_from([PayloadType.NONCE, PayloadType.ID, PayloadType.KE]),
    st.binary(max_size=245),
)
def test_public_key_encryption_with_sealed_nonsense(method: int, kind: int, body: bytes) -> None:
    """Message 3 with one sealed body replaced by ``body`` encrypted to the responder's
    RSA key: it opens, and whatever it holds must fail cleanly (or be dropped, the
    initiator's retransmission then getting through)."""
    sealed_types = (PayloadType.ID, PayloadType.NONCE, PayloadType.KE, PayloadType.CERT)

    def tap(way: str, at: int, data: bytes) -> list[bytes]:
        if (way, at) != (I2R, 1):
            return [data]
        msg = decode_message(data, sealed=sealed_types)
        responder_key = RSA_B.key.public_key()
        assert isinstance(responder_key, rsa.RSAPublicKey)
        forged = SealedPayload(kind, responder_key.encrypt(body, padding.PKCS1v15()))
        replaced = tuple(
            forged if isinstance(p, SealedPayload) and p.payload_type == kind else p
            for p in msg.payloads
        )
        out = Message(msg.cookie_i, msg.cookie_r, msg.exchange, msg.message_id, replaced)
        return [encode_message(out)]

    pair = public_key_pair(method, tap=tap)
    pair.run(60)
    assert_no_internal_error(pair)
    # a forged body that happens to decode must not end in SAs whose keys disagree
    both = zip(pair.i.of(ChildSaEstablished), pair.r.of(ChildSaEstablished), strict=True)
    for mine, theirs in both:
        assert mine.encr_key_out == theirs.encr_key_in
