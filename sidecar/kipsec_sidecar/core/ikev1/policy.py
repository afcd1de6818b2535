"""IKEv1 transforms mapped onto the one algorithm registry, and refused the same way.

IKEv1 names algorithms with its own numbers (phase 1 attributes, RFC 2409 Appendix A;
the IPsec DOI's AH transform IDs and Authentication Algorithm values, RFC 2407 section
4.4 and 4.5); this module translates them to the registry's IDs and asks the registry
(:mod:`kipsec_sidecar.core.algorithms`, and :func:`~kipsec_sidecar.core.ike.dh.public_length`
for groups), so DES, 3DES, MD5 and MODP groups below 2048 are refused with the
registry's own :class:`~kipsec_sidecar.core.errors.RefusedAlgorithm` messages. SHA-1 as
the phase 1 hash passes only with ``legacy_sha1``: the negotiation sets it when one of
our proposals names SHA-1 (an ``IkeProposal.legacy_sha1``, which the sidecar document
admits for IKEv1 peers only and warns about when it loads the peer). A
phase 2 HMAC-SHA1 is not implemented by the datapaths and stays unsupported.

:func:`phase1_suite` / :func:`phase2_suite` read one transform of a received SA
payload into a :class:`Phase1Suite` / :class:`Phase2Suite`; ``to_transform`` writes
one back for an offer or an answer. A transform missing a mandatory attribute raises
ParseError naming it (the engine answers BAD-PROPOSAL-SYNTAX or skips the transform).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import algorithms
from ..buffer import Reader
from ..errors import ParseError, UnsupportedAlgorithm
from ..ike import dh
from ..ike.constants import EncrId, IntegId, PrfId
from .constants import (
    KEY_IKE,
    AhTransform,
    AuthAlgorithm,
    AuthMethod,
    EncapsulationMode,
    HashAlgorithm,
    LifeType,
    Phase1Attr,
    Phase1Encryption,
    Phase2Attr,
    ProtocolId,
)
from .payloads import Attribute, Transform, decode_attributes, encode_attributes

PRF_FOR_HASH: dict[int, int] = {
    HashAlgorithm.MD5: PrfId.HMAC_MD5,
    HashAlgorithm.SHA1: PrfId.HMAC_SHA1,
    HashAlgorithm.SHA2_256: PrfId.HMAC_SHA2_256,
    HashAlgorithm.SHA2_384: PrfId.HMAC_SHA2_384,
    HashAlgorithm.SHA2_512: PrfId.HMAC_SHA2_512,
}
PHASE1_ENCRYPTION: dict[int, int] = {
    Phase1Encryption.DES_CBC: EncrId.DES,
    Phase1Encryption.DES3_CBC: EncrId.DES3,
    Phase1Encryption.AES_CBC: EncrId.AES_CBC,
}
INTEG_FOR_AUTH_ALGORITHM: dict[int, int] = {
    AuthAlgorithm.HMAC_MD5: IntegId.HMAC_MD5_96,
    AuthAlgorithm.HMAC_SHA1: IntegId.HMAC_SHA1_96,
    AuthAlgorithm.HMAC_SHA2_256: IntegId.HMAC_SHA2_256_128,
    AuthAlgorithm.HMAC_SHA2_384: IntegId.HMAC_SHA2_384_192,
    AuthAlgorithm.HMAC_SHA2_512: IntegId.HMAC_SHA2_512_256,
}
AUTH_ALGORITHM_FOR_AH: dict[int, int] = {
    AhTransform.AH_MD5: AuthAlgorithm.HMAC_MD5,
    AhTransform.AH_SHA: AuthAlgorithm.HMAC_SHA1,
    AhTransform.AH_SHA2_256: AuthAlgorithm.HMAC_SHA2_256,
    AhTransform.AH_SHA2_384: AuthAlgorithm.HMAC_SHA2_384,
    AhTransform.AH_SHA2_512: AuthAlgorithm.HMAC_SHA2_512,
}
AUTH_METHODS = frozenset(int(m) for m in AuthMethod)


def _lookup(table: dict[int, int], value: int, what: str) -> int:
    found = table.get(value)
    if found is None:
        raise UnsupportedAlgorithm(f"{what} {value} is not implemented")
    return found


def prf_for_hash(hash_alg: int, *, legacy_sha1: bool = False) -> int:
    """The registry PRF of a phase 1 Hash attribute (the prf is its HMAC, RFC 2409
    section 4); RefusedAlgorithm for MD5, and for SHA-1 without ``legacy_sha1``."""
    prf_id = _lookup(PRF_FOR_HASH, hash_alg, "phase 1 hash")
    algorithms.prf(prf_id, legacy_sha1=legacy_sha1)
    return prf_id


def _required(t: Transform, attr: int, name: str) -> int:
    found = t.get(attr)
    if found is None:
        raise ParseError(f"the transform has no {name} attribute", field=f"transform.{name}")
    return found.as_int


def _lifetimes(t: Transform, type_attr: int, duration_attr: int) -> tuple[int | None, int | None]:
    """(seconds, kilobytes): each Life Type attribute is followed by its duration."""
    seconds: int | None = None
    kilobytes: int | None = None
    pending: int | None = None
    for a in t.attributes:
        if a.type == type_attr:
            pending = a.as_int
        elif a.type == duration_attr:
            if pending == LifeType.SECONDS:
                seconds = a.as_int
            elif pending == LifeType.KILOBYTES:
                kilobytes = a.as_int
            else:
                raise ParseError("a life duration without a life type", field="transform.life")
            pending = None
    return seconds, kilobytes


def _life_attributes(
    type_attr: int, duration_attr: int, seconds: int | None, kilobytes: int | None
) -> list[Attribute]:
    out: list[Attribute] = []
    for kind, value in ((LifeType.SECONDS, seconds), (LifeType.KILOBYTES, kilobytes)):
        if value is not None:
            encoded: int | bytes = value if value <= 0xFFFF else value.to_bytes(4, "big")
            out += [Attribute(type_attr, kind), Attribute(duration_attr, encoded)]
    return out


#: Octets in one kilobyte of a Life Duration. RFC 2407 does not define the kilobyte;
#: a peer counting 1000 holds a limit 2.4 % lower than ours, which changes nothing that
#: matters (each side rekeys at its own 90 %).
KILOBYTE = 1024


def in_kilobytes(max_bytes: int) -> int:
    """A byte limit as the whole kilobytes IKEv1 carries, rounded down so the limit
    agreed is never above the one configured (at least 1: 0 is no Life Duration)."""
    return max(1, max_bytes // KILOBYTE)


def responder_lifetime_data(seconds: int | None, kilobytes: int | None) -> bytes:
    """The Notification Data of RESPONDER-LIFETIME (RFC 2407 section 4.6.3.1): an
    attribute list with the responder's IPsec SA lifetimes, as in a transform."""
    life = _life_attributes(
        Phase2Attr.SA_LIFE_TYPE, Phase2Attr.SA_LIFE_DURATION, seconds, kilobytes
    )
    return encode_attributes(tuple(life))


