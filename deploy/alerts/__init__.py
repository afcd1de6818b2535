"""kipsec's Prometheus alerting rules as code (see :mod:`.rules`)."""

from .rules import ALERTS_FILE, Alert, alerts, rule_file, write

__all__ = ["ALERTS_FILE", "Alert", "alerts", "rule_file", "write"]
