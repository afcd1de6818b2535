"""SHA-1 for an IKEv1 legacy peer (issue 11): admitted only when the peer's
`proposals.ike` names it, refused as before for IKEv2 peers and for ESP/AH, never
offered by default; the warning is logged once at load and shown in the peer status.

The document side goes through the real loader and :func:`to_core`; the wire side
through an in-memory IKEv1 initiator/responder pair with a fake clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from kipsec_sidecar.cli import render_sas
from kipsec_sidecar.config import ConfigError, load_config_data, to_core
from kipsec_sidecar.config.proposals import (
    ProposalError,
    legacy_sha1_warning,
    parse_child_proposal,
    parse_ike_proposal,
)
from kipsec_sidecar.config.to_core import PeerPlan
from kipsec_sidecar.core.errors import LocalProtocolError
from kipsec_sidecar.core.ike.config import IkeConfig, IkeProposal
from kipsec_sidecar.core.ike.constants import IntegId, PrfId
from kipsec_sidecar.core.ike.events import ChildSaEstablished, IkeSaEstablished, NegotiationFailed
from kipsec_sidecar.core.ikev1 import negotiation
from kipsec_sidecar.core.ikev1.constants import HashAlgorithm, Phase1Attr
from kipsec_sidecar.core.ikev1.engine import IsakmpSa
from support.ike_pair import V1_IKE_PROPOSALS, IkePair, pair_configs
from support.sidecar_config_files import ExampleFiles, minimal_document

SHA1 = "aes128-sha1-modp2048"  # strongSwan's spelling of a legacy appliance's suite


def document(ike_version: int, ike: list[str] | None = None, **peer: Any) -> dict[str, Any]:
    doc = minimal_document()
    doc["peers"][0].update(name="legacy", ikeVersion=ike_version, **peer)
    if ike is not None:
        doc["peers"][0]["proposals"] = {"ike": ike}
    return doc


def plan_of(doc: dict[str, Any]) -> PeerPlan:
    (plan,) = to_core(load_config_data(doc), read_file=ExampleFiles().read)
    return plan


def errors_of(doc: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_data(doc)
    return [(e.path, e.message) for e in info.value.errors]


def refusal(text: str) -> str:
    """The message the proposal parser has always given for `text`."""
    with pytest.raises(ProposalError) as info:
        parse_ike_proposal(text)
    return str(info.value)


# --- the document ----------------------------------------------------------------------


def test_an_ikev1_peer_naming_sha1_is_accepted_with_a_warning() -> None:
    plan = plan_of(document(1, [SHA1]))
    assert plan.ike is not None
    (proposal,) = plan.ike.proposals
    assert proposal.legacy_sha1
    assert proposal.prf == (PrfId.HMAC_SHA1,) and proposal.integrity == (IntegId.HMAC_SHA1_96,)
    (warning,) = plan.warnings
    assert warning == legacy_sha1_warning("legacy")
    assert "peer legacy" in warning and "RFC 9395" in warning and "SHA-1" in warning


def test_prfsha1_is_an_explicit_opt_in_too() -> None:
    plan = plan_of(document(1, ["aes256-sha256-prfsha1-modp2048"]))
    assert plan.ike is not None and plan.ike.proposals[0].prf == (PrfId.HMAC_SHA1,)
    assert len(plan.warnings) == 1


def test_sha1_is_refused_for_an_ikev2_peer_with_the_error_it_always_had() -> None:
    ((path, message),) = errors_of(document(2, [SHA1]))
    assert path == "peers[0].proposals.ike[0]"
    assert message.startswith(refusal(SHA1)) and "uses IKEv2" in message


def test_sha1_in_the_document_proposals_is_refused_where_an_ikev2_peer_uses_it() -> None:
    doc = document(2)
    doc["proposals"] = {"ike": ["aes256-sha256-modp2048", SHA1]}
    ((path, message),) = errors_of(doc)
    assert path == "proposals.ike[1]" and message.startswith(refusal(SHA1))
    # The same document serves an IKEv1 peer: there it is its opt-in.
    doc["peers"][0]["ikeVersion"] = 1
    assert plan_of(doc).warnings == (legacy_sha1_warning("legacy"),)


def test_sha1_is_refused_by_default_for_the_api_that_parses_one_string() -> None:
    with pytest.raises(ProposalError, match="sha1 is not implemented"):
        parse_ike_proposal(SHA1)
    with pytest.raises(ProposalError, match="PRF-HMAC-SHA1 is refused"):
        parse_ike_proposal("aes256-sha256-prfsha1-modp2048")


@pytest.mark.parametrize("ike", [None, ["aes256-sha256-modp2048", "aes128-sha256-ecp256"]])
def test_an_ikev1_peer_that_does_not_name_sha1_neither_offers_nor_warns(
    ike: list[str] | None,
) -> None:
    plan = plan_of(document(1, ike))
    assert plan.ike is not None and plan.warnings == ()
    assert not any(p.legacy_sha1 for p in plan.ike.proposals)
    offer = negotiation.phase1_sa_payload(plan.ike)
    hashes = {t.get(Phase1Attr.HASH).as_int for t in offer.proposals[0].transforms}  # type: ignore[union-attr]
    assert HashAlgorithm.SHA1 not in hashes


def test_only_the_proposal_that_names_sha1_is_legacy() -> None:
    plan = plan_of(document(1, ["aes256-sha256-modp2048", SHA1]))
    assert plan.ike is not None
    assert [p.legacy_sha1 for p in plan.ike.proposals] == [False, True]
    offer = negotiation.phase1_sa_payload(plan.ike)
    hashes = [t.get(Phase1Attr.HASH).as_int for t in offer.proposals[0].transforms]  # type: ignore[union-attr]
    assert hashes == [HashAlgorithm.SHA2_256, HashAlgorithm.SHA1]  # the operator's order


@pytest.mark.parametrize(("protocol", "text"), [("esp", "aes128-sha1"), ("ah", "sha1")])
def test_esp_and_ah_hmac_sha1_stay_refused_for_an_ikev1_peer(protocol: str, text: str) -> None:
    """The datapaths implement no HMAC-SHA1 (the registry's INTEGRITY has none)."""
    with pytest.raises(ProposalError) as info:
        parse_child_proposal(text, protocol)  # type: ignore[arg-type]
    doc = document(1, [SHA1], protocol=protocol)
    doc["peers"][0]["proposals"][protocol] = [text]
    ((path, message),) = errors_of(doc)
    assert path == f"peers[0].proposals.{protocol}[0]" and message == str(info.value)


def test_the_core_refuses_a_legacy_proposal_for_ikev2() -> None:
    base = plan_of(document(1, [SHA1])).ike
    assert base is not None
    with pytest.raises(LocalProtocolError, match="IKEv1 legacy peers only"):
        replace(base, version=2)
    with pytest.raises(LocalProtocolError, match=r"ike_proposal\.prf"):
        IkeProposal(
            encryption=base.proposals[0].encryption,
            integrity=(IntegId.HMAC_SHA2_256_128,),
            prf=(PrfId.HMAC_SHA1,),
            dh=base.proposals[0].dh,
        )


# --- the warning in the status (its log line: tests/e2e/test_strongswan_ikev1.py) ---


def test_the_sas_table_shows_the_warning() -> None:
    peer = {
        "name": "legacy",
        "state": "established",
        "address": "10.0.0.2",
        "keying": "ike",
        "start": "onStart",
        "children": [],
        "warnings": [legacy_sha1_warning("legacy")],
    }
    data = {
        "version": "0",
        "datapath": "userspace",
        "datapath_reason": "test",
        "started_at": 0.0,
        "ready": True,
        "peers": [peer],
    }
    assert f"  warning: {legacy_sha1_warning('legacy')}" in render_sas(data, now=1.0)


# --- the wire: an in-memory IKEv1 pair ----------------------------------------------------

V1_SHA1 = (
    replace(
        V1_IKE_PROPOSALS[0],
        integrity=(IntegId.HMAC_SHA1_96,),
        prf=(PrfId.HMAC_SHA1,),
        legacy_sha1=True,
    ),
)


def sha1_pair(i: tuple[IkeProposal, ...], r: tuple[IkeProposal, ...]) -> IkePair:
    configs: tuple[IkeConfig, IkeConfig] = pair_configs(version=1, i_proposals=i, r_proposals=r)
    return IkePair(*configs, version=1)


def test_main_mode_and_quick_mode_with_sha1_when_both_name_it() -> None:
    p = sha1_pair(V1_SHA1, V1_SHA1)
    p.run(10)
    assert isinstance(p.initiator, IsakmpSa)
    assert p.initiator.established and p.responder.established
    assert p.initiator.p1.legacy_sha1 and p.responder.p1.legacy_sha1
    (ei,) = p.i.of(IkeSaEstablished)
    assert ei.prf_id == PrfId.HMAC_SHA1
    (ci,) = p.i.of(ChildSaEstablished)
    (cr,) = p.r.of(ChildSaEstablished)
    assert ci.encr_key_out == cr.encr_key_in and ci.integ_key_out == cr.integ_key_in
    assert p.initiator.stats.internal_errors == 0 and p.responder.stats.internal_errors == 0


def test_a_responder_that_did_not_name_sha1_refuses_a_sha1_offer() -> None:
    p = sha1_pair(V1_SHA1, V1_IKE_PROPOSALS)
    p.run(30)
    assert not p.initiator.established and p.initiator.closed
    (failed,) = p.i.of(NegotiationFailed)
    assert failed.by_peer and failed.notify == 14  # NO-PROPOSAL-CHOSEN


def test_a_responder_naming_sha256_and_sha1_picks_the_initiators_sha256() -> None:
    p = sha1_pair(V1_IKE_PROPOSALS, (*V1_SHA1, *V1_IKE_PROPOSALS))
    p.run(10)
    assert isinstance(p.responder, IsakmpSa) and p.responder.established
    assert not p.responder.p1.legacy_sha1
    assert p.r.of(IkeSaEstablished)[0].prf_id == PrfId.HMAC_SHA2_256
