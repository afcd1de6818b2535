"""Issue 5's "end to end, once": the real operator against the emulated API, real
sidecars in network namespaces, a Tunnel applied as a user would — traffic flows
encrypted; the Tunnel deleted — the SAs go away; the lab down — nothing is left."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kipsec_lab import cli, host
from kipsec_lab.status import sidecar_view
from support.lab_harness import EXAMPLES, eventually, start_lab

pytestmark = pytest.mark.netns

MESH = EXAMPLES / "psk-mesh.yaml"
TUNNEL_ONLY = """
apiVersion: kipsec.io/v1alpha1
kind: Tunnel
metadata: {name: cache-mesh, namespace: demo}
spec: {}
"""


def test_psk_mesh_is_encrypted_end_to_end_and_cleaned_up(tmp_path: Path) -> None:
    lab = start_lab(tmp_path / "state", f"kle{os.getpid() % 100000}")
    started: list[int] = []
    try:
        lab.apply(MESH)
        tunnel = lab.ready_tunnel("demo", "cache-mesh")
        assert tunnel["status"]["pods"] == 3
        assert tunnel["status"]["childSasEstablished"] == tunnel["status"]["peersExpected"] == 6

        pods = lab.paths.read_state().pods
        started = [p.pid for p in pods if p.pid]
        views = {p.name: sidecar_view(lab.paths, p) for p in pods}
        assert {name: v.child_installed for name, v in views.items()} == {
            "cache-0": 2, "cache-1": 2, "cache-2": 2,
        }, views  # fmt: skip

        report = cli.traffic(lab.paths, "demo/cache-0", "demo/cache-1")
        assert report.tcp_echoed and report.pings_received == report.pings_sent == 20
        assert not report.summary.contains(report.marker), report.summary.describe()
        assert set(report.by_protocol) == {"ESP in UDP 4500"}, report.summary.describe()
        assert report.encrypted

        tunnel_file = tmp_path / "tunnel.yaml"
        tunnel_file.write_text(TUNNEL_ONLY)
        lab.delete(tunnel_file)

        def torn_down() -> bool:
            views = [sidecar_view(lab.paths, p) for p in lab.paths.read_state().pods]
            return all(not v.error and v.child_installed == 0 for v in views)

        eventually(torn_down, 30, lab.logs)
        for config in lab.paths.pods.glob("*/volumes/kipsec-config/config.yaml"):
            assert json.loads(config.read_text())["peers"] == []
    finally:
        cli.down(lab.paths, quiet=True)

    assert not [ns for ns in host.netns_list() if ns.startswith(f"{lab.config.name}-")]
    assert not [pid for pid in started if host.alive(pid)]
    assert not lab.paths.root.exists()
    assert str(lab.paths.root) not in Path("/proc/mounts").read_text()
