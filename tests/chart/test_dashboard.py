"""The Grafana dashboard: current, built only from exported metrics, and every query
evaluates in a real Prometheus and returns series.

The Prometheus (Debian package `prometheus`) runs on loopback and scrapes a real
sidecar health server (:class:`kipsec_sidecar.health.HealthServer` serving
:func:`kipsec_sidecar.metrics.build_registry` over a controller double's snapshot) and
the operator's real :class:`OperatorMetrics` registry. The scrape configuration adds the
labels the chart's PodMonitor adds (namespace, pod, node) and keeps the operator's own
labels as its ServiceMonitor does (honor_labels). The lab-wide version, scraping a
running lab's sidecars and operator, is in tests/lab/test_lab_scenarios.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest
import yaml
from deploy.alerts import alerts
from deploy.catalog import TARGET_LABELS, Regex, UnknownMetric, catalog
from deploy.dashboard import DASHBOARD_FILE, PANELS, dashboard_json, queries
from deploy.dashboard.build import REGENERATE
from prometheus_client import start_http_server

from kipsec_operator.metrics import OperatorMetrics
from kipsec_sidecar.daemon.enrollment import Enrollment, EnrollmentCollector
from kipsec_sidecar.health import HealthServer
from kipsec_sidecar.metrics import build_registry
from support.controller_double import ControllerDouble
from support.promql import evaluable, without_threshold

PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus missing: apt-get install prometheus"
)
SIDECAR_TARGET = {"namespace": "shop", "pod": "web-1", "node": "node-a"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_dashboard_file_is_current() -> None:
    assert DASHBOARD_FILE.read_text(encoding="utf-8") == dashboard_json(), (
        f"stale: run `{REGENERATE}`"
    )


def test_the_dashboard_has_the_panels_on_call_needs() -> None:
    titles = " | ".join(spec.title for spec in PANELS).lower()
    for topic in (
        "tunnels ready",
        "tunnels not ready",
        "ike sas established by node",
        "child sas installed by node",
        "by pod",
        "handshakes by result",
        "handshake failures by reason",
        "tunnels ready vs not, by tunnel",
        "failures",
        "rekeys",
        "throughput",
        "replay and integrity",
        "certificate expiry",
        "datapath in use",
        "not reaching each external peer",
    ):
        assert topic in titles, topic


def test_every_panel_uses_the_datasource_variable_and_a_unique_id() -> None:
    board = json.loads(DASHBOARD_FILE.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in panels}) == len(panels) == len(PANELS)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]


def test_the_catalog_refuses_a_metric_the_code_does_not_export() -> None:
    with pytest.raises(UnknownMetric, match="kipsec_handshake_total"):
        catalog().series("kipsec_handshake_total")


def test_the_catalog_refuses_a_label_the_metric_does_not_carry() -> None:
    with pytest.raises(UnknownMetric, match="'tunnel'"):
        catalog().series("kipsec_child_sas", tunnel="x")
    with pytest.raises(UnknownMetric, match="'node'"):
        catalog().by("kipsec_operator_tunnels", "node")


def test_the_catalog_knows_samples_and_scrape_labels() -> None:
    selector = catalog().series("kipsec_dropped_packets_total", reason=Regex("replay|x"), node="n")
    assert selector == 'kipsec_dropped_packets_total{reason=~"replay|x", node="n"}'
    assert "le" in catalog().family("kipsec_operator_reconcile_duration_seconds_bucket").labels_of(
        "kipsec_operator_reconcile_duration_seconds_bucket"
    )
    assert set(TARGET_LABELS) == {"sidecar", "operator"}


class _SidecarEndpoint:
    """A real HealthServer on loopback, in its own event loop thread."""

    def __init__(self) -> None:
        controller = ControllerDouble()
        registry = build_registry(controller)
        # A pod whose certificate the operator issued (the enrollment's state only).
        now = datetime.now(UTC)
        issued = SimpleNamespace(
            not_after=now + timedelta(hours=24), renewal_time=now + timedelta(hours=16)
        )
        enrolled = SimpleNamespace(results={"issued": 1}, identity=issued)
        registry.register(EnrollmentCollector(cast(Enrollment, enrolled)))
        self.server = HealthServer(controller, registry, f"127.0.0.1:{free_port()}")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server.port

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def operator_metrics() -> OperatorMetrics:
    """The operator's registry with the values a running operator would have set."""
    metrics = OperatorMetrics()
    ready = {"conditions": [{"type": "Ready", "status": "True"}], "childSasEstablished": 2}
    waiting = {"conditions": [{"type": "Ready", "status": "False"}], "childSasEstablished": 0}
    metrics.observe_tunnels({("shop", "web"): ready, ("shop", "db"): waiting})
    peers = {("shop", "dc"): {"pods": 3, "podsEstablished": 2}}
    metrics.observe_external_peers(peers)
    metrics.pods_matched.set(6)
    metrics.sidecars_configured.set(6)
    metrics.pods_missing_sidecar.set(0)
    metrics.secret_writes.inc(6)
    metrics.reconcile_seconds.observe(0.03)
    metrics.reconcile_errors.inc(0)
    metrics.certificates_issued.inc(4)
    metrics.csr_refused.labels(code="pod-mismatch").inc()
    metrics.certificate_expiry.labels(namespace="shop", name="ids").set(50_000)
    metrics.ca_expiry.set(300 * 86400)
    return metrics


