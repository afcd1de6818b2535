"""The operator's per-Tunnel gauges, from the statuses a reconcile pass wrote."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from kipsec_operator.metrics import OperatorMetrics


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
