"""strongSwan-style proposal strings → the cores' proposal objects.

`"aes256gcm16-prfsha256-x25519"` lists algorithms separated by `-`; several
algorithms of one kind are alternatives inside one proposal (`aes256-aes128-sha256`).
Operators already know this syntax from swanctl.conf, so the document uses it, and this
module is the one place that turns it into
:class:`~kipsec_sidecar.core.ike.config.IkeProposal` /
:class:`~kipsec_sidecar.core.ike.config.ChildProposal`.

Refused algorithms (DES, 3DES, MD5, NULL encryption, ESP without integrity, weak DH
groups) are refused by the cores' own registries (:mod:`kipsec_sidecar.core.algorithms`,
:mod:`kipsec_sidecar.core.ike.dh`), so the message — naming the safe alternative — is
the same one the engine would give. Every function here raises only
:class:`ProposalError` (a `ValueError`) for a bad string.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from ..core import algorithms
from ..core.errors import KipsecError, RefusedAlgorithm, UnsupportedAlgorithm
from ..core.ike import dh
from ..core.ike.config import ChildProposal, Encryption, IkeProposal
from ..core.ike.constants import DhGroup, EncrId, EsnId, IntegId, PrfId, ProtocolId

ChildProtocol = Literal["esp", "ah"]


class ProposalError(ValueError):
    """A proposal string kipsec cannot use; the message says why and what to write instead.

    `field` is set by :func:`parse_manual_algorithms` to the field at fault
    (`encryption` or `integrity`) and is empty otherwise.
    """

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class Kind(Enum):
    """What an algorithm name in a proposal string stands for."""

    ENCRYPTION = "encryption"
    INTEGRITY = "integrity"
    PRF = "prf"
    DH = "dh"
    ESN = "esn"


#: name → (transform id, key bits)
ENCRYPTION_NAMES: dict[str, tuple[int, int]] = {
    "aes": (EncrId.AES_CBC, 128),
    "aes128": (EncrId.AES_CBC, 128),
    "aes192": (EncrId.AES_CBC, 192),
    "aes256": (EncrId.AES_CBC, 256),
    "aes128gcm16": (EncrId.AES_GCM_16, 128),
    "aes192gcm16": (EncrId.AES_GCM_16, 192),
    "aes256gcm16": (EncrId.AES_GCM_16, 256),
    "aes128gcm128": (EncrId.AES_GCM_16, 128),
    "aes192gcm128": (EncrId.AES_GCM_16, 192),
    "aes256gcm128": (EncrId.AES_GCM_16, 256),
    "aes128gcm8": (EncrId.AES_GCM_8, 128),
    "aes256gcm8": (EncrId.AES_GCM_8, 256),
    "aes128gcm12": (EncrId.AES_GCM_12, 128),
    "aes256gcm12": (EncrId.AES_GCM_12, 256),
    "aes128ctr": (EncrId.AES_CTR, 128),
    "aes256ctr": (EncrId.AES_CTR, 256),
    "chacha20poly1305": (EncrId.CHACHA20_POLY1305, 256),
    "des": (EncrId.DES, 64),
    "3des": (EncrId.DES3, 192),
    "null": (EncrId.NULL, 0),
}
INTEGRITY_NAMES: dict[str, int] = {
    "sha256": IntegId.HMAC_SHA2_256_128,
    "sha2_256": IntegId.HMAC_SHA2_256_128,
    "sha384": IntegId.HMAC_SHA2_384_192,
    "sha2_384": IntegId.HMAC_SHA2_384_192,
    "sha512": IntegId.HMAC_SHA2_512_256,
    "sha2_512": IntegId.HMAC_SHA2_512_256,
    "sha1": IntegId.HMAC_SHA1_96,
    "md5": IntegId.HMAC_MD5_96,
}
PRF_NAMES: dict[str, int] = {
    "prfsha256": PrfId.HMAC_SHA2_256,
    "prfsha384": PrfId.HMAC_SHA2_384,
    "prfsha512": PrfId.HMAC_SHA2_512,
    "prfsha1": PrfId.HMAC_SHA1,
    "prfmd5": PrfId.HMAC_MD5,
}
DH_NAMES: dict[str, int] = {
    "x25519": DhGroup.CURVE25519,
    "curve25519": DhGroup.CURVE25519,
    "x448": DhGroup.CURVE448,
    "curve448": DhGroup.CURVE448,
    "ecp256": DhGroup.ECP_256,
    "ecp384": DhGroup.ECP_384,
    "modp2048": DhGroup.MODP_2048,
    "modp3072": DhGroup.MODP_3072,
    "modp768": 1,
    "modp1024": DhGroup.MODP_1024,
    "modp1536": 5,
}
ESN_NAMES: dict[str, int] = {"esn": EsnId.ESN, "noesn": EsnId.NO_ESN}

#: When an IKE proposal names no PRF, the PRF of its integrity algorithm (or SHA2-256).
_PRF_FOR_INTEGRITY: dict[int, int] = {
    IntegId.HMAC_SHA1_96: PrfId.HMAC_SHA1,  # only reached with legacy_sha1
    IntegId.HMAC_SHA2_256_128: PrfId.HMAC_SHA2_256,
    IntegId.HMAC_SHA2_384_192: PrfId.HMAC_SHA2_384,
    IntegId.HMAC_SHA2_512_256: PrfId.HMAC_SHA2_512,
}

_TABLES: dict[Kind, dict[str, int] | dict[str, tuple[int, int]]] = {
    Kind.ENCRYPTION: ENCRYPTION_NAMES,
    Kind.INTEGRITY: INTEGRITY_NAMES,
    Kind.PRF: PRF_NAMES,
    Kind.DH: DH_NAMES,
    Kind.ESN: ESN_NAMES,
}


def _check_encryption(value: int) -> None:
    algorithms.encryption(value)


def _check_integrity(value: int) -> None:
    algorithms.integrity(value)


def _check_prf(value: int) -> None:
    algorithms.prf(value)


def _check_dh(value: int) -> None:
    dh.public_length(value)


def _check_nothing(value: int) -> None:
    return None


_CHECKS: dict[Kind, Callable[[int], None]] = {
    Kind.ENCRYPTION: _check_encryption,
    Kind.INTEGRITY: _check_integrity,
    Kind.PRF: _check_prf,
    Kind.DH: _check_dh,
    Kind.ESN: _check_nothing,
}


def usable_names(kind: Kind) -> list[str]:
    """The names of `kind` that kipsec implements and does not refuse (for messages, docs)."""
    out = []
    for name, value in _TABLES[kind].items():
        ident = value[0] if isinstance(value, tuple) else value
        try:
            _CHECKS[kind](ident)
        except KipsecError:
            continue
        out.append(name)
    return out


@dataclass(frozen=True, slots=True)
class _Parsed:
    encryption: tuple[tuple[str, int, int], ...]  # (name, id, key bits)
    integrity: tuple[tuple[str, int], ...]
    prf: tuple[tuple[str, int], ...]
    dh: tuple[tuple[str, int], ...]
    esn: tuple[tuple[str, int], ...]


def _lookup(name: str) -> tuple[Kind, int, int]:
    for kind, table in _TABLES.items():
        value = table.get(name)
        if value is None:
            continue
        if isinstance(value, tuple):
            return kind, value[0], value[1]
        return kind, value, 0
    raise ProposalError(
        f"unknown algorithm {name[:40]!r}; kipsec knows encryption "
        f"{', '.join(usable_names(Kind.ENCRYPTION))}; integrity "
        f"{', '.join(usable_names(Kind.INTEGRITY))}; PRF {', '.join(usable_names(Kind.PRF))}; "
        f"DH groups {', '.join(usable_names(Kind.DH))}; esn, noesn"
    )


#: The SHA-1 names an IKEv1 peer's IKE proposal may write to opt in (issue 11).
_LEGACY_SHA1: frozenset[tuple[Kind, int]] = frozenset(
    {(Kind.INTEGRITY, IntegId.HMAC_SHA1_96), (Kind.PRF, PrfId.HMAC_SHA1)}
)


def _parse(text: str, *, legacy_sha1: bool = False) -> _Parsed:
    if not isinstance(text, str) or not text.strip():
        raise ProposalError("must be a non-empty proposal string such as 'aes256gcm16'")
    found: dict[Kind, list[tuple[str, int, int]]] = {kind: [] for kind in Kind}
    for raw in text.strip().lower().split("-"):
        if not raw:
            raise ProposalError("empty algorithm name: two '-' in a row, or a '-' at an end")
        kind, ident, bits = _lookup(raw)
        try:
            if not (legacy_sha1 and (kind, ident) in _LEGACY_SHA1):
                _CHECKS[kind](ident)
        except RefusedAlgorithm as exc:
            raise ProposalError(f"{raw}: {exc}") from exc
        except UnsupportedAlgorithm as exc:
            raise ProposalError(
                f"{raw} is not implemented by kipsec; use one of {', '.join(usable_names(kind))}"
            ) from exc
        if all(entry[0] != raw for entry in found[kind]):
            found[kind].append((raw, ident, bits))
    return _Parsed(
        encryption=tuple(found[Kind.ENCRYPTION]),
        integrity=tuple((n, i) for n, i, _ in found[Kind.INTEGRITY]),
        prf=tuple((n, i) for n, i, _ in found[Kind.PRF]),
        dh=tuple((n, i) for n, i, _ in found[Kind.DH]),
        esn=tuple((n, i) for n, i, _ in found[Kind.ESN]),
    )


def _ciphers(parsed: _Parsed) -> tuple[Encryption, ...]:
    """The ciphers of a proposal, checked for AEAD/non-AEAD mixing and integrity."""
    aead = [n for n, i, _ in parsed.encryption if algorithms.encryption(i).aead]
    plain = [n for n, i, _ in parsed.encryption if not algorithms.encryption(i).aead]
    if aead and plain:
        raise ProposalError(
            f"mixes AEAD ({aead[0]}) and non-AEAD ({plain[0]}) ciphers: write them as two proposals"
        )
    if aead and parsed.integrity:
        raise ProposalError(
            f"{aead[0]} is an AEAD cipher and takes no integrity algorithm: remove "
            f"{parsed.integrity[0][0]}, or put {parsed.integrity[0][0]} with a non-AEAD "
            "cipher in a separate proposal"
        )
    if plain and not parsed.integrity:
        try:
            algorithms.check_suite(parsed.encryption[0][1], None)
        except RefusedAlgorithm as exc:
            raise ProposalError(str(exc)) from exc
    try:
        return tuple(Encryption(i, bits) for _, i, bits in parsed.encryption)
    except KipsecError as exc:
        raise ProposalError(_strip_field(str(exc))) from exc


def _strip_field(message: str) -> str:
    """Core messages start with the core's field name (`child_proposal.esn: ...`)."""
    head, sep, tail = message.partition(": ")
    return tail if sep and " " not in head else message


