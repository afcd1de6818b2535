"""The real operator (kopf, in-process, in a thread with its own event loop: kopf
cancels every task of its loop that it did not start) against kmock's Kubernetes emulator.

`cluster` starts the emulator on a random local port, the operator's kopf loop with a
fresh handler registry (standalone: no peering) and a fake sidecar-report fetcher that
answers from `cluster.reports`, and a client for the test to apply objects with.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from kipsec_lab.apiserver import Emulator, serve
from kipsec_operator.handlers import RESOURCES, Operator
from kipsec_operator.kube import Connection, Kube
from kipsec_operator.main import run_operator
from kipsec_operator.reconcile.cluster import ObjectKey, PodRef
from kipsec_operator.reconcile.status import SidecarReport
from support.operator_cluster import Cluster, eventually, self_signed


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

        async def fetch(pod: PodRef, expected: frozenset[str]) -> SidecarReport | None:
            return reports.get(pod.key)

        operator = Operator(
            Connection(url),
            namespace="kipsec-system",
            fetcher=fetch,
            report_interval=0.3,
            certificate_interval=certificate_interval,
            debounce=0.05,
            listen=("127.0.0.1", 0),
            tls=tuple(str(p) for p in self_signed(tmp_path)),  # type: ignore[arg-type]
        )
        stop, ready = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=asyncio.run,
            args=(run_operator(operator, standalone=True, stop_flag=stop, ready_flag=ready),),
            name="kipsec-operator",
            daemon=True,
        )
        thread.start()
        assert await asyncio.to_thread(ready.wait, 5), "the operator did not start"
        await eventually(lambda: watching(emulator) >= len(RESOURCES))
        async with Kube(Connection(url)) as kube:
            context = ssl.create_default_context(cafile=str(tmp_path / "tls.crt"))
            yield Cluster(emulator, kube, operator, reports, context)
        stop.set()
        await asyncio.to_thread(thread.join, 10)
