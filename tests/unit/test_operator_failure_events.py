"""Which Warning Events the sidecars' failure reports call for: one per appearance of a
(tunnel, pod, peer, reason) failure, on the Tunnels that link the pair, bounded per poll,
with a message that names the pods and carries nothing the sidecar wrote."""

from __future__ import annotations

from kipsec_operator.reconcile.cluster import PodRef
from kipsec_operator.reconcile.failure_events import (
    EVENT_REASONS,
    FailureEvent,
    failure_events,
)
from kipsec_operator.reconcile.peers import Link
from kipsec_operator.reconcile.status import SidecarReport
from kipsec_sidecar.handshake_failures import REASONS

MESH = ("shop", "mesh")
OTHER = ("shop", "other")
A = PodRef("shop", "a", "uid-a", ("10.0.0.1",))
B = PodRef("shop", "b", "uid-b", ("10.0.0.2",))
C = PodRef("shop", "c", "uid-c", ("10.0.0.3",))
LINKS = {A.key: (Link(MESH, A, B, "mesh"), Link(MESH, A, C, "mesh"))}


def failing(*failures: tuple[str, str]) -> SidecarReport:
    return SidecarReport(last_error="AUTHENTICATION_FAILED (psk)", failures=frozenset(failures))


def test_a_failure_that_appears_is_one_event_on_the_tunnel_naming_both_pods() -> None:
    due = failure_events({}, {A.key: failing(("shop/b", "authentication_failed"))}, LINKS)

    assert due.events == (FailureEvent(MESH, A.key, "shop/b", "AuthenticationFailed"),)
    assert "shop/a" in due.events[0].message and "shop/b" in due.events[0].message


def test_a_failure_still_reported_on_the_next_poll_posts_nothing() -> None:
    report = failing(("shop/b", "authentication_failed"))

    assert failure_events({A.key: report}, {A.key: report}, LINKS).events == ()


def test_a_failure_that_cleared_and_came_back_posts_again() -> None:
    report = failing(("shop/b", "peer_dead"))
    cleared = failure_events({A.key: report}, {A.key: SidecarReport()}, LINKS)
    again = failure_events({A.key: SidecarReport()}, {A.key: report}, LINKS)

    assert cleared.events == ()
    assert [e.reason for e in again.events] == ["PeerUnreachable"]


def test_another_reason_for_the_same_peer_is_a_new_event() -> None:
    before = {A.key: failing(("shop/b", "peer_dead"))}
    after = {A.key: failing(("shop/b", "no_proposal_chosen"))}

    assert [e.reason for e in failure_events(before, after, LINKS).events] == ["NoProposalChosen"]


def test_every_sidecar_reason_has_an_event_reason_and_an_explanation() -> None:
    for reason in REASONS:
        event = FailureEvent(MESH, A.key, "shop/b", EVENT_REASONS[reason])
        assert event.message.startswith("pod shop/a has no SA with peer pod shop/b: ")


def test_the_message_carries_nothing_the_sidecar_wrote() -> None:
    report = SidecarReport(
        last_error="AUTHENTICATION_FAILED secret-psk-value",
        failures=frozenset({("shop/b", "authentication_failed")}),
    )

    (event,) = failure_events({}, {A.key: report}, LINKS).events

    assert "secret-psk-value" not in event.message


def test_a_failure_for_a_peer_no_tunnel_links_posts_nothing() -> None:
    report = failing(("shop/stale", "peer_dead"))

    assert failure_events({}, {A.key: report}, LINKS).events == ()


def test_a_pair_linked_by_two_tunnels_posts_on_each() -> None:
    links = {A.key: (Link(MESH, A, B, "mesh"), Link(OTHER, A, B, "from"))}

    due = failure_events({}, {A.key: failing(("shop/b", "ts_unacceptable"))}, links)

    assert {e.tunnel for e in due.events} == {MESH, OTHER}


def test_a_poll_posts_at_most_the_limit_and_counts_the_rest() -> None:
    report = failing(("shop/b", "peer_dead"), ("shop/c", "peer_dead"))

    due = failure_events({}, {A.key: report}, LINKS, limit=1)

    assert len(due.events) == 1 and due.dropped == 1
