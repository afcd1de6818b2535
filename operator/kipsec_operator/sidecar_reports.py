"""How the operator learns what the sidecars report: it asks their health endpoint.

Choice: the operator polls. Each Tunnel has a kopf timer (paused with the rest of the
operator on a replica that is not the leader); on each tick it asks every matched pod's
sidecar `GET http://<podIP>:9585/readyz` with a short timeout and bounded concurrency.
The alternative — sidecars writing their state into the API (a status Secret or a
custom resource) — would give every pod write access to the API; polling needs only
that the operator reach the pods' health port, which NetworkPolicies can restrict to
the operator. `/readyz` answers 200 when every peer has an installed child SA, else 503
naming the peers still waiting (at most ten, then "and N more"), which is exactly
"which links are established".

The fetcher is injectable (:data:`Fetcher`): tests serve reports from a dict, and a
future sidecar `/status` JSON endpoint (per-peer state and the last error) would be
one more fetcher.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping

import aiohttp

from .reconcile.cluster import ObjectKey, PodRef
from .reconcile.status import SidecarReport

HEALTH_PORT = 9585
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
        try:
            async with self._session.get(f"http://{host}:{self.port}/readyz") as response:
                body = await response.text()
                return parse_readyz(response.status, body[:4096], expected)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


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


__all__ = ["HEALTH_PORT", "Fetcher", "HttpFetcher", "parse_readyz", "poll"]
