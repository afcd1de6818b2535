"""The lab tests' harness: a running lab (``kipsec lab up``) and what tests ask of it.

The lab needs what the network-namespace tier needs (root, ``ip netns``) plus
``unshare`` and ``tcpdump``; without them the tests skip, or fail when every tier is
required (CI). Each lab gets a name and a CIDR of its own (``klt<pid>``,
10.215.0.0/16), so it never collides with a developer's own lab or a parallel run.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kipsec_lab import cli
from kipsec_lab.client import LabClient
from kipsec_lab.state import LabConfig, Paths
from kipsec_lab.status import condition
from support.requirements import unavailable

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "operator"
LAB_CIDR = "10.215.0.0/16"


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
        ready: dict[str, Any] = eventually(
            lambda: (
                (t := self.tunnel(namespace, name))
                and condition(t, "Ready").get("status") == "True"
                and t
            ),
            timeout,
            lambda: f"{self.tunnel(namespace, name).get('status')}\n{self.logs()}",
        )
        return ready

    def logs(self) -> str:
        parts = []
        for log in sorted(self.paths.pods.glob("*/*.log")):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
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


def start_lab(directory: Path, name: str, *, prometheus: bool = False) -> Lab:
    reason = lab_unavailable()
    if reason is not None:
        unavailable(reason)
    if prometheus and shutil.which("prometheus") is None:
        unavailable("the lab's --prometheus needs the Debian package prometheus")
    config = LabConfig(name=name, cidr=LAB_CIDR, nodes=2, prometheus=prometheus)
    paths = Paths(directory)
    cli.up(paths, config, timeout=60)
    return Lab(paths, config)
