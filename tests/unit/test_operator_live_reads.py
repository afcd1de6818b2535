"""The webhook's live reads: one LIST per burst of admissions, never a cached failure.

The API server is a stand-in that counts requests (the exchange with a real API server
is in tests/operator/test_operator_replicas.py); time is injected.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from kipsec_operator.kube import ApiError, Kube
from kipsec_operator.live_reads import AdmissionReads

TUNNELS = "/apis/kipsec.io/v1alpha1/tunnels"


class Api:
    """Answers the Tunnel LIST and Namespace GETs; counts requests per path."""

    def __init__(self) -> None:
        self.tunnels: list[dict[str, Any]] = [{"metadata": {"name": "mesh"}}]
        self.requests: dict[str, int] = {}
        self.failing = False

    async def get(self, path: str) -> dict[str, Any] | None:
        self.requests[path] = self.requests.get(path, 0) + 1
        if self.failing:
            raise ApiError(500, "InternalError", "etcd is away")
        if path == TUNNELS:
            return {"items": list(self.tunnels)}
        return {"metadata": {"name": path.rsplit("/", 1)[1]}}


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def reads(api: Api, clock: Clock) -> AdmissionReads:
    return AdmissionReads(cast(Kube, api), ttl=1.0, clock=clock)


def test_a_burst_within_the_ttl_costs_one_list() -> None:
    api, clock = Api(), Clock()
    live = reads(api, clock)

    async def burst() -> None:
        for step in range(5):
            clock.now = step * 0.2
            assert [t["metadata"]["name"] for t in await live.tunnels()] == ["mesh"]

    asyncio.run(burst())
    assert api.requests == {TUNNELS: 1}


def test_a_tunnel_created_after_the_ttl_is_seen() -> None:
    api, clock = Api(), Clock()
    live = reads(api, clock)
    asyncio.run(live.tunnels())
    api.tunnels.append({"metadata": {"name": "late"}})
    clock.now = 1.0

    names = [t["metadata"]["name"] for t in asyncio.run(live.tunnels())]

    assert names == ["mesh", "late"]


def test_by_default_a_tunnel_created_just_after_a_read_is_seen_by_the_next_pod() -> None:
    # One `kubectl apply -f` with a Tunnel and its pods: the pod right after must see it.
    api, clock = Api(), Clock()
    live = AdmissionReads(cast(Kube, api), clock=clock)
    asyncio.run(live.tunnels())
    api.tunnels.append({"metadata": {"name": "late"}})

    names = [t["metadata"]["name"] for t in asyncio.run(live.tunnels())]

    assert names == ["mesh", "late"]


def test_a_tunnel_being_deleted_selects_nothing() -> None:
    api = Api()
    api.tunnels.append({"metadata": {"name": "going", "deletionTimestamp": "2026-01-01T00:00Z"}})

    names = [t["metadata"]["name"] for t in asyncio.run(reads(api, Clock()).tunnels())]

    assert names == ["mesh"]


def test_namespaces_are_cached_each_under_its_own_name() -> None:
    api, clock = Api(), Clock()
    live = reads(api, clock)

    async def read() -> list[Any]:
        return [await live.namespace(n) for n in ("shop", "shop", "bank")]

    shop, again, bank = asyncio.run(read())

    assert shop == again == {"metadata": {"name": "shop"}}
    assert bank == {"metadata": {"name": "bank"}}
    assert sum(api.requests.values()) == 2


def test_a_failed_read_raises_and_is_not_cached() -> None:
    api, clock = Api(), Clock()
    live = reads(api, clock)
    api.failing = True
    with pytest.raises(ApiError):
        asyncio.run(live.tunnels())
    api.failing = False

    assert len(asyncio.run(live.tunnels())) == 1
    assert api.requests == {TUNNELS: 2}
