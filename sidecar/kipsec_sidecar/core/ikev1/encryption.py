"""Phase 1 payload encryption: AES-CBC with the IV chaining of RFC 2409 Appendix B.

ISAKMP encrypts everything after the header (RFC 2408 section 3.1, E flag) with the
key cut from SKEYID_e (:func:`.keys.derive_phase1_keys`), in CBC mode, without a MAC:
the HASH payloads inside are what authenticate a message. The IV is never sent:

* the first encrypted message of phase 1 uses ``hash(g^xi | g^xr)`` truncated to the
  block size (:func:`phase1_iv`);
* each later message of the same exchange uses the last ciphertext block of the
  previous one, sent or received (the ``next_iv`` both functions return);
* a quick mode or informational exchange starts from ``hash(last phase 1 IV | M-ID)``
  (:func:`phase2_iv`), then chains within its message ID the same way.

The caller (the engine) owns this state: it keeps the returned ``next_iv`` only once
it has accepted the message (a forged message must not move the chain). Plaintext is
padded with zeros to the block size; on receipt, bytes after the last payload are
padding (RFC 2408 section 3.5). The cipher and its sizes come from the shared registry
(:func:`kipsec_sidecar.core.algorithms.encryption`); only AES-CBC is allowed here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .. import algorithms as registry
from ..errors import LocalProtocolError, ParseError
from ..ike.constants import EncrId
from . import message as wire
from .constants import Flag

_BLOCK = registry.encryption(EncrId.AES_CBC).block_size


def _check_key(key: bytes) -> None:
    if len(key) not in registry.encryption(EncrId.AES_CBC).key_lens:
        raise LocalProtocolError(f"an AES-CBC key is 16, 24 or 32 bytes, not {len(key)}")


def _check_iv(iv: bytes) -> None:
    if len(iv) != _BLOCK:
        raise LocalProtocolError(f"an AES-CBC IV is {_BLOCK} bytes, not {len(iv)}")


def cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """AES-CBC of ``plaintext`` zero-padded to the block size (RFC 2408 section 3.5)."""
    _check_key(key)
    _check_iv(iv)
    padded = plaintext + bytes(-len(plaintext) % _BLOCK)
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes, field: str) -> bytes:
    """AES-CBC decryption; ParseError naming ``field`` unless whole, non-empty blocks."""
    _check_key(key)
    _check_iv(iv)
    if not ciphertext or len(ciphertext) % _BLOCK:
        raise ParseError(f"{len(ciphertext)} bytes is not whole {_BLOCK}-byte blocks", field=field)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def _hash(prf_id: int, data: bytes, legacy_sha1: bool) -> bytes:
    """The negotiated hash (the one behind the negotiated HMAC prf) of ``data``."""
    name = registry.prf(prf_id, legacy_sha1=legacy_sha1).hash_name
    return hashlib.new(name, data).digest()


def phase1_iv(prf_id: int, ke_i: bytes, ke_r: bytes, *, legacy_sha1: bool = False) -> bytes:
    """IV of the first encrypted phase 1 message: hash(g^xi | g^xr), truncated.

    ``ke_i``/``ke_r`` are the initiator's and responder's KE payload data; ``prf_id`` is
    the registry PRF of the negotiated hash (:func:`.policy.prf_for_hash`).
    """
    return _hash(prf_id, ke_i + ke_r, legacy_sha1)[:_BLOCK]


def phase2_iv(
    prf_id: int, last_phase1_iv: bytes, message_id: int, *, legacy_sha1: bool = False
) -> bytes:
    """IV of the first message of a quick mode or informational exchange:
    hash(last phase 1 IV | M-ID) truncated (RFC 2409 Appendix B).

    ``last_phase1_iv`` is the ``next_iv`` after the last phase 1 message (main mode
    message 6), whichever side sent it.
    """
    _check_iv(last_phase1_iv)
    return _hash(prf_id, last_phase1_iv + message_id.to_bytes(4, "big"), legacy_sha1)[:_BLOCK]


def encrypt_message(msg: wire.Message, key: bytes, iv: bytes) -> tuple[bytes, bytes]:
    """(the datagram with the E flag set, the next IV: its last ciphertext block).

    A message without payloads cannot be sealed (there would be no block to chain
    from): LocalProtocolError.
    """
    if not msg.payloads:
        raise LocalProtocolError("an encrypted message carries at least one payload")
    first, chain = wire.encode_payloads(msg.payloads)
    ciphertext = cbc_encrypt(key, iv, chain)
    flags = msg.flags | Flag.ENCRYPTION
    header = wire.encode_header(msg, first, wire.HEADER_LEN + len(ciphertext), flags)
    return header + ciphertext, ciphertext[-_BLOCK:]


def last_block(data: bytes) -> bytes:
    """The IV that follows the encrypted datagram ``data`` in its chain (RFC 2409
    Appendix B): its last ciphertext block, whether or not it decrypts to anything."""
    return data[-_BLOCK:]


def decrypt_message(
    data: bytes, key: bytes, iv: bytes, *, sealed: Collection[int] = ()
) -> tuple[wire.Message, bytes]:
    """(the decrypted Message, the next IV: the datagram's last ciphertext block).

    Raises ParseError for a datagram without the E flag, a ciphertext that is not whole
    blocks, or a plaintext that is not a payload chain (a wrong key or IV looks like
    that too; there is no MAC to tell them apart). ``sealed`` as in
    :func:`.message.decode_payloads`.
    """
    header = wire.decode_header(data)
    if not header.flags & Flag.ENCRYPTION:
        raise ParseError("the message is not encrypted", field="header.flags")
    ciphertext = data[wire.HEADER_LEN :]
    plaintext = cbc_decrypt(key, iv, ciphertext, "encrypted.length")
    payloads, raw = wire.decode_payloads(header.next_payload, plaintext, padded=True, sealed=sealed)
    return wire.message_from_header(header, payloads, raw), last_block(ciphertext)
