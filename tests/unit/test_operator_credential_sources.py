"""Which credentials `kipsec-operator run` uses, its error when it has none, and that a
token file replaced under a running client is read again without waiting for a 401."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest
from kubernetes_asyncio.config import incluster_config

from kipsec_operator.kube import InCluster, Kubeconfig, default_credentials
from kipsec_operator.main import main

IN_A_POD = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def test_a_pod_uses_its_service_account_unless_a_kubeconfig_is_asked_for() -> None:
    assert isinstance(default_credentials(environ=IN_A_POD), InCluster)
    assert default_credentials(context="dev", environ=IN_A_POD) == Kubeconfig(None, "dev")
    assert default_credentials("/k", environ=IN_A_POD) == Kubeconfig("/k", None)
    assert default_credentials(environ={}) == Kubeconfig(None, None)


def test_without_a_kubeconfig_outside_a_pod_the_command_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(SystemExit) as exited:
        main(["run", "--standalone", "--context", "dev"])
    assert "no API server credentials" in str(exited.value.code)
    assert f"no kubeconfig file at {tmp_path / 'absent'}" in str(exited.value.code)


def test_an_unknown_context_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        "clusters: [{name: a, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: a, user: {token: t}}]\n"
        "contexts: [{name: a, context: {cluster: a, user: a}}]\n"
    )
    with pytest.raises(SystemExit) as exited:
        main(["run", "--standalone", "--kubeconfig", str(config), "--context", "nope"])
    assert "nope" in str(exited.value.code)


def test_an_in_cluster_token_replaced_by_the_kubelet_is_read_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The library re-reads the file once its copy is older than this (a minute).
    monkeypatch.setattr(incluster_config, "TOKEN_REFRESH_PERIOD", datetime.timedelta(0))
    (tmp_path / "ca.crt").write_text("not checked before a connection")
    (tmp_path / "token").write_text("token-1")

    async def main() -> tuple[str | None, str | None]:
        configuration = await InCluster(tmp_path, IN_A_POD).configuration()
        first = await configuration.get_api_key_with_prefix("BearerToken")
        (tmp_path / "token").write_text("token-2")
        return first, await configuration.get_api_key_with_prefix("BearerToken")

    assert asyncio.run(main()) == ("Bearer token-1", "Bearer token-2")


def test_a_kubeconfig_token_file_is_read_again_for_each_request(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("token-1")
    config = tmp_path / "config"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        "clusters: [{name: a, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        f"users: [{{name: a, user: {{tokenFile: '{tmp_path / 'token'}'}}}}]\n"
        "contexts: [{name: a, context: {cluster: a, user: a}}]\n"
    )

    async def main() -> tuple[str | None, str | None]:
        configuration = await Kubeconfig(str(config)).configuration()
        first = await configuration.get_api_key_with_prefix("BearerToken")
        (tmp_path / "token").write_text("token-2")
        return first, await configuration.get_api_key_with_prefix("BearerToken")

    assert asyncio.run(main()) == ("Bearer token-1", "Bearer token-2")
