"""The operator's per-Tunnel gauges, from the statuses a reconcile pass wrote."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

import kipsec_operator.certificates
from kipsec_operator.certificates.csr import REFUSAL_CODES
from kipsec_operator.metrics import OperatorMetrics

CERTIFICATES = Path(kipsec_operator.certificates.__file__).parent


def status(ready: bool, established: int) -> dict[str, Any]:
    return {
        "conditions": [{"type": "Ready", "status": str(ready)}, {"type": "Degraded"}],
        "childSasEstablished": established,
    }


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_tunnel_has_its_ready_and_child_sa_series() -> None:
    metrics = OperatorMetrics()
    metrics.observe_tunnels({("shop", "web"): status(True, 4), ("shop", "db"): status(False, 1)})
    assert sample(metrics, "kipsec_operator_tunnel_ready", namespace="shop", tunnel="web") == 1
    assert sample(metrics, "kipsec_operator_tunnel_ready", namespace="shop", tunnel="db") == 0
    assert sample(metrics, "kipsec_operator_tunnel_child_sas", namespace="shop", tunnel="web") == 4
    assert sample(metrics, "kipsec_operator_tunnels", ready="True") == 1
    assert sample(metrics, "kipsec_operator_tunnels", ready="False") == 1


def test_a_deleted_tunnel_loses_its_series() -> None:
    metrics = OperatorMetrics()
    metrics.observe_tunnels({("shop", "web"): status(True, 4), ("shop", "db"): status(False, 1)})
    metrics.observe_tunnels({("shop", "web"): status(True, 4)})
    text = generate_latest(metrics.registry).decode()
    assert 'tunnel="db"' not in text
    assert sample(metrics, "kipsec_operator_tunnels", ready="False") == 0


def test_a_pass_that_rewrote_one_status_moves_only_its_series_and_the_counts() -> None:
    metrics = OperatorMetrics()
    web, db = status(True, 4), status(False, 1)
    metrics.observe_tunnels({("shop", "web"): web, ("shop", "db"): db})
    metrics.observe_tunnels({("shop", "web"): web, ("shop", "db"): status(True, 2)})
    assert sample(metrics, "kipsec_operator_tunnel_ready", namespace="shop", tunnel="db") == 1
    assert sample(metrics, "kipsec_operator_tunnel_child_sas", namespace="shop", tunnel="db") == 2
    assert sample(metrics, "kipsec_operator_tunnel_child_sas", namespace="shop", tunnel="web") == 4
    assert sample(metrics, "kipsec_operator_tunnels", ready="True") == 2
    assert sample(metrics, "kipsec_operator_tunnels", ready="False") == 0


def test_every_csr_refusal_code_starts_at_zero() -> None:
    metrics = OperatorMetrics()
    for code in REFUSAL_CODES:
        assert sample(metrics, "kipsec_operator_csr_refused_total", code=code) == 0


def test_the_refusal_codes_are_exactly_those_the_csr_code_returns() -> None:
    # Refused("code", ...) or Refused(\n "code", ...) in the CSR endpoint and its checks.
    sources = "".join((CERTIFICATES / name).read_text() for name in ("csr.py", "endpoint.py"))
    returned = set(re.findall(r'Refused\(\s*"([a-z-]+)"', sources))
    assert returned == set(REFUSAL_CODES)
