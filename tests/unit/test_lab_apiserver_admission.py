"""The lab API server sends pod CREATEs through admission, failurePolicy Fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kipsec_lab.admission import WebhookClient
from kipsec_lab.apiserver import serve
from kipsec_lab.tls import issue_serving
from kipsec_operator.kube import ApiError, Connection, Kube, object_path

pytestmark = pytest.mark.asyncio

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "demo"},
    "spec": {"containers": [{"name": "app", "image": "x"}]},
}


class Labeller:
    """An admission that adds a label (what a mutating webhook's patch does)."""

    async def admit(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        return {**obj, "metadata": {**obj["metadata"], "labels": {"admitted": namespace}}}


async def test_a_created_pod_is_stored_as_admitted() -> None:
    async with serve() as (emulator, url), Kube(Connection(url)) as kube:
        emulator.admission = Labeller()
        created = await kube.create(object_path("v1", "pods", "demo"), POD)
        assert created["metadata"]["labels"] == {"admitted": "demo"}
        stored = emulator.stored("v1/pods", "demo", "p")
        assert stored is not None and stored["metadata"]["labels"] == {"admitted": "demo"}


async def test_other_kinds_are_not_sent_to_admission() -> None:
    async with serve() as (emulator, url), Kube(Connection(url)) as kube:
        emulator.admission = Labeller()
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {}}
        created = await kube.create(object_path("v1", "secrets", "demo"), secret)
        assert "labels" not in created["metadata"]


async def test_an_unreachable_webhook_refuses_the_pod(tmp_path: Path) -> None:
    ca, _, _ = issue_serving(tmp_path, ["kipsec-operator"], ["127.0.0.1"])
    async with serve() as (emulator, url), Kube(Connection(url)) as kube:
        emulator.admission = WebhookClient("https://127.0.0.1:9/mutate-pods", str(ca), 2.0)
        with pytest.raises(ApiError) as refused:
            await kube.create(object_path("v1", "pods", "demo"), POD)
        assert refused.value.status == 500
        assert 'failed calling webhook "pods.kipsec.io"' in str(refused.value)
        assert emulator.stored("v1/pods", "demo", "p") is None


async def test_only_a_changed_spec_is_a_new_generation() -> None:
    # `kipsec lab apply` of an unchanged manifest must not look like an edit (it waits
    # for the operator to observe each new generation).
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {}}
    async with serve() as (_, url), Kube(Connection(url)) as kube:
        path = object_path("v1", "secrets", "demo", "s")
        await kube.create(object_path("v1", "secrets", "demo"), {**secret, "spec": {"a": 1}})
        await kube.merge_patch(path, {"spec": {"a": 1}})
        assert (await kube.get(path) or {})["metadata"]["generation"] == 1
        await kube.merge_patch(path, {"spec": {"a": 2}})
        assert (await kube.get(path) or {})["metadata"]["generation"] == 2
