"""A pass with only pod changes reuses what the last pass derived from the Tunnels those
pods do not touch (their validation, selection and links: :class:`TunnelPart`), and
recomputes no status of theirs, yet writes exactly what a fresh operator would."""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import Mapping
from typing import Any

import pytest

from kipsec_operator import reconciler as reconciler_module
from kipsec_operator.reconcile.cluster import K8sObject, ObjectKey, key_of
from kipsec_operator.reconcile.render import CONFIG_KEY, POD_ANNOTATION
from kipsec_operator.reconciler import PassResult, Reconciler, data_digests
from support.operator_objects import (
    external_peer,
    external_spec,
    namespace,
    pod,
    psk_mesh_spec,
    psk_secret,
    tunnel,
)

OBJECTS = [
    namespace("default"),
    psk_secret(),
    *(tunnel(name, psk_mesh_spec(app=name)) for name in ("red", "blue", "green")),
    *(pod(f"r{i}", f"10.0.1.{i}", labels={"app": "red"}) for i in (1, 2, 3)),
    *(pod(f"b{i}", f"10.0.2.{i}", labels={"app": "blue"}) for i in (1, 2, 3)),
    *(pod(f"g{i}", f"10.0.3.{i}", labels={"app": "green"}) for i in (1, 2, 3)),
]


class Recorder:
    """A Writer that keeps the last Secret data and status written per object."""

    def __init__(self) -> None:
        self.statuses: dict[ObjectKey, Mapping[str, Any]] = {}

    async def apply_secret(
        self,
        manifest: Mapping[str, Any],
        previous: Mapping[str, str] | None,
        digests: Mapping[str, str],
    ) -> None:
        pass

    async def patch_status(self, tunnel: K8sObject, status: Mapping[str, Any]) -> None:
        self.statuses[key_of(tunnel)] = status

    async def event(self, obj: K8sObject, type_: str, reason: str, message: str) -> None:
        pass


def reconciler(objects: list[dict[str, Any]]) -> tuple[Reconciler, Recorder]:
    writer = Recorder()
    found = Reconciler(writer, clock=lambda: "2026-12-07T00:00:00Z")
    for obj in objects:
        found.observe(str(obj["kind"]), "ADDED", obj)
    return found, writer


def named(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objects if o["metadata"]["name"] == name)


def test_pod_changes_reuse_untouched_tunnels_and_write_what_a_fresh_pass_writes() -> None:
    async def scenario() -> None:
        objects = copy.deepcopy(OBJECTS)
        live, written = reconciler(objects)
        await live.reconcile()
        first = dict(live.rendering.parts)

        r1 = copy.deepcopy(named(objects, "r1"))
        r1["status"]["podIP"] = r1["status"]["podIPs"][0]["ip"] = "10.0.1.9"
        b3 = copy.deepcopy(named(objects, "b3"))
        b3["metadata"]["labels"] = {"app": "green"}  # moves from blue to green
        objects = [o for o in objects if o["metadata"]["name"] not in ("r1", "b3")]
        objects += [r1, b3]
        statuses_before = dict(written.statuses)
        live.observe("Pod", "MODIFIED", r1)
        live.observe("Pod", "MODIFIED", b3)
        await live.reconcile()

        parts = live.rendering.parts
        assert parts[("default", "red")] is not first[("default", "red")]
        assert parts[("default", "blue")] is not first[("default", "blue")]
        assert parts[("default", "green")] is not first[("default", "green")]

        g1 = copy.deepcopy(named(objects, "g1"))
        g1["status"]["podIP"] = g1["status"]["podIPs"][0]["ip"] = "10.0.3.9"
        objects = [o for o in objects if o["metadata"]["name"] != "g1"] + [g1]
        touched = live.rendering.parts
        live.observe("Pod", "MODIFIED", g1)
        await live.reconcile()
        assert live.rendering.parts[("default", "red")] is touched[("default", "red")]
        assert live.rendering.parts[("default", "blue")] is touched[("default", "blue")]
        assert live.rendering.parts[("default", "green")] is not touched[("default", "green")]
        assert written.statuses[("default", "blue")]["pods"] == 2
        assert written.statuses[("default", "green")]["pods"] == 4
        assert statuses_before[("default", "blue")]["pods"] == 3

        fresh, _ = reconciler(objects)
        await fresh.reconcile()
        assert live.actual == fresh.actual
        assert dict(live.statuses) == dict(fresh.statuses)

    asyncio.run(scenario())


def test_a_pod_that_invalidates_an_external_peer_rerenders_that_peers_pods() -> None:
    """A new pod whose address lies in an ExternalPeer's subnets makes the peer invalid,
    though no Tunnel selects that pod: the pods linked to the peer lose their entry in
    the same pass, as a fresh operator would write (reusing the Tunnels' parts missed it)."""

    async def scenario() -> None:
        objects = [
            *copy.deepcopy(OBJECTS),
            psk_secret("site-psk"),
            external_peer(),
            tunnel("to-site", external_spec("red")),
        ]
        live, written = reconciler(objects)
        await live.reconcile()
        assert all(
            len(live.rendering.external.get(("default", f"r{i}"), ())) == 1 for i in (1, 2, 3)
        )
        stray = pod("x1", "172.20.0.5", labels={"app": "elsewhere"})
        objects.append(stray)
        live.observe("Pod", "ADDED", stray)
        await live.reconcile()
        assert not any(live.rendering.external.get(("default", f"r{i}")) for i in (1, 2, 3))
        fresh, fresh_written = reconciler(objects)
        await fresh.reconcile()
        assert live.actual == fresh.actual
        assert dict(live.statuses) == dict(fresh.statuses)
        assert (
            written.statuses[("default", "to-site")]
            == fresh_written.statuses[("default", "to-site")]
        )

    asyncio.run(scenario())


