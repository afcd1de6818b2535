"""The ESP transforms, built once per SA and reused for every packet.

Each transform turns the plaintext part of an ESP packet (payload, padding, pad length,
next header) into the part after the sequence number (IV, ciphertext, ICV) and back:

- :class:`AeadTransform`: AES-GCM-16 (RFC 4106) and ChaCha20-Poly1305 (RFC 7634). The
  keying material ends with a 4-byte salt; nonce = salt | 8-byte explicit IV;
  AAD = SPI | sequence number, or SPI | ESN high | ESN low (RFC 4106 section 5).
  The explicit IV is the 64-bit sequence number (as the Linux kernel's ``seqiv``): the
  SA never reuses a sequence number, so a nonce never repeats under one key, which a
  random 64-bit IV only makes unlikely.
- :class:`CbcHmacTransform`: AES-CBC (RFC 3602) with a random IV from the injected
  ``rng``, then HMAC-SHA2 truncated (RFC 4868) over SPI | seq | IV | ciphertext, with
  the ESN high half appended to the MAC input but not sent (RFC 4303 section 2.2.1).
  The ICV is checked (in constant time) before anything is decrypted.

The keyed objects (``AESGCM``, ``ChaCha20Poly1305``, the AES key schedule, a keyed HMAC
to copy) are made in the constructor: per packet there is only the operation itself.
Transforms hold keys: never log or repr them.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .algorithms import EncrSpec, IntegSpec
from .errors import IntegrityError, LocalProtocolError, ParseError
from .ike.constants import EncrId

Rng = Callable[[int], bytes]


class EspTransform(Protocol):
    """What the ESP layer needs from a cipher suite.

    ``spi_seq`` is the 8 bytes SPI | low sequence number as sent; ``seq_high`` is the
    4-byte ESN high half (``b""`` without ESN). ``block_size`` is the alignment the
    plaintext must be padded to (at least 4).
    """

    iv_len: int
    icv_len: int
    block_size: int

    def make_iv(self, seq: int, rng: Rng) -> bytes: ...

    def encrypt(self, spi_seq: bytes, seq_high: bytes, iv: bytes, plaintext: bytes) -> bytes:
        """IV | ciphertext | ICV for a padded plaintext."""
        ...

    def decrypt(self, spi_seq: bytes, seq_high: bytes, body: bytes) -> bytes:
        """Verify and decrypt IV | ciphertext | ICV; raises IntegrityError or ParseError."""
        ...


class AeadTransform:
    """AES-GCM-16 or ChaCha20-Poly1305 with the RFC 4106 / RFC 7634 nonce and AAD."""

    __slots__ = ("_aead", "_salt", "block_size", "icv_len", "iv_len")

    def __init__(self, encr_id: int, spec: EncrSpec, keymat: bytes) -> None:
        key_len = len(keymat) - spec.salt_len
        if key_len not in spec.key_lens:
            raise LocalProtocolError(
                f"{spec.name} needs {[k + spec.salt_len for k in spec.key_lens]} bytes of "
                f"keying material (key + salt), got {len(keymat)}"
            )
        key, self._salt = keymat[:key_len], keymat[key_len:]
        self._aead: AESGCM | ChaCha20Poly1305 = (
            ChaCha20Poly1305(key) if encr_id == EncrId.CHACHA20_POLY1305 else AESGCM(key)
        )
        self.iv_len = spec.iv_len
        self.icv_len = spec.icv_len
        self.block_size = spec.block_size

    def make_iv(self, seq: int, rng: Rng) -> bytes:
        return seq.to_bytes(8, "big")

    def encrypt(self, spi_seq: bytes, seq_high: bytes, iv: bytes, plaintext: bytes) -> bytes:
        aad = spi_seq[:4] + seq_high + spi_seq[4:] if seq_high else spi_seq
        return iv + self._aead.encrypt(self._salt + iv, plaintext, aad)

    def decrypt(self, spi_seq: bytes, seq_high: bytes, body: bytes) -> bytes:
        if len(body) < self.iv_len + self.icv_len:
            raise ParseError("shorter than IV and ICV", field="esp.body")
        aad = spi_seq[:4] + seq_high + spi_seq[4:] if seq_high else spi_seq
        try:
            iv_len = self.iv_len
            return self._aead.decrypt(self._salt + body[:iv_len], body[iv_len:], aad)
        except InvalidTag:
            raise IntegrityError("ESP AEAD tag did not verify") from None


class CbcHmacTransform:
    """AES-CBC (RFC 3602) then HMAC-SHA2 truncated to ``icv_len`` (RFC 4868)."""

    __slots__ = ("_aes", "_mac", "block_size", "icv_len", "iv_len")

    def __init__(self, spec: EncrSpec, key: bytes, integ: IntegSpec, integ_key: bytes) -> None:
        if len(key) not in spec.key_lens:
            raise LocalProtocolError(
                f"{spec.name} takes keys of {list(spec.key_lens)} bytes, got {len(key)}"
            )
        if len(integ_key) != integ.key_len:
            raise LocalProtocolError(
                f"{integ.name} takes a {integ.key_len}-byte key, got {len(integ_key)}"
            )
        self._aes = algorithms.AES(key)
        self._mac = hmac.new(integ_key, digestmod=integ.hash_name)
        self.iv_len = spec.iv_len
        self.icv_len = integ.icv_len
        self.block_size = spec.block_size

    def make_iv(self, seq: int, rng: Rng) -> bytes:
        return rng(self.iv_len)

    def icv(self, data: bytes, seq_high: bytes = b"") -> bytes:
        """The truncated HMAC of ``data`` (| ``seq_high``), as RFC 4868 defines it."""
        mac = self._mac.copy()
        mac.update(data)
        if seq_high:
            mac.update(seq_high)
        return mac.digest()[: self.icv_len]

    def encrypt(self, spi_seq: bytes, seq_high: bytes, iv: bytes, plaintext: bytes) -> bytes:
        encryptor = Cipher(self._aes, modes.CBC(iv)).encryptor()
        body = iv + encryptor.update(plaintext) + encryptor.finalize()
        return body + self.icv(spi_seq + body, seq_high)

    def decrypt(self, spi_seq: bytes, seq_high: bytes, body: bytes) -> bytes:
        if len(body) < self.iv_len + self.icv_len:
            raise ParseError("shorter than IV and ICV", field="esp.body")
        cut = len(body) - self.icv_len
        if not hmac.compare_digest(self.icv(spi_seq + body[:cut], seq_high), body[cut:]):
            raise IntegrityError("ESP ICV did not verify")
        ciphertext = body[self.iv_len : cut]
        if not ciphertext or len(ciphertext) % self.block_size:
            raise ParseError(
                f"ciphertext of {len(ciphertext)} bytes is not a whole number of blocks",
                field="esp.ciphertext",
            )
        decryptor = Cipher(self._aes, modes.CBC(body[: self.iv_len])).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()


class HmacIcv:
    """A keyed, truncated HMAC-SHA2 for AH (RFC 4302 with RFC 4868 algorithms)."""

    __slots__ = ("_mac", "icv_len")

    def __init__(self, integ: IntegSpec, key: bytes) -> None:
        if len(key) != integ.key_len:
            raise LocalProtocolError(
                f"{integ.name} takes a {integ.key_len}-byte key, got {len(key)}"
            )
        self._mac = hmac.new(key, digestmod=integ.hash_name)
        self.icv_len = integ.icv_len

    def compute(self, *parts: bytes) -> bytes:
        mac = self._mac.copy()
        for part in parts:
            mac.update(part)
        return mac.digest()[: self.icv_len]


def make_esp_transform(
    encr_id: int,
    encr_spec: EncrSpec,
    encr_keymat: bytes,
    integ_spec: IntegSpec | None,
    integ_key: bytes,
) -> EspTransform:
    """The transform for a validated suite (see ``algorithms.check_suite``)."""
    if encr_spec.aead:
        return AeadTransform(encr_id, encr_spec, encr_keymat)
    if integ_spec is None:  # check_suite refuses this; guard for direct callers
        raise LocalProtocolError(f"{encr_spec.name} needs an integrity transform")
    return CbcHmacTransform(encr_spec, encr_keymat, integ_spec, integ_key)
