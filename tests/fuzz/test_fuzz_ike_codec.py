"""Hostile bytes into the IKEv2 codec: only the project's typed errors may come out.

Random datagrams rarely get past the header, so most inputs are valid encodings with
bytes flipped, inserted or cut, which reach the payload and substructure parsers.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipsec_sidecar.core.errors import KipsecError
from kipsec_sidecar.core.ike.constants import EncrId, ExchangeType, IntegId
from kipsec_sidecar.core.ike.message import (
    Message,
    decode_header,
    decode_message,
    decode_payloads,
    encode_message,
    encode_payloads,
)
from kipsec_sidecar.core.ike.sk import (
    FragmentReassembler,
    SkKeys,
    protect,
    protect_fragments,
    unprotect,
)
from support.byte_mutations import mutated
from support.ike_codec_strategies import messages, payload_chains

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = [
    SkKeys(EncrId.AES_GCM_16, bytes(range(20)), None, b""),
    SkKeys(EncrId.CHACHA20_POLY1305, bytes(range(36)), None, b""),
    SkKeys(EncrId.AES_CBC, bytes(range(16)), IntegId.HMAC_SHA2_256_128, bytes(range(32))),
]


def mutated_messages() -> st.SearchStrategy[bytes]:
    return messages().map(encode_message).flatmap(mutated)


def _try(call: Callable[..., object], *args: object) -> None:
    with contextlib.suppress(KipsecError):
        call(*args)


@FUZZ
@given(data=st.binary(max_size=120) | mutated_messages())
def test_decode_header_raises_only_typed_errors(data: bytes) -> None:
    _try(decode_header, data)


@FUZZ
@given(data=st.binary(max_size=200) | mutated_messages())
def test_decode_message_raises_only_typed_errors(data: bytes) -> None:
    _try(decode_message, data)


def _mutated_chains() -> st.SearchStrategy[tuple[int, bytes]]:
    def mutate(chain: tuple[int, bytes]) -> st.SearchStrategy[tuple[int, bytes]]:
        return mutated(chain[1]).map(lambda body: (chain[0], body))

    return payload_chains().map(encode_payloads).flatmap(mutate)


@FUZZ
@given(chain=st.tuples(st.integers(0, 255), st.binary(max_size=200)) | _mutated_chains())
def test_decode_payloads_raises_only_typed_errors(chain: tuple[int, bytes]) -> None:
    _try(decode_payloads, *chain)


def _counter_rng() -> Callable[[int], bytes]:
    counter = itertools.count(1)
    return lambda n: bytes(next(counter) & 0xFF for _ in range(n))


def _protected(keys: SkKeys) -> st.SearchStrategy[bytes]:
    def seal(msg: Message) -> bytes:
        return protect(msg, keys, _counter_rng())

    return messages(sealed=False).map(seal)


@FUZZ
@given(data=st.data())
def test_unprotect_raises_only_typed_errors(data: st.DataObject) -> None:
    keys = data.draw(st.sampled_from(KEYS))
    wire = data.draw(st.binary(max_size=200) | _protected(keys).flatmap(mutated))
    _try(unprotect, wire, keys)


@FUZZ
@given(data=st.data())
def test_fragment_reassembly_raises_only_typed_errors(data: st.DataObject) -> None:
    keys = data.draw(st.sampled_from(KEYS))
    msg = data.draw(messages(sealed=False))
    msg = Message(msg.spi_i, msg.spi_r, ExchangeType.IKE_AUTH, 1, False, True, msg.payloads)
    frags = protect_fragments(msg, keys, _counter_rng(), 120)
    reassembler = FragmentReassembler(max_fragments=16, max_bytes=2000)
    for frag in frags:
        wire = data.draw(st.just(frag) | mutated(frag) | st.binary(max_size=120))
        _try(reassembler.add, wire, keys)
