"""The configuration from the operator in seconds: ``GET /v1/config``, written to memory.

The kubelet refreshes a mounted Secret only on its periodic pod sync (about a minute),
so a new pod would wait that long for its first document and a Tunnel edit would reach
it as late. When enabled (``--operator-config-dir DIR`` or ``KIPSEC_OPERATOR_CONFIG_DIR``,
which the injecting webhook sets to a directory of the in-memory ``kipsec-run``
emptyDir) and ``KIPSEC_OPERATOR_URL`` names the operator, the daemon also asks the
operator every :data:`POLL_INTERVAL` seconds for exactly what its Secret holds, with the
pod's projected ServiceAccount token (re-read each time: the kubelet rotates it) and
``If-None-Match``, so an unchanged configuration costs a 304 and no body. With an ETag
it asks the operator to hold the request up to :data:`HOLD` seconds (``?wait=``): the
operator answers as soon as the pod's Secret changes, so a new document arrives at once
and an unchanged one costs one request per hold, not one per poll.

TLS to the operator is always verified: with ``KIPSEC_OPERATOR_CA_FILE``, else the
``operator-ca.crt`` the operator puts into every pod's Secret (the bootstrap one too),
else the system's trust store. The token is sent to the operator only, never logged.

A new answer is written as the kubelet writes a Secret volume
(:func:`~kipsec_sidecar.atomic_files.publish_files`: a fresh hidden directory, one
``..data`` symlink swap, a symlink per key), so the daemon's
:class:`~.config_watch.ConfigWatch` never reads half of it, and the daemon then follows
``DIR/config.yaml`` (the document names its files relative to itself, so the same
bytes work there). The mounted Secret stays the first source and the fallback: the
daemon starts from whichever of the two has a document first, and after
:data:`FALLBACK_AFTER` failed polls in a row it follows the mounted Secret again until
the operator answers. Errors are logged once per distinct error, not every poll.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

from ..atomic_files import publish_files
from ..identity import tls_context
from ..regular_files import read_regular_file, why_unreadable
from .enrollment import ENV_OPERATOR_CA_FILE, ENV_OPERATOR_URL, ENV_TOKEN_FILE, OPERATOR_CA_FILE

log = logging.getLogger(__name__)
T = TypeVar("T")

ENV_CONFIG_DIR = "KIPSEC_OPERATOR_CONFIG_DIR"
CONFIG_PATH = "/v1/config"
DOCUMENT = "config.yaml"
#: Seconds between two polls of the operator.
POLL_INTERVAL = 3.0
#: Failed polls in a row after which the daemon follows the mounted Secret again.
FALLBACK_AFTER = 5
#: Largest answer read (a Secret holds at most 1 MiB of data, base64 adds a third).
MAX_ANSWER_BYTES = 4 * 1024 * 1024
#: Seconds one request may take (besides the hold it asks for).
TIMEOUT = 10.0
#: Seconds the operator may hold a request whose ETag is current, answering as soon as
#: the configuration changes: a new document arrives at once, and an unchanged one costs
#: one request per this many seconds (an operator without the hold answers at once).
HOLD = 20.0


class DeliveryError(Exception):
    """A poll failed; ``code`` is short and stable (for the log), ``reason`` says why."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class DeliverySettings:
    """Where to ask, with what, and where the answer goes."""

    operator_url: str
    token_file: str
    directory: str
    """The in-memory directory the answers are published into."""
    mounted: str
    """The mounted Secret's document (the first source and the fallback)."""
    operator_ca_file: str | None = None
    interval: float = POLL_INTERVAL
    hold: float = HOLD

    @property
    def document(self) -> str:
        """The delivered document's path."""
        return os.path.join(self.directory, DOCUMENT)

    def ca_file(self) -> str | None:
        """The CA for the operator's certificate, looked up per poll (the bootstrap
        Secret brings ``operator-ca.crt``); None: the system's trust store."""
        if self.operator_ca_file:
            return self.operator_ca_file
        for directory in (os.path.dirname(self.mounted), self.directory):
            candidate = os.path.join(directory, OPERATOR_CA_FILE)
            if os.path.exists(candidate):
                return candidate
        return None

    @classmethod
    def from_environ(
        cls, mounted: str, directory: str | None, environ: Mapping[str, str] = os.environ
    ) -> DeliverySettings | None:
        """The settings when delivery is enabled (a directory, from the option or
        ``KIPSEC_OPERATOR_CONFIG_DIR``, and ``KIPSEC_OPERATOR_URL``), else None."""
        directory = directory or environ.get(ENV_CONFIG_DIR, "").strip() or None
        url = environ.get(ENV_OPERATOR_URL, "").strip()
        token = environ.get(ENV_TOKEN_FILE, "").strip()
        if directory is None or not url or not token:
            return None
        return cls(
            operator_url=url.rstrip("/"),
            token_file=token,
            directory=directory,
            mounted=os.path.abspath(mounted),
            operator_ca_file=environ.get(ENV_OPERATOR_CA_FILE, "").strip() or None,
        )


@dataclass(frozen=True)
class Answer:
    """A configuration the operator sent: its ETag and the files (name → bytes)."""

    etag: str | None
    files: dict[str, bytes]


