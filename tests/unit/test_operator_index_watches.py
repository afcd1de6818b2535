"""The index's own watches hand the reconciler what kopf did: every listed object, then
each watch event, and a deletion for whatever a new LIST lacks (deleted while the watch
was down); a 410 Gone or a failed watch lists again.

The API server is a stand-in serving scripted lists and watch streams per collection
(the watches against the emulator, under kopf peering, are in
tests/operator/test_operator_replicas.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from kipsec_operator import list_watch
from kipsec_operator.index_watches import IndexWatches
from kipsec_operator.kube import ApiError, Kube
from kipsec_operator.reconcile.affected import Change
from kipsec_operator.reconcile.render import MANAGED_BY, POD_ANNOTATION
from kipsec_operator.reconciler import Reconciler
from support.operator_cluster import eventually

PODS = "/api/v1/pods"
SECRETS = "/api/v1/secrets"


def pod(name: str, ip: str, version: int) -> dict[str, Any]:
    """A pod as a LIST item carries it: no kind, no apiVersion."""
    return {
        "metadata": {
            "namespace": "shop",
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": str(version),
            "labels": {"app": "mesh"},
        },
        "spec": {"nodeName": "n1"},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def config_secret(pod_name: str, version: int) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "shop",
            "name": f"kipsec-{pod_name}",
            "resourceVersion": str(version),
            "labels": dict(MANAGED_BY),
            "annotations": {POD_ANNOTATION: pod_name},
        },
        "data": {"config.yaml": "e30="},
    }


def listed(*items: dict[str, Any], version: int = 10) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": str(version)}, "items": list(items)}


class Api:
    """Per collection path: LISTs answer `lists[path]` in turn (empty when none left);
    each watch plays the next script of `watches[path]`, then stays open, idle."""

    def __init__(self) -> None:
        self.lists: dict[str, list[dict[str, Any] | Exception]] = {}
        self.watches: dict[str, list[list[dict[str, Any] | Exception]]] = {}
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.idle: dict[str, int] = {}

    async def list(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        self.calls.append(("list", path, dict(params)))
        queue = self.lists.get(path) or [listed()]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("watch", path, dict(params)))
        scripts = self.watches.get(path) or []
        for item in scripts.pop(0) if scripts else []:
            if isinstance(item, Exception):
                raise item
            yield item
        self.idle[path] = self.idle.get(path, 0) + 1
        await asyncio.Event().wait()


class Writer:
    async def apply_secret(self, *args: Any) -> None: ...

    async def patch_status(self, *args: Any) -> None: ...

    async def event(self, *args: Any) -> None: ...


def run(api: Api, body: Any) -> Reconciler:
    reconciler = Reconciler(Writer())
    heard: list[tuple[str, str]] = []

    async def main() -> None:
        def changed(kind: str, event_type: str, _: object) -> None:
            heard.append((kind, event_type))

        watches = IndexWatches(cast(Kube, api), reconciler, changed=changed)
        watches.start()
        try:
            await body(watches, reconciler, heard)
        finally:
            await watches.stop()

    asyncio.run(main())
    return reconciler


def test_listed_objects_then_watch_events_reach_the_index_as_kopf_gave_them() -> None:
    api = Api()
    api.lists[PODS] = [listed(pod("a", "10.0.0.1", 5))]
    api.lists[SECRETS] = [listed(config_secret("a", 6))]
    api.watches[PODS] = [[{"type": "ADDED", "object": {"kind": "Pod", **pod("b", "10.0.0.2", 11)}}]]

    async def body(watches: IndexWatches, reconciler: Reconciler, heard: list[Any]) -> None:
        await watches.wait_synced()
        await eventually(lambda: api.idle.get(PODS))
        pods = reconciler.objects["Pod"]
        assert set(pods) == {("shop", "a"), ("shop", "b")}
        assert (pods[("shop", "a")]["kind"], pods[("shop", "a")]["apiVersion"]) == ("Pod", "v1")
        assert ("shop", "a") in reconciler.actual  # the per-pod Secret, as digests
        assert heard == [("Pod", "ADDED")]  # listed objects are no watch events

    run(api, body)
    watch = next(params for call, path, params in api.calls if call == "watch" and path == PODS)
    assert watch["resourceVersion"] == "10"


def test_what_changed_while_the_watch_was_gone_is_seen_when_it_lists_again() -> None:
    """A 410 Gone: pod a changed its IP, pod b and its Secret were deleted meanwhile."""
    api = Api()
    api.lists[PODS] = [
        listed(pod("a", "10.0.0.1", 5), pod("b", "10.0.0.2", 6)),
        listed(pod("a", "10.0.0.9", 30), version=31),
    ]
    api.lists[SECRETS] = [
        listed(config_secret("a", 7), config_secret("b", 8)),
        listed(config_secret("a", 7), version=32),
    ]
    api.watches[PODS] = [[ApiError(410, "Expired", "too old")]]
    api.watches[SECRETS] = [[ApiError(410, "Expired", "too old")]]

    async def body(watches: IndexWatches, reconciler: Reconciler, heard: list[Any]) -> None:
        await eventually(lambda: api.idle.get(PODS) and api.idle.get(SECRETS))
        assert watches.synced
        pods = reconciler.objects["Pod"]
        assert set(pods) == {("shop", "a")}
        assert pods[("shop", "a")]["status"]["podIP"] == "10.0.0.9"
        assert set(reconciler.actual) == {("shop", "a")}
        changes = set(reconciler._changes)
        assert {Change("Pod", "shop", "a"), Change("Pod", "shop", "b")} <= changes

    run(api, body)


def test_a_failed_list_is_not_synced_until_a_list_succeeds(monkeypatch: Any) -> None:
    monkeypatch.setattr(list_watch, "RETRY_SECONDS", (0.01, 0.01))
    api = Api()
    api.lists[PODS] = [ApiError(500, "InternalError", "etcd"), listed(pod("a", "10.0.0.1", 5))]

    async def body(watches: IndexWatches, reconciler: Reconciler, heard: list[Any]) -> None:
        assert not watches.synced
        await asyncio.wait_for(watches.wait_synced(), 2)
        assert set(reconciler.objects["Pod"]) == {("shop", "a")}

    run(api, body)
