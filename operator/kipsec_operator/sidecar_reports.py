"""How the operator learns what the sidecars report: it asks their health endpoint.

Choice: the operator polls. Each Tunnel has a kopf timer (paused with the rest of the
operator on a replica that is not the leader); on each tick it asks every matched pod's
sidecar `GET http://<podIP>:9585/status` with a short timeout, a bounded body and
bounded concurrency. The alternative — sidecars writing their state into the API (a
status Secret or a custom resource) — would give every pod write access to the API;
polling needs only that the operator reach the pods' health port, which
NetworkPolicies can restrict to the operator.

`/status` is the sidecar's snapshot as JSON (the `kipsec-sidecar sas --json` shape):
per peer its state, child SAs, `last_error` and `last_failure`. A peer counts as
established when it has a child SA in state `installed`; the report's last error is the
first failing peer's, prefixed with its name and cut short; every failing peer's
`last_failure` is kept as a (peer, reason) pair, a reason the operator does not know
read as `other` (the set stays closed whatever a pod answers). A sidecar still waiting for its
configuration (503, `"phase": "waiting"`) has nothing established. A sidecar too old
to have `/status` (404) is read from `/readyz` instead (200: all established; 503 names
the peers still waiting), so a rolling upgrade does not blank the Tunnels' status. An
answer that is not the status JSON is a :class:`StatusError`, logged and counted as
unreachable: a report never claims an SA the sidecar did not confirm.

The fetcher is injectable (:data:`Fetcher`): tests serve reports from a dict.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from kipsec_sidecar.handshake_failures import REASONS as FAILURE_REASONS

from .reconcile.cluster import ObjectKey, PodRef
from .reconcile.status import SidecarReport

log = logging.getLogger(__name__)

HEALTH_PORT = 9585
MAX_STATUS_BYTES = 4 * 1024 * 1024
"""Largest `/status` body read (about 2 kB per peer: thousands of peers fit)."""
MAX_PEER_ERROR = 256
"""Characters of a peer's `last_error` kept in a report (the Tunnel status bounds again)."""
Fetcher = Callable[[PodRef, frozenset[str]], Awaitable[SidecarReport | None]]
"""(pod, the peer names its document lists) → its report, or None when unreachable."""

_WAITING = re.compile(r"no installed child SA for (\d+) peer\(s\): (.*?)(?: and (\d+) more)?\s*$")
_PEER = re.compile(r"([^\s,()]+) \([^)]*\)")


def parse_readyz(status: int, body: str, expected: frozenset[str]) -> SidecarReport:
    """The report a `/readyz` answer means, given the peers the pod's document lists.

    200: every expected peer is established. 503 naming peers: the others are. A 503
    that names only some of the waiting peers ("and N more") or cannot be parsed
    counts none as established (never report an SA the sidecar did not confirm).
    """
    if status == 200:
        return SidecarReport(established=expected)
    match = _WAITING.search(body.strip())
    if match is None or match.group(3):
        return SidecarReport()
    waiting = set(_PEER.findall(match.group(2)))
    return SidecarReport(established=frozenset(expected - waiting))


class StatusError(ValueError):
    """A `/status` answer that is not the sidecar's status JSON; the message names the
    field (never the body, which the operator does not log)."""


def _field(data: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    value = data.get(name)
    if not isinstance(value, kind):
        raise StatusError(f"{where}{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def parse_status(body: bytes, expected: frozenset[str]) -> SidecarReport:
    """The report a `/status` body means, given the peers the pod's document lists.

    Raises :class:`StatusError` for anything but the status JSON (not JSON, not an
    object, a field of the wrong type, larger than :data:`MAX_STATUS_BYTES`).
    """
    if len(body) > MAX_STATUS_BYTES:
        raise StatusError(f"body larger than {MAX_STATUS_BYTES} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise StatusError("body is not JSON") from None
    if not isinstance(data, dict):
        raise StatusError("body is not a JSON object")
    phase = _field(data, "phase", str, "")
    if phase != "running":
        return SidecarReport()
    established: set[str] = set()
    errors: list[str] = []
    failures: set[tuple[str, str]] = set()
    for index, peer in enumerate(_field(data, "peers", list, "")):
        where = f"peers[{index}]."
        if not isinstance(peer, dict):
            raise StatusError(f"peers[{index}]: expected dict, got {type(peer).__name__}")
        name = _field(peer, "name", str, where)
        for number, child in enumerate(_field(peer, "children", list, where)):
            if not isinstance(child, dict):
                raise StatusError(f"{where}children[{number}]: expected dict")
            state = _field(child, "state", str, f"{where}children[{number}].")
            if state == "installed" and name in expected:
                established.add(name)
        error = peer.get("last_error")
        if error is not None and not isinstance(error, str):
            raise StatusError(f"{where}last_error: expected str or null")
        reason = peer.get("last_failure")
        if reason is not None and not isinstance(reason, str):
            raise StatusError(f"{where}last_failure: expected str or null")
        if name in expected and name not in established:
            if error:
                errors.append(f"{name[:253]}: {error[:MAX_PEER_ERROR]}")
            if reason:
                failures.add((name, reason if reason in FAILURE_REASONS else "other"))
    return SidecarReport(frozenset(established), errors[0] if errors else None, frozenset(failures))


class HttpFetcher:
    """Asks a sidecar's health server; one aiohttp session for every poll."""

    def __init__(self, port: int = HEALTH_PORT, timeout: float = 2.0) -> None:
        self.port = port
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, pod: PodRef, expected: frozenset[str]) -> SidecarReport | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        host = f"[{pod.primary_ip}]" if ":" in pod.primary_ip else pod.primary_ip
        base = f"http://{host}:{self.port}"
        try:
            async with self._session.get(f"{base}/status") as response:
                if response.status == 404:  # a sidecar older than /status
                    async with self._session.get(f"{base}/readyz") as ready:
                        body = await _bounded(ready, 4096)
                        return parse_readyz(ready.status, body.decode(errors="replace"), expected)
                if response.status not in (200, 503):
                    return None
                return parse_status(await _bounded(response, MAX_STATUS_BYTES), expected)
        except StatusError as exc:
            log.warning(
                "sidecar status unreadable",
                extra={"pod": f"{pod.namespace}/{pod.name}", "error": str(exc)},
            )
            return None
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of the body; StatusError when there are more."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(65536):
        body += chunk
        if len(body) > limit:
            raise StatusError(f"body larger than {limit} bytes")
    return bytes(body)


async def poll(
    pods: Mapping[ObjectKey, tuple[PodRef, frozenset[str]]],
    fetcher: Fetcher,
    concurrency: int = 16,
) -> dict[ObjectKey, SidecarReport]:
    """Reports of `pods` (at most `concurrency` requests at once); an unreachable
    sidecar reports nothing established."""
    limit = asyncio.Semaphore(concurrency)

    async def one(key: ObjectKey, pod: PodRef, expected: frozenset[str]) -> None:
        async with limit:
            report = await fetcher(pod, expected)
        reports[key] = report if report is not None else SidecarReport()

    reports: dict[ObjectKey, SidecarReport] = {}
    await asyncio.gather(*(one(key, pod, peers) for key, (pod, peers) in pods.items()))
    return reports


__all__ = [
    "HEALTH_PORT",
    "MAX_STATUS_BYTES",
    "Fetcher",
    "HttpFetcher",
    "StatusError",
    "parse_readyz",
    "parse_status",
    "poll",
]