def parse_ike_proposal(text: str, *, legacy_sha1: bool = False) -> IkeProposal:
    """An IKE SA proposal: ciphers, integrity (non-AEAD only), PRFs and DH groups.

    Without a PRF, the PRF matching the integrity algorithm is used (PRF-HMAC-SHA2-256
    for AEAD ciphers). A DH group is required. ``legacy_sha1`` (an IKEv1 peer's
    proposals) admits ``sha1`` / ``prfsha1``; the proposal then carries
    ``legacy_sha1=True`` only if it names one, and without the flag they are refused
    as they always were.
    """
    parsed = _parse(text, legacy_sha1=legacy_sha1)
    if parsed.esn:
        raise ProposalError(f"{parsed.esn[0][0]} applies to ESP and AH proposals, not to IKE")
    if not parsed.encryption:
        raise ProposalError("an IKE proposal needs an encryption algorithm, e.g. aes256gcm16")
    encryption = _ciphers(parsed)
    if not parsed.dh:
        raise ProposalError("an IKE proposal needs a Diffie-Hellman group, e.g. x25519")
    prfs = tuple(i for _, i in parsed.prf) or tuple(
        dict.fromkeys(_PRF_FOR_INTEGRITY.get(i, PrfId.HMAC_SHA2_256) for _, i in parsed.integrity)
    )
    try:
        return IkeProposal(
            encryption=encryption,
            integrity=tuple(i for _, i in parsed.integrity),
            prf=prfs or (PrfId.HMAC_SHA2_256,),
            dh=tuple(i for _, i in parsed.dh),
            legacy_sha1=_names_sha1(parsed),
        )
    except KipsecError as exc:
        raise ProposalError(_strip_field(str(exc))) from exc