def test_a_watch_event_reads_the_new_object_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the rendering reads of an object is kept from its last event (a pod's was
    parsed twice per event, addresses included), and changes are still seen."""
    live, _ = reconciler(copy.deepcopy(OBJECTS))
    calls: list[str] = []
    real = reconciler_module.pod_ref  # type: ignore[attr-defined]

    def counted(obj: Mapping[str, Any], **kwargs: Any) -> Any:
        calls.append(obj["metadata"]["name"])
        return real(obj, **kwargs)

    monkeypatch.setattr(reconciler_module, "pod_ref", counted)
    live._changes.clear()
    r1 = copy.deepcopy(named(OBJECTS, "r1"))
    r1["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    live.observe("Pod", "MODIFIED", r1)
    assert calls == ["r1"]
    assert live._changes == []
    r1 = copy.deepcopy(r1)
    r1["status"]["podIP"] = r1["status"]["podIPs"][0]["ip"] = "10.0.1.9"
    live.observe("Pod", "MODIFIED", r1)
    assert calls == ["r1", "r1"]
    assert [c.key for c in live._changes] == [("default", "r1")]
    live.observe("Pod", "DELETED", r1)
    assert [c.key for c in live._changes] == [("default", "r1")] * 2


class Writes(Recorder):
    """A Recorder that also counts the Secret writes per pod."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    async def apply_secret(
        self,
        manifest: Mapping[str, Any],
        previous: Mapping[str, str] | None,
        digests: Mapping[str, str],
    ) -> None:
        self.secrets.append(manifest["metadata"]["annotations"][POD_ANNOTATION])


def test_the_index_keeps_digests_of_the_secrets_not_their_documents() -> None:
    async def scenario() -> None:
        writes = Writes()
        live = Reconciler(writes, clock=lambda: "2026-12-07T00:00:00Z")
        for obj in copy.deepcopy(OBJECTS):
            live.observe(str(obj["kind"]), "ADDED", obj)
        await live.reconcile()
        assert len(writes.secrets) == 9
        manifest = live.rendering.secrets()[("default", "r1")]
        document = manifest["data"][CONFIG_KEY]
        assert live.actual[("default", "r1")] == data_digests(manifest["data"])
        assert document not in live.actual[("default", "r1")].values()

        live.observe("Secret", "ADDED", copy.deepcopy(manifest))  # the watch sees the write
        assert not live._changes
        edited = copy.deepcopy(manifest)
        edited["data"][CONFIG_KEY] = base64.b64encode(b"{}").decode()
        live.observe("Secret", "MODIFIED", edited)  # someone else edited it: restore it
        writes.secrets.clear()
        await live.reconcile()
        assert writes.secrets == ["r1"]
        assert live.actual[("default", "r1")] == data_digests(manifest["data"])

    asyncio.run(scenario())


# The reconcile worker waits for a burst of changes to pause, but never longer than
# `longest` after its first change: a stream of changes costs a pass per `longest`.


async def _passes(changes: int, every: float, debounce: float, longest: float) -> int:
    live = Reconciler(Recorder(), clock=lambda: "2026-12-07T00:00:00Z")
    for obj in (namespace("default"), psk_secret(), tunnel("t", psk_mesh_spec(app="a"))):
        live.observe(str(obj["kind"]), "ADDED", obj)
    await live.reconcile()
    passes = []
    reconcile = live.reconcile

    async def counted() -> PassResult:
        passes.append(asyncio.get_running_loop().time())
        return await reconcile()

    live.reconcile = counted  # type: ignore[method-assign]
    worker = asyncio.create_task(live.run(debounce, longest))
    item = pod("p", "10.0.0.1", labels={"app": "a"})
    for i in range(changes):
        item = copy.deepcopy(item)
        item["status"]["podIP"] = item["status"]["podIPs"][0]["ip"] = f"10.0.0.{i % 250 + 1}"
        live.observe("Pod", "MODIFIED", item)
        await asyncio.sleep(every)
    await asyncio.sleep(debounce + longest + 0.2)
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    return len(passes)


def test_a_stream_of_changes_costs_a_pass_per_longest_wait() -> None:
    # 60 changes over >= 0.6 s, one per 10 ms: a pass per debounce would be about 12.
    passes = asyncio.run(_passes(60, 0.01, debounce=0.05, longest=0.25))
    assert 1 <= passes <= 5


def test_a_lone_change_is_reconciled_after_the_debounce() -> None:
    assert asyncio.run(_passes(1, 0.0, debounce=0.05, longest=0.25)) == 1


def test_a_replica_taking_over_rewrites_a_status_another_leader_replaced() -> None:
    """It led, wrote each Tunnel's status, stood by while another leader wrote a different
    one for `red`; its pass after taking over puts `red`'s right, writes `green`'s, whose
    object does not show it, and not `blue`'s, which still holds what it wrote."""
    objects = copy.deepcopy(OBJECTS)
    found, writer = reconciler(objects)
    asyncio.run(found.reconcile())
    for name in ("red", "blue"):
        written = {**named(objects, name), "status": writer.statuses[("default", name)]}
        found.observe("Tunnel", "MODIFIED", written)
    other = {**named(objects, "red"), "status": {"conditions": [], "podsSelected": 0}}
    found.observe("Tunnel", "MODIFIED", other)  # the other leader's write
    writer.statuses.clear()

    found.take_over()
    asyncio.run(found.reconcile())

    assert set(writer.statuses) == {("default", "red"), ("default", "green")}
    assert not found._changes
