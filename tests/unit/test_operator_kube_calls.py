"""`Kube`'s calls against a real HTTP server: the credentials, headers and body go out
as the library would send them, no call hands work to a thread (the library's
``trust_env`` session looked up proxies and ``~/.netrc`` in one per request), and the
environment's proxy settings still apply."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kipsec_operator.kube import USER_AGENT, Connection, Kube

SECRET_PATH = "/api/v1/namespaces/default/secrets/s"


@asynccontextmanager
async def server() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": await request.text(),
            }
        )
        return web.json_response({"kind": "Secret", "metadata": {"name": "s"}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


class NoThreads(ThreadPoolExecutor):
    """The loop's default executor in these tests: any use of it fails the call."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        raise AssertionError(f"a thread hand-off per call: {fn!r}")


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_a_call_sends_the_credentials_and_body_without_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_proxies(monkeypatch)

    async def scenario() -> list[dict[str, Any]]:
        asyncio.get_running_loop().set_default_executor(NoThreads())
        async with server() as (url, seen):
            async with Kube(Connection(url, "t0ken")) as kube:
                answer = await kube.merge_patch(SECRET_PATH, {"data": {"a": None, "b": "eA=="}})
                assert answer["kind"] == "Secret"
                await kube.list("/api/v1/secrets", {"labelSelector": "a=b"})
            return seen

    patch, listing = asyncio.run(scenario())
    assert patch["method"] == "PATCH"
    assert patch["path"] == SECRET_PATH
    assert patch["headers"]["Authorization"] == "Bearer t0ken"
    assert patch["headers"]["Content-Type"] == "application/merge-patch+json"
    assert patch["headers"]["User-Agent"] == USER_AGENT
    assert json.loads(patch["body"]) == {"data": {"a": None, "b": "eA=="}}
    assert listing["query"] == {"labelSelector": "a=b"}


def test_the_environments_proxy_applies_unless_no_proxy_names_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{unused_port()}")  # nobody listens

    async def call() -> None:
        async with server() as (url, _), Kube(Connection(url)) as kube:
            await kube.get(SECRET_PATH)

    with pytest.raises(aiohttp.ClientProxyConnectionError):
        asyncio.run(call())
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    asyncio.run(call())
