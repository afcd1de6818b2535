"""Every scenario of examples/operator/ in the lab, as a user applies it: the Tunnel
becomes Ready from what the sidecars report, and traffic between two pods it connects
crosses the lab bridge protected by the scenario's protocol, never in clear.

One lab serves the module; each scenario lives in its own namespaces and is deleted
after its test, so the lab stays small."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from kipsec_lab import cli, host
from kipsec_lab.status import sidecar_view
from support.lab_harness import EXAMPLES, Lab, eventually
from support.promql import measured_expressions

pytestmark = pytest.mark.netns


def check_scenario(
    lab: Lab,
    example: str,
    tunnel: str,
    protocols: set[str],
    verdict: str = "encrypted",
    ike_version: int | None = None,
    auth_method: int | None = None,
) -> None:
    """Apply `example`, wait for `tunnel` to be Ready, send traffic and check the
    capture; with `ike_version` (and `auth_method`, IKEv1's), every pod of the Tunnel's
    namespace has established IKE SAs of that version (and method) only, as its
    sidecar's control socket says."""
    path = EXAMPLES / example
    namespace, name = tunnel.split("/")
    lab.apply(path)
    try:
        lab.ready_tunnel(namespace, name)
        if ike_version is not None:
            pods = [p for p in lab.paths.read_state().pods if p.namespace == namespace]
            views = {p.name: sidecar_view(lab.paths, p) for p in pods}
            assert pods and all(v.ike_versions == (ike_version,) for v in views.values()), views
            if auth_method is not None:
                assert all(v.auth_methods == (auth_method,) for v in views.values()), views
        report = cli.traffic(lab.paths, None, None)
        described = report.summary.describe()
        assert report.tcp_echoed, described
        assert report.pings_received == report.pings_sent, described
        assert set(report.by_protocol) <= protocols | {"IKE"}, described
        assert set(report.by_protocol) & protocols, described
        assert report.verdict == verdict, described
    finally:
        lab.delete(path)


def test_psk_mesh_carries_esp_in_udp(lab: Lab) -> None:
    check_scenario(lab, "psk-mesh.yaml", "demo/cache-mesh", {"ESP in UDP 4500"})


def test_transport_mode_across_namespaces_carries_esp(lab: Lab) -> None:
    check_scenario(lab, "transport-mode.yaml", "ledger/payments-to-ledger", {"ESP in UDP 4500"})


def test_ah_carries_raw_ah_with_the_payload_readable(lab: Lab) -> None:
    check_scenario(lab, "ah.yaml", "audit/audit-ah", {"AH"}, verdict="authenticated")


def test_manual_keys_carry_raw_esp(lab: Lab) -> None:
    check_scenario(lab, "manual-keys.yaml", "legacy/legacy-manual", {"ESP"})


def test_certificate_tunnel_protects_its_tcp_port(lab: Lab) -> None:
    check_scenario(lab, "certificate-tunnel.yaml", "shop/frontend-to-backend", {"ESP in UDP 4500"})


def test_ikev1_certificates_carry_esp_in_udp(lab: Lab) -> None:
    # ISAKMP main mode with ECDSA signatures and quick mode between two pods; the
    # capture may hold IKE (UDP 500/4500) and ESP in UDP, nothing in clear.
    check_scenario(
        lab, "ikev1-certificates.yaml", "branch/legacy-ikev1", {"ESP in UDP 4500"}, ike_version=1
    )


def test_ikev1_public_key_encryption_with_certificates_the_operator_delivers(lab: Lab) -> None:
    # RSA public-key encryption (method 4): each pod knows its peer's certificate only
    # because the operator put it into the pod's Secret after signing the peer's CSR.
    check_scenario(
        lab,
        "ikev1-public-key-encryption.yaml",
        "vault/sealed-ikev1",
        {"ESP in UDP 4500"},
        ike_version=1,
        auth_method=4,
    )


def test_prometheus_scrapes_the_operator_and_every_sidecar(lab: Lab, tmp_path: Path) -> None:
    path = EXAMPLES / "psk-mesh.yaml"
    lab.apply(path)
    try:
        lab.ready_tunnel("demo", "cache-mesh")
        config = lab.paths.read_config()

        def scraped() -> dict[str, str] | None:
            answer = cli.query_prometheus(lab.paths, config, "up", instant=True)
            found = {
                r["metric"].get("pod") or r["metric"]["job"]: r["value"][1]
                for r in answer["data"]["result"]
            }
            wanted = {"kipsec-operator", "cache-0", "cache-1", "cache-2"}
            return found if wanted <= found.keys() and set(found.values()) == {"1"} else None

        eventually(scraped, 30)
        eventually(lambda: cli.query_prometheus(lab.paths, config)["data"]["result"], 30)
        cli.draw_png(lab.paths, tmp_path / "sas.png")
        assert (tmp_path / "sas.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    finally:
        lab.delete(path)


def test_every_dashboard_query_and_alert_expression_returns_series_from_the_lab(
    lab: Lab,
) -> None:
    # A PSK mesh, a certificate tunnel and pods towards an ExternalPeer: between them
    # every metric the dashboard and the alerts read is exported by the lab's operator or
    # sidecars. The lab has no gateway at the ExternalPeer's address (its control
    # namespace has no uplink, so the IKE requests go nowhere): its pods stay without an
    # SA, which is what the KipsecExternalPeerUnreachable expression selects.
    paths = [
        EXAMPLES / "psk-mesh.yaml",
        EXAMPLES / "certificate-tunnel.yaml",
        EXAMPLES / "external-peer-psk.yaml",
    ]
    for path in paths:
        lab.apply(path)
    try:
        lab.ready_tunnel("demo", "cache-mesh")
        lab.ready_tunnel("shop", "frontend-to-backend")
        config = lab.paths.read_config()
        expressions = measured_expressions()

        def series(expr: str) -> list[Any]:
            answer = cli.query_prometheus(lab.paths, config, expr, instant=True)
            return list(answer["data"]["result"])

        def empty() -> list[str]:
            return [name for name, expr in expressions.items() if not series(expr)]

        # rate() needs a few scrapes after the pods came up.
        eventually(lambda: not empty(), 60, lambda: "no series for:\n" + "\n".join(empty()))
    finally:
        for path in reversed(paths):
            lab.delete(path)


def test_a_sidecar_that_dies_is_restarted_and_the_tunnel_recovers(lab: Lab) -> None:
    path = EXAMPLES / "manual-keys.yaml"
    lab.apply(path)
    try:
        lab.ready_tunnel("legacy", "legacy-manual")
        [victim] = [p for p in lab.paths.read_state().pods if p.name == "legacy-0"]
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)

        def restarted() -> bool:
            [pod] = [p for p in lab.paths.read_state().pods if p.name == "legacy-0"]
            view = sidecar_view(lab.paths, pod)
            fresh = pod.restarts == 1 and pod.pid != victim.pid
            return fresh and not view.error and view.child_installed == 1

        eventually(restarted, 30, lab.logs)
        assert cli.traffic(lab.paths, "legacy/legacy-1", "legacy/legacy-0").encrypted
    finally:
        lab.delete(path)


def test_a_deleted_pod_loses_its_sidecar_and_its_namespace(lab: Lab) -> None:
    path = EXAMPLES / "ah.yaml"
    lab.apply(path)
    lab.ready_tunnel("audit", "audit-ah")
    pods = [p for p in lab.paths.read_state().pods if p.namespace == "audit"]
    assert len(pods) == 2 and all(p.pid for p in pods)
    lab.delete(path)

    def gone() -> bool:
        left = [p for p in lab.paths.read_state().pods if p.namespace == "audit"]
        namespaces = host.netns_list()
        return not left and not any(p.netns in namespaces for p in pods)

    eventually(gone, 20, lab.logs)
    assert not [p.pid for p in pods if p.pid and host.alive(p.pid)]
