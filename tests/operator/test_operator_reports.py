"""Reading what a sidecar reports from its health endpoint (`/readyz`)."""

from __future__ import annotations

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from kipsec_operator.reconcile.cluster import PodRef
from kipsec_operator.sidecar_reports import HttpFetcher, parse_readyz, poll
from kipsec_sidecar.health import not_ready_reason

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

    body = not_ready_reason(Snapshot())  # type: ignore[arg-type]
    assert parse_readyz(503, body, PEERS).established == {"shop/b", "shop/c"}


@given(status=st.integers(100, 599), body=st.text(max_size=300))
def test_any_answer_reports_only_peers_the_document_lists(status: int, body: str) -> None:
    assert parse_readyz(status, body, PEERS).established <= PEERS


@pytest.mark.asyncio
async def test_the_http_fetcher_asks_each_pods_health_port() -> None:
    async def readyz(_: web.Request) -> web.Response:
        return web.Response(
            status=503, text="not ready: no installed child SA for 1 peer(s): shop/b (down)\n"
        )

    app = web.Application()
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fetcher = HttpFetcher(port=port, timeout=2.0)
    pod = PodRef("shop", "a", "uid-a", ("127.0.0.1",))
    unreachable = PodRef("shop", "z", "uid-z", ("127.0.0.2",))
    try:
        reports = await poll(
            {pod.key: (pod, PEERS), unreachable.key: (unreachable, PEERS)}, fetcher
        )
    finally:
        await fetcher.close()
        await runner.cleanup()

    assert reports[pod.key].established == {"shop/a", "shop/c"}
    assert reports[unreachable.key].established == frozenset()
