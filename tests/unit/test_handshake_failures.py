"""The reason label of kipsec_handshake_failures_total, from the engine's real events."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from kipsec_sidecar.core.ike.config import Encryption, Identity, IkeProposal
from kipsec_sidecar.core.ike.constants import EncrId, ExchangeType, IntegId, NotifyType
from kipsec_sidecar.core.ike.events import IkeSaDeleted, NegotiationFailed, PeerDead
from kipsec_sidecar.handshake_failures import REASONS, failure_reason
from support.ike_pair import (
    RESPONDER_ADDR,
    IkePair,
    child_config,
    mirrored,
    pair_configs,
    psk_config,
)


def counted_reason(events: Iterable[object]) -> str:
    """What the daemon counts for a failed IKE SA: the latest cause its events gave,
    each read knowing the one before."""
    cause: str | None = None
    for e in events:
        cause = failure_reason(e, cause) or cause
    return cause or "other"


def pair(**initiator: object) -> IkePair:
    i = psk_config("a.example", "b.example", **initiator)  # type: ignore[arg-type]
    r = psk_config(
        "b.example", "a.example", children=(mirrored(child_config()),), local_addr=RESPONDER_ADDR
    )
    return IkePair(i, r)


def test_proposals_without_overlap_count_as_no_proposal_chosen() -> None:
    cbc = IkeProposal(
        encryption=(Encryption(EncrId.AES_CBC, 128),), integrity=(IntegId.HMAC_SHA2_256_128,)
    )
    refused = pair(proposals=(cbc,))
    refused.run(5)
    assert refused.initiator.closed
    assert counted_reason(refused.i.events) == "no_proposal_chosen"
    assert counted_reason(refused.r.events) == "no_proposal_chosen"


def test_a_wrong_psk_counts_as_authentication_failed_on_both_sides() -> None:
    refused = pair(psk=b"the wrong secret!")
    refused.run(5)
    assert refused.initiator.closed
    assert counted_reason(refused.i.events) == "authentication_failed"
    assert counted_reason(refused.r.events) == "authentication_failed"


def test_an_ikev1_identity_refused_in_message_6_counts_as_authentication_failed() -> None:
    """IKEv1 tells the peer INVALID-ID-INFORMATION and ends main mode with a
    NegotiationFailed naming it, after the AuthenticationFailedEvent that says what
    failed: counted (and shown in ``last_error``) as the authentication failure it is."""
    i, r = pair_configs(version=1)
    i = replace(i, auth=replace(i.auth, remote_id=Identity.fqdn("c.example")))
    refused = IkePair(i, r, version=1)
    refused.run(30)
    assert [type(e).__name__ for e in refused.i.events if failure_reason(e)] == [
        "AuthenticationFailedEvent",
        "NegotiationFailed",
    ]
    assert counted_reason(refused.i.events) == "authentication_failed"


def test_a_silent_peer_counts_as_peer_dead() -> None:
    events = [PeerDead(("192.0.2.2", 500), ExchangeType.IKE_SA_INIT, 5)]
    assert counted_reason(events) == "peer_dead"
    assert failure_reason(IkeSaDeleted(b"\x01" * 8, b"\x00" * 8, "peer-dead")) == "peer_dead"


def test_each_error_notify_has_its_reason_and_the_rest_are_other() -> None:
    def reason(notify: int | None) -> str | None:
        return failure_reason(NegotiationFailed(ExchangeType.IKE_SA_INIT, "x", notify))

    assert reason(NotifyType.TS_UNACCEPTABLE) == "ts_unacceptable"
    assert reason(NotifyType.INVALID_KE_PAYLOAD) == "invalid_ke"
    assert reason(NotifyType.INVALID_SYNTAX) == "other"
    assert reason(None) == "other"


def test_a_deletion_without_a_cause_gives_no_reason_of_its_own() -> None:
    assert failure_reason(IkeSaDeleted(b"\x01" * 8, b"\x00" * 8, "negotiation-failed")) is None
    assert failure_reason(IkeSaDeleted(b"\x01" * 8, b"\x00" * 8, "deleted")) is None


def test_the_reasons_are_a_closed_set_ending_in_other() -> None:
    assert REASONS[-1] == "other"
    assert len(set(REASONS)) == len(REASONS) == 6