def responder_lifetime(data: bytes) -> tuple[int | None, int | None]:
    """(seconds, kilobytes) a RESPONDER-LIFETIME notification carries (None for a kind
    it does not name); ParseError if its attribute list does not parse."""
    attributes = decode_attributes(Reader(data), "notification.responder_lifetime")
    return _lifetimes(
        Transform(0, 0, attributes), Phase2Attr.SA_LIFE_TYPE, Phase2Attr.SA_LIFE_DURATION
    )


def _key_bits(encr_id: int, given: int | None) -> int:
    """The key size; a cipher with several sizes must carry the Key Length attribute
    (RFC 3602 section 5.3 for AES-CBC, RFC 4106 section 8.4 for AES-GCM)."""
    spec = algorithms.encryption(encr_id)
    if given is None and spec.key_length_attribute:
        raise ParseError(f"{spec.name} needs a Key Length attribute", field="transform.key_length")
    bits = given if given is not None else spec.default_key_len * 8
    if bits % 8 or bits // 8 not in spec.key_lens:
        raise UnsupportedAlgorithm(f"{spec.name} has no {bits}-bit key")
    return bits


@dataclass(frozen=True, slots=True)
class Phase1Suite:
    """One phase 1 transform in registry terms. ``encr_id`` is an IKEv2 EncrId (only
    AES-CBC passes), ``prf_id`` the PRF of ``hash_alg``; lifetimes are None when absent."""

    encr_id: int
    key_bits: int
    hash_alg: int
    prf_id: int
    auth_method: int
    dh_group: int
    life_seconds: int | None = None
    life_kilobytes: int | None = None

    @property
    def encryption_key_len(self) -> int:
        return self.key_bits // 8

    def to_transform(self, number: int = 1) -> Transform:
        """The KEY_IKE transform for this suite (AES-CBC with its Key Length)."""
        encryption = next(k for k, v in PHASE1_ENCRYPTION.items() if v == self.encr_id)
        attrs = [
            Attribute(Phase1Attr.ENCRYPTION, encryption),
            Attribute(Phase1Attr.KEY_LENGTH, self.key_bits),
            Attribute(Phase1Attr.HASH, self.hash_alg),
            Attribute(Phase1Attr.AUTH_METHOD, self.auth_method),
            Attribute(Phase1Attr.GROUP_DESCRIPTION, self.dh_group),
        ]
        attrs += _life_attributes(
            Phase1Attr.LIFE_TYPE, Phase1Attr.LIFE_DURATION, self.life_seconds, self.life_kilobytes
        )
        return Transform(number, KEY_IKE, tuple(attrs))


