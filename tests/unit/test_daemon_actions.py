"""The rules of :mod:`kipsec_sidecar.daemon.actions`: what a peer does after losing its SAs,
and which engine events end a control command's ``--wait``."""

from __future__ import annotations

import itertools

import pytest

from kipsec_sidecar.config.model import Action
from kipsec_sidecar.core.ike.constants import ExchangeType, NotifyType
from kipsec_sidecar.core.ike.events import (
    AuthenticationFailedEvent,
    ChildSaDeleted,
    ChildSaRekeyed,
    Event,
    IkeSaDeleted,
    IkeSaRekeyed,
    NegotiationFailed,
    PeerDead,
)
from kipsec_sidecar.daemon.actions import (
    DONE,
    PEER_DEAD,
    PEER_DELETED,
    WaitCommand,
    initiates_on_traffic,
    reconnect_after_loss,
    retries,
    wait_outcome,
)

ACTIONS: tuple[Action, ...] = ("none", "onDemand", "restart")
ADDR = ("192.0.2.2", 500)


@pytest.mark.parametrize(("current", "close", "dpd"), list(itertools.product(ACTIONS, repeat=3)))
def test_the_peer_deleting_applies_close_and_death_applies_dpd(
    current: Action, close: Action, dpd: Action
) -> None:
    assert reconnect_after_loss(PEER_DELETED, current, close, dpd) == close
    assert reconnect_after_loss(PEER_DEAD, current, close, dpd) == dpd


@pytest.mark.parametrize("reason", [PEER_DELETED, PEER_DEAD])
def test_an_initiation_that_never_got_established_keeps_the_mode(reason: str) -> None:
    """An unreachable peer at start-up is not a dead peer: onStart keeps retrying."""
    for current in ACTIONS:
        assert reconnect_after_loss(reason, current, "none", "none", established=False) == current


@pytest.mark.parametrize(
    "reason", ["expired", "authentication-failed", "negotiation-failed", "deleted", "rekeyed"]
)
def test_other_losses_keep_the_current_mode(reason: str) -> None:
    for current in ACTIONS:
        assert reconnect_after_loss(reason, current, "none", "none") == current


def test_only_restart_retries_and_only_none_ignores_traffic() -> None:
    assert [retries(a, held=False) for a in ACTIONS] == [False, False, True]
    assert [initiates_on_traffic(a, held=False) for a in ACTIONS] == [False, True, True]


@pytest.mark.parametrize("action", ACTIONS)
def test_a_terminated_peer_neither_retries_nor_initiates_on_traffic(action: Action) -> None:
    assert not retries(action, held=True)
    assert not initiates_on_traffic(action, held=True)


# --- --wait ---------------------------------------------------------------------------------

NO_PROPOSAL = NegotiationFailed(
    ExchangeType.IKE_SA_INIT, "no IKE proposal acceptable", NotifyType.NO_PROPOSAL_CHOSEN
)


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (NO_PROPOSAL, "NO_PROPOSAL_CHOSEN (no IKE proposal acceptable)"),
        (NegotiationFailed(ExchangeType.CREATE_CHILD_SA, "odd"), "NEGOTIATION_FAILED (odd)"),
        (AuthenticationFailedEvent(ADDR, "psk", by_peer=True), "AUTHENTICATION_FAILED"),
        (PeerDead(ADDR, ExchangeType.INFORMATIONAL, 5), "PEER_DEAD"),
    ],
)
@pytest.mark.parametrize("command", ["initiate", "rekey-child", "rekey-ike"])
def test_failures_end_a_wait_with_the_reason(
    event: Event, reason: str, command: WaitCommand
) -> None:
    outcome = wait_outcome(command, event, peer_down=False)
    assert outcome is not None and not outcome.ok
    assert outcome.reason.startswith(reason), outcome


def test_each_command_completes_on_its_own_event() -> None:
    rekeyed_child = ChildSaRekeyed("b", b"\x00\x00\x10\x00", b"\x00\x00\x10\x01")
    rekeyed_ike = IkeSaRekeyed(b"1" * 8, b"2" * 8, b"3" * 8, b"4" * 8)
    assert wait_outcome("rekey-child", rekeyed_child, peer_down=False) == DONE
    assert wait_outcome("rekey-ike", rekeyed_child, peer_down=False) is None
    assert wait_outcome("rekey-ike", rekeyed_ike, peer_down=False) == DONE
    assert wait_outcome("initiate", rekeyed_ike, peer_down=False) is None


def test_terminate_is_done_when_the_last_ike_sa_is_gone_and_ignores_failures() -> None:
    deleted = IkeSaDeleted(b"1" * 8, b"2" * 8, "deleted")
    assert wait_outcome("terminate", deleted, peer_down=False) is None  # another SA is left
    assert wait_outcome("terminate", deleted, peer_down=True) == DONE
    dead = PeerDead(ADDR, ExchangeType.INFORMATIONAL, 5)
    assert wait_outcome("terminate", dead, peer_down=False) is None


def test_the_sas_going_away_fail_a_pending_initiate_or_rekey() -> None:
    gone = IkeSaDeleted(b"1" * 8, b"2" * 8, "deleted-by-peer")
    outcome = wait_outcome("initiate", gone, peer_down=True)
    assert outcome is not None and outcome.reason == "IKE SA deleted (deleted-by-peer)"
    assert wait_outcome("initiate", gone, peer_down=False) is None
    child_gone = ChildSaDeleted("b", 50, b"1" * 4, b"2" * 4, PEER_DELETED)
    child = wait_outcome("rekey-child", child_gone, peer_down=False)
    assert child is not None and not child.ok
    assert wait_outcome("rekey-ike", child_gone, peer_down=False) is None
