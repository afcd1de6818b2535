"""`Kube.watch` against a real HTTP server: events one per line, ERROR events raised as
ApiError, and a stream that goes silent ends instead of hanging the mirror."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from kipsec_operator.kube import ApiError, Connection, Kube

ADDED = {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "7"}}}
GONE = {"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}}


@asynccontextmanager
async def server(
    stream: Callable[[web.StreamResponse], Awaitable[None]],
) -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    queries: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        queries.append(dict(request.query))
        response = web.StreamResponse()
        await response.prepare(request)
        await stream(response)
        return response

    app = web.Application()
    app.router.add_get("/api/v1/secrets", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", queries
    finally:
        await runner.cleanup()


async def collect(url: str, idle: float) -> list[dict[str, object]]:
    async with Kube(Connection(url)) as kube:
        return [e async for e in kube.watch("/api/v1/secrets", {"labelSelector": "x=y"}, idle=idle)]


def test_a_silent_stream_ends_after_idle_seconds_with_the_events_it_had() -> None:
    async def silent(response: web.StreamResponse) -> None:
        await response.write(json.dumps(ADDED).encode() + b"\n\n")
        await asyncio.sleep(5)

    async def main() -> tuple[list[dict[str, object]], float, list[dict[str, str]]]:
        async with server(silent) as (url, queries):
            began = time.monotonic()
            events = await collect(url, idle=0.5)
            return events, time.monotonic() - began, queries

    events, took, queries = asyncio.run(main())
    assert events == [ADDED]
    assert took < 3.0
    assert queries == [{"labelSelector": "x=y", "watch": "true"}]


def test_an_error_event_is_raised_with_its_status() -> None:
    async def expired(response: web.StreamResponse) -> None:
        await response.write(json.dumps(ADDED).encode() + b"\n" + json.dumps(GONE).encode() + b"\n")

    async def main() -> None:
        async with server(expired) as (url, _):
            await collect(url, idle=5.0)

    with pytest.raises(ApiError) as raised:
        asyncio.run(main())
    assert (raised.value.status, raised.value.reason) == (410, "Expired")
