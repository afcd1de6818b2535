"""What the operator's endpoints read from the API server instead of the watch index.

The chart runs two replicas behind one Service and kopf peering pauses the standby, so
the standby's watch index goes stale; and even the leader's index lags the API by a
watch event, long enough to miss a Tunnel applied together with its pods. Every
endpoint therefore answers from the API server itself, so any replica gives the same
answer: the webhook LISTs the Tunnels and GETs the pod's Namespace through these
reads, ``/v1/config`` GETs the pod and its Secret, the CSR endpoint the pod and the
TunnelCertificates.

The webhook reads for every pod by default (:data:`ADMISSION_CACHE_SECONDS` is 0): a
Tunnel that exists when a pod's admission starts is always seen. A cache, even of one
second, let a pod applied right after its Tunnel (one `kubectl apply -f` holding both)
reuse a LIST taken just before the Tunnel existed and come out without its sidecar —
the lab's tests caught exactly that. The price is one LIST of Tunnels and one GET per
pod creation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .crds.models import GROUP, VERSION
from .kube import ApiError, Kube, object_path

ADMISSION_CACHE_SECONDS = 0.0
"""How long a LIST of Tunnels or a GET of a Namespace is reused by the webhook (0: never;
see the module docstring for why)."""

API_ERRORS = (ApiError, aiohttp.ClientError, asyncio.TimeoutError)
"""What a failed read through :class:`~.kube.Kube` raises: the endpoint answers
"unavailable, retry" rather than from stale or missing data."""


@dataclass
class _Cached:
    expires: float
    value: Any


@dataclass
class AdmissionReads:
    """The webhook's inputs, live from the API server, cached for ``ttl`` seconds.

    Raises one of :data:`API_ERRORS` when the API server cannot be read; a failed read
    is not cached.
    """

    kube: Kube
    ttl: float = ADMISSION_CACHE_SECONDS
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, _Cached] = field(default_factory=dict)

    async def _cached(self, key: str, read: Callable[[], Awaitable[Any]]) -> Any:
        now = self.clock()
        entry = self._cache.get(key)
        if entry is not None and entry.expires > now:
            return entry.value
        value = await read()
        self._cache[key] = _Cached(now + self.ttl, value)
        for stale in [k for k, e in self._cache.items() if e.expires <= now]:
            del self._cache[stale]
        return value

    async def tunnels(self) -> Sequence[Mapping[str, Any]]:
        """Every Tunnel in every namespace, except those being deleted (the index
        drops them too: a Tunnel on its way out injects nothing)."""

        async def read() -> list[Mapping[str, Any]]:
            path = object_path(f"{GROUP}/{VERSION}", "tunnels", None)
            items: list[Mapping[str, Any]] = (await self.kube.get(path) or {}).get("items") or []
            return [t for t in items if not (t.get("metadata") or {}).get("deletionTimestamp")]

        tunnels: Sequence[Mapping[str, Any]] = await self._cached("tunnels", read)
        return tunnels

    async def namespace(self, name: str) -> Mapping[str, Any] | None:
        """The Namespace object, None when it does not exist."""

        async def read() -> Mapping[str, Any] | None:
            return await self.kube.get(object_path("v1", "namespaces", None, name))

        namespace: Mapping[str, Any] | None = await self._cached("namespace/" + name, read)
        return namespace


__all__ = ["ADMISSION_CACHE_SECONDS", "API_ERRORS", "AdmissionReads"]
