"""The datapath choice on this machine's kernel, which has XFRM but no ESP SA type.

``datapath: auto`` must fall back to the userspace datapath and say why (the capability
probe's reason) in ``sas --json`` and on ``/metrics``; ``datapath: kernel`` must refuse
to start with that reason, before binding anything. The kernel datapath itself is tested
inside a VM (``tests/vm``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kipsec_sidecar.datapath.probe import probe_kernel_esp
from support.netns import Topology
from support.sidecars import SIDECAR, Sidecar, peer_entry

pytestmark = pytest.mark.netns

METRICS = "127.0.0.1:9585"


@pytest.fixture
def pods(topology: Topology) -> Topology:
    if probe_kernel_esp().kernel:
        pytest.skip("this kernel has ESP SAs: the fallback cannot be observed here")
    topology.add_node("a")
    topology.add_node("b")
    topology.add_pod("pa", "a")
    topology.add_pod("pb", "b")
    topology.ip("pa", "link set lo up")
    return topology


def test_auto_falls_back_to_userspace_and_reports_the_probe_reason(
    pods: Topology, tmp_path: Path
) -> None:
    a = Sidecar(pods, "pa", tmp_path)
    a.write(
        [peer_entry(pods, "pb", start="onDemand")],
        datapath="auto",
        metrics={"enabled": True, "listen": METRICS},
    )
    a.start()
    try:
        snapshot = json.loads(a.cli("sas", "--json").stdout)
        code = (
            "import sys, urllib.request; "
            f"sys.stdout.write(urllib.request.urlopen('http://{METRICS}/metrics', timeout=5)"
            ".read().decode())"
        )
        metrics = pods.python("pa", code).stdout
    finally:
        a.stop()
    assert snapshot["datapath"] == "userspace"
    assert snapshot["datapath_reason"].startswith("auto: kernel refused ESP SA"), snapshot
    info = re.search(r"^kipsec_datapath_info\{(.*)\} 1\.0$", metrics, re.MULTILINE)
    assert info is not None, metrics
    assert 'datapath="userspace"' in info[1] and "auto: kernel refused ESP SA" in info[1]


def test_kernel_on_this_kernel_exits_1_naming_the_probe_reason(
    pods: Topology, tmp_path: Path
) -> None:
    a = Sidecar(pods, "pa", tmp_path)
    a.write([peer_entry(pods, "pb")], datapath="kernel")
    result = pods.run("pa", SIDECAR, "run", "--config", str(a.config), check=False, timeout=20)
    assert result.returncode == 1, result.stderr
    assert "datapath: kernel is unavailable here: kernel refused ESP SA" in result.stderr
    assert not Path(a.socket).exists()  # refused before anything was bound
