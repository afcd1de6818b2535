"""Reading what a sidecar reports from its health endpoint: `/status`, else `/readyz`.

The `/status` tests parse what the real sidecar health server serves (its JSON of a
snapshot); the fetcher tests ask a real :class:`~kipsec_sidecar.health.HealthServer` on
loopback, and an old-style server without `/status` for the fallback.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from kipsec_operator.reconcile.cluster import PodRef
from kipsec_operator.sidecar_reports import (
    HttpFetcher,
    StatusError,
    parse_readyz,
    parse_status,
    poll,
)
from kipsec_sidecar.health import HealthServer, not_ready_reason
from kipsec_sidecar.metrics import build_registry
from kipsec_sidecar.state import PeerView, SidecarSnapshot
from support.controller_double import ControllerDouble, example_snapshot

pytestmark = pytest.mark.operator

PEERS = frozenset({"shop/a", "shop/b", "shop/c"})


def test_ready_means_every_listed_peer_is_established() -> None:
    assert parse_readyz(200, "ready\n", PEERS).established == PEERS


def test_the_peers_a_503_names_are_the_ones_not_established() -> None:
    body = "not ready: no installed child SA for 2 peer(s): shop/a (connecting), shop/c (down)\n"
    assert parse_readyz(503, body, PEERS).established == {"shop/b"}


def test_a_truncated_list_of_waiting_peers_counts_none_as_established() -> None:
    body = "not ready: no installed child SA for 12 peer(s): shop/a (down) and 11 more"
    assert parse_readyz(503, body, PEERS).established == frozenset()


def test_the_parser_reads_what_the_sidecar_writes() -> None:
    class Peer:
        def __init__(self, name: str) -> None:
            self.name, self.state = name, "connecting"
            self.children: list[object] = []

    class Snapshot:
        def __init__(self) -> None:
            self.peers = [Peer("shop/a")]
            self.datapath_failed = False

    body = not_ready_reason(Snapshot())  # type: ignore[arg-type]
    assert parse_readyz(503, body, PEERS).established == {"shop/b", "shop/c"}


@given(status=st.integers(100, 599), body=st.text(max_size=300))
def test_any_answer_reports_only_peers_the_document_lists(status: int, body: str) -> None:
    assert parse_readyz(status, body, PEERS).established <= PEERS


def status_body(snapshot: SidecarSnapshot) -> bytes:
    """The body the sidecar's `/status` serves for `snapshot` (its own encoding)."""
    return json.dumps({"phase": "running", **snapshot.to_json()}).encode()


def failing(
    snapshot: SidecarSnapshot, name: str, error: str, failure: str | None = None
) -> SidecarSnapshot:
    """`snapshot` plus a peer `name` that is down with `error` (and the machine-readable
    `failure`) and has no child SA."""
    down = PeerView(
        name=name,
        address="10.20.0.9",
        keying="ike",
        start="onStart",
        state="down",
        last_error=error,
        last_failure=failure,
    )
    return replace(snapshot, peers=(*snapshot.peers, down))


def test_status_counts_the_peers_with_an_installed_child_sa() -> None:
    report = parse_status(status_body(example_snapshot()), frozenset({"b", "c", "d"}))
    assert report.established == {"b", "c"}
    assert report.last_error is None


def test_status_reports_a_failing_peers_error_with_its_name() -> None:
    snapshot = failing(example_snapshot(), "d", "AUTHENTICATION_FAILED (no matching PSK)")

    report = parse_status(status_body(snapshot), frozenset({"b", "c", "d"}))

    assert report.last_error == "d: AUTHENTICATION_FAILED (no matching PSK)"


def test_status_reports_a_failing_peers_reason() -> None:
    snapshot = failing(example_snapshot(), "d", "PEER_DEAD", "peer_dead")

    report = parse_status(status_body(snapshot), frozenset({"b", "c", "d"}))

    assert report.failures == {("d", "peer_dead")}


def test_a_reason_the_operator_does_not_know_is_other() -> None:
    snapshot = failing(example_snapshot(), "d", "X", "a reason from a newer sidecar")

    assert parse_status(status_body(snapshot), frozenset({"d"})).failures == {("d", "other")}


