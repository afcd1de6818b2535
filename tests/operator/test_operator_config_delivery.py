"""`GET /v1/config`: the real operator serves a pod its own Secret, the real sidecar fetches it.

The sidecar's :func:`~kipsec_sidecar.daemon.delivery.fetch` asks the operator's HTTPS
endpoint with a pod-bound token (answered by the emulator's TokenReview) and verifies
the operator with the `operator-ca.crt` the operator put into the pod's own Secret.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kipsec_operator.reconcile.render import OPERATOR_CA_KEY
from kipsec_operator.server import KubeCsrBackend
from kipsec_sidecar.daemon.delivery import DeliveryError, DeliverySettings, fetch
from support.operator_cluster import Cluster, bound_token, eventually, psk_mesh, self_signed
from support.operator_objects import namespace, pod, psk_mesh_spec, psk_secret, tunnel

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]


async def mesh(cluster: Cluster) -> dict[str, Any]:
    """Pods a and b in a PSK mesh; a's configured Secret."""
    await psk_mesh(cluster)
    bound_token(cluster, "a-token", "a", "uid-default-a")
    secret: dict[str, Any] = await eventually(
        lambda: (s := cluster.config_secrets().get("a")) and "config.yaml" in s["data"] and s
    )
    return secret


def settings(cluster: Cluster, tmp_path: Path, secret: dict[str, Any]) -> DeliverySettings:
    """The sidecar's settings, trusting the operator-ca.crt from the pod's own Secret."""
    mounted = tmp_path / "etc"
    mounted.mkdir(exist_ok=True)
    ca = mounted / OPERATOR_CA_KEY
    ca.write_bytes(base64.b64decode(secret["data"][OPERATOR_CA_KEY]))
    return DeliverySettings(
        operator_url=cluster.endpoint,
        token_file=str(tmp_path / "token"),
        directory=str(tmp_path / "run"),
        mounted=str(mounted / "config.yaml"),
    )


async def test_every_pod_secret_holds_the_operators_serving_ca_from_the_bootstrap_on(
    cluster: Cluster, tmp_path: Path
) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(psk_secret())
    await cluster.apply(pod("b", None, labels={"app": "mesh"}))
    await cluster.apply(tunnel("mesh", psk_mesh_spec()))

    bootstrap = await eventually(lambda: cluster.config_secrets().get("b"))

    serving = (tmp_path / "tls.crt").read_bytes()  # the cluster fixture's self-signed cert
    assert base64.b64decode(bootstrap["data"][OPERATOR_CA_KEY]) == serving
    assert "config.yaml" not in bootstrap["data"]


async def test_a_pod_gets_exactly_its_secrets_data_and_then_304(
    cluster: Cluster, tmp_path: Path
) -> None:
    secret = await mesh(cluster)
    wanted = settings(cluster, tmp_path, secret)

    answer = await _fetch(wanted, "a-token", None)

    assert answer is not None
    assert answer.files == {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert await _fetch(wanted, "a-token", answer.etag) is None


async def test_a_changed_secret_gets_a_new_etag(cluster: Cluster, tmp_path: Path) -> None:
    secret = await mesh(cluster)
    wanted = settings(cluster, tmp_path, secret)
    first = await _fetch(wanted, "a-token", None)
    assert first is not None

    await cluster.apply(pod("c", "10.0.0.3", labels={"app": "mesh"}))

    async def changed() -> Any:
        answer = await _fetch(wanted, "a-token", first.etag)
        return answer if answer is not None and b"10.0.0.3" in answer.files["config.yaml"] else None

    second = await eventually(changed)
    assert second.etag != first.etag


async def test_a_held_request_is_answered_as_soon_as_the_secret_changes(
    cluster: Cluster, tmp_path: Path
) -> None:
    secret = await mesh(cluster)
    held = replace(settings(cluster, tmp_path, secret), hold=20.0)
    first = await _fetch(held, "a-token", None)
    assert first is not None
    await _settled(held, first.etag)

    asked = time.monotonic()
    waiting = asyncio.ensure_future(_fetch(held, "a-token", first.etag))
    await asyncio.sleep(1.0)
    assert not waiting.done()  # held: nothing changed yet
    await cluster.apply(pod("c", "10.0.0.3", labels={"app": "mesh"}))
    answer = await asyncio.wait_for(waiting, 15.0)

    assert answer is not None and b"10.0.0.3" in answer.files["config.yaml"]
    assert time.monotonic() - asked < 15.0


async def test_a_held_request_ends_in_304_when_nothing_changes_and_costs_no_secret_read(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = await mesh(cluster)
    wanted = settings(cluster, tmp_path, secret)
    first = await _fetch(wanted, "a-token", None)
    assert first is not None
    await _settled(wanted, first.etag)
    reads: list[str] = []
    original = KubeCsrBackend.get_secret

    async def counted(self: KubeCsrBackend, namespace: str, name: str) -> Any:
        reads.append(name)
        return await original(self, namespace, name)

    monkeypatch.setattr(KubeCsrBackend, "get_secret", counted)

    asked = time.monotonic()
    assert await _fetch(replace(wanted, hold=1.5), "a-token", first.etag) is None
    held = time.monotonic() - asked
    for _ in range(3):
        assert await _fetch(wanted, "a-token", first.etag, hold=0.0) is None

    assert held >= 1.4
    assert reads == []  # the replica's Secret mirror answered, not the API server


async def test_a_token_bound_to_a_recreated_pod_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    secret = await mesh(cluster)
    bound_token(cluster, "old-token", "a", "uid-of-a-deleted-namesake")

    with pytest.raises(DeliveryError) as refused:
        await _fetch(settings(cluster, tmp_path, secret), "old-token", None)

    assert refused.value.code == "pod-mismatch"


async def test_an_unknown_token_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    secret = await mesh(cluster)

    with pytest.raises(DeliveryError) as refused:
        await _fetch(settings(cluster, tmp_path, secret), "forged", None)

    assert refused.value.code == "unauthenticated"


async def test_an_operator_the_pods_ca_does_not_name_is_not_asked(
    cluster: Cluster, tmp_path: Path
) -> None:
    secret = await mesh(cluster)
    other = tmp_path / "other"
    other.mkdir()
    untrusted = replace(
        settings(cluster, tmp_path, secret), operator_ca_file=str(self_signed(other)[0])
    )

    with pytest.raises(DeliveryError) as refused:
        await _fetch(untrusted, "a-token", None)

    assert refused.value.code == "unreachable"
    assert "CERTIFICATE_VERIFY_FAILED" in refused.value.reason


async def _settled(settings: DeliverySettings, etag: str | None) -> None:
    """Until pod a's configuration is ``etag`` without a hold (the operator is done
    writing it)."""

    async def unchanged() -> bool:
        return await _fetch(settings, "a-token", etag, hold=0.0) is None

    await eventually(unchanged)


async def _fetch(
    settings: DeliverySettings, token: str, etag: str | None, *, hold: float | None = None
) -> Any:
    """The sidecar's blocking fetch, off the event loop the operator's server shares
    (``hold``: another hold than the settings')."""
    if hold is not None:
        settings = replace(settings, hold=hold)
    return await asyncio.to_thread(fetch, settings, token, etag)
