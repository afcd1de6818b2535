"""The emulated API server checking bearer tokens, as a real one does (kmock's does not).

:class:`AuthenticatingEmulator` answers 401 (a Status, as the API server does) to every
request whose ``Authorization: Bearer`` token is not in :attr:`tokens` -- which a test
changes while the operator runs, to expire a token -- and records who sent which token
(:attr:`seen`: token, User-Agent), so a test tells kopf's requests from the operator's
own client's. :func:`serve_authenticating` serves it over HTTP, or over HTTPS with a
serving certificate (what an in-cluster client needs: it only speaks https).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp.web
import kmock

from kipsec_lab.apiserver import Emulator


class AuthenticatingEmulator(Emulator):
    """The lab's emulator, accepting only the bearer tokens in :attr:`tokens`."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.tokens: set[str] = set()
        """The bearer tokens accepted now."""
        self.seen: list[tuple[str, str]] = []
        """(token, User-Agent) of every request, accepted or not, in arrival order."""
        self.rejected: list[tuple[str, str]] = []
        """The same, of the requests answered 401."""

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        headers = {key.lower(): value for key, value in request.headers.items()}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        sender = (token, headers.get("user-agent", ""))
        self.seen.append(sender)
        if scheme.lower() != "bearer" or token not in self.tokens:
            self.rejected.append(sender)
            return aiohttp.web.json_response(_UNAUTHORIZED, status=401)
        return await super()._handle(request)


_UNAUTHORIZED: dict[str, Any] = {
    "kind": "Status",
    "apiVersion": "v1",
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}


@asynccontextmanager
async def serve_authenticating(
    tls: tuple[Path, Path] | None = None,
) -> AsyncIterator[tuple[AuthenticatingEmulator, str]]:
    """The emulator on a random 127.0.0.1 port: (emulator, base URL); over HTTPS with
    `tls` (certificate, key files)."""
    context = None
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
    async with AuthenticatingEmulator() as emulator:
        # Watches never end by themselves: cancel them at exit rather than wait 60 s.
        runner = aiohttp.web.ServerRunner(aiohttp.web.Server(emulator), shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            port = runner.addresses[0][1]
            yield emulator, f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        finally:
            await runner.cleanup()