def test_status_ignores_the_reason_of_a_peer_the_document_does_not_list() -> None:
    snapshot = failing(example_snapshot(), "stale", "PEER_DEAD", "peer_dead")

    assert parse_status(status_body(snapshot), frozenset({"b"})).failures == frozenset()


def test_status_bounds_a_peers_error() -> None:
    snapshot = failing(example_snapshot(), "d", "X" * 10_000)

    report = parse_status(status_body(snapshot), frozenset({"d"}))

    assert report.last_error is not None and len(report.last_error) < 300


def test_status_ignores_peers_the_document_does_not_list() -> None:
    snapshot = failing(example_snapshot(), "stale", "PEER_DEAD")

    report = parse_status(status_body(snapshot), frozenset({"b"}))

    assert report.established == {"b"}
    assert report.last_error is None


def test_a_sidecar_waiting_for_its_configuration_has_nothing_established() -> None:
    body = b'{"phase": "waiting", "reason": "waiting for configuration"}'
    assert parse_status(body, PEERS) == parse_status(body, frozenset())
    assert parse_status(body, PEERS).established == frozenset()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"peers": []}', "phase"),
        (b'{"phase": "running", "peers": {}}', "peers"),
        (b'{"phase": "running", "peers": [{"name": 7, "children": []}]}', "peers[0].name"),
        (
            b'{"phase": "running", "peers": [{"name": "b", "children": [{"state": null}]}]}',
            "peers[0].children[0].state",
        ),
        (
            b'{"phase": "running", "peers": [{"name": "b", "children": [], "last_error": 1}]}',
            "peers[0].last_error",
        ),
        (
            b'{"phase": "running", "peers": [{"name": "b", "children": [], "last_failure": []}]}',
            "peers[0].last_failure",
        ),
    ],
)
def test_garbage_status_is_a_typed_error_naming_the_field(body: bytes, field: str) -> None:
    with pytest.raises(StatusError, match=re.escape(field)):
        parse_status(body, PEERS)


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_the_http_fetcher_reads_the_sidecars_status() -> None:
    snapshot = failing(example_snapshot(), "d", "PEER_DEAD")
    controller = ControllerDouble(snapshot)
    server = HealthServer(controller, build_registry(controller), "127.0.0.1:0")
    pod = PodRef("shop", "a", "uid-a", ("127.0.0.1",))
    async with server:
        fetcher = HttpFetcher(port=server.port, timeout=2.0)
        try:
            report = await fetcher(pod, frozenset({"b", "c", "d"}))
        finally:
            await fetcher.close()

    assert report is not None
    assert report.established == {"b", "c"}
    assert report.last_error == "d: PEER_DEAD"


@pytest.mark.asyncio
async def test_a_status_larger_than_the_bound_counts_as_unreachable() -> None:
    async def status(_: web.Request) -> web.Response:
        return web.Response(body=b" " * (4 * 1024 * 1024 + 1))

    app = web.Application()
    app.router.add_get("/status", status)
    pod = PodRef("shop", "a", "uid-a", ("127.0.0.1",))
    async with serving(app) as port:
        fetcher = HttpFetcher(port=port, timeout=5.0)
        try:
            assert await fetcher(pod, PEERS) is None
        finally:
            await fetcher.close()


@pytest.mark.asyncio
async def test_the_http_fetcher_falls_back_to_readyz_for_a_sidecar_without_status() -> None:
    async def readyz(_: web.Request) -> web.Response:
        return web.Response(
            status=503, text="not ready: no installed child SA for 1 peer(s): shop/b (down)\n"
        )

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    pod = PodRef("shop", "a", "uid-a", ("127.0.0.1",))
    unreachable = PodRef("shop", "z", "uid-z", ("127.0.0.2",))
    async with serving(app) as port:
        fetcher = HttpFetcher(port=port, timeout=2.0)
        try:
            reports = await poll(
                {pod.key: (pod, PEERS), unreachable.key: (unreachable, PEERS)}, fetcher
            )
        finally:
            await fetcher.close()

    assert reports[pod.key].established == {"shop/a", "shop/c"}
    assert reports[unreachable.key].established == frozenset()
