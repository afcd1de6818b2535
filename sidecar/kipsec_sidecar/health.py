"""The sidecar's HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz`` and ``/status``.

A deliberately tiny HTTP/1.1 server on asyncio streams, so it lives in the daemon's event
loop with no thread and no framework. It answers one GET per connection and closes
(``Connection: close``); anything else is refused early and cheaply:

- a request head larger than :data:`MAX_REQUEST_HEAD` bytes: 431;
- a head not complete within ``read_timeout`` seconds (a slow or idle client): 408;
- a method other than GET: 405 with ``Allow: GET``; an unknown path: 404; garbage: 400;
- more than ``max_connections`` open connections on one listener: room is made by
  closing the oldest connection of the source address that holds the most, unless the
  newcomer's own source holds as many (then the newcomer is closed at once). One client,
  however many connections it opens and reopens, cannot keep another out: a slowloris from
  another pod does not starve the kubelet's probes or Prometheus.

Every refused or cut connection is logged through :data:`~kipsec_sidecar.logs.LIMITER`,
so a connection flood writes a bounded number of lines.

With ``probe_listen`` a second listener serves only ``/healthz`` and ``/readyz``, with its
own connection table: the injected probes point there (port 9586), and a NetworkPolicy
can close that port to every other client (the kubelet's probes from the pod's own node
are always allowed), so nothing that reaches ``/metrics`` and ``/status`` can touch it.

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
import functools
import json
import logging
from collections.abc import Callable
from http import HTTPStatus

from .exposition import CONTENT_TYPE, Registry, render
from .logs import LIMITER
from .state import Controller, SidecarSnapshot

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9585"
MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 3.0
WRITE_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
PROBE_PATHS = ("/healthz", "/readyz")
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
    """The /readyz 503 body: a failed datapath, or which peers have no installed child SA
    (at most ten named)."""
    if snapshot.datapath_failed:
        return "not ready: the datapath's outbound worker keeps dying (traffic is blocked)"
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


Route = Callable[[], tuple[HTTPStatus, str, bytes]]


class _Slots:
    """The open connections of one listener, by source address (see the module's rule)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._by_source: dict[str, list[asyncio.Task[None]]] = {}
        self._count = 0

    def admit(self, source: str, task: asyncio.Task[None]) -> bool:
        """Take ``task`` from ``source`` in, cancelling another connection if the table is
        full; False when the newcomer is the one to close."""
        if self._count >= self.limit:
            if not self._by_source:
                return False  # a limit of 0
            busiest = max(self._by_source, key=lambda s: len(self._by_source[s]))
            if len(self._by_source[busiest]) <= len(self._by_source.get(source, ())):
                return False
            victim = self._by_source[busiest][0]
            self.discard(busiest, victim)
            victim.cancel()
            LIMITER.log(
                log,
                logging.WARNING,
                "health endpoint: too many connections, closed the oldest of the busiest source",
                {"limit": self.limit, "source": busiest},
            )
        self._by_source.setdefault(source, []).append(task)
        self._count += 1
        return True

    def discard(self, source: str, task: asyncio.Task[None]) -> None:
        tasks = self._by_source.get(source)
        if tasks is None or task not in tasks:
            return
        tasks.remove(task)
        self._count -= 1
        if not tasks:
            del self._by_source[source]

    def tasks(self) -> list[asyncio.Task[None]]:
        return [task for tasks in self._by_source.values() for task in tasks]


class HealthServer:
    """Serves the endpoints for one controller and registry.

    ``start()`` binds ``listen`` and, if given, ``probe_listen`` (port 0 picks a free
    port, see :attr:`port` and :attr:`probe_port`); ``close()`` stops listening and cuts
    open connections. Bind errors (address in use, permission) propagate from
    ``start()`` as OSError.
    """

    def __init__(
        self,
        controller: Controller | None,
        registry: Registry,
        listen: str = DEFAULT_LISTEN,
        *,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        waiting: str = "waiting for configuration",
        probe_listen: str | None = None,
    ) -> None:
        self._controller = controller
        self.waiting = waiting
        """Why there is no controller yet (the 503 body while ``controller`` is None)."""
        self._registry = registry
        self._host, self._port = parse_listen(listen)
        self._probe = parse_listen(probe_listen) if probe_listen is not None else None
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._servers: list[asyncio.Server] = []
        self._slots: list[_Slots] = []
        self._routes: dict[str, Route] = {
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/status": self._status,
        }

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        return self._bound(0, self._port)

    @property
    def probe_port(self) -> int | None:
        """The probe listener's bound port; None without ``probe_listen``."""
        return None if self._probe is None else self._bound(1, self._probe[1])

    def _bound(self, index: int, configured: int) -> int:
        if len(self._servers) <= index or not self._servers[index].sockets:
            return configured
        return int(self._servers[index].sockets[0].getsockname()[1])

    async def start(self) -> None:
        listeners = [(self._host, self._port, self._routes)]
        if self._probe is not None:
            probes = {path: self._routes[path] for path in PROBE_PATHS}
            listeners.append((*self._probe, probes))
        try:
            for host, port, routes in listeners:
                slots = _Slots(self._max_connections)
                server = await asyncio.start_server(
                    functools.partial(self._serve, routes=routes, slots=slots),
                    host,
                    port,
                    limit=MAX_REQUEST_HEAD,
                )
                self._servers.append(server)
                self._slots.append(slots)
                bound = server.sockets[0].getsockname()[1] if server.sockets else port
                log.info(
                    "health endpoint listening",
                    extra={"listen": f"{host}:{bound}", "paths": sorted(routes)},
                )
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        servers, self._servers = self._servers, []
        tasks = [task for slots in self._slots for task in slots.tasks()]
        self._slots = []
        for server in servers:
            server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in servers:
            await server.wait_closed()

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        routes: dict[str, Route],
        slots: _Slots,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not slots.admit(source, task):
            LIMITER.log(
                log,
                logging.WARNING,
                "health endpoint: too many connections from one source, closed the new one",
                {"limit": slots.limit, "source": source},
            )
            writer.close()
            return
        try:
            await self._answer(reader, writer, routes)
        except (TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # close() cancels open connections. Ending the connection's own task normally
            # keeps Python 3.11's stream callback from reporting the cancellation as an
            # "unhandled exception in client_connected_cb".
            pass
        finally:
            slots.discard(source, task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, routes: dict[str, Route]
    ) -> None:
        head_request = False
        try:
            head = await self._read_head(reader)
            method, path = _request_line(head)
            head_request = method == "HEAD"
            route = routes.get(path)
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
            return HTTPStatus.OK, CONTENT_TYPE, render(self._registry)
        except Exception as error:
            _failed("metrics collection failed", error)
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
            _failed("status snapshot failed", error)
            body = {"phase": "error", "reason": "snapshot failed"}
            return HTTPStatus.INTERNAL_SERVER_ERROR, _JSON, json.dumps(body).encode()
        return HTTPStatus.OK, _JSON, json.dumps({"phase": "running", **data}).encode()

    def _readyz(self) -> tuple[HTTPStatus, str, bytes]:
        if self._controller is None:
            return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, (self.waiting + "\n").encode()
        try:
            snapshot = self._controller.snapshot()
        except Exception as error:
            _failed("readiness snapshot failed", error)
            return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, b"not ready: snapshot failed\n"
        if snapshot.ready:
            return HTTPStatus.OK, _TEXT, b"ready\n"
        return HTTPStatus.SERVICE_UNAVAILABLE, _TEXT, (not_ready_reason(snapshot) + "\n").encode()


def _failed(event: str, error: Exception) -> None:
    """Log a failure while answering, with its traceback, through the limiter (a client
    that asks again and again must not multiply the tracebacks)."""
    LIMITER.log(log, logging.ERROR, event, {"error": type(error).__name__}, exc_info=True)


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
