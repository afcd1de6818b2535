"""The local control interface: JSON lines over a Unix socket, in the spirit of vici.

A client writes one JSON object per line and reads one JSON object per line back::

    {"command": "sas"}                                  -> {"ok": true, "result": {snapshot}}
    {"command": "sas", "peer": "b"}                     -> the snapshot with peer b only
    {"command": "initiate", "peer": "b"}                -> {"ok": true, "result": null}
    {"command": "rekey", "peer": "b", "kind": "child"}  -> kind is "child" or "ike"
    {"command": "terminate", "peer": "b"}
    {"command": "initiate", "peer": "b", "wait": 30}    -> answered when the exchange ended
    {"command": "reload"}                               -> {"ok": true, "result": ["+ c", ...]}

Without ``wait`` the peer commands answer once the request is sent (nothing is known
about its outcome yet). With ``wait`` (seconds, at most :data:`MAX_WAIT`) they answer
when the exchange completed (``ok: true``), failed (``ok: false`` with the reason, e.g.
``NO_PROPOSAL_CHOSEN``) or had no outcome in time (``ok: false, "timeout": true``).

Failures answer ``{"ok": false, "error": "..."}`` and keep the connection open, except
for a line longer than :data:`MAX_REQUEST` bytes, which is answered and then closed. The
snapshot result is exactly ``SidecarSnapshot.to_json()`` (the stable ``--json``).

The socket is created with mode 0600 (bound in a private directory, then renamed into
place, so it is never reachable with looser permissions); access control is the file
mode, so only the sidecar's user can act on SAs. Several clients may be connected at once;
each connection's requests run one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from .logs import LIMITER
from .state import ControlError, Controller, ControlTimeout, RekeyKind

log = logging.getLogger(__name__)

#: Same default as ``config.model.DEFAULT_CONTROL_SOCKET`` (a unit test keeps them equal;
#: the CLI does not import the configuration model, to start fast).
DEFAULT_SOCKET = "/run/kipsec/control.sock"
SOCKET_ENV = "KIPSEC_CONTROL_SOCKET"
MAX_REQUEST = 64 * 1024
MAX_RESPONSE = 64 * 1024 * 1024
ACTION_TIMEOUT = 30.0
IDLE_TIMEOUT = 300.0
#: Longest ``wait`` a request may ask for, in seconds.
MAX_WAIT = 3600.0
MAX_CLIENTS = 32

PEER_COMMANDS = ("initiate", "rekey", "terminate")
COMMANDS = ("sas", *PEER_COMMANDS, "reload")
_FIELDS: dict[str, frozenset[str]] = {
    "sas": frozenset({"command", "peer"}),
    "initiate": frozenset({"command", "peer", "wait"}),
    "rekey": frozenset({"command", "peer", "kind", "wait"}),
    "terminate": frozenset({"command", "peer", "wait"}),
    "reload": frozenset({"command"}),
}


class ControlConnectionError(ControlError):
    """The control socket could not be reached; the message says why and which path."""


def _request_error(text: str, *, timeout: bool = False) -> dict[str, Any]:
    return {"ok": False, "error": text, **({"timeout": True} if timeout else {})}


def _wait_field(command: str, value: object) -> float | None:
    """The request's ``wait`` in seconds (None: answer once sent); ControlError if bad."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_WAIT:
        raise ControlError(
            f"{command}: field 'wait' must be seconds, above 0 and at most {MAX_WAIT:g}"
        )
    return float(value)


