"""Where a lab keeps its files, and the state the supervisor publishes for the CLI.

One directory per lab (default ``/var/lib/kipsec-lab``, ``--state-dir`` or
``KIPSEC_LAB_DIR``): ``config.json`` (name, CIDR, nodes), ``supervisor.pid``,
``supervisor.log``, ``operator.log``, ``api.sock`` (the API server for the CLI),
``tls/`` (lab CA and the operator's serving certificate), ``operator/`` (container mode:
the operator's TLS and ``/tmp`` volumes), ``prometheus/`` (with
``--prometheus``: its configuration, targets, data and log), ``samples.jsonl`` (SA
counts over time), ``site/`` (with ``--external-site``: the gateway's charon files and
``ca-configmap.yaml``), ``pods/<pod>/`` (volumes, container spec, sidecar log) and
``state.json``: the supervisor's phase and, per pod, its netns, address, node and
sidecar process, rewritten atomically on every change.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(os.environ.get("KIPSEC_LAB_DIR", "/var/lib/kipsec-lab"))


@dataclass(frozen=True)
class LabConfig:
    """What ``kipsec lab up`` was asked for."""

    name: str = "kipsec-lab"
    cidr: str = "10.213.0.0/16"
    nodes: int = 2
    prometheus: bool = False
    runtime: str = "auto"
    """``auto`` (podman when it holds the images, else host processes), ``podman``, ``host``."""
    external_site: bool = False
    """Also an external site: a strongSwan gateway and a host behind it (:mod:`.site`)."""


@dataclass
class PodState:
    namespace: str
    name: str
    node: str
    ip: str
    netns: str
    sidecar: str = "none"
    """``none`` (no sidecar), ``waiting`` (for its volumes), ``starting`` (until its
    startupProbe answers), ``running``, ``restarting``."""
    pid: int | None = None
    """The sidecar program's pid (in a container: its main process, seen from the host)."""
    restarts: int = 0
    image: str = ""
    """The image the sidecar runs, or ``host process`` (the fallback without podman)."""


@dataclass
class LabState:
    phase: str = "starting"
    """``starting``, ``ready``, ``failed``, ``stopping``, ``stopped``."""
    step: str = ""
    error: str = ""
    runtime: str = ""
    """How the lab runs the operator and the sidecars (podman and the images, or host
    processes and why)."""
    pods: list[PodState] = field(default_factory=list)


_FILES = {
    "config": "config.json",
    "pidfile": "supervisor.pid",
    "log": "supervisor.log",
    "operator_log": "operator.log",
    "api_socket": "api.sock",
    "tls": "tls",
    "prometheus": "prometheus",
    "samples": "samples.jsonl",
    "pods": "pods",
    "state": "state.json",
    "site": "site",
}


@dataclass(frozen=True)
class Paths:
    """The files of the lab whose state directory is ``root`` (see the module docstring)."""

    root: Path
    config: Path = field(init=False)
    pidfile: Path = field(init=False)
    log: Path = field(init=False)
    operator_log: Path = field(init=False)
    api_socket: Path = field(init=False)
    tls: Path = field(init=False)
    prometheus: Path = field(init=False)
    samples: Path = field(init=False)
    pods: Path = field(init=False)
    state: Path = field(init=False)
    site: Path = field(init=False)

    def __post_init__(self) -> None:
        for attribute, name in _FILES.items():
            object.__setattr__(self, attribute, self.root / name)

    def read_config(self) -> LabConfig:
        return LabConfig(**json.loads(self.config.read_text()))

    def write_config(self, config: LabConfig) -> None:
        _write_json(self.config, asdict(config))

    def read_state(self) -> LabState:
        try:
            raw: dict[str, Any] = json.loads(self.state.read_text())
        except (OSError, ValueError):
            return LabState(phase="absent")
        pods = [PodState(**pod) for pod in raw.pop("pods", [])]
        return LabState(**raw, pods=pods)

    def write_state(self, state: LabState) -> None:
        _write_json(self.state, asdict(state))

    def supervisor_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None


def _write_json(path: Path, data: object) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    temporary.replace(path)


__all__ = ["DEFAULT_DIR", "LabConfig", "LabState", "Paths", "PodState"]