class Prometheus:
    """A Prometheus server on loopback; :meth:`query` is an instant query."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> dict[str, Any]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as error:
            answer = json.load(error)
        return answer


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    assert PROMETHEUS is not None
    workdir = tmp_path_factory.mktemp("prometheus")
    operator_port = free_port()
    server, thread = start_http_server(
        operator_port, "127.0.0.1", registry=operator_metrics().registry
    )
    with _SidecarEndpoint() as sidecar_port:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "kipsec-sidecars",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{sidecar_port}"], "labels": SIDECAR_TARGET}
                    ],
                },
                {
                    "job_name": "kipsec-operator",
                    "honor_labels": True,
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{operator_port}"],
                            "labels": {"namespace": "kipsec-system", "pod": "kipsec-operator-0"},
                        }
                    ],
                },
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "prometheus.log").open("w"),
        )
        try:
            prom = Prometheus(port)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    # Three scrapes of both targets: enough samples for rate().
                    answer = prom.query("count_over_time(up[1m]) >= 3 and up == 1")
                    if len(answer["data"]["result"]) == 2:
                        break
                except OSError:
                    pass
                time.sleep(0.5)
            else:
                pytest.fail("Prometheus did not scrape both targets within 60 s")
            yield prom
        finally:
            process.terminate()
            process.wait(30)
            server.shutdown()
            thread.join(10)


@needs_prometheus
@pytest.mark.parametrize("expr", queries())
def test_every_dashboard_query_returns_series(prometheus: Prometheus, expr: str) -> None:
    answer = prometheus.query(evaluable(expr))
    assert answer["status"] == "success", answer.get("error")
    assert answer["data"]["result"], f"no series for {expr}"


@needs_prometheus
@pytest.mark.parametrize("name", [alert.name for alert in alerts()])
def test_every_alert_expression_evaluates_over_real_series(
    prometheus: Prometheus, name: str
) -> None:
    alert = next(a for a in alerts() if a.name == name)
    whole = prometheus.query(alert.expr)
    assert whole["status"] == "success", whole.get("error")
    measured = prometheus.query(without_threshold(alert.expr))
    assert measured["data"]["result"], f"no series for {alert.expr}"


@needs_prometheus
def test_a_query_of_a_metric_nobody_exports_returns_nothing(prometheus: Prometheus) -> None:
    """Guards the tests above: an empty answer is possible and would fail them."""
    assert prometheus.query("sum(kipsec_handshake_total)")["data"]["result"] == []


@needs_prometheus
def test_sidecar_series_carry_the_target_labels(prometheus: Prometheus) -> None:
    result = prometheus.query("kipsec_ready")["data"]["result"]
    assert {k: result[0]["metric"][k] for k in TARGET_LABELS["sidecar"]} == SIDECAR_TARGET


def test_panel_descriptions_and_units_are_set() -> None:
    for spec in PANELS:
        assert spec.description and spec.unit, spec.title
        assert spec.queries, spec.title


def test_queries_name_only_exported_samples() -> None:
    exported = set(catalog().samples())
    for expr in queries():
        names = set(re.findall(r"\b(kipsec_[a-z_]+)", expr))
        assert names and names <= exported, expr
