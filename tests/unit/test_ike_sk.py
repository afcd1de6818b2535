"""The SK payload (RFC 7296 section 3.14, RFC 5282, RFC 7634): sealing, opening, tampering."""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings

from kipsec_sidecar.core.errors import (
    IntegrityError,
    LocalProtocolError,
    ParseError,
    RefusedAlgorithm,
)
from kipsec_sidecar.core.ike.constants import (
    EncrId,
    ExchangeType,
    IdType,
    IntegId,
    NotifyType,
    PayloadType,
)
from kipsec_sidecar.core.ike.message import HEADER_LEN, Message, UnsupportedCriticalPayload
from kipsec_sidecar.core.ike.payloads import (
    AuthPayload,
    IdiPayload,
    NotifyPayload,
    Payload,
    UnknownPayload,
)
from kipsec_sidecar.core.ike.sk import SkKeys, protect, unprotect
from support.ike_codec_strategies import payload_chains

SUITES: dict[str, SkKeys] = {
    "aes128gcm16": SkKeys(EncrId.AES_GCM_16, bytes(range(20)), None, b""),
    "aes256gcm16": SkKeys(EncrId.AES_GCM_16, bytes(range(36)), None, b""),
    "chacha20poly1305": SkKeys(EncrId.CHACHA20_POLY1305, bytes(range(36)), None, b""),
    "aes128-sha256": SkKeys(
        EncrId.AES_CBC, bytes(range(16)), IntegId.HMAC_SHA2_256_128, bytes(range(32))
    ),
    "aes256-sha384": SkKeys(
        EncrId.AES_CBC, bytes(range(32)), IntegId.HMAC_SHA2_384_192, bytes(range(48))
    ),
    "aes256-sha512": SkKeys(
        EncrId.AES_CBC, bytes(range(32)), IntegId.HMAC_SHA2_512_256, bytes(range(64))
    ),
}


def counter_rng() -> Callable[[int], bytes]:
    """A deterministic rng: successive bytes of a counter, so tests are reproducible."""
    counter = itertools.count(1)
    return lambda n: bytes(next(counter) & 0xFF for _ in range(n))


def ike_auth(*payloads: Payload) -> Message:
    return Message(
        spi_i=bytes.fromhex("0102030405060708"),
        spi_r=bytes.fromhex("1112131415161718"),
        exchange=ExchangeType.IKE_AUTH,
        message_id=1,
        is_response=False,
        is_initiator=True,
        payloads=payloads,
    )


MSG = ike_auth(
    IdiPayload(IdType.ID_FQDN, b"pod-a.example"),
    AuthPayload(2, b"\xaa" * 32),
    NotifyPayload(NotifyType.INITIAL_CONTACT),
)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_protect_then_unprotect_gives_the_message_back(suite: str) -> None:
    wire = protect(MSG, SUITES[suite], counter_rng())
    assert unprotect(wire, SUITES[suite]) == MSG


@pytest.mark.parametrize("suite", sorted(SUITES))
@settings(max_examples=40, deadline=None)
@given(payloads=payload_chains(sealed=False))
def test_any_payload_chain_survives_protection(suite: str, payloads: tuple[Payload, ...]) -> None:
    msg = ike_auth(*payloads)
    assert unprotect(protect(msg, SUITES[suite], counter_rng()), SUITES[suite]) == msg


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_header_length_field_covers_the_whole_datagram(suite: str) -> None:
    wire = protect(MSG, SUITES[suite], counter_rng())
    assert int.from_bytes(wire[24:28], "big") == len(wire)
    assert wire[16] == PayloadType.SK
    assert wire[HEADER_LEN] == PayloadType.IDi
    assert int.from_bytes(wire[HEADER_LEN + 2 : HEADER_LEN + 4], "big") == len(wire) - HEADER_LEN


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_a_flipped_bit_anywhere_is_an_integrity_error(suite: str) -> None:
    keys = SUITES[suite]
    wire = protect(MSG, keys, counter_rng())
    for index in range(len(wire)):
        for bit in (0x01, 0x80):
            tampered = bytearray(wire)
            tampered[index] ^= bit
            with pytest.raises(IntegrityError):
                unprotect(bytes(tampered), keys)


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_a_wrong_key_is_an_integrity_error(suite: str) -> None:
    keys = SUITES[suite]
    wire = protect(MSG, keys, counter_rng())
    if keys.integ_id is None:
        wrong = SkKeys(keys.encr_id, bytes(len(keys.encr_key)), None, b"")
    else:
        wrong = SkKeys(keys.encr_id, keys.encr_key, keys.integ_id, bytes(len(keys.integ_key)))
    with pytest.raises(IntegrityError):
        unprotect(wire, wrong)