class ControlServer:
    """Serves the control protocol on ``path`` for one :class:`Controller`.

    ``start()`` refuses (ControlError) when another process already answers on ``path``,
    replaces a stale socket file otherwise, and creates the parent directory (mode 0700)
    when missing. ``close()`` stops serving and removes the socket file.
    ``action_timeout`` bounds each controller call, so a stuck action answers an error
    instead of holding the client forever.
    """

    def __init__(
        self,
        controller: Controller,
        path: str = DEFAULT_SOCKET,
        *,
        action_timeout: float = ACTION_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._controller = controller
        self.path = path
        self._action_timeout = action_timeout
        self._idle_timeout = idle_timeout
        self._max_clients = max_clients
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = _bind_private(self.path)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, sock=sock, limit=MAX_REQUEST
            )
        except BaseException:
            sock.close()
            raise
        log.info("control socket listening", extra={"path": self.path})

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if len(self._clients) >= self._max_clients:
                await _send(
                    writer, _request_error(f"too many clients (at most {self._max_clients})")
                )
                return
            self._clients.add(task)
            while True:
                try:
                    async with asyncio.timeout(self._idle_timeout):
                        line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _send(writer, _request_error(f"request longer than {MAX_REQUEST} bytes"))
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                await _send(writer, await self.handle_line(line))
        except (ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            # close() cancels open connections. Ending the connection's own task normally
            # keeps Python 3.11's stream callback from reporting the cancellation as an
            # "unhandled exception in client_connected_cb".
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def handle_line(self, line: bytes) -> dict[str, Any]:
        """Answer one request line; never raises (errors become ``ok: false``)."""
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return _request_error(f"request is not valid JSON: {error}")
        if not isinstance(request, dict):
            return _request_error("request must be a JSON object with a 'command' field")
        command = request.get("command")
        if command not in _FIELDS:
            return _request_error(
                f"unknown command {str(command)[:40]!r}: use one of {', '.join(COMMANDS)}"
            )
        if unknown := sorted(set(request) - _FIELDS[command]):
            return _request_error(f"{command}: unknown field(s) {', '.join(unknown)}")
        peer = request.get("peer")
        if (peer is not None or command in PEER_COMMANDS) and not (isinstance(peer, str) and peer):
            return _request_error(f"{command}: field 'peer' must be a peer name")
        # A `sas` query changes nothing and monitoring asks it every few seconds: at INFO
        # it would bury the lines that matter.
        level = logging.DEBUG if command == "sas" else logging.INFO
        LIMITER.log(log, level, "control request", {"command": command, "peer": peer}, key=command)
        try:
            wait = _wait_field(command, request.get("wait"))
        except ControlError as error:
            return _request_error(str(error))
        try:
            # A waiting request is bounded by its own wait (the daemon answers timeout
            # then); the action timeout still bounds the part before the wait.
            async with asyncio.timeout(self._action_timeout + (wait or 0.0)):
                result = await self._dispatch(command, request, wait)
        except ControlTimeout as error:
            return _request_error(str(error), timeout=True)
        except ControlError as error:
            return _request_error(str(error))
        except TimeoutError:
            return _request_error(f"{command}: no answer within {self._action_timeout:g} s")
        except Exception as error:
            LIMITER.log(
                log, logging.ERROR, "control request failed", {"command": command}, exc_info=True
            )
            return _request_error(f"{command}: internal error ({type(error).__name__})")
        return {"ok": True, "result": result}

    async def _dispatch(self, command: str, request: dict[str, Any], wait: float | None) -> Any:
        peer: str = request.get("peer") or ""
        if command == "sas":
            return self._sas(peer or None)
        if command == "reload":
            return list(await self._controller.reload())
        kind: RekeyKind = "ike" if request.get("kind") == "ike" else "child"
        if command == "rekey" and request.get("kind") not in ("child", "ike"):
            raise ControlError("rekey: field 'kind' must be 'child' or 'ike'")
        actions: dict[str, Callable[[], Awaitable[None]]] = {
            "initiate": lambda: self._controller.initiate(peer, wait),
            "rekey": lambda: self._controller.rekey(peer, kind, wait),
            "terminate": lambda: self._controller.terminate(peer, wait),
        }
        await actions[command]()
        return None

    def _sas(self, peer: str | None) -> dict[str, Any]:
        data = self._controller.snapshot().to_json()
        if peer is not None:
            data["peers"] = [view for view in data["peers"] if view["name"] == peer]
            if not data["peers"]:
                raise ControlError(f"unknown peer {peer!r}")
        return data


async def _send(writer: asyncio.StreamWriter, response: dict[str, Any]) -> None:
    writer.write(json.dumps(response, separators=(",", ":")).encode() + b"\n")
    await writer.drain()


def _bind_private(path: str) -> socket.socket:
    """A listening Unix socket at ``path`` with mode 0600 from the moment it is reachable."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise ControlError(
                f"control socket {path} exists and is not a socket; not replacing it"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            pass  # stale: nobody listens; the rename below replaces it
        except OSError as error:
            raise ControlError(f"control socket {path}: {error.strerror}") from None
        else:
            raise ControlError(f"control socket {path} is in use: is another sidecar running?")
        finally:
            probe.close()
    private = tempfile.mkdtemp(prefix=".kipsec-control-", dir=directory)
    staged = os.path.join(private, "s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(staged)
        os.chmod(staged, 0o600)
        sock.listen(MAX_CLIENTS)
        os.rename(staged, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        raise
    finally:
        os.rmdir(private)
    return sock


class ControlClient:
    """A small synchronous client for the CLI and tests: one connection per request.

    ``request("rekey", peer="b", kind="child")`` returns the result or raises
    :class:`ControlError` with the server's message (:class:`ControlTimeout` when a
    ``wait`` ran out); :class:`ControlConnectionError` when the socket cannot be reached
    (the message says whether the sidecar seems to be running and names the path);
    TimeoutError when no answer comes within ``timeout`` seconds (plus the request's
    ``wait``).
    """

    def __init__(self, path: str = DEFAULT_SOCKET, *, timeout: float = ACTION_TIMEOUT + 10) -> None:
        self.path = path
        self.timeout = timeout

    def request(self, command: str, **fields: Any) -> Any:
        payload = json.dumps({"command": command, **fields}).encode() + b"\n"
        wait = fields.get("wait")
        with self._connect(self.timeout + (wait if isinstance(wait, int | float) else 0)) as sock:
            sock.sendall(payload)
            response = _read_line(sock)
        if not response:
            raise ControlError(f"the sidecar at {self.path} closed the connection without answer")
        try:
            answer = json.loads(response)
        except json.JSONDecodeError as error:
            raise ControlError(
                f"the sidecar at {self.path} answered invalid JSON: {error}"
            ) from None
        if not isinstance(answer, dict) or "ok" not in answer:
            raise ControlError(f"the sidecar at {self.path} answered without an 'ok' field")
        if not answer["ok"]:
            failure = ControlTimeout if answer.get("timeout") is True else ControlError
            raise failure(str(answer.get("error", "unknown error")))
        return answer.get("result")

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(self.path)
        except OSError as error:
            sock.close()
            raise ControlConnectionError(_connect_failure(self.path, error)) from None
        return sock


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        newline = chunk.find(b"\n")
        if newline >= 0:
            chunks.append(chunk[:newline])
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_RESPONSE:
            raise ControlError(f"response longer than {MAX_RESPONSE} bytes")
    return b"".join(chunks)


def _connect_failure(path: str, error: OSError) -> str:
    if isinstance(error, FileNotFoundError):
        why = "no such socket: the sidecar is not running, or it uses another control socket"
    elif isinstance(error, ConnectionRefusedError):
        why = "nothing listens there (a stale socket): the sidecar is not running"
    elif isinstance(error, PermissionError):
        why = "permission denied: the socket is mode 0600, run as the sidecar's user"
    else:
        why = error.strerror or str(error)
    return f"cannot connect to the control socket {path}: {why} (set --socket or ${SOCKET_ENV})"
