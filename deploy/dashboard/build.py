"""The Grafana dashboard, generated with Grafana's own grafana-foundation-sdk.

Panels are declared as :class:`PanelSpec` rows (what to show, in which unit, with
which queries) and turned into SDK builders by :func:`dashboard`. Every query is
assembled through :func:`deploy.catalog.catalog`, so it names only metrics and labels
the sidecar and the operator export (plus the labels the chart's scrape adds: namespace,
pod, node); a rename in the code fails ``python -m deploy.dashboard`` and the staleness
test.

The operator runs two replicas and each exports its gauges, so the operator panels take
``max`` over replicas rather than ``sum``. Queries use ``$__rate_interval`` (Grafana
picks a window of at least four scrapes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, Row
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as StatPanel
from grafana_foundation_sdk.builders.table import Panel as TablePanel
from grafana_foundation_sdk.builders.timeseries import Panel as TimeseriesPanel
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef

from deploy.catalog import Catalog, Regex, catalog

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_FILE = ROOT / "charts" / "kipsec" / "dashboards" / "kipsec.json"
REGENERATE = "python -m deploy.dashboard"
UID = "kipsec-overview"
RATE = "$__rate_interval"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

Kind = Literal["timeseries", "stat", "table"]


@dataclass(frozen=True)
class Query:
    """One PromQL target and its legend (``{{label}}`` placeholders)."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    """A panel: its row, title, description, visualisation, unit and queries."""

    row: str
    title: str
    description: str
    kind: Kind
    unit: str
    queries: tuple[Query, ...]
    width: int = 12


def _tunnels(c: Catalog) -> Iterator[PanelSpec]:
    row = "Tunnels"
    tunnels = "kipsec_operator_tunnels"
    yield PanelSpec(
        row,
        "Tunnels ready",
        "Tunnels whose Ready condition is True: every expected child SA established.",
        "stat",
        "none",
        (Query(f"max({c.series(tunnels, ready='True')})", "ready"),),
        6,
    )
    yield PanelSpec(
        row,
        "Tunnels not ready",
        "Tunnels whose Ready condition is False (pending SAs, no pods, invalid spec). "
        "`kubectl get tunnels -A` says which and why.",
        "stat",
        "none",
        (Query(f"max({c.series(tunnels, ready='False')})", "not ready"),),
        6,
    )
    yield PanelSpec(
        row,
        "Pods without the sidecar",
        "Pods a Tunnel selects that run without the sidecar: their traffic is NOT encrypted.",
        "stat",
        "none",
        (Query(f"max({c.series('kipsec_operator_pods_missing_sidecar')})", "pods"),),
        6,
    )
    yield PanelSpec(
        row,
        "Sidecars not ready",
        "Sidecars with a peer lacking an installed child SA (their /readyz answers 503).",
        "stat",
        "none",
        (Query(f"sum(1 - {c.series('kipsec_ready')})", "sidecars"),),
        6,
    )
    yield PanelSpec(
        row,
        "Tunnels by Ready condition",
        "Tunnels ready and not ready over time.",
        "timeseries",
        "none",
        (Query(f"max {c.by(tunnels, 'ready')} ({c.series(tunnels)})", "Ready={{ready}}"),),
    )
    ready = "kipsec_operator_tunnel_ready"
    yield PanelSpec(
        row,
        "Tunnels ready vs not, by tunnel",
        "Each Tunnel's Ready condition (1 ready, 0 not), as its sidecars report their SAs; "
        "`kubectl describe tunnel` says why one is not.",
        "table",
        "none",
        (
            Query(
                f"max {c.by(ready, 'namespace', 'tunnel')} ({c.series(ready)})",
                "{{namespace}}/{{tunnel}}",
            ),
        ),
    )
    child_sas = "kipsec_operator_tunnel_child_sas"
    yield PanelSpec(
        row,
        "Child SAs established by tunnel",
        "Per Tunnel, the links whose sidecar reports an established child SA "
        "(status.childSasEstablished).",
        "timeseries",
        "none",
        (
            Query(
                f"max {c.by(child_sas, 'namespace', 'tunnel')} ({c.series(child_sas)})",
                "{{namespace}}/{{tunnel}}",
            ),
        ),
    )
    pods, established = (
        "kipsec_operator_external_peer_pods",
        "kipsec_operator_external_peer_pods_established",
    )
    yield PanelSpec(
        row,
        "Pods not reaching each external peer",
        "Per ExternalPeer, pods configured towards it minus those whose sidecar reports an "
        "established child SA with it (0: every pod reaches it); `kubectl describe "
        "externalpeer` lists each failing pod's reason.",
        "timeseries",
        "none",
        (
            Query(
                f"max {c.by(pods, 'namespace', 'external_peer')} ({c.series(pods)}) - "
                f"max {c.by(established, 'namespace', 'external_peer')} "
                f"({c.series(established)})",
                "{{namespace}}/{{external_peer}}",
            ),
        ),
    )
    yield PanelSpec(
        row,
        "Pods matched and configured",
        "Pods selected by a valid Tunnel, and pods whose configuration Secret holds a document.",
        "timeseries",
        "none",
        (
            Query(f"max({c.series('kipsec_operator_pods_matched')})", "matched"),
            Query(f"max({c.series('kipsec_operator_sidecars_configured')})", "configured"),
        ),
    )


def _security_associations(c: Catalog) -> Iterator[PanelSpec]:
    row = "Security Associations"
    ike = c.series("kipsec_ike_sas", state="established")
    child = c.series("kipsec_child_sas", state="installed")
    yield PanelSpec(
        row,
        "IKE SAs established by node and IKE version",
        "IKE SAs in state established, summed over the sidecars of each node, per IKE "
        "version (IKEv1 is deprecated, RFC 9395: a v1 line is a legacy peer).",
        "timeseries",
        "none",
        (
            Query(
                f"sum {c.by('kipsec_ike_sas', 'node', 'ike_version')} ({ike})",
                "{{node}} IKEv{{ike_version}}",
            ),
        ),
    )
    yield PanelSpec(
        row,
        "Child SAs installed by node, mode and protocol",
        "ESP/AH SA pairs in the datapath (state installed), per node.",
        "timeseries",
        "none",
        (
            Query(
                f"sum {c.by('kipsec_child_sas', 'node', 'mode', 'protocol')} ({child})",
                "{{node}} {{mode}}/{{protocol}}",
            ),
        ),
    )
    yield PanelSpec(
        row,
        "IKE SAs established by pod",
        "IKE SAs established per pod (each pod's sidecar holds one per peer).",
        "timeseries",
        "none",
        (
            Query(
                f"sum {c.by('kipsec_ike_sas', 'namespace', 'pod')} ({ike})", "{{namespace}}/{{pod}}"
            ),
        ),
    )
    yield PanelSpec(
        row,
        "Child SAs installed by pod",
        "Child SAs installed per pod.",
        "timeseries",
        "none",
        (
            Query(
                f"sum {c.by('kipsec_child_sas', 'namespace', 'pod')} ({child})",
                "{{namespace}}/{{pod}}",
            ),
        ),
    )
    yield PanelSpec(
        row,
        "Peers by state",
        "Configured peers of every sidecar by state: idle, connecting, established, down.",
        "timeseries",
        "none",
        (Query(f"sum {c.by('kipsec_peers', 'state')} ({c.series('kipsec_peers')})", "{{state}}"),),
    )
    yield PanelSpec(
        row,
        "Child SAs rekeyed or deleting",
        "Replaced child SAs kept for in-flight packets, and child SAs being deleted.",
        "timeseries",
        "none",
        (
            Query(
                f"sum {c.by('kipsec_child_sas', 'state')} "
                f"({c.series('kipsec_child_sas', state=Regex('rekeyed|deleting'))})",
                "{{state}}",
            ),
        ),
    )


def _handshakes(c: Catalog) -> Iterator[PanelSpec]:
    row = "Handshakes and rekeys"
    handshakes = "kipsec_handshakes_total"
    yield PanelSpec(
        row,
        "Handshakes by result",
        "IKE SA establishments per second, successful and failed.",
        "timeseries",
        "ops",
        (
            Query(
                f"sum {c.by(handshakes, 'result')} (rate({c.series(handshakes)}[{RATE}]))",
                "{{result}}",
            ),
        ),
    )
    failures = "kipsec_handshake_failures_total"
    yield PanelSpec(
        row,
        "Handshake failures by reason",
        "IKE SAs that failed before they were established, per second, by reason: "
        "no_proposal_chosen (proposals do not overlap), authentication_failed (PSK or "
        "certificates), ts_unacceptable, invalid_ke, peer_dead (no answer), other.",
        "timeseries",
        "ops",
        (
            Query(
                f"sum {c.by(failures, 'reason')} (rate({c.series(failures)}[{RATE}]))",
                "{{reason}}",
            ),
        ),
    )
    yield PanelSpec(
        row,
        "Handshake and authentication failures by pod",
        "Failed IKE establishments, and failed authentications (wrong PSK, untrusted or "
        "expired certificate, bad signature), per pod. The Tunnel's Degraded condition "
        "and Events carry the reason.",
        "timeseries",
        "ops",
        (
            Query(
                f"sum {c.by(handshakes, 'namespace', 'pod')} "
                f"(rate({c.series(handshakes, result='failure')}[{RATE}]))",
                "{{namespace}}/{{pod}} handshake",
            ),
            Query(
                f"sum {c.by('kipsec_auth_failures_total', 'namespace', 'pod')} "
                f"(rate({c.series('kipsec_auth_failures_total')}[{RATE}]))",
                "{{namespace}}/{{pod}} authentication",
            ),
        ),
    )
    yield PanelSpec(
        row,
        "Rekeys by kind",
        "Completed rekeys per second: child SAs and IKE SAs.",
        "timeseries",
        "ops",
        (
            Query(
                f"sum {c.by('kipsec_rekeys_total', 'kind')} "
                f"(rate({c.series('kipsec_rekeys_total')}[{RATE}]))",
                "{{kind}}",
            ),
        ),
    )
    yield PanelSpec(
        row,
        "CSRs signed and refused",
        "Pod certificates the operator signed, and CSRs it refused by code.",
        "timeseries",
        "ops",
        (
            Query(
                f"sum(rate({c.series('kipsec_operator_certificates_issued_total')}[{RATE}]))",
                "signed",
            ),
            Query(
                f"sum {c.by('kipsec_operator_csr_refused_total', 'code')} "
                f"(rate({c.series('kipsec_operator_csr_refused_total')}[{RATE}]))",
                "refused: {{code}}",
            ),
        ),
    )


def _traffic(c: Catalog) -> Iterator[PanelSpec]:
    row = "Traffic"
    octets = "kipsec_bytes_total"
    drops = "kipsec_dropped_packets_total"
    yield PanelSpec(
        row,
        "Throughput per pod and peer",
        "Protected (inner) bytes per second each pod's sidecar carries to and from each peer.",
        "timeseries",
        "Bps",
        (
            Query(
                f"sum {c.by(octets, 'namespace', 'pod', 'peer', 'direction')} "
                f"(rate({c.series(octets)}[{RATE}]))",
                "{{namespace}}/{{pod}} {{direction}} {{peer}}",
            ),
        ),
        24,
    )
    yield PanelSpec(
        row,
        "Packets by direction",
        "IPsec packets per second over every sidecar: in (decapsulated, accepted), out.",
        "timeseries",
        "pps",
        (
            Query(
                f"sum {c.by('kipsec_packets_total', 'direction')} "
                f"(rate({c.series('kipsec_packets_total')}[{RATE}]))",
                "{{direction}}",
            ),
        ),
    )
    yield PanelSpec(
        row,
        "Dropped packets by reason",
        "Packets the datapaths dropped: replay, integrity, no_sa, policy, malformed.",
        "timeseries",
        "pps",
        (Query(f"sum {c.by(drops, 'reason')} (rate({c.series(drops)}[{RATE}]))", "{{reason}}"),),
    )
    cookies, refused = "kipsec_ike_cookies_sent_total", "kipsec_ike_requests_refused_total"
    suppressed = "kipsec_log_lines_suppressed_total"
    yield PanelSpec(
        row,
        "IKE_SA_INIT floods and log suppression",
        "IKE_SA_INIT requests answered with a COOKIE (too many half-open SAs: a flood from "
        "a peer's address) and refused before any state (unknown_peer: from an address no "
        "peer has), and log lines the sidecars' rate limiter held back.",
        "timeseries",
        "ops",
        (
            Query(
                f"sum {c.by(cookies, 'namespace', 'pod')} (rate({c.series(cookies)}[{RATE}]))",
                "{{namespace}}/{{pod}} COOKIEs",
            ),
            Query(
                f"sum {c.by(refused, 'reason')} (rate({c.series(refused)}[{RATE}]))",
                "refused: {{reason}}",
            ),
            Query(f"sum(rate({c.series(suppressed)}[{RATE}]))", "log lines suppressed"),
        ),
    )
    yield PanelSpec(
        row,
        "Replay and integrity drops by pod",
        "Replayed packets and packets failing the ICV check: tampering, a broken "
        "middlebox, or keys out of step.",
        "timeseries",
        "pps",
        (
            Query(
                f"sum {c.by(drops, 'namespace', 'pod', 'reason')} "
                f"(rate({c.series(drops, reason=Regex('replay|integrity'))}[{RATE}]))",
                "{{namespace}}/{{pod}} {{reason}}",
            ),
        ),
    )
    yield PanelSpec(
        row,
        "Datapath errors by kind",
        "Errors of the datapath itself (device, socket, install failures).",
        "timeseries",
        "ops",
        (
            Query(
                f"sum {c.by('kipsec_datapath_errors_total', 'namespace', 'pod', 'kind')} "
                f"(rate({c.series('kipsec_datapath_errors_total')}[{RATE}]))",
                "{{namespace}}/{{pod}} {{kind}}",
            ),
        ),
    )


def _certificates_and_datapath(c: Catalog) -> Iterator[PanelSpec]:
    row = "Certificates, datapath and operator"
    expiry = "kipsec_operator_certificate_expiry_seconds"
    yield PanelSpec(
        row,
        "Certificate expiry per TunnelCertificate",
        "Time until the earliest pod certificate of each TunnelCertificate expires "
        "(renewed at renewalTime, 8h before the end by default).",
        "timeseries",
        "s",
        (
            Query(
                f"min {c.by(expiry, 'namespace', 'name')} ({c.series(expiry)})",
                "{{namespace}}/{{name}}",
            ),
        ),
    )
    not_after = "kipsec_identity_certificate_not_after_seconds"
    yield PanelSpec(
        row,
        "Pod certificate time left, as the sidecars report it",
        "Seconds until the certificate each sidecar holds expires (pods whose identity the "
        "operator issues). Whichever operator replica signed it; a line that reaches the "
        "renewal margin and keeps falling is a renewal that failed.",
        "timeseries",
        "s",
        (
            Query(
                f"min {c.by(not_after, 'namespace', 'pod')} ({c.series(not_after)}) - time()",
                "{{namespace}}/{{pod}}",
            ),
        ),
    )
    yield PanelSpec(
        row,
        "Operator CA expiry",
        "Time until the operator's signing CA expires (rotated 60 days before).",
        "stat",
        "s",
        (Query(f"min({c.series('kipsec_operator_ca_expiry_seconds')})", "CA"),),
        6,
    )
    yield PanelSpec(
        row,
        "Datapath in use",
        "Sidecars per datapath (kernel XFRM or userspace TUN).",
        "stat",
        "none",
        (
            Query(
                f"count {c.by('kipsec_datapath_info', 'datapath')} "
                f"({c.series('kipsec_datapath_info')})",
                "{{datapath}}",
            ),
        ),
        6,
    )
    yield PanelSpec(
        row,
        "Datapath per node and why",
        "Which datapath each node's sidecars chose, and the capability probe's reason.",
        "table",
        "none",
        (
            Query(
                f"count {c.by('kipsec_datapath_info', 'node', 'datapath', 'reason')} "
                f"({c.series('kipsec_datapath_info')})",
                "{{node}} {{datapath}}",
            ),
        ),
    )
    duration = "kipsec_operator_reconcile_duration_seconds_bucket"
    yield PanelSpec(
        row,
        "Operator reconcile duration (p50, p95)",
        "How long one reconcile pass takes (render, write Secrets and status).",
        "timeseries",
        "s",
        tuple(
            Query(
                f"histogram_quantile({q}, sum {c.by(duration, 'le')} "
                f"(rate({c.series(duration)}[{RATE}])))",
                f"p{round(q * 100)}",
            )
            for q in (0.5, 0.95)
        ),
    )
    yield PanelSpec(
        row,
        "Operator writes and errors",
        "Per-pod configuration Secrets written, and failed reconcile passes, per second.",
        "timeseries",
        "ops",
        (
            Query(
                f"sum(rate({c.series('kipsec_operator_secret_writes_total')}[{RATE}]))",
                "Secrets written",
            ),
            Query(
                f"sum(rate({c.series('kipsec_operator_reconcile_errors_total')}[{RATE}]))",
                "reconcile errors",
            ),
        ),
    )


_SECTIONS: tuple[Callable[[Catalog], Iterator[PanelSpec]], ...] = (
    _tunnels,
    _security_associations,
    _handshakes,
    _traffic,
    _certificates_and_datapath,
)


def panels(c: Catalog | None = None) -> list[PanelSpec]:
    """Every panel, in dashboard order."""
    c = c or catalog()
    return [spec for section in _SECTIONS for spec in section(c)]


PANELS: tuple[PanelSpec, ...] = tuple(panels())


def queries() -> list[str]:
    """Every PromQL expression of the dashboard."""
    return [query.expr for spec in PANELS for query in spec.queries]


def _panel(spec: PanelSpec, panel_id: int) -> Any:
    builder: Any
    if spec.kind == "stat":
        builder = StatPanel()
    elif spec.kind == "table":
        builder = TablePanel()
    else:
        builder = TimeseriesPanel().min(0)
    builder = (
        builder.id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(8 if spec.kind != "stat" else 4)
    )
    for index, query in enumerate(spec.queries):
        target = Dataquery().expr(query.expr).legend_format(query.legend)
        target = target.ref_id(chr(ord("A") + index)).datasource(DATASOURCE)
        if spec.kind == "table":
            target = target.instant()
        builder = builder.with_target(target)
    return builder


def dashboard() -> Dashboard:
    """The dashboard builder: a datasource variable, then one row per section."""
    board = (
        Dashboard("kipsec")
        .uid(UID)
        .description("kipsec: Tunnels, IPsec SAs, handshakes, traffic, certificates.")
        .tags(["kipsec", "ipsec", "generated"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    current_row = None
    for panel_id, spec in enumerate(PANELS, start=1):
        if spec.row != current_row:
            board = board.with_row(Row(spec.row))
            current_row = spec.row
        board = board.with_panel(_panel(spec, panel_id))
    return board


def dashboard_json() -> str:
    """The dashboard as Grafana JSON (sorted keys, so regeneration is stable)."""
    built = dashboard().build()
    text = JSONEncoder(sort_keys=True, indent=2).encode(built)
    return json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


def write(path: Path = DASHBOARD_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dashboard_json(), encoding="utf-8")
    return path