def parse_answer(body: bytes, etag: str | None) -> Answer:
    """The files of a ``/v1/config`` body; DeliveryError for anything else, including a
    file name that could leave the directory (``/``, a leading ``.``)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise DeliveryError("bad-answer", "the body is not JSON") from None
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, dict):
        raise DeliveryError("bad-answer", 'the body is not {"files": {...}}')
    decoded: dict[str, bytes] = {}
    for name, value in files.items():
        if not name or "/" in name or name.startswith(".") or len(name) > 253:
            raise DeliveryError("bad-answer", f"file name {name[:60]!r} is not allowed")
        if not isinstance(value, str):
            raise DeliveryError("bad-answer", f"files.{name}: not a base64 string")
        try:
            decoded[name] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise DeliveryError("bad-answer", f"files.{name}: not base64") from None
    return Answer(etag, decoded)


def fetch(
    settings: DeliverySettings, token: str, etag: str | None, timeout: float = TIMEOUT
) -> Answer | None:
    """``GET /v1/config`` once; None when the answer is 304 (unchanged). Blocking: run
    it in a thread. Raises DeliveryError (with the operator's code when it sent one)."""
    # Here, not at the top: urllib.request brings http.client and email (~2 MiB) into
    # the process, and a sidecar without operator delivery never polls.
    import urllib.error
    import urllib.request

    ca_file = settings.ca_file()
    try:
        context = tls_context(ca_file)
    except (OSError, ValueError) as exc:
        raise DeliveryError("operator-ca", f"cannot use {ca_file}: {why_unreadable(exc)}") from None
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    url = settings.operator_url + CONFIG_PATH
    if etag:
        headers["If-None-Match"] = etag
        if settings.hold > 0:
            url += f"?wait={settings.hold:g}"
            timeout += settings.hold
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (from the webhook)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            body = response.read(MAX_ANSWER_BYTES + 1)
            tag = response.headers.get("ETag")
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return None
        raise _refusal(exc.code, exc.read(4096)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError("unreachable", str(reason)) from None
    if len(body) > MAX_ANSWER_BYTES:
        raise DeliveryError("bad-answer", f"larger than {MAX_ANSWER_BYTES} bytes")
    return parse_answer(body, tag)


def _refusal(status: int, body: bytes) -> DeliveryError:
    try:
        document = json.loads(body)
        code, reason = str(document["code"]), str(document["reason"])
    except (ValueError, KeyError, TypeError):
        code, reason = f"http-{status}", f"HTTP {status}"
    return DeliveryError(code[:60], reason[:300])


Fetch = Callable[[DeliverySettings, str, "str | None"], "Answer | None"]


class Delivery:
    """Polls the operator and publishes what it answers; tells the daemon which document
    to follow through ``follow`` (called with the delivered or the mounted path)."""

    def __init__(self, settings: DeliverySettings, fetcher: Fetch = fetch) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.etag: str | None = None
        self.failures = 0
        self.follow: Callable[[str], None] = lambda path: None
        self._last_error: str | None = None
        self._following: str | None = None

    async def poll_once(self) -> None:
        """One poll: publish a new answer, follow the document that should be followed."""
        try:
            token = read_regular_file(self.settings.token_file).decode().strip()
        except (OSError, ValueError) as exc:
            self._failed(DeliveryError("no-token", why_unreadable(exc)))
            return
        try:
            answer = await _in_daemon_thread(self.fetcher, self.settings, token, self.etag)
        except DeliveryError as exc:
            self._failed(exc)
            return
        if answer is not None:
            if DOCUMENT not in answer.files:
                self._failed(DeliveryError("no-configuration", "the answer has no config.yaml"))
                return
            await asyncio.to_thread(publish_files, Path(self.settings.directory), answer.files)
            self.etag = answer.etag
            log.info(
                "configuration received from the operator",
                extra={"files": len(answer.files), "etag": answer.etag},
            )
        if self.etag is not None:
            self.failures, self._last_error = 0, None
            self._switch(self.settings.document)

    def attach(self, follow: Callable[[str], None], following: str) -> None:
        """Tell ``follow`` (the running daemon's) which document to read from now on;
        it reads ``following`` now."""
        self.follow = follow
        self._following = following

    def _failed(self, error: DeliveryError) -> None:
        self.failures += 1
        if str(error) != self._last_error:
            self._last_error = str(error)
            log.warning(
                "configuration not received from the operator",
                extra={"code": error.code, "error": error.reason, "failures": self.failures},
            )
        if self.failures >= FALLBACK_AFTER:
            self._switch(self.settings.mounted)

    def _switch(self, path: str) -> None:
        if path != self._following:
            self._following = path
            log.info("following configuration", extra={"path": path})
            self.follow(path)

    async def run(self) -> None:
        """Poll forever (cancel to stop); one failure never ends the loop."""
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("configuration delivery failed")
            await asyncio.sleep(self.settings.interval)


def _in_daemon_thread(call: Callable[..., T], *args: object) -> Awaitable[T]:
    """``call(*args)`` in a thread of its own that never holds up the process's exit:
    a request the operator holds for :data:`HOLD` s must not delay a stopping sidecar
    (the default executor's threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(cast(T, result))

    def work() -> None:
        try:
            result = call(*args)
        except BaseException as exc:  # handed to the awaiting task
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name="kipsec-config-fetch", daemon=True).start()
    return future


__all__ = [
    "CONFIG_PATH",
    "ENV_CONFIG_DIR",
    "FALLBACK_AFTER",
    "HOLD",
    "POLL_INTERVAL",
    "Answer",
    "Delivery",
    "DeliveryError",
    "DeliverySettings",
    "fetch",
    "parse_answer",
]
