"""The snapshot's indexes answer exactly what a scan of every pod would."""

from __future__ import annotations

from typing import Any

import pytest

from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.selectors import matches
from kipsec_operator.reconcile.validation import parse_spec
from support.operator_objects import pod, tunnel

LABELS = [
    {"app": "web", "tier": "front"},
    {"app": "web", "tier": "back"},
    {"app": "db"},
    {"tier": "front"},
    {},
]
CLUSTER = Cluster.of(
    [
        pod(f"p{i}", f"10.0.0.{i + 1}", labels=labels, namespace=ns)
        for i, (labels, ns) in enumerate(
            (labels, ns) for ns in ("default", "other") for labels in LABELS
        )
    ]
)


@pytest.mark.parametrize(
    "selector",
    [
        {},
        {"matchLabels": {"app": "web"}},
        {"matchLabels": {"app": "web", "tier": "front"}},
        {"matchLabels": {"app": "nobody"}},
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}],
        },
        {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
        {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
    ],
)
def test_pods_matching_is_a_scan_of_the_namespace(selector: dict[str, Any]) -> None:
    scanned = sorted(
        key
        for key, obj in CLUSTER.pods.items()
        if key[0] == "default" and matches(selector, obj["metadata"].get("labels") or {})
    )
    assert CLUSTER.pods_matching("default", selector) == scanned


def test_a_pod_without_an_ip_has_a_reference_only_when_asked_for_one() -> None:
    cluster = Cluster.of([pod("new", None)])
    assert cluster.ref(("default", "new")) is None
    ref = cluster.ref(("default", "new"), require_ip=False)
    assert ref is not None and ref.ips == ()
    assert cluster.ref(("default", "absent")) is None


def test_spec_errors_are_a_fresh_list_each_time() -> None:
    broken = tunnel("t", {"mode": "sideways"})
    first = parse_spec(broken)
    assert isinstance(first, list) and first
    first.clear()
    assert parse_spec(broken) != []
