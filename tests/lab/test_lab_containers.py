"""The lab in container mode: the operator and every sidecar run from the images built
from this tree (images/build.sh), under exactly what the webhook injects and what the
chart's Deployment declares (issue 13).

* every sidecar runs from the sidecar image with only the capabilities the webhook added
  (read from the container's own /proc), the operator from its image;
* the operator cannot write its root filesystem, and still does its work;
* a sidecar whose injected spec lacks NET_ADMIN says so, its pod never becomes Ready, and
  nothing sent to it crosses the bridge in clear;
* an image built twice from the same tree holds the same Python distributions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from kipsec_lab import cli
from kipsec_lab.capture import CapturedPacket
from kipsec_lab.cli import LabError
from kipsec_lab.containers import LABEL, PODMAN, image_names
from kipsec_lab.status import condition
from kipsec_lab.topology import Names
from kipsec_lab.traffic import exchange
from support.lab_harness import EXAMPLES, ROOT, Lab, eventually, injected, lab_runtime

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(
        lab_runtime() == "host", reason="KIPSEC_LAB_RUNTIME=host: these are about container mode"
    ),
]

IMAGES = image_names()
NOCAP = """
apiVersion: v1
kind: Namespace
metadata: {name: nocap}
---
apiVersion: v1
kind: Secret
metadata: {name: psk, namespace: nocap}
stringData: {psk: 0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0}
---
apiVersion: kipsec.io/v1alpha1
kind: Tunnel
metadata: {name: nocap, namespace: nocap}
spec:
  selector: {from: {podSelector: {matchLabels: {app: nocap}}}}
  authentication: {psk: {secretRef: {name: psk, key: psk}}}
---
apiVersion: v1
kind: Pod
metadata: {name: good, namespace: nocap, labels: {app: nocap}}
spec:
  containers: [{name: app, image: busybox}]
"""


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args], capture_output=True, text=True, timeout=120, check=check
    )


def containers_of(lab: Lab) -> dict[str, str]:
    """The lab's running containers: name → image."""
    listed = podman(
        "ps", "--filter", f"label={LABEL}={lab.config.name}", "--format", "{{.Names}} {{.Image}}"
    ).stdout
    return dict(line.split() for line in listed.splitlines() if line.strip())


def test_the_operator_and_every_sidecar_run_from_the_images(lab: Lab) -> None:
    assert lab.paths.read_state().runtime.startswith("containers (podman)")
    lab.apply(EXAMPLES / "psk-mesh.yaml")
    try:
        lab.ready_tunnel("demo", "cache-mesh")
        pods = [p for p in lab.paths.read_state().pods if p.namespace == "demo"]
        assert {p.image for p in pods} == {IMAGES["sidecar"]}
        running = containers_of(lab)
        assert running[f"{lab.config.name}-operator"] == IMAGES["operator"]
        sidecars = [n for n, image in running.items() if image == IMAGES["sidecar"]]
        assert len(sidecars) >= 3
        for name in sidecars:
            # The sidecar's own view: uid 0, only NET_ADMIN (12) and NET_BIND_SERVICE (10).
            status = podman("exec", name, "cat", "/proc/1/status").stdout
            assert "\nCapEff:\t0000000000001400\n" in status, status
            assert "\nUid:\t0\t0\t0\t0\n" in status
            inspected = json.loads(podman("inspect", name).stdout)[0]
            assert inspected["HostConfig"]["ReadonlyRootfs"] is True
        report = cli.traffic(lab.paths, "demo/cache-0", "demo/cache-1")
        assert report.encrypted, report.explanation
    finally:
        lab.delete(EXAMPLES / "psk-mesh.yaml")


def test_the_operator_cannot_write_its_root_filesystem_and_still_works(lab: Lab) -> None:
    operator = f"{lab.config.name}-operator"
    inspected = json.loads(podman("inspect", operator).stdout)[0]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["Config"]["User"] == "65532:65532"
    for path in ("/probe", "/opt/kipsec/probe", "/etc/probe"):
        written = podman("exec", operator, "touch", path, check=False)
        assert written.returncode != 0 and "Read-only file system" in written.stderr, path
    assert podman("exec", operator, "touch", "/tmp/probe").returncode == 0  # the emptyDir
    assert podman("exec", operator, "id", "-u").stdout.strip() == "65532"
    # ... and it works: admission, per-pod Secrets and status need no writable root.
    lab.apply(EXAMPLES / "manual-keys.yaml")
    try:
        lab.ready_tunnel("legacy", "legacy-manual")
    finally:
        lab.delete(EXAMPLES / "manual-keys.yaml")


def unreachable_from(packet: CapturedPacket, source: str) -> bool:
    """An ICMP destination-unreachable error (type 3) sent by ``source``."""
    if packet.kind != "icmp" or packet.src != source:
        return False
    header = 14 + (packet.data[14] & 0x0F) * 4  # Ethernet, then the IPv4 header's length
    return packet.data[header] == 3


