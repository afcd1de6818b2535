"""Phase 1 encryption: AES-CBC with RFC 2409 Appendix B IV chaining, zero padding."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kipsec_sidecar.core.errors import LocalProtocolError, ParseError
from kipsec_sidecar.core.ike.constants import PrfId
from kipsec_sidecar.core.ikev1.constants import ExchangeType, Flag, IdType
from kipsec_sidecar.core.ikev1.encryption import (
    decrypt_message,
    encrypt_message,
    phase1_iv,
    phase2_iv,
)
from kipsec_sidecar.core.ikev1.message import HEADER_LEN, Message, encode_payloads
from kipsec_sidecar.core.ikev1.payloads import HashPayload, IdPayload

CKY_I, CKY_R = b"I" * 8, b"R" * 8
KEY = bytes(range(32))
MM5 = Message(
    CKY_I,
    CKY_R,
    ExchangeType.MAIN,
    0,
    (IdPayload(IdType.FQDN, b"initiator.example"), HashPayload(b"\x11" * 32)),
)


def test_a_sealed_message_opens_with_the_same_key_and_iv() -> None:
    iv = phase1_iv(PrfId.HMAC_SHA2_256, b"gxi", b"gxr")
    data, next_iv = encrypt_message(MM5, KEY, iv)
    assert data[19] & Flag.ENCRYPTION
    assert int.from_bytes(data[24:28], "big") == len(data)
    opened, their_next = decrypt_message(data, KEY, iv)
    assert opened == Message(CKY_I, CKY_R, ExchangeType.MAIN, 0, MM5.payloads, Flag.ENCRYPTION)
    assert next_iv == their_next == data[-16:]


def test_the_ciphertext_is_plain_aes_cbc_of_the_zero_padded_chain() -> None:
    iv = bytes(16)
    data, _ = encrypt_message(MM5, KEY, iv)
    _, chain = encode_payloads(MM5.payloads)
    padded = chain + bytes(-len(chain) % 16)
    encryptor = Cipher(algorithms.AES(KEY), modes.CBC(iv)).encryptor()
    assert data[HEADER_LEN:] == encryptor.update(padded) + encryptor.finalize()


def test_iv_derivations_follow_appendix_b() -> None:
    assert phase1_iv(PrfId.HMAC_SHA2_384, b"a", b"b") == hashlib.sha384(b"ab").digest()[:16]
    last = bytes(range(16))
    expected = hashlib.sha256(last + (0x01020304).to_bytes(4, "big")).digest()[:16]
    assert phase2_iv(PrfId.HMAC_SHA2_256, last, 0x01020304) == expected


def test_sha1_ivs_need_the_legacy_flag() -> None:
    with pytest.raises(LocalProtocolError, match="SHA1"):
        phase1_iv(PrfId.HMAC_SHA1, b"a", b"b")
    assert (
        phase1_iv(PrfId.HMAC_SHA1, b"a", b"b", legacy_sha1=True)
        == hashlib.sha1(b"ab").digest()[:16]
    )


def test_a_wrong_iv_does_not_yield_the_message() -> None:
    data, _ = encrypt_message(MM5, KEY, bytes(16))
    try:
        opened, _ = decrypt_message(data, KEY, b"\x01" * 16)
    except ParseError:
        return
    assert opened.payloads != MM5.payloads


def test_ciphertext_that_is_not_whole_blocks_is_a_parse_error() -> None:
    data, _ = encrypt_message(MM5, KEY, bytes(16))
    cut = data[:-1]
    cut = cut[:24] + len(cut).to_bytes(4, "big") + cut[28:]
    with pytest.raises(ParseError, match=r"encrypted\.length"):
        decrypt_message(cut, KEY, bytes(16))


def test_a_clear_message_is_not_decrypted() -> None:
    from kipsec_sidecar.core.ikev1.message import encode_message

    with pytest.raises(ParseError, match=r"header\.flags"):
        decrypt_message(encode_message(MM5), KEY, bytes(16))


def test_bad_key_or_iv_sizes_are_local_errors() -> None:
    with pytest.raises(LocalProtocolError):
        encrypt_message(MM5, KEY[:15], bytes(16))
    with pytest.raises(LocalProtocolError):
        encrypt_message(MM5, KEY, bytes(8))


def test_a_message_without_payloads_is_not_sealed() -> None:
    with pytest.raises(LocalProtocolError):
        encrypt_message(Message(CKY_I, CKY_R, ExchangeType.INFORMATIONAL, 1, ()), KEY, bytes(16))
