"""What IKEv1 offers, accepts and checks: phase 1 and phase 2 SA payloads, client IDs.

The configuration objects are the IKEv2 ones (:class:`~kipsec_sidecar.core.ike.config.IkeProposal`,
:class:`~kipsec_sidecar.core.ike.config.ChildProposal`): an IKEv1 peer is configured the
same way. This module turns them into the wire layer's suites (:mod:`.policy`, which maps
IKEv1 numbers onto the shared registry and refuses what it refuses) and compares suites,
so the events and the datapaths see the same identifiers as for IKEv2.

Phase 1 offers one proposal with one transform per (cipher, hash, group) combination,
as strongSwan does; the hash is the integrity algorithm's, and the PRF is HMAC with it
(IKEv1 has no separate PRF). The responder takes the first of the initiator's transforms
that its own proposals contain (the initiator's preference order). Phase 2 offers one
proposal per ChildProposal, one transform per cipher.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from .. import algorithms
from ..errors import KipsecError, LocalProtocolError, RemoteProtocolError
from ..ike.config import ChildProposal, IkeConfig, Lifetime, Mode
from ..ike.proposals import Selection
from .constants import AuthMethod, EncapsulationMode, IdType, ProtocolId
from .natt import udp_mode
from .payloads import Proposal, SaPayload, Transform
from .policy import (
    PHASE1_ENCRYPTION,
    PRF_FOR_HASH,
    Phase1Suite,
    Phase2Suite,
    in_kilobytes,
    phase1_suite,
    phase2_suite,
)

_HASH_FOR_PRF = {prf: hash_alg for hash_alg, prf in PRF_FOR_HASH.items()}
_MODES: dict[str, int] = {
    "tunnel": EncapsulationMode.TUNNEL,
    "transport": EncapsulationMode.TRANSPORT,
}


# ---------------------------------------------------------------------- phase 1


@dataclass(frozen=True, slots=True)
class Phase1Choice:
    """The phase 1 suite both sides use, the integrity it stands for in our
    configuration (for the events) and the answer's SA payload."""

    suite: Phase1Suite
    integ_id: int
    answer: SaPayload
    legacy_sha1: bool = False

    @property
    def prf_id(self) -> int:
        return self.suite.prf_id

    @property
    def dh_group(self) -> int:
        return self.suite.dh_group

    @property
    def encr_id(self) -> int:
        return self.suite.encr_id

    @property
    def encr_key_bits(self) -> int:
        return self.suite.key_bits

    @property
    def encryption_key_len(self) -> int:
        return self.suite.encryption_key_len


_ECDSA_METHODS = {
    "secp256r1": AuthMethod.ECDSA_SHA256_P256,
    "secp384r1": AuthMethod.ECDSA_SHA384_P384,
    "secp521r1": AuthMethod.ECDSA_SHA512_P521,
}


def auth_method(config: IkeConfig) -> int:
    """The phase 1 authentication method of our configuration: PSK (1), public-key
    encryption when configured (4, 5), or the signature method our key makes (RSA 3,
    DSS 2, ECDSA 9/10/11 by curve, RFC 4754)."""
    if config.auth.method == "psk":
        return AuthMethod.PRE_SHARED_KEY
    if config.auth.public_key_encryption is not None:
        return config.auth.public_key_encryption  # an RSA key, checked by AuthConfig
    key = config.auth.private_key
    if isinstance(key, rsa.RSAPrivateKey):
        return AuthMethod.RSA_SIGNATURE
    if isinstance(key, dsa.DSAPrivateKey):
        return AuthMethod.DSS_SIGNATURE
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _ECDSA_METHODS:
        return _ECDSA_METHODS[key.curve.name]
    raise LocalProtocolError(f"auth.private_key: IKEv1 cannot sign with {type(key).__name__}")


def _phase1_offers(config: IkeConfig) -> list[tuple[Phase1Suite, int]]:
    """(suite, integrity) for each (cipher, hash, group) our proposals allow, in order.

    The hash is the one behind the proposal's PRF (IKEv1 has no separate PRF);
    ciphers IKEv1 cannot use for phase 1 (AEAD) are left out."""
    method = auth_method(config)
    life = int(config.lifetime.expire_after) or None
    out: list[tuple[Phase1Suite, int]] = []
    for proposal in config.proposals:
        for encr in proposal.encryption:
            if encr.encr_id not in PHASE1_ENCRYPTION.values():
                continue
            for prf_id in proposal.prf:
                hash_alg = _HASH_FOR_PRF.get(prf_id)
                if hash_alg is None or not proposal.integrity:
                    continue
                for group in proposal.dh:
                    suite = Phase1Suite(
                        encr.encr_id, encr.key_bits, hash_alg, prf_id, method, group, life
                    )
                    out.append((suite, proposal.integrity[0]))
    return out


