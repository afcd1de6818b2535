"""IKEv1 key derivation (RFC 2409 sections 5 and 5.5, Appendix B).

Every prf here is the IKEv2 engine's :func:`kipsec_sidecar.core.ike.keys.prf` (HMAC
with the hash of the negotiated phase 1 Hash attribute, mapped onto the shared
registry by :func:`.policy.prf_for_hash`); ``legacy_sha1`` must be passed for a peer
named explicitly as legacy, or SHA-1 is refused. Notation as in RFC 2409: ``g_xy`` is
the shared DH secret, ``ke_i``/``ke_r`` the KE payload data (g^xi, g^xr), ``ni``/``nr``
the nonce payload bodies (Ni_b, Nr_b), ``cky_i``/``cky_r`` the cookies.

* SKEYID per method family: :func:`skeyid_signature` (DSS/RSA/ECDSA signatures),
  :func:`skeyid_psk`, :func:`skeyid_public_key` (methods 4 and 5).
* SKEYID_d, SKEYID_a, SKEYID_e and the phase 1 cipher key: :func:`derive_phase1_keys`.
* HASH_I / HASH_R: :func:`hash_i`, :func:`hash_r`.
* Quick mode: :func:`quick_mode_hash1` / ``hash2`` / ``hash3``, :func:`keymat` and
  :func:`quick_mode_child_keys` (the IKEv2 ChildKeys shape, so the same SA plumbing
  takes them); informational exchanges: :func:`informational_hash`.

Keys never appear in a ``repr`` (:class:`Phase1Keys` prints sizes only).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .. import algorithms
from ..errors import LocalProtocolError
from ..ike.keys import ChildKeys, prf
from .constants import COOKIE_LEN


def _prf(prf_id: int, key: bytes, data: bytes, legacy_sha1: bool) -> bytes:
    return prf(prf_id, key, data, legacy_sha1=legacy_sha1)


def _check_cookies(cky_i: bytes, cky_r: bytes) -> None:
    if len(cky_i) != COOKIE_LEN or len(cky_r) != COOKIE_LEN:
        raise LocalProtocolError("ISAKMP cookies are 8 bytes")


def expand(prf_id: int, key: bytes, length: int, *, legacy_sha1: bool = False) -> bytes:
    """RFC 2409 Appendix B: the first ``length`` bytes of K1 | K2 | ..., where
    K1 = prf(key, 0) (one zero octet) and Kn = prf(key, Kn-1). Used when a cipher key
    is longer than SKEYID_e (and for Ke_i / Ke_r of the revised public-key mode)."""
    if length < 0:
        raise LocalProtocolError(f"key length {length} is negative")
    out = b""
    block = b"\x00"
    while len(out) < length:
        block = _prf(prf_id, key, block, legacy_sha1)
        out += block
    return out[:length]


def skeyid_signature(
    prf_id: int, ni: bytes, nr: bytes, g_xy: bytes, *, legacy_sha1: bool = False
) -> bytes:
    """SKEYID = prf(Ni_b | Nr_b, g^xy) for signature methods (2, 3, 9, 10, 11)."""
    return _prf(prf_id, ni + nr, g_xy, legacy_sha1)


def skeyid_psk(
    prf_id: int, psk: bytes, ni: bytes, nr: bytes, *, legacy_sha1: bool = False
) -> bytes:
    """SKEYID = prf(pre-shared-key, Ni_b | Nr_b) for method 1."""
    if not psk:
        raise LocalProtocolError("the pre-shared key is empty")
    return _prf(prf_id, psk, ni + nr, legacy_sha1)


def skeyid_public_key(
    prf_id: int,
    ni: bytes,
    nr: bytes,
    cky_i: bytes,
    cky_r: bytes,
    *,
    legacy_sha1: bool = False,
) -> bytes:
    """SKEYID = prf(hash(Ni_b | Nr_b), CKY-I | CKY-R) for public-key encryption (4, 5).

    ``hash`` is the negotiated hash itself (not its HMAC).
    """
    _check_cookies(cky_i, cky_r)
    hash_name = algorithms.prf(prf_id, legacy_sha1=legacy_sha1).hash_name
    return _prf(prf_id, hashlib.new(hash_name, ni + nr).digest(), cky_i + cky_r, legacy_sha1)


def _sizes_repr(obj: object, names: tuple[str, ...]) -> str:
    parts = ", ".join(f"{n}=<{len(getattr(obj, n))} bytes>" for n in names)
    return f"{type(obj).__name__}({parts})"


@dataclass(frozen=True, slots=True, repr=False)
class Phase1Keys:
    """The ISAKMP SA keys (RFC 2409 section 5).

    ``skeyid_d`` derives quick mode KEYMAT, ``skeyid_a`` authenticates quick mode and
    informational messages (their HASH payloads), ``skeyid_e`` is the material of
    ``encryption_key``, the phase 1 cipher key (Appendix B expansion when longer).
    ``skeyid`` itself keys HASH_I / HASH_R.
    """

    skeyid: bytes
    skeyid_d: bytes
    skeyid_a: bytes
    skeyid_e: bytes
    encryption_key: bytes

    def __repr__(self) -> str:
        return _sizes_repr(self, ("skeyid", "skeyid_d", "skeyid_a", "skeyid_e", "encryption_key"))


def derive_phase1_keys(
    prf_id: int,
    skeyid: bytes,
    g_xy: bytes,
    cky_i: bytes,
    cky_r: bytes,
    encryption_key_len: int,
    *,
    legacy_sha1: bool = False,
) -> Phase1Keys:
    """SKEYID_d = prf(SKEYID, g^xy | CKY-I | CKY-R | 0),
    SKEYID_a = prf(SKEYID, SKEYID_d | g^xy | CKY-I | CKY-R | 1),
    SKEYID_e = prf(SKEYID, SKEYID_a | g^xy | CKY-I | CKY-R | 2);
    the cipher key is the first ``encryption_key_len`` bytes of SKEYID_e, or of its
    Appendix B expansion when SKEYID_e is shorter.
    """
    _check_cookies(cky_i, cky_r)
    tail = g_xy + cky_i + cky_r
    skeyid_d = _prf(prf_id, skeyid, tail + b"\x00", legacy_sha1)
    skeyid_a = _prf(prf_id, skeyid, skeyid_d + tail + b"\x01", legacy_sha1)
    skeyid_e = _prf(prf_id, skeyid, skeyid_a + tail + b"\x02", legacy_sha1)
    if encryption_key_len <= len(skeyid_e):
        key = skeyid_e[:encryption_key_len]
    else:
        key = expand(prf_id, skeyid_e, encryption_key_len, legacy_sha1=legacy_sha1)
    return Phase1Keys(skeyid, skeyid_d, skeyid_a, skeyid_e, key)


def hash_i(
    prf_id: int,
    skeyid: bytes,
    ke_i: bytes,
    ke_r: bytes,
    cky_i: bytes,
    cky_r: bytes,
    sa_i_body: bytes,
    id_i_body: bytes,
    *,
    legacy_sha1: bool = False,
) -> bytes:
    """HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b).

    ``sa_i_body`` is the initiator's SA payload body as sent (DOI onwards: use
    ``Message.raw_body``), ``id_i_body`` its ID payload body (``IdPayload.body()``).
    """
    data = ke_i + ke_r + cky_i + cky_r + sa_i_body + id_i_body
    return _prf(prf_id, skeyid, data, legacy_sha1)


def hash_r(
    prf_id: int,
    skeyid: bytes,
    ke_i: bytes,
    ke_r: bytes,
    cky_i: bytes,
    cky_r: bytes,
    sa_i_body: bytes,
    id_r_body: bytes,
    *,
    legacy_sha1: bool = False,
) -> bytes:
    """HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b): the same
    arguments as :func:`hash_i` (in initiator/responder order), the responder's ID."""
    data = ke_r + ke_i + cky_r + cky_i + sa_i_body + id_r_body
    return _prf(prf_id, skeyid, data, legacy_sha1)