def _names_sha1(parsed: _Parsed) -> bool:
    """Whether a parsed IKE proposal names SHA-1 (integrity or PRF)."""
    named = {(Kind.INTEGRITY, i) for _, i in parsed.integrity}
    named |= {(Kind.PRF, i) for _, i in parsed.prf}
    return bool(named & _LEGACY_SHA1)


LEGACY_SHA1_DEPRECATION = (
    "SHA-1 is deprecated (RFC 9395 deprecates IKEv1, RFC 8247 SHA-1 in IKE): "
    "move the peer to SHA-256 or IKEv2"
)
"""Why SHA-1 is only tolerated: the end of the sidecar's warning and of the operator's
(a Tunnel's or ExternalPeer's `status.warnings`)."""


def legacy_sha1_warning(peer: str) -> str:
    """The one line logged at load and shown in the peer's status when an IKEv1 peer's
    proposals name SHA-1."""
    return (
        f"peer {peer}: IKEv1 phase 1 with SHA-1 because its proposals.ike name it; "
        f"{LEGACY_SHA1_DEPRECATION}"
    )


def parse_child_proposal(text: str, protocol: ChildProtocol) -> ChildProposal:
    """An ESP or AH child SA proposal; DH groups in it mean PFS on rekey.

    ESP needs a cipher (AEAD, or non-AEAD with integrity); AH takes integrity only.
    `esn`/`noesn` choose extended sequence numbers (default `noesn`).
    """
    parsed = _parse(text)
    if parsed.prf:
        raise ProposalError(
            f"{parsed.prf[0][0]} is a PRF: PRFs belong in IKE proposals, not {protocol.upper()}"
        )
    esn = tuple(i for _, i in parsed.esn) or (EsnId.NO_ESN,)
    groups = tuple(i for _, i in parsed.dh)
    integrity = tuple(i for _, i in parsed.integrity)
    try:
        if protocol == "ah":
            if parsed.encryption:
                raise ProposalError(
                    f"AH takes no encryption algorithm ({parsed.encryption[0][0]}): AH only "
                    "authenticates; use protocol esp to encrypt"
                )
            if not integrity:
                raise ProposalError("an AH proposal needs an integrity algorithm, e.g. sha256")
            return ChildProposal(
                protocol=ProtocolId.AH, encryption=(), integrity=integrity, dh=groups, esn=esn
            )
        if not parsed.encryption:
            refusal = RefusedAlgorithm("ESP without encryption", algorithms.SAFE_ENCRYPTION)
            raise ProposalError(f"an ESP proposal needs an encryption algorithm: {refusal}")
        return ChildProposal(
            protocol=ProtocolId.ESP,
            encryption=_ciphers(parsed),
            integrity=integrity,
            dh=groups,
            esn=esn,
        )
    except KipsecError as exc:
        raise ProposalError(_strip_field(str(exc))) from exc