def _phase1_key(suite: Phase1Suite) -> tuple[int, ...]:
    return (suite.encr_id, suite.key_bits, suite.hash_alg, suite.auth_method, suite.dh_group)


def phase1_sa_payload(config: IkeConfig) -> SaPayload:
    """Main mode message 1's SA: every combination our proposals allow."""
    offers = _phase1_offers(config)
    if not offers:
        raise LocalProtocolError("ike.proposals: nothing IKEv1 can use (AES-CBC with HMAC-SHA2)")
    transforms = tuple(suite.to_transform(n) for n, (suite, _) in enumerate(offers, 1))
    return SaPayload((Proposal(1, ProtocolId.ISAKMP, b"", transforms),))


def _legacy_sha1(config: IkeConfig) -> bool:
    """Whether a proposal of ours names SHA-1 (the explicit opt-in of a legacy peer)."""
    return any(p.legacy_sha1 for p in config.proposals)


def _read_phase1(t: Transform, config: IkeConfig) -> Phase1Suite | None:
    """The suite of a received transform; SHA-1 is read only when we opted in (and is
    then matched against our offers like any other hash)."""
    try:
        return phase1_suite(t, legacy_sha1=_legacy_sha1(config))
    except KipsecError:  # refused, unsupported or malformed: not a candidate
        return None


def _choice(suite: Phase1Suite, integ_id: int, answer: SaPayload) -> Phase1Choice:
    legacy = suite.prf_id in algorithms.LEGACY_PRF
    return Phase1Choice(suite, integ_id, answer, legacy_sha1=legacy)


def select_phase1(offer: SaPayload, config: IkeConfig) -> Phase1Choice | None:
    """The responder's pick: the first offered transform our proposals contain."""
    ours = {_phase1_key(suite): integ for suite, integ in _phase1_offers(config)}
    for proposal in offer.proposals:
        if proposal.protocol != ProtocolId.ISAKMP:
            continue
        for t in proposal.transforms:
            suite = _read_phase1(t, config)
            if suite is not None and _phase1_key(suite) in ours:
                answer = SaPayload((Proposal(proposal.number, ProtocolId.ISAKMP, b"", (t,)),))
                return _choice(suite, ours[_phase1_key(suite)], answer)
    return None


def check_phase1_answer(config: IkeConfig, answer: SaPayload) -> Phase1Choice:
    """The initiator's check: one transform, and one we offered."""
    if len(answer.proposals) != 1 or len(answer.proposals[0].transforms) != 1:
        raise RemoteProtocolError("the phase 1 answer must hold one transform")
    suite = _read_phase1(answer.proposals[0].transforms[0], config)
    ours = {_phase1_key(s): integ for s, integ in _phase1_offers(config)}
    if suite is None or _phase1_key(suite) not in ours:
        raise RemoteProtocolError("the peer chose a phase 1 transform we did not offer")
    return _choice(suite, ours[_phase1_key(suite)], answer)


# ---------------------------------------------------------------------- phase 2


@dataclass(frozen=True, slots=True)
class Phase2Choice:
    """The IPsec SA pair agreed in quick mode: ``suite`` as read from the transform,
    ``spi`` the peer's SPI and the proposal holding the chosen transform."""

    suite: Phase2Suite
    spi: bytes
    proposal: Proposal

    @property
    def dh_group(self) -> int | None:
        return self.suite.dh_group

    @property
    def selection(self) -> Selection:
        """The suite as the IKEv2 child plumbing takes it (install, key lengths)."""
        s = self.suite
        return Selection(
            number=self.proposal.number,
            protocol=s.protocol,
            spi=self.spi,
            encr_id=s.encr_id,
            encr_key_bits=s.key_bits,
            integ_id=s.integ_id,
            prf_id=None,
            dh_group=s.dh_group,
            esn=False,
        )

    def answer_with(self, spi: bytes) -> SaPayload:
        """The responder's SA: the chosen transform under our own SPI."""
        p = self.proposal
        return SaPayload((Proposal(p.number, p.protocol, spi, p.transforms),))


