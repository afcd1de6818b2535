"""The real operator (kopf, in-process, in a thread with its own event loop: kopf
cancels every task of its loop that it did not start) against kmock's Kubernetes emulator.

`cluster` starts the emulator on a random local port, the operator's kopf loop with a
fresh handler registry (standalone: no peering) and a fake sidecar-report fetcher that
answers from `cluster.reports`, and a client for the test to apply objects with.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from kipsec_lab.apiserver import Emulator, serve
from kipsec_operator.handlers import RESOURCES
from kipsec_operator.kube import Connection, Kube
from kipsec_operator.reconcile.cluster import ObjectKey
from kipsec_operator.reconcile.status import SidecarReport
from support.operator_cluster import Cluster, eventually, new_operator, running


def watching(emulator: Emulator) -> int:
    """How many resources the operator has started watching."""
    return len(emulator.watched)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "operator: the real operator against kmock's Kubernetes emulator"
    )


@pytest_asyncio.fixture
async def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """Parametrize indirectly with a number to set the TunnelCertificate timer's
    interval (default 5 s; a test that shows something happens without the timer sets
    it to an hour, after the first tick at start)."""
    certificate_interval = float(getattr(request, "param", 5.0))
    async with serve() as (emulator, url):
        reports: dict[ObjectKey, SidecarReport] = {}
        operator = new_operator(
            Connection(url), reports, tmp_path, certificate_interval=certificate_interval
        )
        async with running(operator):
            await eventually(lambda: watching(emulator) >= len(RESOURCES))
            async with Kube(Connection(url)) as kube:
                context = ssl.create_default_context(cafile=str(tmp_path / "tls.crt"))
                yield Cluster(emulator, kube, operator, reports, context)
