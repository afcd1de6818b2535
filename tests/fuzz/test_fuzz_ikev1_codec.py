"""Hostile bytes into every IKEv1 parser: only the project's typed errors may come out.

Round trips first (whatever the strategies draw encodes and decodes back equal), then
random and mutated datagrams into the header, message, payload-chain and body decoders,
the decryption of phase 1 messages, the sealed-payload openers, client IDs, the
transform readers of the algorithm policy and the SIG check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import cache

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipsec_sidecar.core.errors import KipsecError
from kipsec_sidecar.core.ikev1.constants import AuthMethod, PayloadType, ProtocolId
from kipsec_sidecar.core.ikev1.encryption import decrypt_message, encrypt_message
from kipsec_sidecar.core.ikev1.identity import id_selector
from kipsec_sidecar.core.ikev1.message import (
    Message,
    decode_header,
    decode_message,
    decode_payloads,
    encode_message,
    encode_payloads,
)
from kipsec_sidecar.core.ikev1.payloads import (
    IdPayload,
    Payload,
    SaPayload,
    SealedPayload,
    decode_body,
    encode_body,
    payload_type,
)
from kipsec_sidecar.core.ikev1.policy import phase1_suite, phase2_suite
from kipsec_sidecar.core.ikev1.pubkey import open_rsa, open_symmetric
from kipsec_sidecar.core.ikev1.signature import verify_hash
from support.byte_mutations import mutated
from support.ikev1_strategies import messages, payloads, sa_payloads

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = bytes(range(32))
IV = bytes(16)
KNOWN_TYPES = [int(t) for t in PayloadType if t]


def _try(call: Callable[..., object], *args: object, **kwargs: object) -> None:
    with contextlib.suppress(KipsecError):
        call(*args, **kwargs)


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@FUZZ
@given(payloads)
def test_every_payload_round_trips(payload: Payload) -> None:
    assert decode_body(payload_type(payload), encode_body(payload)) == payload


@FUZZ
@given(messages)
def test_every_message_round_trips_in_clear_and_encrypted(msg: Message) -> None:
    assert decode_message(encode_message(msg)) == msg
    if not msg.payloads:
        return  # nothing to encrypt: a local error (test_ikev1_encryption)
    data, next_iv = encrypt_message(msg, KEY, IV)
    opened, their_iv = decrypt_message(data, KEY, IV)
    assert opened.payloads == msg.payloads and next_iv == their_iv


def mutated_messages() -> st.SearchStrategy[bytes]:
    return messages.map(encode_message).flatmap(mutated)


@FUZZ
@given(data=st.binary(max_size=120) | mutated_messages())
def test_header_and_message_decoders_raise_only_typed_errors(data: bytes) -> None:
    _try(decode_header, data)
    _try(decode_message, data)
    _try(decode_message, data, sealed={PayloadType.NONCE, PayloadType.ID})


@FUZZ
@given(data=mutated_messages())
def test_decryption_of_garbage_raises_only_typed_errors(data: bytes) -> None:
    if len(data) > 19:
        data = data[:19] + bytes((data[19] | 1,)) + data[20:]
    _try(decrypt_message, data, KEY, IV)


@FUZZ
@given(ptype=st.sampled_from(KNOWN_TYPES), body=st.binary(max_size=80))
def test_body_decoders_raise_only_typed_errors(ptype: int, body: bytes) -> None:
    _try(decode_body, ptype, body)


@FUZZ
@given(
    chain=st.lists(payloads, min_size=1, max_size=4)
    .map(encode_payloads)
    .flatmap(lambda c: mutated(c[1]).map(lambda body: (c[0], body)))
)
def test_payload_chains_raise_only_typed_errors(chain: tuple[int, bytes]) -> None:
    _try(decode_payloads, chain[0], chain[1])
    _try(decode_payloads, chain[0], chain[1], padded=True)


@FUZZ
@given(sa=sa_payloads())
def test_policy_readers_raise_only_typed_errors(sa: SaPayload) -> None:
    for proposal in sa.proposals:
        for transform in proposal.transforms:
            _try(phase1_suite, transform)
            _try(phase1_suite, transform, legacy_sha1=True)
            _try(phase2_suite, proposal.protocol, transform)
            _try(phase2_suite, ProtocolId.AH, transform)


@FUZZ
@given(
    payload=st.builds(
        IdPayload,
        st.integers(0, 12),
        st.binary(max_size=40),
        st.integers(0, 255),
        st.integers(0, 0xFFFF),
    )
)
def test_client_id_reader_raises_only_typed_errors(payload: IdPayload) -> None:
    _try(id_selector, payload)


@FUZZ
@given(ptype=st.sampled_from(KNOWN_TYPES), data=st.binary(max_size=300))
def test_sealed_payload_openers_raise_only_typed_errors(ptype: int, data: bytes) -> None:
    _try(open_symmetric, SealedPayload(ptype, data), KEY)
    _try(open_rsa, SealedPayload(ptype, data), rsa_key())


@FUZZ
@given(
    method=st.sampled_from([int(m) for m in AuthMethod] + [0, 200]),
    hash_value=st.binary(max_size=70),
    sig=st.binary(max_size=300),
)
def test_signature_check_raises_only_typed_errors(
    method: int, hash_value: bytes, sig: bytes
) -> None:
    _try(verify_hash, rsa_key().public_key(), method, hash_value, sig)
    _try(verify_hash, ec_key().public_key(), method, hash_value, sig)


@cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())
