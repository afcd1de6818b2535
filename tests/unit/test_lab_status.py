"""`kipsec lab status` shows what the operator wrote: each condition's reason *and*
message (a reason such as `InvalidSpec` alone does not say which field), Degraded when
it says more, and the TunnelCertificates."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from kipsec_lab.status import (
    SidecarView,
    certificate_table,
    external_peer_table,
    ike_cell,
    tunnel_table,
)


def text(table: Table) -> str:
    console = Console(record=True, width=400, color_system=None)
    console.print(table)
    return console.export_text()


def obj(kind: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"namespace": "demo", "name": name}, "status": status}


def cond(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def test_a_tunnel_shows_ready_reason_and_message_and_a_degraded_that_says_more() -> None:
    invalid = obj(
        "Tunnel",
        "bad",
        {
            "conditions": [
                cond(
                    "Ready",
                    "False",
                    "InvalidSpec",
                    'spec.authentication.psk.secretRef.name: Secret "x" not found',
                ),
                cond(
                    "Degraded",
                    "True",
                    "InvalidSpec",
                    'spec.authentication.psk.secretRef.name: Secret "x" not found',
                ),
            ]
        },
    )
    pending = obj(
        "Tunnel",
        "slow",
        {
            "conditions": [
                cond("Ready", "False", "SasPending", "1 of 2 child SAs established"),
                cond("Degraded", "True", "SidecarError", "demo/a: AUTHENTICATION_FAILED"),
            ],
            "lastError": "demo/a: AUTHENTICATION_FAILED",
        },
    )
    shown = text(tunnel_table([invalid, pending]))
    assert 'InvalidSpec: spec.authentication.psk.secretRef.name: Secret "x" not found' in shown
    assert shown.count('Secret "x" not found') == 1  # Degraded repeats nothing
    assert "SasPending: 1 of 2 child SAs established" in shown
    assert "Degraded SidecarError: demo/a: AUTHENTICATION_FAILED" in shown


def test_markup_in_a_message_is_shown_as_text() -> None:
    tunnel = obj("Tunnel", "t", {"conditions": [cond("Ready", "False", "NoPeers", "[red]x[/] y")]})
    assert "NoPeers: [red]x[/] y" in text(tunnel_table([tunnel]))


def test_tunnel_certificates_are_listed_with_their_condition() -> None:
    issued = obj(
        "TunnelCertificate",
        "ids",
        {
            "conditions": [
                cond(
                    "Ready",
                    "False",
                    "IssuerUnavailable",
                    "spec.issuer.caSecretRef: Secret demo/ca not found",
                )
            ],
            "podsIssued": 2,
            "notAfter": "2026-12-08T02:00:00+00:00",
        },
    )
    shown = text(certificate_table([issued]))
    assert "TunnelCertificates" in shown
    assert "IssuerUnavailable: spec.issuer.caSecretRef: Secret demo/ca not found" in shown
    assert "2026-12-08T02:00:00+00:00" in shown and " 2 " in shown


def test_an_external_peer_shows_its_address_connected_pods_and_each_pods_reason() -> None:
    peer = obj(
        "ExternalPeer",
        "onprem",
        {
            "conditions": [
                cond("Ready", "False", "SasPending", "1 of 2 pods established"),
                cond("Degraded", "True", "SidecarError", "demo/b: PEER_DEAD"),
            ],
            "pods": 2,
            "podsEstablished": 1,
            "podErrors": [{"pod": "demo/b", "reason": "PEER_DEAD"}],
        },
    )
    peer["spec"] = {"address": "203.0.113.10"}
    shown = text(external_peer_table([peer]))
    assert "ExternalPeers" in shown and "203.0.113.10" in shown
    assert " 1/2 " in shown
    assert "demo/b: PEER_DEAD" in shown


def test_the_pod_table_names_ikev1_and_its_authentication_method() -> None:
    assert ike_cell(SidecarView(peers=2, ike_established=2, ike_versions=(2,))) == "2/2"
    v1 = SidecarView(peers=1, ike_established=1, ike_versions=(1,), auth_methods=(4,))
    assert ike_cell(v1) == "1/1 IKEv1 method 4"
    mixed = SidecarView(peers=2, ike_established=2, ike_versions=(1, 2), auth_methods=(9,))
    assert ike_cell(mixed) == "2/2 IKEv1+IKEv2 method 9"
    assert ike_cell(SidecarView()) == "-"
