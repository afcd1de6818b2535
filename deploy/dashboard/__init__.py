"""kipsec's Grafana dashboard as code (see :mod:`.build`)."""

from .build import DASHBOARD_FILE, PANELS, PanelSpec, dashboard_json, queries, write

__all__ = ["DASHBOARD_FILE", "PANELS", "PanelSpec", "dashboard_json", "queries", "write"]
