"""The dashboard's and the alert rules' expressions in the form a test can evaluate.

Both the chart's Prometheus test (one sidecar, one operator registry) and the lab's
(every sidecar and the operator of a running lab) ask the same question: does each
expression evaluate and return series?"""

from __future__ import annotations

import re

from deploy.alerts import alerts
from deploy.dashboard import queries

RATE_WINDOW = "30s"


def evaluable(expr: str) -> str:
    """A dashboard expression with Grafana's interval variable given a value."""
    return expr.replace("$__rate_interval", RATE_WINDOW)


def without_threshold(expr: str) -> str:
    """An alert expression without its final comparison: the series it measures, which
    exist whether or not the alert fires."""
    return re.sub(r"\s*(==|>|<)\s*[0-9.]+\s*$", "", expr)


def measured_expressions() -> dict[str, str]:
    """Every dashboard query and every alert's measured series, by a readable name."""
    exprs = {f"panel query {q}": evaluable(q) for q in queries()}
    exprs.update({f"alert {a.name}": without_threshold(a.expr) for a in alerts()})
    return exprs
