"""The alert rules: valid for Prometheus (`promtool check rules`), current (regenerated
from deploy/alerts), and each alert fires on the series it is about — and only after its
`for` — in `promtool test rules` unit tests over synthetic series.

promtool comes from the Debian package `prometheus`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy.alerts import ALERTS_FILE, Alert, alerts
from deploy.alerts.rules import REGENERATE, render

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: apt-get install prometheus"
)

SHOP = {"namespace": "shop", "pod": "web-1", "node": "node-a"}


def expand(template: str, labels: dict[str, str], value: str) -> str:
    """Prometheus' expansion of `{{ $labels.x }}` and `{{ $value }}` in an annotation."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)
    return text.replace("{{ $value }}", value)


def selector(name: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}}"


# alert name -> (input series, eval time when it fires, labels of the alert, $value,
# an eval time before `for` has passed when it must not fire yet)
CASES: dict[str, tuple[list[tuple[str, str]], str, dict[str, str], str, str]] = {
    "KipsecTunnelNotReady": (
        [
            (
                selector(
                    "kipsec_operator_tunnel_ready",
                    {"namespace": "shop", "tunnel": "web", "pod": "op-1"},
                ),
                "0x30",
            ),
            (
                selector(
                    "kipsec_operator_tunnel_ready",
                    {"namespace": "shop", "tunnel": "db", "pod": "op-1"},
                ),
                "1x30",
            ),
        ],
        "12m",
        {"namespace": "shop", "tunnel": "web"},
        "0",
        "5m",
    ),
    "KipsecExternalPeerUnreachable": (
        [
            (
                selector(
                    "kipsec_operator_external_peer_pods",
                    {"namespace": "shop", "external_peer": "dc", "pod": "op-1"},
                ),
                "3x30",
            ),
            (
                selector(
                    "kipsec_operator_external_peer_pods_established",
                    {"namespace": "shop", "external_peer": "dc", "pod": "op-1"},
                ),
                "1x30",
            ),
            (
                selector(
                    "kipsec_operator_external_peer_pods",
                    {"namespace": "shop", "external_peer": "partner", "pod": "op-1"},
                ),
                "2x30",
            ),
            (
                selector(
                    "kipsec_operator_external_peer_pods_established",
                    {"namespace": "shop", "external_peer": "partner", "pod": "op-1"},
                ),
                "2x30",
            ),
        ],
        "12m",
        {"namespace": "shop", "external_peer": "dc"},
        "2",
        "5m",
    ),
    "KipsecSidecarNotReady": (
        [
            (selector("kipsec_ready", SHOP), "0x30"),
            (selector("kipsec_ready", {**SHOP, "pod": "web-2"}), "1x30"),
        ],
        "12m",
        SHOP,
        "0",
        "5m",
    ),
    "KipsecPodsWithoutSidecar": (
        [(selector("kipsec_operator_pods_missing_sidecar", {"pod": "op-1"}), "3x30")],
        "7m",
        {},
        "3",
        "3m",
    ),
    "KipsecCertificateExpiringSoon": (
        [
            (
                selector(
                    "kipsec_operator_certificate_expiry_seconds",
                    {"namespace": "shop", "name": "ids"},
                ),
                "10000x30",
            ),
            (
                selector(
                    "kipsec_operator_certificate_expiry_seconds",
                    {"namespace": "shop", "name": "fresh"},
                ),
                "80000x30",
            ),
        ],
        "17m",
        {"namespace": "shop", "name": "ids"},
        "10000",
        "10m",
    ),
    "KipsecSidecarCertificateExpiringSoon": (
        [
            (selector("kipsec_identity_certificate_not_after_seconds", SHOP), "10000x30"),
            (
                selector("kipsec_identity_certificate_not_after_seconds", {**SHOP, "pod": "web-2"}),
                "80000x30",
            ),
        ],
        "17m",
        {"namespace": "shop", "pod": "web-1"},
        "8980",
        "10m",
    ),
    "KipsecCaExpiringSoon": (
        [(selector("kipsec_operator_ca_expiry_seconds", {"pod": "op-1"}), "86400x90")],
        "65m",
        {},
        "86400",
        "30m",
    ),
    "KipsecHandshakeFailures": (
        [
            (
                selector("kipsec_handshake_failures_total", {**SHOP, "reason": "peer_dead"}),
                "0+1x30",
            ),
            (
                selector("kipsec_handshake_failures_total", {**SHOP, "reason": "other"}),
                "0x30",
            ),
        ],
        "17m",
        {"namespace": "shop", "pod": "web-1", "reason": "peer_dead"},
        "0.016666666666666666",
        "5m",
    ),
    "KipsecAuthenticationFailures": (
        [(selector("kipsec_auth_failures_total", SHOP), "0+1x30")],
        "12m",
        {"namespace": "shop", "pod": "web-1"},
        "10",
        "3m",
    ),
    "KipsecReplayOrIntegrityDrops": (
        [
            (selector("kipsec_dropped_packets_total", {**SHOP, "reason": "integrity"}), "0+6x30"),
            (selector("kipsec_dropped_packets_total", {**SHOP, "reason": "no_sa"}), "0+6x30"),
        ],
        "12m",
        {"namespace": "shop", "pod": "web-1", "reason": "integrity"},
        "0.1",
        "4m",
    ),
    "KipsecOperatorReconcileErrors": (
        [(selector("kipsec_operator_reconcile_errors_total", {"pod": "op-1"}), "0+1x40")],
        "22m",
        {"pod": "op-1"},
        "0.016666666666666666",
        "10m",
    ),
}


def unit_test(alert: Alert) -> dict[str, Any]:
    series, fires_at, labels, value, not_yet = CASES[alert.name]
    expected = {
        "exp_labels": {**labels, "severity": alert.severity},
        "exp_annotations": {
            "summary": expand(alert.summary, labels, value),
            "description": expand(alert.description, labels, value),
        },
    }
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series],
        "alert_rule_test": [
            {"eval_time": not_yet, "alertname": alert.name, "exp_alerts": []},
            {"eval_time": fires_at, "alertname": alert.name, "exp_alerts": [expected]},
        ],
    }


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rule_file_is_current() -> None:
    assert ALERTS_FILE.read_text(encoding="utf-8") == render(), f"stale: run `{REGENERATE}`"


def test_every_alert_has_a_unit_test_and_a_severity() -> None:
    names = [alert.name for alert in alerts()]
    assert sorted(names) == sorted(CASES)
    assert {alert.severity for alert in alerts()} <= {"warning", "critical"}


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(CASES)} rules found" in result.stdout


@needs_promtool
@pytest.mark.parametrize("name", sorted(CASES))
def test_the_alert_fires_on_its_series_after_its_for(name: str, tmp_path: Path) -> None:
    alert = next(a for a in alerts() if a.name == name)
    tests = {"rule_files": [str(ALERTS_FILE)], "tests": [unit_test(alert)]}
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_a_unit_test_expecting_the_wrong_labels_fails(tmp_path: Path) -> None:
    """Guards the unit tests above: promtool does compare what they expect."""
    alert = next(a for a in alerts() if a.name == "KipsecReplayOrIntegrityDrops")
    wrong = unit_test(alert)
    wrong["alert_rule_test"][1]["exp_alerts"][0]["exp_labels"]["reason"] = "no_sa"
    path = tmp_path / "test.yaml"
    path.write_text(
        yaml.safe_dump({"rule_files": [str(ALERTS_FILE)], "tests": [wrong]}), encoding="utf-8"
    )
    assert promtool("test", "rules", str(path)).returncode != 0
