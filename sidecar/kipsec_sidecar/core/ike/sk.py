"""The Encrypted (SK) payload and its fragments (SKF): sealing and opening IKE messages.

RFC 7296 section 3.14 for AES-CBC + HMAC (random IV; payloads, padding and Pad Length
encrypted; the checksum covers the whole message from the IKE header through the
ciphertext, after the Length field is filled in). RFC 5282 and RFC 7634 for AES-GCM-16
and ChaCha20-Poly1305 (nonce = 4-byte salt from the end of the key | 8-byte IV; the
AAD is everything from the IKE header through the SK payload's generic header, or
through the Total Fragments field of an SKF payload, RFC 7383 section 2.5; the 16-byte
tag follows the ciphertext). Algorithm pairs are checked by
:func:`~kipsec_sidecar.core.algorithms.check_suite`.

Opening always verifies integrity first (HMAC compared in constant time, or the AEAD
tag) and raises :class:`~kipsec_sidecar.core.errors.IntegrityError` before any
decrypted byte is looked at. Fragmentation sizes and reassembly bounds are in
:mod:`.fragments`; :func:`protect_fragments` and :class:`FragmentReassembler` here add
the cryptography.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .. import algorithms as registry
from ..buffer import Reader
from ..errors import IntegrityError, LocalProtocolError, ParseError
from .constants import EncrId, PayloadType
from .fragments import (
    MAX_FRAGMENTS,
    MAX_PENDING_MESSAGES,
    MAX_REASSEMBLY_BYTES,
    FragmentStore,
    split,
)
from .message import (
    GENERIC_HEADER_LEN,
    HEADER_LEN,
    Header,
    Message,
    decode_header,
    decode_payloads,
    encode_header,
    encode_payloads,
    message_from_header,
)
from .payloads import EncryptedFragment, EncryptedPayload, Payload

SKF_FIELDS_LEN = 4  # Fragment Number and Total Fragments
_NEXT_PAYLOAD_OFFSET = 16  # in the IKE header
MAX_FRAGMENT_NUMBER = 0xFFFF

Rng = Callable[[int], bytes]


@dataclass(frozen=True, slots=True)
class SkKeys:
    """One direction's SK keys: SK_ei + SK_ai (initiator's) or SK_er + SK_ar.

    ``encr_key`` includes the 4-byte salt at its end for AES-GCM and ChaCha20-Poly1305
    (RFC 5282 section 7.1, RFC 7634 section 2); ``integ_id`` is None (and
    ``integ_key`` empty) for those AEAD ciphers. Keys never appear in ``repr``.
    """

    encr_id: int
    encr_key: bytes = field(repr=False)
    integ_id: int | None
    integ_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Suite:
    """A resolved SK transform: the cipher object and the sizes that frame the payload."""

    aead: AESGCM | ChaCha20Poly1305 | None
    cbc_key: bytes
    salt: bytes
    iv_len: int
    block_len: int  # padding alignment of the encrypted content
    icv_len: int
    integ_key: bytes
    hash_name: str

    def sealed_len(self, overhead: int, content_len: int) -> int:
        """Ciphertext + ICV + IV bytes for ``content_len`` bytes of payloads."""
        padded = -(-(content_len + 1) // self.block_len) * self.block_len
        return overhead + self.iv_len + padded + self.icv_len

    def max_content(self, room: int) -> int:
        """The largest content whose IV, padded ciphertext and ICV fit in ``room`` bytes."""
        space = room - self.iv_len - self.icv_len
        return space // self.block_len * self.block_len - 1


_AEAD_CIPHERS: dict[int, type[AESGCM] | type[ChaCha20Poly1305]] = {
    EncrId.AES_GCM_16: AESGCM,
    EncrId.CHACHA20_POLY1305: ChaCha20Poly1305,
}


def _suite(keys: SkKeys) -> _Suite:
    """Check the algorithm pair and key sizes; LocalProtocolError (or RefusedAlgorithm,
    UnsupportedAlgorithm) when the keys cannot be used."""
    spec, integ = registry.check_suite(keys.encr_id, keys.integ_id)
    key_len = len(keys.encr_key) - spec.salt_len
    if key_len not in spec.key_lens:
        raise LocalProtocolError(
            f"{spec.name} key of {len(keys.encr_key)} bytes (salt included) is not valid"
        )
    cipher_key, salt = keys.encr_key[:key_len], keys.encr_key[key_len:]
    if integ is None:
        return _Suite(
            aead=_AEAD_CIPHERS[keys.encr_id](cipher_key),
            cbc_key=b"",
            salt=salt,
            iv_len=spec.iv_len,
            block_len=1,  # IKE needs no alignment with an AEAD; only the Pad Length byte
            icv_len=spec.icv_len,
            integ_key=b"",
            hash_name="",
        )
    if len(keys.integ_key) != integ.key_len:
        raise LocalProtocolError(f"{integ.name} key must be {integ.key_len} bytes")
    return _Suite(
        aead=None,
        cbc_key=cipher_key,
        salt=b"",
        iv_len=spec.iv_len,
        block_len=spec.block_size,
        icv_len=integ.icv_len,
        integ_key=keys.integ_key,
        hash_name=integ.hash_name,
    )


def _seal(
    msg: Message,
    suite: _Suite,
    rng: Rng,
    sk_type: int,
    first_inner: int,
    skf_fields: bytes,
    content: bytes,
) -> bytes:
    """One datagram: header, SK/SKF generic header (+ fragment fields), IV, ciphertext, ICV."""
    overhead = HEADER_LEN + GENERIC_HEADER_LEN + len(skf_fields)
    total = suite.sealed_len(overhead, len(content))
    pad_len = (-(len(content) + 1)) % suite.block_len
    plaintext = content + bytes(pad_len) + bytes((pad_len,))
    iv = rng(suite.iv_len)
    if len(iv) != suite.iv_len:
        raise LocalProtocolError(f"rng returned {len(iv)} bytes, not {suite.iv_len}")
    payload_len = total - HEADER_LEN
    if payload_len > 0xFFFF:
        raise LocalProtocolError(f"SK payload of {payload_len} bytes is too long")
    prefix = (
        encode_header(msg, sk_type, total)
        + bytes((first_inner, 0))
        + payload_len.to_bytes(2, "big")
        + skf_fields
    )
    if suite.aead is not None:
        return prefix + iv + suite.aead.encrypt(suite.salt + iv, plaintext, prefix)
    encryptor = Cipher(algorithms.AES(suite.cbc_key), modes.CBC(iv)).encryptor()
    signed = prefix + iv + encryptor.update(plaintext) + encryptor.finalize()
    return signed + _mac(suite, signed)


def _mac(suite: _Suite, data: bytes) -> bytes:
    return hmac.new(suite.integ_key, data, suite.hash_name).digest()[: suite.icv_len]


def _open(data: bytes, keys: SkKeys, sk_type: int) -> tuple[Header, int, bytes, bytes]:
    """Verify and decrypt: returns (header, Next Payload of SK/SKF, SKF fields, content).

    The SK/SKF payload must be the first and only payload, so its layout is known
    before any field is trusted: the ICV or tag is checked before the header is even
    parsed, and a change to any bit of the datagram is an IntegrityError. Only a
    datagram too short to hold the framing is a ParseError before that; framing and
    padding errors of an authentic datagram are ParseErrors after it.
    """
    suite = _suite(keys)
    aad_end = (
        HEADER_LEN + GENERIC_HEADER_LEN + (SKF_FIELDS_LEN if sk_type == PayloadType.SKF else 0)
    )
    if len(data) < aad_end + suite.iv_len + suite.block_len + suite.icv_len:
        raise ParseError(f"{len(data)} bytes cannot hold an encrypted message", field="sk.length")
    iv = data[aad_end : aad_end + suite.iv_len]
    body_start = aad_end + suite.iv_len
    if suite.aead is not None:
        try:
            plaintext = suite.aead.decrypt(suite.salt + iv, data[body_start:], data[:aad_end])
        except InvalidTag:
            raise IntegrityError("SK payload AEAD tag does not verify") from None
    elif not hmac.compare_digest(_mac(suite, data[: -suite.icv_len]), data[-suite.icv_len :]):
        raise IntegrityError("SK payload integrity checksum does not verify")
    header = decode_header(data)
    if header.next_payload != sk_type:
        raise ParseError(
            f"first payload is {header.next_payload}, expected {sk_type}",
            field="header.next_payload",
        )
    r = Reader(data, HEADER_LEN)
    first_inner = r.pull_uint8("sk.next_payload")
    r.pull_uint8("sk.critical")
    if r.pull_uint16("sk.length") != len(data) - HEADER_LEN:
        raise ParseError("the SK payload must end the message", field="sk.length")
    skf_fields = r.pull_bytes(aad_end - r.position, "skf")
    if suite.aead is None:
        ciphertext = data[body_start : -suite.icv_len]
        if len(ciphertext) % suite.block_len:
            raise ParseError("ciphertext is not a whole number of blocks", field="sk.ciphertext")
        decryptor = Cipher(algorithms.AES(suite.cbc_key), modes.CBC(iv)).decryptor()
        plaintext = decryptor.update(ciphertext) + decryptor.finalize()
    pad_len = plaintext[-1]
    if pad_len + 1 > len(plaintext):
        raise ParseError(f"pad length {pad_len} exceeds the content", field="sk.pad_length")
    return header, first_inner, skf_fields, plaintext[: -pad_len - 1]


def _inner_payloads(first_inner: int, content: bytes) -> tuple[Payload, ...]:
    payloads = decode_payloads(first_inner, content)
    if any(isinstance(p, EncryptedPayload | EncryptedFragment) for p in payloads):
        raise ParseError("an SK payload inside an SK payload", field="sk.inner")
    return payloads


def protect(msg: Message, keys: SkKeys, rng: Rng) -> bytes:
    """The datagram carrying ``msg.payloads`` inside one SK payload, Length filled in.

    ``rng`` supplies the IV (8 bytes for AEAD, 16 for CBC). Raises LocalProtocolError
    for unusable keys or payloads, RefusedAlgorithm/UnsupportedAlgorithm for the suite.
    """
    first_inner, content = encode_payloads(msg.payloads)
    return _seal(msg, _suite(keys), rng, PayloadType.SK, first_inner, b"", content)


def unprotect(data: bytes, keys: SkKeys) -> Message:
    """Open a datagram whose only payload is SK; returns the message with the inner payloads.

    Raises IntegrityError (checked first), ParseError for bad framing or padding, and
    UnsupportedCriticalPayload for an unknown critical inner payload. A datagram whose
    first payload is SKF is a ParseError here: feed it to :class:`FragmentReassembler`.
    """
    if len(data) > _NEXT_PAYLOAD_OFFSET and data[_NEXT_PAYLOAD_OFFSET] == PayloadType.SKF:
        raise ParseError("an SKF fragment: use FragmentReassembler", field="header.next_payload")
    header, first_inner, _, content = _open(data, keys, PayloadType.SK)
    return message_from_header(header, _inner_payloads(first_inner, content))


def protect_fragments(msg: Message, keys: SkKeys, rng: Rng, max_datagram: int) -> list[bytes]:
    """RFC 7383: one SK datagram if it fits in ``max_datagram`` bytes, else SKF fragments.

    ``max_datagram`` is the size of the IKE message itself (the caller subtracts IP,
    UDP and any non-ESP marker). Fragments are numbered 1..N, each at most
    ``max_datagram`` bytes; only fragment 1 carries the first inner payload type.
    LocalProtocolError when even one byte of content cannot fit or N exceeds 65535.
    """
    suite = _suite(keys)
    first_inner, content = encode_payloads(msg.payloads)
    if suite.sealed_len(HEADER_LEN + GENERIC_HEADER_LEN, len(content)) <= max_datagram:
        return [_seal(msg, suite, rng, PayloadType.SK, first_inner, b"", content)]
    room = max_datagram - HEADER_LEN - GENERIC_HEADER_LEN - SKF_FIELDS_LEN
    pieces = split(content, suite.max_content(room))
    if len(pieces) > MAX_FRAGMENT_NUMBER:
        raise LocalProtocolError(f"{len(pieces)} fragments exceed 65535")
    total = len(pieces)
    return [
        _seal(
            msg,
            suite,
            rng,
            PayloadType.SKF,
            first_inner if number == 1 else PayloadType.NONE,
            number.to_bytes(2, "big") + total.to_bytes(2, "big"),
            piece,
        )
        for number, piece in enumerate(pieces, start=1)
    ]


def verify_fragment(data: bytes, keys: SkKeys) -> tuple[int, int]:
    """Check one SKF datagram's integrity without storing it: returns (number, total).

    For answering a retransmitted fragmented request from the response cache (RFC 7383
    section 2.6.1) only when the fragment is authentic. Raises IntegrityError or
    ParseError like :meth:`FragmentReassembler.add`.
    """
    _, _, skf_fields, _ = _open(data, keys, PayloadType.SKF)
    number = int.from_bytes(skf_fields[:2], "big")
    total = int.from_bytes(skf_fields[2:], "big")
    if not 1 <= number <= total:
        raise ParseError(f"fragment {number} of {total}", field="skf.fragment_number")
    return number, total


class FragmentReassembler:
    """Reassembles SKF fragments of one IKE SA (RFC 7383 section 2.6).

    Every fragment is verified and decrypted on its own before it is stored, so a
    forged fragment is rejected (IntegrityError) without disturbing the genuine ones.
    Duplicates are dropped before any cryptography. Memory is bounded by
    ``max_fragments`` per message, ``max_bytes`` of content per message and
    ``max_messages`` messages in progress (keyed by message ID and the R flag; the
    oldest is dropped). Which message IDs are acceptable is the engine's decision.
    """

    def __init__(
        self,
        max_fragments: int = MAX_FRAGMENTS,
        max_bytes: int = MAX_REASSEMBLY_BYTES,
        max_messages: int = MAX_PENDING_MESSAGES,
    ) -> None:
        self._store = FragmentStore(max_fragments, max_bytes, max_messages)

    def __len__(self) -> int:
        """Number of messages being reassembled."""
        return len(self._store)

    def add(self, data: bytes, keys: SkKeys) -> Message | None:
        """Take one SKF datagram; returns the decrypted Message once every fragment is in.

        Raises ParseError (bad framing, limits, total mismatch), IntegrityError (this
        fragment is forged or damaged; the stored ones stay), and
        UnsupportedCriticalPayload when the reassembled content holds one.
        """
        header = decode_header(data)
        if header.next_payload != PayloadType.SKF:
            raise ParseError("not an SKF message", field="header.next_payload")
        r = Reader(data, HEADER_LEN + GENERIC_HEADER_LEN)
        number = r.pull_uint16("skf.fragment_number")
        total = r.pull_uint16("skf.total_fragments")
        self._store.check_numbers(number, total)
        key = (header.message_id, header.is_response)
        if self._store.is_duplicate(key, number, total):
            return None
        header, first_inner, _, piece = _open(data, keys, PayloadType.SKF)
        done = self._store.add(key, header.exchange, number, total, first_inner, piece)
        if done is None:
            return None
        return message_from_header(header, _inner_payloads(*done))
