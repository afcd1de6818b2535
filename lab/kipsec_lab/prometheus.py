"""``kipsec lab up --prometheus``: Debian's ``prometheus`` scraping the lab.

Targets: the operator's ``/metrics`` (HTTPS, the lab CA) and every running sidecar's
``:9585/metrics``, listed in a file-based service discovery file that the supervisor
rewrites whenever the kubelet stand-in starts or removes a pod (Prometheus rereads it
every few seconds), labelled with ``namespace``, ``pod`` and ``node`` as the chart's
ServiceMonitor relabelling does. Prometheus listens on ``127.0.0.1:9090`` inside the
control namespace (``ip netns exec <name>-ctl curl -s localhost:9090/api/v1/…``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import yaml

from .state import PodState

LISTEN = "127.0.0.1:9090"
SCRAPE_INTERVAL = "5s"
SIDECAR_PORT = 9585


def config(operator: str, ca_file: Path, targets_file: Path) -> dict[str, object]:
    """The Prometheus configuration (``operator``: host:port of its HTTPS endpoints)."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": "kipsec-operator",
                "scheme": "https",
                "tls_config": {"ca_file": str(ca_file)},
                "static_configs": [{"targets": [operator]}],
            },
            {
                "job_name": "kipsec-sidecar",
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "5s"}],
            },
        ],
    }


def targets(pods: Iterable[PodState]) -> list[dict[str, object]]:
    """File-SD entries: one per pod whose sidecar runs."""
    return [
        {
            "targets": [f"{pod.ip}:{SIDECAR_PORT}"],
            "labels": {"namespace": pod.namespace, "pod": pod.name, "node": pod.node},
        }
        for pod in pods
        if pod.sidecar == "running"
    ]


def write_targets(path: Path, pods: Iterable[PodState]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(targets(pods), indent=2))
    temporary.replace(path)


def argv(config_file: Path, storage: Path) -> list[str]:
    return [
        "prometheus",
        f"--config.file={config_file}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address={LISTEN}",
        "--storage.tsdb.retention.time=1d",
    ]


def write_config(directory: Path, operator: str, ca_file: Path) -> tuple[Path, Path]:
    """Write ``prometheus.yml`` and an empty targets file; returns (config, targets)."""
    directory.mkdir(parents=True, exist_ok=True)
    targets_file = directory / "sidecars.json"
    write_targets(targets_file, [])
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config(operator, ca_file, targets_file)))
    return config_file, targets_file


__all__ = ["LISTEN", "argv", "config", "targets", "write_config", "write_targets"]