def _mid(message_id: int) -> bytes:
    if not 0 <= message_id <= 0xFFFFFFFF:
        raise LocalProtocolError(f"message ID {message_id} is not a uint32")
    return message_id.to_bytes(4, "big")


def quick_mode_hash1(
    prf_id: int, skeyid_a: bytes, message_id: int, after_hash: bytes, *, legacy_sha1: bool = False
) -> bytes:
    """HASH(1) = prf(SKEYID_a, M-ID | SA | Ni [ | KE ] [ | IDci | IDcr ]).

    ``after_hash`` is every payload after the HASH payload, generic headers included,
    as sent (``Message.raw_after(0)``).
    """
    return _prf(prf_id, skeyid_a, _mid(message_id) + after_hash, legacy_sha1)


def quick_mode_hash2(
    prf_id: int,
    skeyid_a: bytes,
    message_id: int,
    ni: bytes,
    after_hash: bytes,
    *,
    legacy_sha1: bool = False,
) -> bytes:
    """HASH(2) = prf(SKEYID_a, M-ID | Ni_b | SA | Nr [ | KE ] [ | IDci | IDcr ])."""
    return _prf(prf_id, skeyid_a, _mid(message_id) + ni + after_hash, legacy_sha1)


def quick_mode_hash3(
    prf_id: int,
    skeyid_a: bytes,
    message_id: int,
    ni: bytes,
    nr: bytes,
    *,
    legacy_sha1: bool = False,
) -> bytes:
    """HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)."""
    return _prf(prf_id, skeyid_a, b"\x00" + _mid(message_id) + ni + nr, legacy_sha1)


