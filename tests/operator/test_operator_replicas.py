"""Every replica answers from the API server: a standby's endpoints agree with the leader.

The chart runs two replicas behind one Service; kopf peering pauses the standby, whose
watch index then goes stale. The `standby` fixture is that replica at its most stale:
a second :class:`~kipsec_operator.handlers.Operator` whose kopf never ran (its index is
empty), serving the same HTTPS application beside the running one (`cluster`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from kipsec_lab.apiserver import serve as serve_api
from kipsec_operator.ca_store import CaStore
from kipsec_operator.certificates.rotation import CaRotationPolicy
from kipsec_operator.handlers import Operator
from kipsec_operator.kube import Connection, Credentials, Kube
from kipsec_operator.server import serve
from support.operator_cluster import (
    Cluster,
    bound_token,
    document,
    eventually,
    new_operator,
    psk_mesh,
    running,
)
from support.operator_objects import (
    admission_review,
    namespace,
    new_pod,
    pod,
    psk_mesh_spec,
    tunnel,
)

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]

TOKEN = "a-token"
"""Pod a's ServiceAccount token, as the emulator's TokenReview answers it (bound_token)."""


async def replica(connection: Credentials, tmp_path: Path) -> AsyncIterator[str]:
    """Serve the endpoints of an operator whose kopf does not run; yields their URL."""
    standby = Operator(connection)
    async with standby.kube:
        cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"  # the cluster fixture's
        runner = await serve(standby, "127.0.0.1", 0, str(cert), str(key))
        try:
            assert not any(standby.reconciler.objects.values())
            yield f"https://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()


@pytest_asyncio.fixture
async def standby(cluster: Cluster, tmp_path: Path) -> AsyncIterator[str]:
    """URL of a replica with an empty index, reading the same API server."""
    async for url in replica(cluster.kube.connection, tmp_path):
        yield url


@pytest_asyncio.fixture
async def cut_off(cluster: Cluster, tmp_path: Path) -> AsyncIterator[str]:
    """URL of a replica whose API server does not answer (a closed local port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async for url in replica(Connection(f"http://127.0.0.1:{port}"), tmp_path):
        yield url


async def mutate(url: str, context: ssl.SSLContext, app: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/mutate-pods", json=admission_review(new_pod(app), uid="7a2e"), ssl=context
        ) as answer,
    ):
        assert answer.status == 200
        response: dict[str, Any] = (await answer.json())["response"]
        return response


