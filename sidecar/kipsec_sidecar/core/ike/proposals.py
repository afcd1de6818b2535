"""Configured proposals to and from SA payloads, and the responder's choice among them.

RFC 7296 sections 2.7 and 3.3.6: the responder takes the *first* of the initiator's
proposals that its own configuration accepts and answers with exactly one transform of
each type from it. A proposal with a transform type we do not know, or missing a
mandatory type, is unacceptable; so is one whose only algorithms are refused (DES, 3DES,
MD5, NULL encryption): the configuration can never contain them (config.py refuses
them), so they simply never match. A Key Length attribute must match exactly.

The initiator checks the answer with :func:`check_response`: one proposal, built only
from what it offered.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .. import algorithms
from ..errors import KipsecError, RemoteProtocolError
from .config import ChildProposal, Encryption, IkeProposal
from .constants import DhGroup, EsnId, IntegId, ProtocolId, TransformType
from .payloads import Proposal, SaPayload, Transform

_KNOWN_TYPES = frozenset(int(t) for t in TransformType)


@dataclass(frozen=True, slots=True)
class Selection:
    """One transform of each type, chosen from one proposal (ours or the peer's).

    ``spi`` is the SPI carried by that proposal (the proposer's inbound SPI; empty in
    IKE_SA_INIT). ``dh_group`` is None when no Diffie-Hellman exchange takes place.
    """

    number: int
    protocol: int
    spi: bytes
    encr_id: int | None
    encr_key_bits: int
    integ_id: int | None
    prf_id: int | None
    dh_group: int | None
    esn: bool

    def to_proposal(self, spi: bytes) -> Proposal:
        """The single proposal a responder sends back, carrying its own ``spi``."""
        transforms: list[Transform] = []
        if self.encr_id is not None:
            transforms.append(_encr_transform(self.encr_id, self.encr_key_bits))
        if self.prf_id is not None:
            transforms.append(Transform(TransformType.PRF, self.prf_id, None))
        if self.integ_id is not None:
            transforms.append(Transform(TransformType.INTEG, self.integ_id, None))
        if self.dh_group is not None:
            transforms.append(Transform(TransformType.DH, self.dh_group, None))
        if self.protocol != ProtocolId.IKE:
            esn = EsnId.ESN if self.esn else EsnId.NO_ESN
            transforms.append(Transform(TransformType.ESN, esn, None))
        return Proposal(self.number, self.protocol, spi, tuple(transforms))

    def to_sa_payload(self, spi: bytes) -> SaPayload:
        return SaPayload((self.to_proposal(spi),))

    @property
    def encr_keymat_len(self) -> int:
        """Bytes of encryption keying material per direction (key plus salt)."""
        return algorithms.keymat_lens(self.encr_id, self.encr_key_bits, None)[0]

    @property
    def integ_key_len(self) -> int:
        """Bytes of integrity key per direction (0 with an AEAD cipher)."""
        return algorithms.keymat_lens(None, 0, self.integ_id)[1]


def _encr_transform(encr_id: int, key_bits: int) -> Transform:
    spec = algorithms.encryption(encr_id)
    return Transform(TransformType.ENCR, encr_id, key_bits if spec.key_length_attribute else None)


def ike_sa_payload(proposals: Sequence[IkeProposal], spi: bytes = b"") -> SaPayload:
    """The SA payload offering ``proposals`` for an IKE SA (``spi`` empty in IKE_SA_INIT)."""
    out: list[Proposal] = []
    for number, p in enumerate(proposals, start=1):
        transforms = [_encr_transform(e.encr_id, e.key_bits) for e in p.encryption]
        transforms += [Transform(TransformType.PRF, x, None) for x in p.prf]
        transforms += [Transform(TransformType.INTEG, x, None) for x in p.integrity]
        transforms += [Transform(TransformType.DH, x, None) for x in p.dh]
        out.append(Proposal(number, ProtocolId.IKE, spi, tuple(transforms)))
    return SaPayload(tuple(out))


def child_sa_payload(proposals: Sequence[ChildProposal], spi: bytes, pfs: bool) -> SaPayload:
    """The SA payload offering ``proposals`` for a child SA whose inbound SPI is ``spi``.

    ``pfs`` False leaves the DH transforms out (the child inside IKE_AUTH never has a KE).
    """
    out: list[Proposal] = []
    for number, p in enumerate(proposals, start=1):
        transforms = [_encr_transform(e.encr_id, e.key_bits) for e in p.encryption]
        transforms += [Transform(TransformType.INTEG, x, None) for x in p.integrity]
        if pfs:
            transforms += [Transform(TransformType.DH, x, None) for x in p.dh]
        transforms += [Transform(TransformType.ESN, x, None) for x in p.esn]
        out.append(Proposal(number, p.protocol, spi, tuple(transforms)))
    return SaPayload(tuple(out))


def first_dh_group(proposals: Iterable[IkeProposal | ChildProposal]) -> int | None:
    """The group an initiator sends its KE for: the first of its first proposal with one."""
    for p in proposals:
        if p.dh:
            return p.dh[0]
    return None


def _by_type(proposal: Proposal) -> dict[int, list[Transform]] | None:
    out: dict[int, list[Transform]] = {}
    for t in proposal.transforms:
        if t.type not in _KNOWN_TYPES:
            return None  # RFC 7296 section 3.3.6: an unknown type spoils the proposal
        # ... while an unknown attribute spoils only its transform: the others of the
        # same type are still considered (and a type left empty fails the proposal).
        candidates = out.setdefault(t.type, [])
        if t.understood:
            candidates.append(t)
    return out


def _pick_encr(offered: list[Transform], accepted: tuple[Encryption, ...]) -> Encryption | None:
    for t in offered:
        for e in accepted:
            if t.id != e.encr_id:
                continue
            needs_length = algorithms.encryption(e.encr_id).key_length_attribute
            if needs_length and t.key_length != e.key_bits:
                continue
            if not needs_length and t.key_length not in (None, e.key_bits):
                continue
            return e
    return None


def _pick(offered: list[Transform], accepted: Iterable[int]) -> int | None:
    allowed = set(accepted)
    for t in offered:
        if t.key_length is None and t.id in allowed:
            return t.id
    return None


def _pick_dh(
    offered: list[Transform], accepted: tuple[int, ...], ke_group: int | None
) -> int | None:
    ids = [t.id for t in offered if t.key_length is None]
    if ke_group is not None and ke_group in ids and ke_group in accepted:
        return ke_group
    for i in ids:
        if i in accepted and i != DhGroup.NONE:
            return i
    return None


def _match_integ(
    types: dict[int, list[Transform]], encr: Encryption | None, accepted: tuple[int, ...]
) -> tuple[bool, int | None]:
    """(acceptable, chosen integrity) for the proposal's INTEG transforms."""
    offered = types.get(TransformType.INTEG, [])
    if encr is not None and encr.aead:
        if not offered or any(t.id == IntegId.NONE for t in offered):
            return True, None
        return False, None
    chosen = _pick(offered, accepted)
    return chosen is not None, chosen


def _match_ike(
    peer: Proposal, ours: IkeProposal, ke_group: int | None, number: int
) -> Selection | None:
    types = _by_type(peer)
    if types is None or peer.protocol != ProtocolId.IKE or TransformType.ESN in types:
        return None
    encr = _pick_encr(types.get(TransformType.ENCR, []), ours.encryption)
    prf = _pick(types.get(TransformType.PRF, []), ours.prf)
    dh = _pick_dh(types.get(TransformType.DH, []), ours.dh, ke_group)
    ok, integ = _match_integ(types, encr, ours.integrity)
    if encr is None or prf is None or dh is None or not ok:
        return None
    return Selection(
        number, ProtocolId.IKE, peer.spi, encr.encr_id, encr.key_bits, integ, prf, dh, False
    )


def _match_child(
    peer: Proposal, ours: ChildProposal, ke_group: int | None, pfs: bool, number: int
) -> Selection | None:
    types = _by_type(peer)
    if types is None or peer.protocol != ours.protocol or TransformType.PRF in types:
        return None
    encr: Encryption | None = None
    if ours.protocol == ProtocolId.ESP:
        encr = _pick_encr(types.get(TransformType.ENCR, []), ours.encryption)
        if encr is None:
            return None
    elif TransformType.ENCR in types:
        return None
    ok, integ = _match_integ(types, encr, ours.integrity)
    if not ok:
        return None
    dh: int | None = None
    offered_dh = types.get(TransformType.DH, [])
    if pfs and ours.dh:
        dh = _pick_dh(offered_dh, ours.dh, ke_group)
        if dh is None:
            return None
    elif pfs and offered_dh and not any(t.id == DhGroup.NONE for t in offered_dh):
        return None  # the peer insists on PFS we are not configured for
    esn_offered = types.get(TransformType.ESN) or [Transform(TransformType.ESN, EsnId.NO_ESN, None)]
    esn = _pick(esn_offered, ours.esn)
    if esn is None:
        return None
    return Selection(
        number,
        ours.protocol,
        peer.spi,
        encr.encr_id if encr else None,
        encr.key_bits if encr else 0,
        integ,
        None,
        dh,
        esn == EsnId.ESN,
    )


def select_ike(
    offered: SaPayload, accepted: Sequence[IkeProposal], ke_group: int | None = None
) -> Selection | None:
    """The responder's choice for an IKE SA, or None (answer NO_PROPOSAL_CHOSEN).

    ``ke_group`` is the group of the initiator's KE payload: when the chosen proposal
    allows it, it is preferred, so no INVALID_KE_PAYLOAD round trip is needed.
    """
    for peer in offered.proposals:
        for ours in accepted:
            chosen = _safe(lambda p=peer, o=ours: _match_ike(p, o, ke_group, p.number))
            if chosen is not None:
                return chosen
    return None


def select_child(
    offered: SaPayload,
    accepted: Sequence[ChildProposal],
    ke_group: int | None = None,
    pfs: bool = False,
) -> Selection | None:
    """The responder's choice for a child SA, or None (answer NO_PROPOSAL_CHOSEN).

    ``pfs`` True in CREATE_CHILD_SA (DH transforms are negotiated); False in IKE_AUTH,
    where DH transforms are ignored as RFC 7296 section 1.2 says.
    """
    for peer in offered.proposals:
        if len(peer.spi) != 4:
            continue
        for ours in accepted:
            chosen = _safe(lambda p=peer, o=ours: _match_child(p, o, ke_group, pfs, p.number))
            if chosen is not None:
                return chosen
    return None


def _safe(match: object) -> Selection | None:
    try:
        result = match()  # type: ignore[operator]
    except KipsecError:
        return None
    assert result is None or isinstance(result, Selection)
    return result


def check_response(sent: SaPayload, received: SaPayload, spi_len: int) -> Selection:
    """Validate the responder's SA payload against what we offered.

    Raises :class:`RemoteProtocolError` unless it holds exactly one proposal, with a
    ``spi_len``-byte SPI, whose transforms (one per type) all came from the proposal
    with the same number we sent.
    """
    if len(received.proposals) != 1:
        raise RemoteProtocolError("SA: the response must carry exactly one proposal")
    answer = received.proposals[0]
    if len(answer.spi) != spi_len:
        raise RemoteProtocolError(f"SA: the response SPI must be {spi_len} bytes")
    mine = next((p for p in sent.proposals if p.number == answer.number), None)
    if mine is None or mine.protocol != answer.protocol:
        raise RemoteProtocolError("SA: the response answers a proposal we did not send")
    types: dict[int, Transform] = {}
    for t in answer.transforms:
        if t.type in types:
            raise RemoteProtocolError(f"SA: two transforms of type {t.type} in the response")
        if t not in mine.transforms:
            raise RemoteProtocolError(f"SA: transform {t.type}/{t.id} was not offered")
        types[t.type] = t
    encr = types.get(TransformType.ENCR)
    integ = types.get(TransformType.INTEG)
    prf = types.get(TransformType.PRF)
    dh = types.get(TransformType.DH)
    esn = types.get(TransformType.ESN)
    try:
        if encr is not None:
            spec = algorithms.encryption(encr.id)
            if not spec.aead and (integ is None or integ.id == IntegId.NONE):
                raise RemoteProtocolError("SA: a non-AEAD cipher without integrity")
        elif answer.protocol != ProtocolId.AH:
            raise RemoteProtocolError("SA: no encryption transform in the response")
        if answer.protocol == ProtocolId.IKE and (prf is None or dh is None):
            raise RemoteProtocolError("SA: an IKE proposal needs a PRF and a DH group")
        if answer.protocol == ProtocolId.AH and integ is None:
            raise RemoteProtocolError("SA: AH needs an integrity transform")
        key_bits = 0
        if encr is not None:
            key_bits = encr.key_length or algorithms.encryption(encr.id).default_key_len * 8
    except KipsecError as exc:
        if isinstance(exc, RemoteProtocolError):
            raise
        raise RemoteProtocolError(f"SA: {exc}") from exc
    integ_id = integ.id if integ is not None and integ.id != IntegId.NONE else None
    dh_group = dh.id if dh is not None and dh.id != DhGroup.NONE else None
    return Selection(
        answer.number,
        answer.protocol,
        answer.spi,
        encr.id if encr else None,
        key_bits,
        integ_id,
        prf.id if prf else None,
        dh_group,
        esn is not None and esn.id == EsnId.ESN,
    )
