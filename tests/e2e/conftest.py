"""Fixtures for network-namespace end-to-end tests: ``topology`` and ``strongswan_factory``.

Tests here carry the ``netns`` marker (registered below) and are skipped, with the
reason, when the process is not root or ``ip netns`` does not work; CI runs as root, so
there they run. Stale namespaces left by crashed earlier runs are swept once per session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Generator, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from support.netns import Topology, sweep_stale
from support.requirements import required, unavailable
from support.strongswan import Charon, CharonFactory, is_available


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "netns: needs root and network namespaces (runs real processes in netns)"
    )


@cache
def netns_unavailable() -> str | None:
    """None if network-namespace tests can run here, else why not."""
    if os.geteuid() != 0:
        return "network-namespace tests need root (CI runs them as root)"
    if shutil.which("ip") is None:
        return "iproute2 'ip' not installed"
    try:
        probe = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"'ip netns' unavailable: {exc}"
    if probe.returncode != 0:
        return f"'ip netns' unavailable: {probe.stderr.strip()}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = netns_unavailable()
    if reason is None or required():
        return  # when required, the fixtures below fail the tests with the reason
    for item in items:
        if item.get_closest_marker("netns") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def _swept() -> list[str]:
    """Namespaces of dead earlier runs, deleted before the first topology is built."""
    reason = netns_unavailable()
    if reason is not None:
        unavailable(reason)
    return sweep_stale()


@pytest.fixture
def topology(_swept: list[str]) -> Iterator[Topology]:
    """An empty :class:`~support.netns.Topology`; deleted with its processes after the test.

    Pod routes between nodes are installed (plain reachability). A test that needs a
    topology without them builds its own ``Topology(pod_routes=False)`` in a ``with``.
    """
    with Topology() as topo:
        yield topo


@pytest.fixture
def pods(topology: Topology) -> Topology:
    """Two nodes, one pod each (pa 10.10.1.2 behind a, pb 10.10.2.2 behind b)."""
    topology.add_node("a")
    topology.add_node("b")
    topology.add_pod("pa", "a")
    topology.add_pod("pb", "b")
    return topology


@pytest.fixture
def gateway_topology(_swept: list[str]) -> Iterator[Topology]:
    """Like ``topology`` but without plain routes between pod CIDRs (``pod_routes=False``):
    pod traffic between nodes flows only through whatever tunnel the test sets up."""
    with Topology(pod_routes=False) as topo:
        yield topo


@pytest.fixture
def strongswan_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CharonFactory]:
    """``make(topology, name, **options) -> Charon``: a started charon in namespace ``name``.

    Each instance works in ``tmp_path/strongswan-<name>``; all are stopped after the test,
    before the topology is torn down. A failing test's report includes the tail of every
    charon's log (the full logs stay in those directories).
    """
    reason = is_available()
    if reason is not None:
        unavailable(reason)
    started: list[Charon] = []
    request.node.stash[_CHARONS] = started

    def make(topology: Topology, name: str, **options: Any) -> Charon:
        charon = Charon(topology, name, tmp_path / f"strongswan-{name}", **options)
        started.append(charon)
        return charon.start()

    yield make
    for charon in started:
        charon.stop()


_CHARONS = pytest.StashKey[list[Charon]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of every charon's log to the report of a failed test."""
    report = yield
    if report.when == "call" and report.failed:
        for charon in item.stash.get(_CHARONS, []):
            report.sections.append((f"charon {charon.name} log", charon.log_tail(200)))
    return report
