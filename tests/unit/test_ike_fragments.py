"""IKE fragmentation (RFC 7383): splitting into SKF datagrams and bounded reassembly."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from kipsec_sidecar.core.errors import IntegrityError, LocalProtocolError, ParseError
from kipsec_sidecar.core.ike.constants import (
    EncrId,
    ExchangeType,
    IntegId,
    PayloadType,
)
from kipsec_sidecar.core.ike.fragments import FragmentStore, split
from kipsec_sidecar.core.ike.message import HEADER_LEN, Message, decode_message
from kipsec_sidecar.core.ike.payloads import CertPayload, EncryptedFragment, IdiPayload
from kipsec_sidecar.core.ike.sk import (
    FragmentReassembler,
    SkKeys,
    protect,
    protect_fragments,
    unprotect,
    verify_fragment,
)

GCM = SkKeys(EncrId.AES_GCM_16, bytes(range(36)), None, b"")
CBC = SkKeys(EncrId.AES_CBC, bytes(range(16)), IntegId.HMAC_SHA2_256_128, bytes(range(32)))
MAX = 300


def rng() -> Callable[[int], bytes]:
    counter = itertools.count(1)
    return lambda n: bytes(next(counter) & 0xFF for _ in range(n))


def ike_auth(message_id: int = 1, cert_len: int = 1200) -> Message:
    return Message(
        spi_i=bytes.fromhex("0102030405060708"),
        spi_r=bytes.fromhex("1112131415161718"),
        exchange=ExchangeType.IKE_AUTH,
        message_id=message_id,
        is_response=False,
        is_initiator=True,
        payloads=(
            IdiPayload(2, b"pod-a.example"),
            CertPayload(4, bytes(i & 0xFF for i in range(cert_len))),
        ),
    )


MSG = ike_auth()


def fragments(keys: SkKeys = GCM, msg: Message = MSG, max_datagram: int = MAX) -> list[bytes]:
    return protect_fragments(msg, keys, rng(), max_datagram)


@pytest.mark.parametrize("keys", [GCM, CBC], ids=["aes-gcm", "aes-cbc"])
def test_large_message_is_split_into_numbered_fragments_that_fit(keys: SkKeys) -> None:
    frags = fragments(keys)
    assert len(frags) > 1
    assert all(len(f) <= MAX for f in frags)
    decoded = [decode_message(f).payloads[0] for f in frags]
    assert all(isinstance(p, EncryptedFragment) for p in decoded)
    assert [(p.number, p.total) for p in decoded] == [  # type: ignore[union-attr]
        (n, len(frags)) for n in range(1, len(frags) + 1)
    ]


def test_only_the_first_fragment_names_the_first_inner_payload() -> None:
    firsts = [f[HEADER_LEN] for f in fragments()]
    assert firsts[0] == PayloadType.IDi
    assert set(firsts[1:]) == {0}


def test_message_that_fits_is_one_ordinary_sk_datagram() -> None:
    small = ike_auth(cert_len=10)
    (wire,) = protect_fragments(small, GCM, rng(), MAX)
    assert wire[16] == PayloadType.SK
    assert unprotect(wire, GCM) == small


def test_max_datagram_too_small_for_any_content_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        fragments(max_datagram=HEADER_LEN + 8 + 8 + 16)


@pytest.mark.parametrize("keys", [GCM, CBC], ids=["aes-gcm", "aes-cbc"])
def test_in_order_fragments_reassemble_to_the_message(keys: SkKeys) -> None:
    reassembler = FragmentReassembler()
    frags = fragments(keys)
    results = [reassembler.add(f, keys) for f in frags]
    assert results[:-1] == [None] * (len(frags) - 1)
    assert results[-1] == MSG
    assert len(reassembler) == 0


def test_out_of_order_fragments_reassemble_to_the_message() -> None:
    reassembler = FragmentReassembler()
    frags = fragments()
    order = [2, 0, *range(3, len(frags)), 1]
    results = [reassembler.add(frags[i], GCM) for i in order]
    assert results[-1] == MSG
    assert results[:-1] == [None] * (len(frags) - 1)


def test_duplicate_fragments_are_ignored() -> None:
    reassembler = FragmentReassembler()
    frags = fragments()
    assert reassembler.add(frags[0], GCM) is None
    assert reassembler.add(frags[0], GCM) is None
    for f in frags[1:-1]:
        assert reassembler.add(f, GCM) is None
        assert reassembler.add(f, GCM) is None
    assert reassembler.add(frags[-1], GCM) == MSG


def test_tampered_fragment_is_rejected_and_the_genuine_one_still_completes() -> None:
    reassembler = FragmentReassembler()
    frags = fragments()
    for f in frags[:-1]:
        reassembler.add(f, GCM)
    tampered = bytearray(frags[-1])
    tampered[-20] ^= 0x01
    with pytest.raises(IntegrityError):
        reassembler.add(bytes(tampered), GCM)
    assert reassembler.add(frags[-1], GCM) == MSG


def test_fragment_under_a_wrong_key_is_rejected() -> None:
    wrong = SkKeys(EncrId.AES_GCM_16, bytes(36), None, b"")
    with pytest.raises(IntegrityError):
        FragmentReassembler().add(fragments()[0], wrong)


def test_more_fragments_than_the_bound_are_rejected_before_decryption() -> None:
    frags = fragments(max_datagram=120)
    assert len(frags) > 8
    with pytest.raises(ParseError, match="total_fragments"):
        FragmentReassembler(max_fragments=8).add(frags[0], GCM)


def test_message_larger_than_the_byte_bound_is_dropped() -> None:
    reassembler = FragmentReassembler(max_bytes=500)
    frags = fragments()
    with pytest.raises(ParseError, match="exceeds"):
        for f in frags:
            reassembler.add(f, GCM)
    assert len(reassembler) == 0


def test_smaller_total_than_the_one_in_progress_is_rejected() -> None:
    reassembler = FragmentReassembler()
    finer = fragments(max_datagram=200)
    coarser = fragments(max_datagram=MAX)
    assert len(finer) > len(coarser)
    reassembler.add(finer[0], GCM)
    with pytest.raises(ParseError, match="total_fragments"):
        reassembler.add(coarser[1], GCM)


def test_larger_total_restarts_reassembly_with_the_finer_fragments() -> None:
    reassembler = FragmentReassembler()
    coarser = fragments(max_datagram=MAX)
    finer = fragments(max_datagram=200)
    reassembler.add(coarser[0], GCM)
    results = [reassembler.add(f, GCM) for f in finer]
    assert results[-1] == MSG


def test_fragments_of_two_messages_are_kept_apart() -> None:
    reassembler = FragmentReassembler()
    other = ike_auth(message_id=2)
    a, b = fragments(), fragments(msg=other)
    for fa, fb in zip(a[:-1], b[:-1], strict=False):
        assert reassembler.add(fa, GCM) is None
        assert reassembler.add(fb, GCM) is None
    assert reassembler.add(a[-1], GCM) == MSG
    assert reassembler.add(b[-1], GCM) == other


def test_oldest_message_in_progress_is_dropped_beyond_the_bound() -> None:
    reassembler = FragmentReassembler(max_messages=1)
    reassembler.add(fragments()[0], GCM)
    reassembler.add(fragments(msg=ike_auth(message_id=2))[0], GCM)
    assert len(reassembler) == 1
    results = [reassembler.add(f, GCM) for f in fragments()[1:]]
    assert results == [None] * len(results)


def test_ordinary_sk_datagram_is_not_a_fragment() -> None:
    with pytest.raises(ParseError, match="SKF"):
        FragmentReassembler().add(protect(MSG, GCM, rng()), GCM)


def test_fragment_is_not_an_ordinary_sk_datagram() -> None:
    with pytest.raises(ParseError, match="next_payload"):
        unprotect(fragments()[0], GCM)


def test_store_rejects_a_fragment_number_above_the_total() -> None:
    with pytest.raises(ParseError, match="fragment_number"):
        FragmentStore().add((1, False), ExchangeType.IKE_AUTH, 3, 2, 0, b"x")


def test_store_rejects_fragments_of_one_message_from_different_exchanges() -> None:
    store = FragmentStore()
    store.add((1, False), ExchangeType.IKE_AUTH, 1, 2, PayloadType.IDi, b"x")
    with pytest.raises(ParseError, match="exchange"):
        store.add((1, False), ExchangeType.INFORMATIONAL, 2, 2, 0, b"y")


def test_split_gives_one_empty_piece_for_empty_content() -> None:
    assert split(b"", 10) == [b""]
    assert split(b"abcde", 2) == [b"ab", b"cd", b"e"]


def test_verify_fragment_authenticates_without_storing() -> None:
    frags = fragments()
    assert verify_fragment(frags[1], GCM) == (2, len(frags))
    tampered = frags[1][:-1] + bytes((frags[1][-1] ^ 1,))
    with pytest.raises(IntegrityError):
        verify_fragment(tampered, GCM)
