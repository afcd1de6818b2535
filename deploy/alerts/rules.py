"""The alerts a person on call needs, built only from metrics the code exports.

Each expression is assembled through :func:`deploy.catalog.catalog`, so a renamed
metric or label fails the generator. The rules are written as a Prometheus rule file
(``groups:``), which is both what ``promtool check rules`` reads and the ``spec`` of the
chart's PrometheusRule (templates/monitoring.yaml includes the file verbatim).

Thresholds follow the defaults of the code they watch: a pod certificate lives 24h and
is renewed 8h before it ends, so one with less than 4h left has missed its renewal;
the operator's CA is rotated 60 days before it ends, so one with less than 30 days left
has not been.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy.catalog import Regex, catalog

ROOT = Path(__file__).resolve().parents[2]
ALERTS_FILE = ROOT / "charts" / "kipsec" / "files" / "kipsec-alerts.yaml"
REGENERATE = "python -m deploy.alerts"
GROUP = "kipsec"

CERTIFICATE_MIN_SECONDS = 4 * 3600
CA_MIN_SECONDS = 30 * 86400


@dataclass(frozen=True)
class Alert:
    """One alerting rule; ``summary`` and ``description`` may use ``{{ $labels.x }}``."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description},
        }


def alerts() -> list[Alert]:
    """Every kipsec alert, in the order of the rule file."""
    c = catalog()
    failures = "kipsec_handshake_failures_total"
    ready = "kipsec_operator_tunnel_ready"
    peer_pods = "kipsec_operator_external_peer_pods"
    peer_up = "kipsec_operator_external_peer_pods_established"
    not_after = "kipsec_identity_certificate_not_after_seconds"
    drops = c.series("kipsec_dropped_packets_total", reason=Regex("replay|integrity"))
    return [
        Alert(
            "KipsecTunnelNotReady",
            f"max {c.by(ready, 'namespace', 'tunnel')} ({c.series(ready)}) == 0",
            "10m",
            "warning",
            "kipsec Tunnel {{ $labels.namespace }}/{{ $labels.tunnel }} not Ready",
            "The Tunnel has not had every expected child SA for 10 minutes. "
            "`kubectl describe tunnel` shows its Ready condition and why.",
        ),
        Alert(
            "KipsecExternalPeerUnreachable",
            f"max {c.by(peer_pods, 'namespace', 'external_peer')} ({c.series(peer_pods)}) - "
            f"max {c.by(peer_up, 'namespace', 'external_peer')} ({c.series(peer_up)}) > 0",
            "10m",
            "warning",
            "Pods cannot reach external peer {{ $labels.namespace }}/{{ $labels.external_peer }}",
            "{{ $value }} pod(s) configured towards the ExternalPeer have had no established "
            "child SA with it for 10 minutes. `kubectl describe externalpeer` lists each "
            "pod's reason (status.podErrors); check the gateway and its subnets.",
        ),
        Alert(
            "KipsecSidecarNotReady",
            f"{c.series('kipsec_ready')} == 0",
            "10m",
            "warning",
            "kipsec sidecar of {{ $labels.namespace }}/{{ $labels.pod }} not ready",
            "A peer of this pod has had no installed child SA for 10 minutes: traffic "
            "to it is not carried. `kipsec-sidecar sas` in the pod lists the peers.",
        ),
        Alert(
            "KipsecPodsWithoutSidecar",
            f"max({c.series('kipsec_operator_pods_missing_sidecar')}) > 0",
            "5m",
            "critical",
            "{{ $value }} pod(s) selected by a Tunnel run without the kipsec sidecar",
            "Their traffic is not encrypted (created while the webhook was down with "
            "failurePolicy Ignore). Recreate them; the operator's Events name them.",
        ),
        Alert(
            "KipsecCertificateExpiringSoon",
            f"min {c.by('kipsec_operator_certificate_expiry_seconds', 'namespace', 'name')} "
            f"({c.series('kipsec_operator_certificate_expiry_seconds')}) "
            f"< {CERTIFICATE_MIN_SECONDS}",
            "15m",
            "warning",
            "A pod certificate of TunnelCertificate {{ $labels.namespace }}/{{ $labels.name }} "
            "expires in less than 4h",
            "Renewal should have happened at renewalTime. When it expires new IKE SAs "
            "fail to authenticate. Check the sidecars' logs and "
            "kipsec_operator_csr_refused_total.",
        ),
        Alert(
            "KipsecSidecarCertificateExpiringSoon",
            f"min {c.by(not_after, 'namespace', 'pod')} ({c.series(not_after)}) - time() "
            f"< {CERTIFICATE_MIN_SECONDS}",
            "15m",
            "warning",
            "The certificate of {{ $labels.namespace }}/{{ $labels.pod }} expires in less than 4h",
            "The sidecar reports its own certificate: it was not renewed at renewalTime. "
            "kipsec_identity_requests_total of the pod has the operator's refusal codes; "
            "when it expires new IKE SAs fail to authenticate.",
        ),
        Alert(
            "KipsecCaExpiringSoon",
            f"min({c.series('kipsec_operator_ca_expiry_seconds')}) < {CA_MIN_SECONDS}",
            "1h",
            "warning",
            "The kipsec operator's CA expires in less than 30 days",
            "CA rotation starts 60 days before expiry; it has not happened. Is an "
            "operator replica the leader?",
        ),
        Alert(
            "KipsecHandshakeFailures",
            f"sum {c.by(failures, 'namespace', 'pod', 'reason')} "
            f"(rate({c.series(failures)}[5m])) > 0",
            "10m",
            "warning",
            "IKE handshakes of {{ $labels.namespace }}/{{ $labels.pod }} keep failing: "
            "{{ $labels.reason }}",
            "IKE SA establishments failed for 10 minutes (no_proposal_chosen: the proposals "
            "do not overlap; authentication_failed: PSK or certificates; peer_dead: no "
            "answer). The Tunnel's Degraded condition has the error.",
        ),
        Alert(
            "KipsecAuthenticationFailures",
            f"sum {c.by('kipsec_auth_failures_total', 'namespace', 'pod')} "
            f"(increase({c.series('kipsec_auth_failures_total')}[10m])) > 0",
            "5m",
            "warning",
            "IKE authentication failures at {{ $labels.namespace }}/{{ $labels.pod }}",
            "A peer presented a wrong PSK, an untrusted or expired certificate, or a "
            "bad signature. Check the Tunnel's authentication Secret or certificates.",
        ),
        Alert(
            "KipsecReplayOrIntegrityDrops",
            f"sum {c.by('kipsec_dropped_packets_total', 'namespace', 'pod', 'reason')} "
            f"(rate({drops}[5m])) > 0",
            "5m",
            "warning",
            "{{ $labels.namespace }}/{{ $labels.pod }} drops packets: {{ $labels.reason }}",
            "Packets failing the ICV check or replayed keep arriving: tampering, a "
            "misbehaving middlebox, or keys out of step (manual keying).",
        ),
        Alert(
            "KipsecOperatorReconcileErrors",
            f"rate({c.series('kipsec_operator_reconcile_errors_total')}[5m]) > 0",
            "15m",
            "warning",
            "The kipsec operator's reconcile passes keep failing",
            "Pod configurations and Tunnel status are not being updated. See the operator's logs.",
        ),
    ]


def rule_file() -> dict[str, Any]:
    """The rule file: one group with every alert."""
    return {"groups": [{"name": GROUP, "rules": [alert.rule() for alert in alerts()]}]}


def render() -> str:
    """The rule file's text, with a header saying how it is made."""
    header = f"# Generated by `{REGENERATE}` from deploy/alerts/rules.py: do not edit.\n"
    return header + yaml.safe_dump(rule_file(), sort_keys=False, width=100)


def write(path: Path = ALERTS_FILE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    return path
