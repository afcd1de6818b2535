"""What the operator's endpoints read from the API server instead of the watch index.

The chart runs two replicas behind one Service, and a replica's watch index lags the
API by a watch event (longer while a watch reconnects), long enough to miss a Tunnel
applied together with its pods. Every
endpoint therefore answers from the API server itself, so any replica gives the same
answer: the webhook LISTs the Tunnels and GETs the pod's Namespace through these
reads, ``/v1/config`` GETs the pod and its Secret, the CSR endpoint the pod and the
TunnelCertificates.

The webhook never reuses a read that started before the pod's admission arrived: a
Tunnel that exists when a pod's admission starts is always seen. (A cache of even one
second let a pod applied right after its Tunnel — one ``kubectl apply -f`` holding both
— reuse a LIST taken just before the Tunnel existed and come out without its sidecar;
the lab's tests caught exactly that.) Concurrent admissions share reads instead
(:class:`Coalesced`): callers that arrive while a read is running wait for the next
one, which starts after all of them arrived, so a burst of N pods costs about two LISTs,
not N, and none of them can miss a Tunnel created before it asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import aiohttp

from .crds.models import GROUP, VERSION
from .kube import ApiError, Kube, object_path

T = TypeVar("T")

API_ERRORS = (ApiError, aiohttp.ClientError, asyncio.TimeoutError)
"""What a failed read through :class:`~.kube.Kube` raises: the endpoint answers
"unavailable, retry" rather than from stale or missing data."""


class Coalesced(Generic[T]):
    """One read shared by the callers that were all waiting before it started.

    Reads run one at a time. A caller that arrives while one runs waits for the next,
    and every caller waiting then shares it: no caller gets an answer older than its own
    arrival, and N concurrent callers cost at most two reads. A failed read raises in
    every caller that shared it and is not kept: the next caller reads again.
    """

    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._lock = asyncio.Lock()  # FIFO: waiters are served in arrival order
        self._started = 0  #: reads started so far
        self._finished = 0  #: the read whose outcome is kept
        self._outcome: T | BaseException | None = None
        self.callers = 0  #: calls in progress (an idle instance may be dropped)

    async def __call__(self) -> T:
        wanted = self._started + 1  # the first read that starts after this call
        self.callers += 1
        try:
            async with self._lock:
                if self._finished < wanted:
                    self._started += 1
                    try:
                        self._outcome = await self._read()
                    except API_ERRORS as exc:
                        self._outcome = exc
                    self._finished = self._started
                outcome = self._outcome
        finally:
            self.callers -= 1
        if isinstance(outcome, BaseException):
            raise outcome
        return cast(T, outcome)


@dataclass
class AdmissionReads:
    """The webhook's inputs, live from the API server, read shared by concurrent
    admissions (:class:`Coalesced`).

    Raises one of :data:`API_ERRORS` when the API server cannot be read.
    """

    kube: Kube
    _tunnels: Coalesced[list[Mapping[str, Any]]] | None = None
    _namespaces: dict[str, Coalesced[Mapping[str, Any] | None]] = field(default_factory=dict)

    async def tunnels(self) -> Sequence[Mapping[str, Any]]:
        """Every Tunnel in every namespace, except those being deleted (the index
        drops them too: a Tunnel on its way out injects nothing)."""

        async def read() -> list[Mapping[str, Any]]:
            path = object_path(f"{GROUP}/{VERSION}", "tunnels", None)
            items: list[Mapping[str, Any]] = (await self.kube.get(path) or {}).get("items") or []
            return [t for t in items if not (t.get("metadata") or {}).get("deletionTimestamp")]

        if self._tunnels is None:
            self._tunnels = Coalesced(read)
        return await self._tunnels()

    async def namespace(self, name: str) -> Mapping[str, Any] | None:
        """The Namespace object, None when it does not exist."""

        async def read() -> Mapping[str, Any] | None:
            return await self.kube.get(object_path("v1", "namespaces", None, name))

        shared = self._namespaces.get(name)
        if shared is None:
            shared = self._namespaces[name] = Coalesced(read)
        try:
            return await shared()
        finally:
            if not shared.callers:  # idle: forget it (namespaces come and go)
                self._namespaces.pop(name, None)


__all__ = ["API_ERRORS", "AdmissionReads", "Coalesced"]
