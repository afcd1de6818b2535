"""The lab's one translation of a Kubernetes container into ``podman run`` flags,
checked against the webhook's real output (the injected sidecar) and the chart's
operator container: every field the issue names — command, args, env, volume mounts,
user, capabilities, read-only root filesystem, the TUN device — comes through, and what
cannot be run faithfully is refused with the field's name."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from kipsec_lab.containers import ContainerSpecError, image_names, podman_run
from kipsec_lab.supervisor import DEVICE_RESOURCES, OPERATOR_UID, operator_pod
from kipsec_lab.volumes import container_env
from support.lab_harness import injected

IMAGES = image_names("test")
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "cache-0", "namespace": "demo", "uid": "u-1", "labels": {"app": "c"}},
    "spec": {
        "nodeName": "lab-node-0",
        "containers": [{"name": "cache", "image": "redis:7.4"}],
    },
    "status": {"podIP": "10.0.1.2", "podIPs": [{"ip": "10.0.1.2"}]},
}
NAMESPACE = {"metadata": {"name": "demo", "labels": {}}}


def tunnel(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "t", "namespace": "demo"},
        "spec": {"selector": {"from": {"podSelector": {"matchLabels": {"app": "c"}}}}, **spec},
    }


def lab_injected(**spec: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod after the webhook's patch for the lab's operator, and its sidecar."""
    pod = injected(copy.deepcopy(POD), NAMESPACE, [tunnel(**spec)], IMAGES)
    return pod, pod["spec"]["initContainers"][0]


def run(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    volumes = {v["name"]: f"/lab/volumes/{v['name']}" for v in pod["spec"].get("volumes", [])}
    return podman_run(
        pod,
        container,
        name="lab-demo-cache-0-kipsec",
        netns="lab-pod-1",
        volume_dirs=volumes,
        device_resources=DEVICE_RESOURCES,
        hosts=[("kipsec-operator.kipsec-system.svc", "10.0.0.1")],
    )


def split(argv: list[str], image: str) -> tuple[list[str], list[str]]:
    """(flags before the image, the arguments after it)."""
    at = argv.index(image)
    return argv[:at], argv[at + 1 :]


def test_the_injected_sidecar_runs_with_exactly_its_spec() -> None:
    pod, container = lab_injected()
    flags, args = split(run(pod, container), IMAGES["sidecar"])
    assert container["image"] == IMAGES["sidecar"]
    assert args == container["args"] == ["run", "--config", "/etc/kipsec/config.yaml"]
    assert not [f for f in flags if f.startswith("--entrypoint")]  # no command: the image's
    assert "--network=ns:/run/netns/lab-pod-1" in flags
    assert "--pull=never" in flags and "--rm" in flags
    # user and capabilities: uid 0 with only what the webhook added
    assert "--user=0" in flags
    assert [f for f in flags if f.startswith("--cap-")] == [
        "--cap-drop=all",
        "--cap-add=NET_ADMIN",
        "--cap-add=NET_BIND_SERVICE",
    ]
    assert {"--read-only", "--read-only-tmpfs=false", "--security-opt=no-new-privileges"} <= set(
        flags
    )
    assert not [f for f in flags if "privileged" in f or "seccomp" in f]
    # the TUN device as the device plugin's resource in the limits
    assert container["resources"]["limits"]["kipsec.io/tun"] == "1"
    assert [f for f in flags if f.startswith("--device")] == ["--device=/dev/net/tun"]
    # every volume mount, at its path, read-only where the spec says
    mounts = [f for f in flags if f.startswith("--mount=")]
    assert len(mounts) == len(container["volumeMounts"])
    for mount, flag in zip(container["volumeMounts"], mounts, strict=True):
        assert f"source=/lab/volumes/{mount['name']}," in flag
        assert f"destination={mount['mountPath']}" in flag
        assert flag.endswith(",ro=true") == bool(mount.get("readOnly")), flag
    # every env variable, fieldRefs resolved from the pod
    env = [f.removeprefix("--env=") for f in flags if f.startswith("--env=")]
    assert env == [f"{k}={v}" for k, v in container_env(pod, container).items()]
    assert {e["name"] for e in container["env"]} == {e.split("=", 1)[0] for e in env}
    assert "KIPSEC_POD_IPS=10.0.1.2" in env and "KIPSEC_POD_NAME=cache-0" in env
    assert "--add-host=kipsec-operator.kipsec-system.svc:10.0.0.1" in flags


def test_raw_esp_adds_net_raw_and_the_hostpath_tun_device_is_a_device() -> None:
    raw = [tunnel(encapsulation="raw")]
    pod = injected(
        copy.deepcopy(POD), NAMESPACE, raw, IMAGES, environ={"KIPSEC_TUN_DEVICE": "hostPath"}
    )
    container = pod["spec"]["initContainers"][0]
    flags, _ = split(run(pod, container), IMAGES["sidecar"])
    assert "--cap-add=NET_RAW" in flags
    assert [f for f in flags if f.startswith("--device")] == ["--device=/dev/net/tun:/dev/net/tun"]
    assert not [f for f in flags if "destination=/dev/net/tun" in f]


def test_the_operator_runs_as_the_charts_deployment_says() -> None:
    pod, container = operator_pod(IMAGES["operator"], IMAGES["sidecar"])
    volumes = {"tls": "/lab/tls", "tmp": "/lab/tmp"}
    argv = podman_run(pod, container, name="op", netns="ctl", volume_dirs=volumes)
    flags, args = split(argv, IMAGES["operator"])
    assert args == container["args"] and args[0] == "run"
    assert f"--user={OPERATOR_UID}:{OPERATOR_UID}" in flags
    assert f"--group-add={OPERATOR_UID}" in flags
    assert [f for f in flags if f.startswith("--cap-")] == ["--cap-drop=all"]
    assert {"--read-only", "--read-only-tmpfs=false", "--security-opt=no-new-privileges"} <= set(
        flags
    )
    assert "--mount=type=bind,source=/lab/tls,destination=/etc/kipsec-operator/tls,ro=true" in flags
    assert "--env=KIPSEC_SIDECAR_IMAGE=localhost/kipsec-sidecar:test" in flags
    assert "--env=POD_NAMESPACE=kipsec-system" in flags


def test_a_command_replaces_the_entry_point() -> None:
    pod, container = lab_injected()
    container = {**container, "command": ["kipsec-sidecar", "--verbose"]}
    flags, _ = split(run(pod, container), IMAGES["sidecar"])
    assert '--entrypoint=["kipsec-sidecar", "--verbose"]' in flags


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"securityContext": {"runAsNonRoot": True, "runAsUser": 0}}, "runAsUser"),
        ({"securityContext": {"seccompProfile": {"type": "Localhost"}}}, "seccompProfile"),
        ({"volumeMounts": [{"name": "nowhere", "mountPath": "/x"}]}, "volumeMounts[0]"),
        ({"image": ""}, "image"),
    ],
)
def test_what_cannot_be_run_faithfully_is_refused_with_its_field(
    change: dict[str, Any], field: str
) -> None:
    pod, container = lab_injected()
    with pytest.raises(ContainerSpecError, match=re.escape(field)):
        run(pod, {**container, **change})