def test_a_wrong_salt_is_an_integrity_error() -> None:
    keys = SUITES["aes256gcm16"]
    wire = protect(MSG, keys, counter_rng())
    wrong = SkKeys(keys.encr_id, keys.encr_key[:-1] + b"\x00", None, b"")
    with pytest.raises(IntegrityError):
        unprotect(wire, wrong)


def test_truncated_datagram_is_rejected() -> None:
    keys = SUITES["aes128-sha256"]
    wire = protect(MSG, keys, counter_rng())
    for cut in (1, 16, len(wire) - HEADER_LEN):
        with pytest.raises((IntegrityError, ParseError)):
            unprotect(wire[:-cut], keys)


def test_aead_layout_is_salt_iv_nonce_with_header_and_sk_header_as_aad() -> None:
    """RFC 5282 section 5: decrypt by hand, independently of unprotect."""
    keys = SUITES["aes256gcm16"]
    wire = protect(MSG, keys, counter_rng())
    aad, iv, sealed = wire[:32], wire[32:40], wire[40:]
    plain = AESGCM(keys.encr_key[:32]).decrypt(keys.encr_key[32:] + iv, sealed, aad)
    assert plain[-1] == 0  # no padding needed with a stream-like AEAD
    assert plain[:4] == bytes((PayloadType.AUTH, 0, 0, 4 + 4 + len(b"pod-a.example")))


def test_cbc_layout_is_iv_ciphertext_then_truncated_hmac_over_everything() -> None:
    """RFC 7296 section 3.14: check the MAC and decrypt by hand."""
    keys = SUITES["aes128-sha256"]
    wire = protect(MSG, keys, counter_rng())
    signed, icv = wire[:-16], wire[-16:]
    assert icv == hmac.new(keys.integ_key, signed, hashlib.sha256).digest()[:16]
    iv, ciphertext = wire[32:48], wire[48:-16]
    decryptor = Cipher(algorithms.AES(keys.encr_key), modes.CBC(iv)).decryptor()
    plain = decryptor.update(ciphertext) + decryptor.finalize()
    assert len(plain) % 16 == 0
    assert plain[-1] < 16
    assert plain[0] == PayloadType.AUTH


def test_the_iv_comes_from_the_injected_rng() -> None:
    keys = SUITES["aes128-sha256"]
    wire = protect(MSG, keys, lambda n: b"\x5a" * n)
    assert wire[32:48] == b"\x5a" * 16


def test_unknown_critical_inner_payload_is_reported_after_decryption() -> None:
    keys = SUITES["aes128gcm16"]
    wire = protect(ike_auth(UnknownPayload(222, True, b"?")), keys, counter_rng())
    with pytest.raises(UnsupportedCriticalPayload) as info:
        unprotect(wire, keys)
    assert info.value.payload_type == 222


def test_unknown_non_critical_inner_payload_is_kept() -> None:
    keys = SUITES["aes128gcm16"]
    msg = ike_auth(UnknownPayload(222, False, b"?"))
    assert unprotect(protect(msg, keys, counter_rng()), keys) == msg


def test_pad_length_beyond_the_content_is_rejected_after_the_mac() -> None:
    keys = SUITES["aes128gcm16"]
    wire = bytearray(protect(ike_auth(), keys, counter_rng()))
    aad, iv = bytes(wire[:32]), bytes(wire[32:40])
    forged = AESGCM(keys.encr_key[:16]).encrypt(keys.encr_key[16:] + iv, b"\x05", aad)
    with pytest.raises(ParseError, match="pad_length"):
        unprotect(aad + iv + forged, keys)


def test_plaintext_message_is_not_accepted_as_protected() -> None:
    keys = SUITES["aes128gcm16"]
    with pytest.raises((IntegrityError, ParseError)):
        unprotect(bytes(100), keys)


@pytest.mark.parametrize(
    "keys",
    [
        SkKeys(EncrId.AES_GCM_16, bytes(17), None, b""),
        SkKeys(EncrId.AES_CBC, bytes(16), IntegId.HMAC_SHA2_256_128, bytes(16)),
        SkKeys(EncrId.AES_CBC, bytes(20), IntegId.HMAC_SHA2_256_128, bytes(32)),
    ],
)
def test_keys_of_the_wrong_size_are_a_local_error(keys: SkKeys) -> None:
    with pytest.raises(LocalProtocolError):
        protect(MSG, keys, counter_rng())


def test_cbc_without_integrity_is_refused() -> None:
    with pytest.raises(RefusedAlgorithm):
        protect(MSG, SkKeys(EncrId.AES_CBC, bytes(16), None, b""), counter_rng())


def test_keys_never_appear_in_repr() -> None:
    keys = SUITES["aes128-sha256"]
    assert repr(keys.encr_key) not in repr(keys)
    assert repr(keys.integ_key) not in repr(keys)


def test_rng_returning_the_wrong_iv_size_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        protect(MSG, SUITES["aes128-sha256"], lambda n: bytes(8))