def without_net_admin(lab: Lab) -> dict[str, Any]:
    """A pod as the webhook injects it for the lab's operator (its real output), with
    NET_ADMIN taken out of the sidecar's capabilities: what a policy engine stripping
    capabilities, or a hand-edited manifest, would produce. The webhook leaves an
    injected pod alone; the operator still writes its configuration."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "broken", "namespace": "nocap", "labels": {"app": "nocap"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }
    tunnel = lab.tunnel("nocap", "nocap")
    patched = injected(pod, {"metadata": {"name": "nocap"}}, [tunnel], IMAGES, "nocap-broken")
    capabilities = patched["spec"]["initContainers"][0]["securityContext"]["capabilities"]
    capabilities["add"] = [c for c in capabilities["add"] if c != "NET_ADMIN"]
    assert capabilities["add"] == ["NET_BIND_SERVICE"]
    return patched


def test_a_sidecar_without_net_admin_says_so_and_its_pod_never_becomes_ready(
    lab: Lab, tmp_path: Path
) -> None:
    manifest = tmp_path / "nocap.yaml"
    manifest.write_text(NOCAP)
    broken = tmp_path / "broken.json"
    lab.apply(manifest)
    try:
        broken.write_text(json.dumps(without_net_admin(lab)))
        lab.apply(broken)

        def log_of_broken() -> str:
            return "".join(p.read_text() for p in lab.paths.pods.glob("nocap_broken_*/kipsec.log"))

        eventually(lambda: "CAP_NET_ADMIN" in log_of_broken(), 60, lab.logs)
        assert "securityContext.capabilities.add" in log_of_broken()
        path = "/api/v1/namespaces/nocap/pods/broken"
        # Restarted with a back-off, never started, never Ready (sampled for 10 s).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pod = lab.client.get(path)
            assert pod is not None
            assert condition(pod, "Ready").get("status") != "True", pod["status"]
            [state] = [p for p in lab.paths.read_state().pods if p.name == "broken"]
            assert state.sidecar != "running"
            time.sleep(0.5)
        eventually(
            lambda: next(p.restarts for p in lab.paths.read_state().pods if p.name == "broken") > 0,
            30,
        )
        assert condition(lab.tunnel("nocap", "nocap"), "Ready").get("status") != "True"
        # Its application never runs (it starts after the sidecar's startupProbe) ...
        with pytest.raises(LabError, match="startupProbe"):
            cli.traffic(lab.paths, "nocap/broken", "nocap/good")
        # ... and what its peer sends it does not cross the bridge in clear.
        lab.ready_pod_sidecar("nocap", "good")
        pods = {p.name: p for p in lab.paths.read_state().pods if p.namespace == "nocap"}
        report = exchange(
            Names(lab.config.name).control,
            (pods["good"].netns, pods["good"].ip),
            (pods["broken"].netns, pods["broken"].ip),
            tmp_path / "wire.pcap",
            pings=5,
            tcp_port=7777,
        )
        # On the wire: IKE from the peer, and the broken pod's kernel answering it with
        # ICMP port unreachable (nothing listens on UDP 500 there); no payload, no echo.
        assert not report.summary.contains(report.marker), report.summary.describe()
        broken_ip = pods["broken"].ip
        leaked = [p for p in report.summary.unexpected() if not unreachable_from(p, broken_ip)]
        assert not leaked, report.summary.describe()
        assert not report.arrived
    finally:
        lab.delete(manifest)


def distributions(image: str) -> set[str]:
    """``name==version`` of every Python distribution in ``image`` (names normalized)."""
    listing = (
        "import importlib.metadata as m, re; "
        "print('\\n'.join(re.sub(r'[-_.]+', '-', d.name).lower() + '==' + d.version "
        "for d in m.distributions()))"
    )
    argv = ["run", "--rm", "--network=none", "--ulimit=nofile=1024:1024"]
    argv += ["--ulimit=nproc=1000:1000", "--entrypoint=python3", image, "-c", listing]
    return set(podman(*argv).stdout.split())


def test_the_images_hold_exactly_the_pinned_distributions() -> None:
    """Each image: kipsec and pinned versions only (images/constraints.txt), no pip or
    setuptools; the operator's set holds the sidecar's."""
    pins = {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower() + "==" + line.split("==")[1]
        for line in (ROOT / "images" / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    found = {target: distributions(image) for target, image in IMAGES.items()}
    for target, names in found.items():
        assert "kipsec==0.1.0" in names, target
        assert names - {"kipsec==0.1.0"} <= {p for p in pins if not p.startswith("setuptools==")}, (
            target
        )
        assert not [n for n in names if n.startswith(("pip==", "setuptools=="))], target
    assert found["sidecar"] < found["operator"]
    assert not [n for n in found["sidecar"] if n.startswith(("kopf==", "aiohttp=="))]


@pytest.mark.slow
def test_an_image_built_twice_from_the_same_tree_has_the_same_python_distributions() -> None:
    """The sidecar image built again without any cached layer holds the same
    distributions, versions included (the operator's differ only by its extra, which
    :func:`test_the_images_hold_exactly_the_pinned_distributions` pins the same way)."""
    again = "twice"
    built = subprocess.run(
        [str(ROOT / "images" / "build.sh")],
        env={**os.environ, "TAG": again, "NO_CACHE": "1", "TARGETS": "sidecar"},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    try:
        rebuilt = distributions(f"localhost/kipsec-sidecar:{again}")
    finally:
        podman("rmi", f"localhost/kipsec-sidecar:{again}", check=False)
    assert rebuilt == distributions(IMAGES["sidecar"])
    assert any(n.startswith("cryptography==") for n in rebuilt)
