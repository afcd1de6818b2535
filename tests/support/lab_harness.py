"""The lab tests' harness: a running lab (``kipsec lab up``) and what tests ask of it.

The lab needs what the network-namespace tier needs (root, ``ip netns``) plus
``unshare`` and ``tcpdump``; without them the tests skip, or fail when every tier is
required (CI). Each lab gets a name and a CIDR of its own (``klt<pid>``,
10.215.0.0/16), so it never collides with a developer's own lab or a parallel run.

The operator and the sidecars run from the images (:func:`build_images`, once per test
session, then ``--runtime podman``); ``KIPSEC_LAB_RUNTIME=host`` runs them as host
processes instead. Where podman is missing the lab falls back to host processes, except
when every tier is required (CI): then the container mode must run.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jsonpatch

from kipsec_lab import cli, site
from kipsec_lab.client import LabClient
from kipsec_lab.state import LabConfig, Paths
from kipsec_lab.status import condition
from kipsec_lab.supervisor import operator_pod
from kipsec_operator.webhook.environment import injection_settings
from kipsec_operator.webhook.injection import mutate
from support.requirements import required, unavailable
from support.strongswan import is_available as strongswan_unavailable

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "operator"
LAB_CIDR = "10.215.0.0/16"
RUNTIME_ENV = "KIPSEC_LAB_RUNTIME"
BUILD_TIMEOUT = 1800.0
"""A cold build here: mmdebstrap (about 3 min on a loaded machine), the wheelhouse, both
images."""


def injected(
    pod: dict[str, Any],
    namespace: dict[str, Any],
    tunnels: list[dict[str, Any]],
    images: dict[str, str],
    config_id: str = "lab-test",
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``pod`` as the webhook (its real output) injects it for the lab's operator: the
    settings come from the environment the lab gives the operator, as the chart's
    (``environ`` overrides variables of it)."""
    _, operator = operator_pod(images["operator"], images["sidecar"])
    variables = {e["name"]: e["value"] for e in operator["env"] if "value" in e}
    settings = injection_settings({**variables, **(environ or {})})
    ops = mutate(pod, namespace, tunnels, settings, config_id=config_id)
    patched: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(pod), cast(Any, ops))
    return patched


def lab_runtime() -> str:
    """The runtime the lab tests ask for: host when ``KIPSEC_LAB_RUNTIME=host``, else
    podman (required in CI, where podman is installed; elsewhere auto)."""
    if os.environ.get(RUNTIME_ENV) == "host":
        return "host"
    return "podman" if required() else "auto"


def build_images() -> str | None:
    """``images/build.sh`` (cached: seconds when nothing changed); None when it ran, else
    why the images are not there (podman missing, or the build failed with its output)."""
    if shutil.which("podman") is None or shutil.which("mmdebstrap") is None:
        return "podman or mmdebstrap is not installed (apt-get install podman runc mmdebstrap)"
    done = subprocess.run(
        [str(ROOT / "images" / "build.sh")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        return f"images/build.sh failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return None


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces, mounts); CI runs them as root"
    for tool in ("ip", "unshare", "tcpdump", "mount"):
        if shutil.which(tool) is None:
            return f"lab tests need {tool!r}"
    return None


@dataclass
class Lab:
    """A running lab and the calls the tests make on it."""

    paths: Paths
    config: LabConfig

    @property
    def client(self) -> LabClient:
        return LabClient(self.paths.api_socket)

    def apply(self, path: Path) -> None:
        cli.apply(self.paths, [path])

    def delete(self, path: Path) -> None:
        cli.apply(self.paths, [path], delete=True)

    def tunnel(self, namespace: str, name: str) -> dict[str, Any]:
        found = self.client.get(f"/apis/kipsec.io/v1alpha1/namespaces/{namespace}/tunnels/{name}")
        assert found is not None, f"Tunnel {namespace}/{name} not found"
        return found

    def ready_tunnel(self, namespace: str, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """The Tunnel once its Ready condition is True (fails after `timeout` seconds,
        showing its status and the sidecars' logs)."""
        return self._ready(lambda: self.tunnel(namespace, name), timeout)

    def _ready(self, get: Callable[[], dict[str, Any]], timeout: float) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            found = get()
            return found if condition(found, "Ready").get("status") == "True" else None

        answer: dict[str, Any] = eventually(
            ready,
            timeout,
            lambda: f"{get().get('status')}\n{self.logs()}",
        )
        return answer

    def external_peer(self, namespace: str, name: str) -> dict[str, Any]:
        found = self.client.get(
            f"/apis/kipsec.io/v1alpha1/namespaces/{namespace}/externalpeers/{name}"
        )
        assert found is not None, f"ExternalPeer {namespace}/{name} not found"
        return found

    def ready_external_peer(
        self, namespace: str, name: str, timeout: float = 60.0
    ) -> dict[str, Any]:
        """The ExternalPeer once Ready (every pod of its Tunnels has a child SA with it)."""
        return self._ready(lambda: self.external_peer(namespace, name), timeout)

    def ready_pod_sidecar(self, namespace: str, name: str, timeout: float = 60.0) -> None:
        """Until the pod's sidecar has started (its startupProbe answered)."""
        eventually(
            lambda: [
                p
                for p in self.paths.read_state().pods
                if (p.namespace, p.name) == (namespace, name) and p.sidecar == "running"
            ],
            timeout,
            self.logs,
        )

    def logs(self) -> str:
        parts = []
        for log in sorted(self.paths.pods.glob("*/*.log")):
            lines = log.read_text(errors="replace").splitlines()
            tail = "\n".join([line for line in lines if "control request" not in line][-40:])
            parts.append(f"--- {log.parent.name}/{log.name}\n{tail}")
        return "\n".join(parts)


def eventually(
    probe: Callable[[], Any], timeout: float, explain: Callable[[], str] = lambda: ""
) -> Any:
    """The first truthy value of `probe()`, polled every 0.5 s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s\n{explain()}")
        time.sleep(0.5)


def start_lab(
    directory: Path,
    name: str,
    *,
    prometheus: bool = False,
    runtime: str | None = None,
    external_site: bool = False,
) -> Lab:
    reason = lab_unavailable()
    if reason is not None:
        unavailable(reason)
    if prometheus and shutil.which("prometheus") is None:
        unavailable("the lab's --prometheus needs the Debian package prometheus")
    if external_site and (reason := site.unavailable() or strongswan_unavailable()):
        unavailable(f"the lab's --external-site: {reason}")
    config = LabConfig(
        name=name,
        cidr=LAB_CIDR,
        nodes=2,
        prometheus=prometheus,
        runtime=runtime or lab_runtime(),
        external_site=external_site,
    )
    paths = Paths(directory)
    cli.up(paths, config, timeout=60)
    return Lab(paths, config)