def _phase2_suites(
    proposal: ChildProposal, mode: Mode, udp: bool, lifetime: Lifetime
) -> list[Phase2Suite]:
    integ = proposal.integrity[0] if proposal.integrity else None
    group = proposal.dh[0] if proposal.dh else None
    life = int(lifetime.expire_after) or None
    kb = in_kilobytes(lifetime.max_bytes) if lifetime.max_bytes else None
    encapsulation = udp_mode(_MODES[mode]) if udp else _MODES[mode]
    if proposal.protocol == ProtocolId.AH:
        return [Phase2Suite(ProtocolId.AH, None, 0, integ, encapsulation, group, life, kb)]
    return [
        Phase2Suite(ProtocolId.ESP, e.encr_id, e.key_bits, integ, encapsulation, group, life, kb)
        for e in proposal.encryption
    ]


def _phase2_key(suite: Phase2Suite) -> tuple[int | None, ...]:
    return (
        suite.protocol,
        suite.encr_id,
        suite.key_bits,
        suite.integ_id,
        suite.mode,
        suite.dh_group,
    )


def phase2_sa_payload(
    proposals: Sequence[ChildProposal], spi: bytes, *, mode: Mode, udp: bool, lifetime: Lifetime
) -> SaPayload:
    """Quick mode message 1's SA: one proposal per ChildProposal, one transform per cipher."""
    out: list[Proposal] = []
    for proposal in proposals:
        suites = _phase2_suites(proposal, mode, udp, lifetime)
        transforms = tuple(s.to_transform(n) for n, s in enumerate(suites, 1))
        out.append(Proposal(len(out) + 1, proposal.protocol, spi, transforms))
    return SaPayload(tuple(out))


def _read_phase2(protocol: int, t: Transform) -> Phase2Suite | None:
    try:
        return phase2_suite(protocol, t)
    except KipsecError:
        return None


def select_phase2(
    offer: SaPayload, proposals: Sequence[ChildProposal], *, mode: Mode, udp: bool
) -> Phase2Choice | None:
    """The responder's pick: the first offered transform that one of ours matches."""
    ours = {_phase2_key(s) for p in proposals for s in _phase2_suites(p, mode, udp, Lifetime(0, 0))}
    for proposal in offer.proposals:
        if proposal.protocol not in (ProtocolId.ESP, ProtocolId.AH) or len(proposal.spi) != 4:
            continue
        for t in proposal.transforms:
            suite = _read_phase2(proposal.protocol, t)
            if suite is not None and _phase2_key(suite) in ours:
                chosen = Proposal(proposal.number, proposal.protocol, proposal.spi, (t,))
                return Phase2Choice(suite, proposal.spi, chosen)
    return None


def check_phase2_answer(sent: SaPayload, answer: SaPayload) -> Phase2Choice:
    """The initiator's check: one transform we offered, with the responder's SPI."""
    if len(answer.proposals) != 1 or len(answer.proposals[0].transforms) != 1:
        raise RemoteProtocolError("the phase 2 answer must hold one transform")
    proposal = answer.proposals[0]
    suite = _read_phase2(proposal.protocol, proposal.transforms[0])
    offered = {
        _phase2_key(s)
        for p in sent.proposals
        for t in p.transforms
        if (s := _read_phase2(p.protocol, t)) is not None
    }
    if suite is None or _phase2_key(suite) not in offered or len(proposal.spi) != 4:
        raise RemoteProtocolError("the peer chose a phase 2 transform we did not offer")
    return Phase2Choice(suite, proposal.spi, proposal)


# ---------------------------------------------------------------------- identities


def address_identity(address: str) -> tuple[int, bytes]:
    """ID_IPV4_ADDR / ID_IPV6_ADDR for ``address``."""
    ip = ipaddress.ip_address(address)
    return (IdType.IPV4_ADDR if ip.version == 4 else IdType.IPV6_ADDR), ip.packed


__all__ = [
    "Phase1Choice",
    "Phase2Choice",
    "address_identity",
    "auth_method",
    "check_phase1_answer",
    "check_phase2_answer",
    "phase1_sa_payload",
    "phase2_sa_payload",
    "select_phase1",
    "select_phase2",
]