async def get_config(
    url: str, context: ssl.SSLContext, etag: str | None = None, wait: float = 0
) -> tuple[int, str | None, dict[str, Any] | None]:
    """(status, ETag, JSON body) of `GET /v1/config?wait=` with pod a's token."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if etag is not None:
        headers["If-None-Match"] = etag
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{url}/v1/config", params={"wait": str(wait)}, headers=headers, ssl=context
        ) as answer,
    ):
        body = await answer.json() if answer.status != 304 else None
        return answer.status, answer.headers.get("ETag"), body


async def test_a_standby_injects_a_pod_a_tunnel_in_the_api_selects(
    cluster: Cluster, standby: str
) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(tunnel("mesh", psk_mesh_spec()))

    response = await mutate(standby, cluster.client_ssl, "mesh")

    assert response["allowed"] is True
    ops = json.loads(base64.b64decode(response["patch"]))
    assert any(op["path"].startswith("/spec/initContainers") for op in ops)


async def test_a_standby_serves_the_configuration_the_api_holds_with_the_leaders_etag(
    cluster: Cluster, standby: str
) -> None:
    await psk_mesh(cluster)
    bound_token(cluster, TOKEN, "a", "uid-default-a")
    await cluster.apply(pod("c", "10.0.0.3", labels={"app": "mesh"}))
    secret = await eventually(
        lambda: (
            (s := cluster.config_secrets().get("a"))
            and b"10.0.0.3" in base64.b64decode(s["data"].get("config.yaml", ""))
            and s
        )
    )

    status, etag, body = await get_config(standby, cluster.client_ssl)
    leader = await get_config(cluster.endpoint, cluster.client_ssl)

    assert status == 200 and body == {"files": secret["data"]}
    assert leader == (status, etag, body)
    assert (await get_config(standby, cluster.client_ssl, etag))[0] == 304


async def test_a_replica_that_cannot_read_the_api_refuses_the_pod_rather_than_skip_the_sidecar(
    cluster: Cluster, cut_off: str
) -> None:
    response = await mutate(cut_off, cluster.client_ssl, "mesh")

    assert response["allowed"] is False
    assert response["status"]["code"] == 503
    assert "cannot read Tunnels" in response["status"]["message"]


async def test_a_replica_that_cannot_read_the_api_tells_the_sidecar_to_retry(
    cluster: Cluster, cut_off: str
) -> None:
    status, _, body = await get_config(cut_off, cluster.client_ssl)

    assert status == 503
    assert body is not None and (body["code"], body["retryable"]) == ("api-unavailable", True)


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/identity"), ("POST", "/v1/csr")])
async def test_a_replica_that_cannot_read_the_api_tells_the_enrolling_sidecar_to_retry(
    cluster: Cluster, cut_off: str, method: str, path: str
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    csr = {"csr": "-----BEGIN CERTIFICATE REQUEST-----\n"}  # never read: the review fails
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, f"{cut_off}{path}", headers=headers, json=csr, ssl=cluster.client_ssl
        ) as answer,
    ):
        status, body = answer.status, await answer.json()

    assert status == 503
    assert (body["code"], body["retryable"]) == ("api-unavailable", True)
    assert TOKEN not in json.dumps(body)


async def test_a_standby_signs_with_the_ca_the_leader_rotated_to(cluster: Cluster) -> None:
    policy = CaRotationPolicy()
    later = datetime.now(UTC) + policy.ca_duration - policy.renew_before + timedelta(days=1)
    leader = CaStore(cluster.kube, "kipsec-system", clock=lambda: later)
    standby = CaStore(cluster.kube, "kipsec-system")
    _, loaded_bundle = await standby.signing()  # creates the CA Secret, valid from now

    await leader.rotate()  # prepares the next CA: the bundle gains it
    _, rotated_bundle = await leader.signing()

    assert rotated_bundle != loaded_bundle
    assert (await standby.current())[1] == rotated_bundle


async def test_a_replica_shutting_down_answers_held_config_requests_at_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    await psk_mesh(cluster)
    bound_token(cluster, TOKEN, "a", "uid-default-a")
    await eventually(
        lambda: "config.yaml" in (cluster.config_secrets().get("a") or {}).get("data", {})
    )
    standby = Operator(cluster.kube.connection)
    async with standby.kube:
        runner = await serve(
            standby, "127.0.0.1", 0, str(tmp_path / "tls.crt"), str(tmp_path / "tls.key")
        )
        url = f"https://127.0.0.1:{runner.addresses[0][1]}"

        async def current() -> str | None:
            status, tag, _ = await get_config(url, cluster.client_ssl)
            return tag if status == 200 else None

        tag = await eventually(current)

        async def holding() -> bool:  # the replica's mirror has listed: it holds
            began = time.monotonic()
            await get_config(url, cluster.client_ssl, tag, wait=0.3)
            return time.monotonic() - began >= 0.25

        await eventually(holding)
        held = asyncio.ensure_future(get_config(url, cluster.client_ssl, tag, wait=20))
        await asyncio.sleep(1.0)
        assert not held.done()  # held: nothing changed
        began = time.monotonic()
        await runner.cleanup()
        status, _, _ = await asyncio.wait_for(held, 10)

    assert time.monotonic() - began < 10
    assert status == 304


PEERING = {
    "apiVersion": "kopf.dev/v1",
    "kind": "ClusterKopfPeering",
    "metadata": {"name": "kipsec"},
}


def recorded_writes(kube: Kube) -> list[str]:
    """Every write `kube` makes from now on (method and path), as a list that grows."""
    writes: list[str] = []
    for method in ("create", "merge_patch", "delete"):
        real = getattr(kube, method)

        async def record(path: str, *args: Any, _real: Any = real, _method: str = method) -> Any:
            writes.append(f"{_method} {path}")
            return await _real(path, *args)

        setattr(kube, method, record)
    return writes


def peers_of(cluster: Cluster, name: str) -> list[str]:
    """The peer addresses in pod `name`'s document."""
    secret = cluster.config_secrets().get(name)
    if not secret or "config.yaml" not in secret["data"]:
        return []
    return sorted(str(p.get("address")) for p in document(secret).get("peers") or [])


async def test_a_standby_keeps_its_index_writes_nothing_and_takes_over_whole(
    tmp_path: Path,
) -> None:
    """Two replicas under kopf peering: the standby's own watches keep its index current
    while kopf pauses it, it makes no write (no pass, no Secret, status or Event), and
    when the leader goes it reconciles what changed meanwhile."""
    async with serve_api() as (emulator, url), Kube(Connection(url)) as kube:
        await kube.create("/apis/kopf.dev/v1/clusterkopfpeerings", PEERING)
        (tmp_path / "leader").mkdir()
        (tmp_path / "standby").mkdir()
        leader = new_operator(Connection(url), {}, tmp_path / "leader")
        standby = new_operator(Connection(url), {}, tmp_path / "standby")
        cluster = Cluster(emulator, kube, leader)
        async with AsyncExitStack() as standing:
            async with AsyncExitStack() as leading:
                await leading.enter_async_context(running(leader, priority=200))
                await eventually(lambda: leader.leadership.active, timeout=20)
                await standing.enter_async_context(running(standby, priority=100))
                writes = recorded_writes(standby.kube)
                await psk_mesh(cluster)
                await eventually(lambda: peers_of(cluster, "a") == ["10.0.0.2"])
                await eventually(lambda: ("default", "b") in standby.reconciler.objects["Pod"])
                await cluster.apply(pod("c", "10.0.0.3", labels={"app": "mesh"}))
                await eventually(lambda: peers_of(cluster, "a") == ["10.0.0.2", "10.0.0.3"])
                await eventually(lambda: ("default", "c") in standby.reconciler.objects["Pod"])
                await asyncio.sleep(0.5)  # a standby's pass would have written by now
                assert not standby.leadership.active
                assert writes == []
                await eventually(lambda: not standby.reconciler._changes)  # not piling up
            # the leader is gone; the standby sees what changes meanwhile and takes over
            await cluster.delete("Pod", "default", "b")
            await eventually(lambda: standby.leadership.active, timeout=30)
            await eventually(lambda: peers_of(cluster, "a") == ["10.0.0.3"])
            assert any("/secrets/" in write for write in writes)