def informational_hash(
    prf_id: int, skeyid_a: bytes, message_id: int, after_hash: bytes, *, legacy_sha1: bool = False
) -> bytes:
    """HASH(1) of an informational exchange = prf(SKEYID_a, M-ID | N/D) (RFC 2409
    section 5.7), ``after_hash`` being the Notification or Delete payload(s) as sent."""
    return _prf(prf_id, skeyid_a, _mid(message_id) + after_hash, legacy_sha1)


def keymat(
    prf_id: int,
    skeyid_d: bytes,
    protocol: int,
    spi: bytes,
    ni: bytes,
    nr: bytes,
    length: int,
    g_xy: bytes | None = None,
    *,
    legacy_sha1: bool = False,
) -> bytes:
    """Quick mode KEYMAT for one SA, ``length`` bytes (RFC 2409 section 5.5).

    Without PFS: K1 = prf(SKEYID_d, protocol | SPI | Ni_b | Nr_b); with PFS (``g_xy``
    the quick mode shared secret): K1 = prf(SKEYID_d, g(qm)^xy | protocol | SPI | Ni_b
    | Nr_b); then Kn = prf(SKEYID_d, Kn-1 | same seed), KEYMAT = K1 | K2 | ...
    ``spi`` is the SPI of that SA, the one its receiver chose.
    """
    if length < 0:
        raise LocalProtocolError(f"KEYMAT length {length} is negative")
    seed = (g_xy or b"") + bytes((protocol,)) + spi + ni + nr
    out = b""
    block = b""
    while len(out) < length:
        block = _prf(prf_id, skeyid_d, block + seed, legacy_sha1)
        out += block
    return out[:length]


def quick_mode_child_keys(
    prf_id: int,
    skeyid_d: bytes,
    protocol: int,
    spi_i: bytes,
    spi_r: bytes,
    ni: bytes,
    nr: bytes,
    encr_keymat_len: int,
    integ_key_len: int,
    g_xy: bytes | None = None,
    *,
    legacy_sha1: bool = False,
) -> ChildKeys:
    """Both SAs of one quick mode protocol as IKEv2's ChildKeys.

    ``spi_i`` is the initiator's SPI (its inbound SA: responder -> initiator), ``spi_r``
    the responder's (initiator -> responder). Each SA's KEYMAT is cut encryption key
    first, then integrity key (RFC 2409 section 5.5); ``encr_*`` protect what the
    initiator sends (SPI ``spi_r``), ``*_r`` what the responder sends (SPI ``spi_i``).
    """
    per_sa = encr_keymat_len + integ_key_len
    to_responder = keymat(
        prf_id, skeyid_d, protocol, spi_r, ni, nr, per_sa, g_xy, legacy_sha1=legacy_sha1
    )
    to_initiator = keymat(
        prf_id, skeyid_d, protocol, spi_i, ni, nr, per_sa, g_xy, legacy_sha1=legacy_sha1
    )
    e = encr_keymat_len
    return ChildKeys(
        encr_i=to_responder[:e],
        integ_i=to_responder[e:],
        encr_r=to_initiator[:e],
        integ_r=to_initiator[e:],
    )