def phase1_suite(t: Transform, *, legacy_sha1: bool = False) -> Phase1Suite:
    """Read a KEY_IKE transform; raises RefusedAlgorithm (DES, 3DES, MD5, MODP < 2048,
    SHA-1 without ``legacy_sha1``), UnsupportedAlgorithm (anything else kipsec lacks,
    AEAD ciphers, unknown auth methods, private groups) or ParseError (an attribute
    missing)."""
    if t.transform_id != KEY_IKE:
        raise UnsupportedAlgorithm(f"phase 1 transform ID {t.transform_id} is not KEY_IKE")
    encr_id = _lookup(
        PHASE1_ENCRYPTION, _required(t, Phase1Attr.ENCRYPTION, "encryption"), "phase 1 cipher"
    )
    length = t.get(Phase1Attr.KEY_LENGTH)
    key_bits = _key_bits(encr_id, length.as_int if length else None)
    hash_alg = _required(t, Phase1Attr.HASH, "hash")
    prf_id = prf_for_hash(hash_alg, legacy_sha1=legacy_sha1)
    auth_method = _required(t, Phase1Attr.AUTH_METHOD, "auth_method")
    if auth_method not in AUTH_METHODS:
        raise UnsupportedAlgorithm(f"phase 1 authentication method {auth_method}")
    group = _required(t, Phase1Attr.GROUP_DESCRIPTION, "group")
    dh.public_length(group)
    if t.get(Phase1Attr.GROUP_TYPE) is not None or t.get(Phase1Attr.GROUP_PRIME) is not None:
        raise UnsupportedAlgorithm("private (New Group Mode) groups are not implemented")
    seconds, kilobytes = _lifetimes(t, Phase1Attr.LIFE_TYPE, Phase1Attr.LIFE_DURATION)
    return Phase1Suite(encr_id, key_bits, hash_alg, prf_id, auth_method, group, seconds, kilobytes)


