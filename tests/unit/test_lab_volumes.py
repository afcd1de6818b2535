"""Pod volumes in the kubelet's atomic-writer layout, and env fieldRefs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kipsec_lab.kubelet import host_path, native_sidecars
from kipsec_lab.volumes import (
    DATA_LINK,
    FieldRefError,
    container_env,
    field_ref,
    read_payload,
    secret_files,
    write_atomic,
)

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
    "spec": {"nodeName": "lab-node-0", "serviceAccountName": "sa"},
    "status": {"podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.2"}, {"ip": "fd00::2"}]},
}


def test_keys_are_links_through_the_data_link(tmp_path: Path) -> None:
    write_atomic(tmp_path, {"config.yaml": b"a"})
    assert os.readlink(tmp_path / "config.yaml") == f"{DATA_LINK}/config.yaml"
    assert os.readlink(tmp_path / DATA_LINK).startswith("..")
    assert (tmp_path / "config.yaml").read_bytes() == b"a"


def test_an_update_swaps_the_data_link_and_removes_the_old_payload(tmp_path: Path) -> None:
    write_atomic(tmp_path, {"config.yaml": b"a", "psk": b"k"})
    before = os.readlink(tmp_path / DATA_LINK)
    assert write_atomic(tmp_path, {"config.yaml": b"b"})
    assert os.readlink(tmp_path / DATA_LINK) != before
    assert not (tmp_path / before).exists()
    assert read_payload(tmp_path) == {"config.yaml": b"b"}
    assert not (tmp_path / "psk").is_symlink()


def test_an_unchanged_payload_is_not_rewritten(tmp_path: Path) -> None:
    write_atomic(tmp_path, {"k": b"v"})
    before = os.readlink(tmp_path / DATA_LINK)
    assert not write_atomic(tmp_path, {"k": b"v"})
    assert os.readlink(tmp_path / DATA_LINK) == before


def test_files_get_the_volume_mode(tmp_path: Path) -> None:
    write_atomic(tmp_path, {"k": b"v"}, 0o400)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o400


def test_secret_data_is_decoded() -> None:
    assert secret_files({"data": {"psk": "cHNr"}}) == {"psk": b"psk"}
    assert secret_files(None) == {}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "p"),
        ("metadata.namespace", "ns"),
        ("metadata.uid", "u-1"),
        ("metadata.labels['app']", "x"),
        ("spec.nodeName", "lab-node-0"),
        ("spec.serviceAccountName", "sa"),
        ("status.podIP", "10.0.0.2"),
        ("status.podIPs", "10.0.0.2,fd00::2"),
    ],
)
def test_field_refs_resolve_as_the_kubelet_does(path: str, value: str) -> None:
    assert field_ref(POD, path) == value


def test_env_mixes_values_and_field_refs() -> None:
    container = {
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
        ]
    }
    assert container_env(POD, container) == {"A": "1", "B": "10.0.0.2,fd00::2"}


def test_an_unsupported_field_ref_names_the_variable() -> None:
    container = {"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}]}
    with pytest.raises(FieldRefError, match=r"env X: .*spec\.nope"):
        container_env(POD, container)


def test_an_unsupported_env_source_names_the_variable() -> None:
    container = {"env": [{"name": "Y", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}
    with pytest.raises(FieldRefError, match="env Y"):
        container_env(POD, container)


def test_a_container_path_maps_to_the_deepest_mount() -> None:
    mounts = [
        {"source": "/lab/run", "target": "/run/kipsec"},
        {"source": "/lab/id", "target": "/var/run/kipsec/identity"},
        {"source": "/lab/cfg", "target": "/etc/kipsec"},
    ]
    assert host_path(mounts, "/run/kipsec/control.sock") == Path("/lab/run/control.sock")
    assert host_path(mounts, "/etc/kipsec") == Path("/lab/cfg")
    assert host_path(mounts, "/etc/kipsecx/a") is None


def test_only_init_containers_that_always_restart_are_native_sidecars() -> None:
    pod = {
        "spec": {
            "initContainers": [
                {"name": "kipsec", "restartPolicy": "Always"},
                {"name": "migrate"},
            ],
            "containers": [{"name": "app"}],
        }
    }
    assert [c["name"] for c in native_sidecars(pod)] == ["kipsec"]