@dataclass(frozen=True, slots=True)
class ManualAlgorithms:
    """The algorithms of a manually keyed SA pair and the key lengths they need (bytes).

    `encryption_key_len` includes the salt of AEAD ciphers (RFC 4106 / RFC 7634), i.e.
    it is the length of the `encr_key` :class:`~kipsec_sidecar.core.ipsec_sa.IpsecSa`
    takes; 0 when there is no cipher (AH). `integrity_key_len` is 0 without integrity.
    """

    encr_id: int | None
    encr_key_bits: int | None
    integ_id: int | None
    encryption_key_len: int
    integrity_key_len: int


def parse_manual_algorithms(
    encryption: str | None, integrity: str | None, protocol: ChildProtocol
) -> ManualAlgorithms:
    """One cipher and/or one integrity algorithm for a manually keyed SA.

    Same names and refusals as proposals; exactly one algorithm per field (there is no
    negotiation to choose among alternatives).
    """
    encr: tuple[str, int, int] | None = None
    integ: tuple[str, int] | None = None
    if encryption is not None:
        encr = _single(encryption, "encryption", "aes256gcm16")
    if integrity is not None:
        found = _single(integrity, "integrity", "sha256")
        integ = (found[0], found[1])
    if protocol == "ah":
        if encr is not None:
            raise ProposalError(
                "AH takes no encryption algorithm; use protocol esp to encrypt", field="encryption"
            )
        if integ is None:
            raise ProposalError("AH needs an integrity algorithm, e.g. sha256", field="integrity")
        return ManualAlgorithms(None, None, integ[1], 0, algorithms.integrity(integ[1]).key_len)
    if encr is None:
        refusal = RefusedAlgorithm("ESP without encryption", algorithms.SAFE_ENCRYPTION)
        raise ProposalError(f"ESP needs an encryption algorithm: {refusal}", field="encryption")
    try:
        spec, integ_spec = algorithms.check_suite(encr[1], integ[1] if integ else None)
    except KipsecError as exc:
        raise ProposalError(str(exc), field="integrity") from exc
    return ManualAlgorithms(
        encr_id=encr[1],
        encr_key_bits=encr[2],
        integ_id=integ[1] if integ else None,
        encryption_key_len=spec.keymat_len(encr[2] // 8),
        integrity_key_len=integ_spec.key_len if integ_spec else 0,
    )


def _single(text: str, field: str, example: str) -> tuple[str, int, int]:
    """The one algorithm of kind `field` that `text` names (manual keying)."""
    try:
        parsed = _parse(text)
    except ProposalError as exc:
        raise ProposalError(str(exc), field=field) from exc
    if _count(parsed) == 1 and field == "encryption" and parsed.encryption:
        return parsed.encryption[0]
    if _count(parsed) == 1 and field == "integrity" and parsed.integrity:
        name, ident = parsed.integrity[0]
        return (name, ident, 0)
    raise ProposalError(f"must name exactly one {field} algorithm, e.g. {example}", field=field)


def _count(parsed: _Parsed) -> int:
    return sum(
        len(x) for x in (parsed.encryption, parsed.integrity, parsed.prf, parsed.dh, parsed.esn)
    )


__all__ = [
    "DH_NAMES",
    "ENCRYPTION_NAMES",
    "ESN_NAMES",
    "INTEGRITY_NAMES",
    "LEGACY_SHA1_DEPRECATION",
    "PRF_NAMES",
    "ChildProtocol",
    "Kind",
    "ManualAlgorithms",
    "ProposalError",
    "legacy_sha1_warning",
    "parse_child_proposal",
    "parse_ike_proposal",
    "parse_manual_algorithms",
    "usable_names",
]
