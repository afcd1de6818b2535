"""The sidecar's HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz`` and ``/status``.

A deliberately tiny HTTP/1.1 server on asyncio streams, so it lives in the daemon's event
loop with no thread and no framework. It answers one GET per connection and closes
(``Connection: close``); anything else is refused early and cheaply:

- a request head larger than :data:`MAX_REQUEST_HEAD` bytes: 431;
- a head not complete within ``read_timeout`` seconds (a slow or idle client): 408;
- a method other than GET: 405 with ``Allow: GET``; an unknown path: 404; garbage: 400;
- more than ``max_connections`` open connections: the newest is closed at once.

``/healthz`` answers 200 whenever the event loop runs (a liveness probe: a wedged loop
does not answer at all). ``/readyz`` answers 200 when ``snapshot().ready`` and 503 with
the peers lacking an installed child SA otherwise. ``/metrics`` is the Prometheus text
exposition of the registry built by :mod:`kipsec_sidecar.metrics`, served as text format
0.0.4 (what every Prometheus version and most scrapers read). ``/status`` is the JSON of
the same snapshot ``kipsec-sidecar sas --json`` prints (``SidecarSnapshot.to_json``:
peers, their IKE and child SAs with algorithms, mode and protocol, ``last_error`` and
``last_failure``, the datapath and the applied configuration's generation and digest; no
key material) with ``"phase": "running"``; the operator reads it for the Tunnel's status
and its failure Events.

Before the daemon has a configuration (``controller`` None, :attr:`HealthServer.waiting`
says why) every endpoint but ``/metrics`` answers 503 with that reason, ``/status`` as
``{"phase": "waiting", "reason": ...}``: the native sidecar's startupProbe on
``/healthz`` then holds the application back until the tunnel is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from http import HTTPStatus

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest

from .state import Controller, SidecarSnapshot

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9585"
MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
MAX_NAMES_IN_REASON = 10

_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``"127.0.0.1:9585"`` or ``"[::]:9585"`` into host and port.

    Raises ValueError naming the value when it is not ``address:port``.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"metrics listen address is not address:port: {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def not_ready_reason(snapshot: SidecarSnapshot) -> str:
    """The /readyz 503 body: which peers have no installed child SA (at most ten named)."""
    waiting = [
        f"{peer.name} ({peer.state})"
        for peer in snapshot.peers
        if not any(child.state == "installed" for child in peer.children)
    ]
    shown = ", ".join(waiting[:MAX_NAMES_IN_REASON])
    more = len(waiting) - MAX_NAMES_IN_REASON
    if more > 0:
        shown += f" and {more} more"
    return f"not ready: no installed child SA for {len(waiting)} peer(s): {shown}"


class _Refused(Exception):
    """The request is answered with ``status`` and the connection closed."""

    def __init__(self, status: HTTPStatus, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}


class HealthServer:
    """Serves the three endpoints for one controller and registry.

    ``start()`` binds (port 0 picks a free port, see :attr:`port`); ``close()`` stops
    listening and cuts open connections. Bind errors (address in use, permission)
    propagate from ``start()`` as OSError.
    """

    def __init__(
        self,
        controller: Controller | None,
        registry: CollectorRegistry,
        listen: str = DEFAULT_LISTEN,
        *,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        waiting: str = "waiting for configuration",
    ) -> None:
        self._controller = controller
        self.waiting = waiting
        """Why there is no controller yet (the 503 body while ``controller`` is None)."""
        self._registry = registry
        self._host, self._port = parse_listen(listen)
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._routes: dict[str, Callable[[], tuple[HTTPStatus, str, bytes]]] = {
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/status": self._status,
        }

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_REQUEST_HEAD
        )
        log.info(
            "health endpoint listening",
            extra={"listen": f"{self._host}:{self.port}", "paths": sorted(self._routes)},
        )

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self._max_connections:
            log.warning(
                "health endpoint: too many connections, closing one",
                extra={"limit": self._max_connections},
            )
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._answer(reader, writer)
        except (TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # close() cancels open connections. Ending the connection's own task normally
            # keeps Python 3.11's stream callback from reporting the cancellation as an
            # "unhandled exception in client_connected_cb".
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_request = False
        try:
            head = await self._read_head(reader)
            method, path = _request_line(head)
            head_request = method == "HEAD"
            route = self._routes.get(path)
            if route is None:
                raise _Refused(HTTPStatus.NOT_FOUND, f"no such path: {path[:100]}")
            if method != "GET":
                raise _Refused(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    f"method {method[:20]} not allowed, use GET",
                    {"Allow": "GET"},
                )
            status, content_type, body = route()
            headers: dict[str, str] = {}
        except _Refused as refused:
            status, content_type = refused.status, _TEXT
            body, headers = (refused.detail + "\n").encode(), refused.headers
        await self._respond(writer, status, content_type, body, headers, head_request)

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes:
        try:
            async with asyncio.timeout(self._read_timeout):
                return await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise _Refused(
                HTTPStatus.REQUEST_TIMEOUT,
                f"request not received within {self._read_timeout:g} s",
            ) from None
        except asyncio.LimitOverrunError:
            raise _Refused(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"request head longer than {MAX_REQUEST_HEAD} bytes",
            ) from None
        except asyncio.IncompleteReadError:
            raise _Refused(HTTPStatus.BAD_REQUEST, "connection closed mid-request") from None

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        status: HTTPStatus,
        content_type: str,
        body: bytes,
        headers: dict[str, str],
        head_request: bool,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Connection: close",
            "Cache-Control: no-store",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_request:
            writer.write(body)
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()

    def _metrics(self) -> tuple[HTTPStatus, str, bytes]:
        try:
            return HTTPStatus.OK, CONTENT_TYPE_PLAIN_0_0_4, generate_latest(self._registry)
        except Exception as error:
            log.exception("metrics collection failed", extra={"error": type(error).__name__})
            return HTTPStatus.INTERNAL_SERVER_ERROR, _TEXT, b"metrics collection failed\n"

    def _healthz(self) -> tuple[HTTPStatus, str, bytes]:
        if self._controller is None:
            return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, (self.waiting + "\n").encode()
        return HTTPStatus.OK, _TEXT, b"ok\n"

    def _status(self) -> tuple[HTTPStatus, str, bytes]:
        if self._controller is None:
            body = {"phase": "waiting", "reason": self.waiting}
            return HTTPStatus.SERVICE_UNAVAILABLE, _JSON, json.dumps(body).encode()
        try:
            data = self._controller.snapshot().to_json()
        except Exception as error:
            log.exception("status snapshot failed", extra={"error": type(error).__name__})
            body = {"phase": "error", "reason": "snapshot failed"}
            return HTTPStatus.INTERNAL_SERVER_ERROR, _JSON, json.dumps(body).encode()
        return HTTPStatus.OK, _JSON, json.dumps({"phase": "running", **data}).encode()

    def _readyz(self) -> tuple[HTTPStatus, str, bytes]:
        if self._controller is None:
            return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, (self.waiting + "\n").encode()
        try:
            snapshot = self._controller.snapshot()
        except Exception as error:
            log.exception("readiness snapshot failed", extra={"error": type(error).__name__})
            return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, b"not ready: snapshot failed\n"
        if snapshot.ready:
            return HTTPStatus.OK, _TEXT, b"ready\n"
        return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, (not_ready_reason(snapshot) + "\n").encode()


def _request_line(head: bytes) -> tuple[str, str]:
    """Method and path (query string dropped) of a request head; 400 on anything odd."""
    line = head.split(b"\r\n", 1)[0]
    try:
        method, target, version = line.decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise _Refused(HTTPStatus.BAD_REQUEST, "malformed request line") from None
    if version not in ("HTTP/1.0", "HTTP/1.1") or not method.isalpha():
        raise _Refused(HTTPStatus.BAD_REQUEST, "malformed request line")
    if not target.startswith("/"):
        raise _Refused(HTTPStatus.BAD_REQUEST, "request target must be an absolute path")
    return method, target.split("?", 1)[0]
