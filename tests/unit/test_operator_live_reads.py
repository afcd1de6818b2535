"""The webhook's live reads: concurrent admissions share reads, none older than itself.

The API server is a stand-in that counts requests and can hold a read open (the
exchange with a real API server is in tests/operator/test_operator_replicas.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from kipsec_operator.kube import ApiError, Kube
from kipsec_operator.live_reads import AdmissionReads

TUNNELS = "/apis/kipsec.io/v1alpha1/tunnels"


class Api:
    """Answers the Tunnel LIST and Namespace GETs; counts requests per path. While
    ``gate`` is set, each read waits for it: reads in flight, as under load."""

    def __init__(self) -> None:
        self.tunnels: list[dict[str, Any]] = [{"metadata": {"name": "mesh"}}]
        self.requests: dict[str, int] = {}
        self.failing = False
        self.gate: asyncio.Event | None = None

    async def get(self, path: str) -> dict[str, Any] | None:
        self.requests[path] = self.requests.get(path, 0) + 1
        snapshot = list(self.tunnels)  # what the API server holds when the read starts
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise ApiError(500, "InternalError", "etcd is away")
        if path == TUNNELS:
            return {"items": snapshot}
        return {"metadata": {"name": path.rsplit("/", 1)[1]}}


def names(tunnels: Any) -> list[str]:
    return [t["metadata"]["name"] for t in tunnels]


def test_a_burst_of_concurrent_admissions_costs_two_lists_not_one_each() -> None:
    api = Api()
    live = AdmissionReads(cast(Kube, api))

    async def burst() -> list[Any]:
        api.gate = asyncio.Event()
        first = asyncio.create_task(live.tunnels())
        await asyncio.sleep(0)  # its LIST is in flight
        rest = [asyncio.create_task(live.tunnels()) for _ in range(9)]
        await asyncio.sleep(0)
        api.gate.set()
        return list(await asyncio.gather(first, *rest))

    answers = asyncio.run(burst())
    assert [names(a) for a in answers] == [["mesh"]] * 10
    assert api.requests == {TUNNELS: 2}


def test_an_admission_never_gets_a_list_that_started_before_it_arrived() -> None:
    # One `kubectl apply -f` with a Tunnel and its pods: the LIST running when the
    # Tunnel was created must not answer the pod admitted after it.
    api = Api()
    live = AdmissionReads(cast(Kube, api))

    async def race() -> tuple[Any, Any]:
        api.gate = asyncio.Event()
        early = asyncio.create_task(live.tunnels())
        await asyncio.sleep(0)  # the LIST has started and sees only "mesh"
        api.tunnels.append({"metadata": {"name": "late"}})
        pod = asyncio.create_task(live.tunnels())
        await asyncio.sleep(0)
        api.gate.set()
        return await early, await pod

    early, pod = asyncio.run(race())
    assert names(early) == ["mesh"]
    assert names(pod) == ["mesh", "late"]


def test_sequential_admissions_each_read_again() -> None:
    api = Api()
    live = AdmissionReads(cast(Kube, api))
    asyncio.run(live.tunnels())
    api.tunnels.append({"metadata": {"name": "late"}})

    assert names(asyncio.run(live.tunnels())) == ["mesh", "late"]
    assert api.requests == {TUNNELS: 2}


def test_a_tunnel_being_deleted_selects_nothing() -> None:
    api = Api()
    api.tunnels.append({"metadata": {"name": "going", "deletionTimestamp": "2026-01-01T00:00Z"}})

    assert names(asyncio.run(AdmissionReads(cast(Kube, api)).tunnels())) == ["mesh"]


def test_namespaces_are_read_each_under_its_own_name_and_not_kept() -> None:
    api = Api()
    live = AdmissionReads(cast(Kube, api))

    async def read() -> list[Any]:
        api.gate = asyncio.Event()
        tasks = [asyncio.create_task(live.namespace(n)) for n in ("shop", "shop", "bank")]
        await asyncio.sleep(0)
        api.gate.set()
        return list(await asyncio.gather(*tasks))

    shop, again, bank = asyncio.run(read())

    assert shop == again == {"metadata": {"name": "shop"}}
    assert bank == {"metadata": {"name": "bank"}}
    assert sum(api.requests.values()) == 3  # "shop" twice: the second arrived mid-read
    assert live._namespaces == {}


def test_a_failed_read_raises_in_every_caller_that_shared_it_and_is_not_kept() -> None:
    api = Api()
    live = AdmissionReads(cast(Kube, api))

    async def burst() -> list[Any]:
        api.failing, api.gate = True, asyncio.Event()
        tasks = [asyncio.create_task(live.tunnels()) for _ in range(3)]
        await asyncio.sleep(0)
        api.gate.set()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    outcomes = asyncio.run(burst())
    assert all(isinstance(o, ApiError) for o in outcomes)
    api.failing, api.gate = False, None

    assert len(asyncio.run(live.tunnels())) == 1
    assert api.requests == {TUNNELS: 3}