@dataclass(frozen=True, slots=True)
class Phase2Suite:
    """One quick mode transform in registry terms: an ESP cipher (EncrId, None for AH)
    and key size, an integrity (IntegId, None for an AEAD cipher), the encapsulation
    mode, the PFS group (None without PFS) and lifetimes."""

    protocol: int
    encr_id: int | None
    key_bits: int
    integ_id: int | None
    mode: int
    dh_group: int | None = None
    life_seconds: int | None = None
    life_kilobytes: int | None = None

    @property
    def keymat_lens(self) -> tuple[int, int]:
        """(cipher keying material incl. AEAD salt, integrity key) bytes per SA: the
        ``encr_keymat_len`` / ``integ_key_len`` of :func:`.keys.quick_mode_child_keys`."""
        return algorithms.keymat_lens(self.encr_id, self.key_bits, self.integ_id)

    def to_transform(self, number: int = 1) -> Transform:
        """The ESP or AH transform for this suite."""
        attrs = _life_attributes(
            Phase2Attr.SA_LIFE_TYPE,
            Phase2Attr.SA_LIFE_DURATION,
            self.life_seconds,
            self.life_kilobytes,
        )
        if self.dh_group is not None:
            attrs.append(Attribute(Phase2Attr.GROUP_DESCRIPTION, self.dh_group))
        attrs.append(Attribute(Phase2Attr.ENCAPSULATION_MODE, self.mode))
        if self.integ_id is not None:
            auth = next(k for k, v in INTEG_FOR_AUTH_ALGORITHM.items() if v == self.integ_id)
            attrs.append(Attribute(Phase2Attr.AUTH_ALGORITHM, auth))
        if self.encr_id is not None and algorithms.encryption(self.encr_id).key_length_attribute:
            attrs.append(Attribute(Phase2Attr.KEY_LENGTH, self.key_bits))
        if self.protocol == ProtocolId.AH:
            assert self.integ_id is not None
            auth = next(k for k, v in INTEG_FOR_AUTH_ALGORITHM.items() if v == self.integ_id)
            ah_id = next(k for k, v in AUTH_ALGORITHM_FOR_AH.items() if v == auth)
            return Transform(number, ah_id, tuple(attrs))
        assert self.encr_id is not None
        return Transform(number, self.encr_id, tuple(attrs))


def phase2_suite(protocol: int, t: Transform) -> Phase2Suite:
    """Read an ESP or AH transform of a quick mode SA payload; raises RefusedAlgorithm /
    UnsupportedAlgorithm through the registry (check_suite: no ESP without integrity
    unless AEAD) or ParseError (the encapsulation mode missing or unknown)."""
    mode = _required(t, Phase2Attr.ENCAPSULATION_MODE, "encapsulation_mode")
    if mode not in {int(m) for m in EncapsulationMode}:
        raise ParseError(
            f"encapsulation mode {mode} is unknown", field="transform.encapsulation_mode"
        )
    auth = t.get(Phase2Attr.AUTH_ALGORITHM)
    integ_id = (
        _lookup(INTEG_FOR_AUTH_ALGORITHM, auth.as_int, "authentication algorithm") if auth else None
    )
    encr_id: int | None = None
    key_bits = 0
    if protocol == ProtocolId.ESP:
        encr_id = t.transform_id
        algorithms.check_suite(encr_id, integ_id)
        length = t.get(Phase2Attr.KEY_LENGTH)
        key_bits = _key_bits(encr_id, length.as_int if length else None)
    elif protocol == ProtocolId.AH:
        expected = _lookup(AUTH_ALGORITHM_FOR_AH, t.transform_id, "AH transform")
        if auth is None or auth.as_int != expected:
            raise ParseError(
                "the AH transform and its authentication algorithm differ",
                field="transform.auth_algorithm",
            )
        assert integ_id is not None
        algorithms.integrity(integ_id)
    else:
        raise UnsupportedAlgorithm(f"quick mode protocol {protocol} is not ESP or AH")
    group_attr = t.get(Phase2Attr.GROUP_DESCRIPTION)
    group = group_attr.as_int if group_attr else None
    if group is not None:
        dh.public_length(group)
    seconds, kilobytes = _lifetimes(t, Phase2Attr.SA_LIFE_TYPE, Phase2Attr.SA_LIFE_DURATION)
    return Phase2Suite(protocol, encr_id, key_bits, integ_id, mode, group, seconds, kilobytes)
