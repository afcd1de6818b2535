"""Where the operator's credentials come from, against an emulated API server that
checks bearer tokens (tests/support/authenticating_api.py), through the real client.

* In a pod: the kubelet replaces the projected ServiceAccount token while the operator
  runs; once the API server refuses the old one, the next write of the operator and
  kopf's next request both go out with the new file's token.
* From a laptop: `kipsec-operator run` (the command, a real process) with $KUBECONFIG
  and `--context` reaches the context's API server with the token the context's exec
  credential plugin prints, not the current-context's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import pytest
import yaml

from kipsec_operator.handlers import RESOURCES
from kipsec_operator.kube import Connection, InCluster, Kube, object_path
from kipsec_operator.reconcile.cluster import ObjectKey
from kipsec_operator.reconcile.status import SidecarReport
from support.authenticating_api import AuthenticatingEmulator, serve_authenticating
from support.operator_cluster import (
    Cluster,
    apply,
    eventually,
    new_operator,
    running,
    self_signed,
)
from support.operator_objects import b64, namespace, pod, psk_mesh_spec, psk_secret, secret, tunnel

pytestmark = [pytest.mark.operator, pytest.mark.asyncio]

ADMIN = "admin-token"
"""The test's own client's token (always accepted)."""
KOPF = "kopf/"
"""How kopf's requests start their User-Agent (the operator's own client's: "kipsec")."""


def write_token(directory: Path, token: str) -> None:
    """Replace the token file at once, as the kubelet's atomic writer does."""
    temporary = directory / ".token.new"
    temporary.write_text(token)
    temporary.replace(directory / "token")


def used(emulator: AuthenticatingEmulator, token: str, *, kopf: bool) -> bool:
    """Whether kopf (or else the operator's own client) sent `token` and it was accepted."""
    return any(
        seen == token and agent.startswith(KOPF) == kopf and (seen, agent) not in emulator.rejected
        for seen, agent in emulator.seen
    )


async def test_a_replaced_service_account_token_is_used_for_the_next_requests(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(tmp_path)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(cert.read_bytes())
    write_token(account, "token-1")
    async with serve_authenticating((cert, key)) as (emulator, url):
        emulator.tokens = {ADMIN, "token-1"}
        port = url.rsplit(":", 1)[1]
        environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
        reports: dict[ObjectKey, SidecarReport] = {}
        operator_dir = tmp_path / "operator"
        operator_dir.mkdir()
        operator = new_operator(InCluster(account, environ), reports, operator_dir)
        async with running(operator), Kube(Connection(url, ADMIN, str(cert))) as kube:
            cluster = Cluster(emulator, kube, operator, reports)
            await eventually(lambda: len(emulator.watched) >= len(RESOURCES))
            await cluster.apply(namespace("default"))
            await cluster.apply(psk_secret())
            await cluster.apply(pod("a", "10.0.0.1", labels={"app": "mesh"}))
            await cluster.apply(pod("b", "10.0.0.2", labels={"app": "mesh"}))
            await cluster.apply(tunnel("mesh", psk_mesh_spec()))
            await eventually(lambda: {"a", "b"} <= set(cluster.config_secrets()))
            assert used(emulator, "token-1", kopf=False) and used(emulator, "token-1", kopf=True)
            assert not emulator.rejected

            # The kubelet rotates the token; later the API server refuses the old one.
            write_token(account, "token-2")
            emulator.tokens = {ADMIN, "token-2"}
            await cluster.apply(pod("c", "10.0.0.3", labels={"app": "mesh"}))
            # kopf patches its finalizer onto a new Tunnel: a request of its own.
            await cluster.apply(tunnel("other", psk_mesh_spec(app="other")))

            await eventually(lambda: "c" in cluster.config_secrets())
            await eventually(lambda: used(emulator, "token-2", kopf=True))
            assert used(emulator, "token-2", kopf=False)
            own_refused = [1 for _, agent in emulator.rejected if not agent.startswith(KOPF)]
            assert len(own_refused) <= 4, "the operator's client retried with the old token"
            assert {token for token, _ in emulator.rejected} == {"token-1"}


async def test_the_command_runs_from_a_kubeconfig_context_with_an_exec_plugin(
    tmp_path: Path,
) -> None:
    plugin_output = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": "exec-token"},
    }
    async with serve_authenticating() as (emulator, url):
        emulator.tokens = {ADMIN, "exec-token"}
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "elsewhere",
                    "clusters": [
                        {"name": "emulated", "cluster": {"server": url}},
                        {"name": "closed", "cluster": {"server": "http://127.0.0.1:9"}},
                    ],
                    "users": [
                        {
                            "name": "developer",
                            "user": {
                                "exec": {
                                    "apiVersion": "client.authentication.k8s.io/v1beta1",
                                    "command": sys.executable,
                                    "args": ["-c", f"print({json.dumps(plugin_output)!r})"],
                                    "interactiveMode": "Never",
                                }
                            },
                        },
                        {"name": "nobody", "user": {"token": "wrong"}},
                    ],
                    "contexts": [
                        {"name": "lab", "context": {"cluster": "emulated", "user": "developer"}},
                        {"name": "elsewhere", "context": {"cluster": "closed", "user": "nobody"}},
                    ],
                }
            )
        )
        environ = {
            key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_")
        }
        environ["KUBECONFIG"] = str(kubeconfig)
        log = (tmp_path / "operator.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "kipsec-operator"),
            *("run", "--standalone", "--context", "lab", "--listen", "127.0.0.1:0"),
            env=environ,
            stdout=log,
            stderr=log,
        )
        try:
            await eventually(lambda: len(emulator.watched) >= len(RESOURCES), timeout=30)
            async with Kube(Connection(url, ADMIN)) as kube:
                for obj in (
                    namespace("default"),
                    psk_secret(),
                    pod("a", "10.0.0.1", labels={"app": "mesh"}),
                    pod("b", "10.0.0.2", labels={"app": "mesh"}),
                    tunnel("mesh", psk_mesh_spec()),
                ):
                    await apply(kube, obj)

                def written() -> bool:
                    listed = emulator.listing("v1/secrets", "default")
                    return len([s for s in listed if s["metadata"]["name"] != "mesh-psk"]) >= 2

                await eventually(written, timeout=15)
            assert used(emulator, "exec-token", kopf=True)
            assert used(emulator, "exec-token", kopf=False)
            assert not emulator.rejected
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)
            log.close()


async def test_secret_contents_stay_out_of_debug_logs(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    await cluster.apply(namespace("default"))
    await cluster.apply(secret("hidden", {"key": "secret-value"}))
    with caplog.at_level(logging.DEBUG):
        found = await cluster.kube.get(object_path("v1", "secrets", "default", "hidden"))
        # The library logs the bodies it reads itself (typed calls) at DEBUG: kept off.
        library = logging.getLogger("kubernetes_asyncio.client.rest")
        assert not library.isEnabledFor(logging.DEBUG)
    assert found is not None and found["data"]["key"] == b64("secret-value")
    assert b64("secret-value") not in caplog.text
