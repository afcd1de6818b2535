"""Pods and a VPN gateway outside the cluster: the lab's external site (strongSwan's
charon in a namespace beyond the lab's WAN link, a host on the subnet behind it) and the
ExternalPeer examples of examples/operator/, applied as a user applies them.

One lab with the site serves the module. Every check of traffic looks at the wire
between the cluster and the site (the control namespace's ``ksite``), where the site's
subnet is routed in clear: a pod's packet to the host that its sidecar did not encrypt
would cross it and reach the host.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from kipsec_lab import cli, host, site
from kipsec_lab.state import PodState
from kipsec_lab.status import sidecar_view
from kipsec_lab.topology import Names
from support.lab_harness import EXAMPLES, Lab, eventually, start_lab

pytestmark = pytest.mark.netns

SITE_TIMEOUT = 45.0
"""Long enough for a sidecar's retry backoff (1, 2, 4, 8, 16 s) to reach a site back up."""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    started = start_lab(
        tmp_path_factory.mktemp("lab") / "state",
        f"kls{os.getpid() % 100000}",
        external_site=True,
    )
    try:
        yield started
    finally:
        cli.down(started.paths, quiet=True)
        assert not [ns for ns in host.netns_list() if ns.startswith(f"{started.config.name}-")]


def pods_of(lab: Lab, namespace: str) -> list[PodState]:
    return [p for p in lab.paths.read_state().pods if p.namespace == namespace]


def one_ike_sa_per_pod(
    lab: Lab, namespace: str, connection: str, *, besides: tuple[str, str] | None = None
) -> list[site.SiteSa] | None:
    """charon's SAs when it holds exactly one established IKE SA (with its child SA) per
    pod of ``namespace`` on ``connection`` (and per pod of ``besides``, a namespace and
    its connection) and nothing else; else None."""
    sas = site.list_sas(lab.paths.site)
    expected = [(namespace, connection)] + ([besides] if besides else [])
    pods = sorted((p.ip, c) for n, c in expected for p in pods_of(lab, n))
    good = [(sa.remote_host, sa.connection) for sa in sas if sa.state == "ESTABLISHED"]
    held = [(sa.remote_host, sa.connection) for sa in sas]
    if sorted(held) == pods == sorted(good) and all(sa.children_installed for sa in sas):
        return sas
    return None


def assert_encrypted_to_site(lab: Lab, source: str) -> None:
    report = cli.traffic(lab.paths, source, cli.SITE_TARGET, pings=5)
    described = report.summary.describe()
    assert report.verdict == "encrypted", described
    assert report.tcp_echoed and report.pings_received == 5, described
    assert set(report.by_protocol) <= {"ESP in UDP 4500", "IKE"}, described
    assert report.by_protocol["ESP in UDP 4500"] >= 10, described


def assert_nothing_in_clear(lab: Lab, source: str) -> None:
    """With the pod's SA down: nothing reaches the host and no packet between the pod and
    the site's subnet, nor the payload, crosses the wire (the WAN would deliver it)."""
    report = cli.traffic_to_site(lab.paths, source, pings=3, wait=3.0)
    described = report.summary.describe()
    assert report.pings_received == 0 and not report.tcp_echoed, described
    clear = [p for p in report.summary.packets if in_site(p.src) or in_site(p.dst)]
    assert not clear, described
    assert not report.summary.contains(report.marker), described


def in_site(address: str | None) -> bool:
    return address is not None and ipaddress.ip_address(address) in site.SUBNET


def status_text(lab: Lab) -> str:
    """What ``kipsec lab status`` prints, as plain text."""
    console = Console(file=io.StringIO(), width=250, color_system=None)
    console.print(cli.status_view(lab.paths)[0])
    output: str = console.file.getvalue()  # type: ignore[attr-defined]
    return output


def no_child_sa(lab: Lab, namespace: str) -> bool:
    return all(sidecar_view(lab.paths, p).child_installed == 0 for p in pods_of(lab, namespace))


def routes_to_site(pod: PodState) -> list[str]:
    """The pod's routes (any table) towards the site's subnet."""
    listed = host.run(["ip", "-n", pod.netns, "route", "show", "table", "all"])
    return [line for line in listed.splitlines() if str(site.SUBNET) in line]


def only(source: Path, kind: str, target: Path) -> Path:
    """The documents of ``kind`` in ``source``, as a file to delete them alone."""
    documents = [d for d in yaml.safe_load_all(source.read_text()) if d and d["kind"] == kind]
    target.write_text(yaml.safe_dump_all(documents))
    return target


def variant(source: Path, target: Path, namespace: str | None = None, **spec: Any) -> Path:
    """The example with the ExternalPeer's ``spec`` fields replaced (None removes one),
    and moved to ``namespace`` when given."""
    documents = [d for d in yaml.safe_load_all(source.read_text()) if d]
    for document in documents:
        if namespace is not None:
            key = "name" if document["kind"] == "Namespace" else "namespace"
            document["metadata"][key] = namespace
        if document["kind"] == "ExternalPeer":
            document["spec"].update(spec)
            document["spec"] = {k: v for k, v in document["spec"].items() if v is not None}
    target.write_text(yaml.safe_dump_all(documents))
    return target


def test_psk_pods_reach_the_host_behind_strongswan_and_recover_from_a_site_outage(
    lab: Lab, tmp_path: Path
) -> None:
    # The example with a liveness of seconds instead of its 10s/30s, so that a dead site
    # is noticed within the test's budget.
    liveness = {"interval": "2s", "timeout": "6s"}
    path = variant(EXAMPLES / "external-peer-psk.yaml", tmp_path / "psk.yaml", liveness=liveness)
    names = Names(lab.config.name)
    lab.apply(path)
    try:
        peer = lab.ready_external_peer("billing", "onprem")
        assert peer["status"]["podsEstablished"] == 2, peer["status"]
        eventually(lambda: one_ike_sa_per_pod(lab, "billing", "psk"), 20, lab.logs)
        assert_encrypted_to_site(lab, "billing/billing-0")
        assert_encrypted_to_site(lab, "billing/billing-1")
        shown = status_text(lab)
        assert "ExternalPeers" in shown and "2/2" in shown, shown
        for pod in pods_of(lab, "billing"):  # the gateway's table names each pod's SA
            assert re.search(rf"psk .*billing/{pod.name} .*{pod.ip} .*ESTABLISHED", shown), shown

        # The gateway goes away (charon stops, deleting its SAs): the pods keep their
        # traffic to the site in the sidecar (closeAction restart retries) ...
        site.stop(lab.paths.site)
        eventually(lambda: no_child_sa(lab, "billing"), 20, lab.logs)
        assert_nothing_in_clear(lab, "billing/billing-0")
        # ... and their SAs come back when it does, one IKE SA per pod.
        site.start(names, lab.paths.site)
        eventually(lambda: one_ike_sa_per_pod(lab, "billing", "psk"), SITE_TIMEOUT, lab.logs)
        lab.ready_external_peer("billing", "onprem")
        assert_encrypted_to_site(lab, "billing/billing-1")

        # The link to the site is cut: liveness declares the gateway dead in every pod
        # (ExternalPeer status), and dpdAction restart brings the SAs back once mended.
        site.set_link(names, up=False)
        try:

            def dead() -> bool:
                status = lab.external_peer("billing", "onprem").get("status") or {}
                reasons = {e.get("reason") for e in status.get("podErrors") or []}
                return status.get("podsEstablished") == 0 and reasons == {"peer_dead"}

            eventually(dead, 40, lambda: str(lab.external_peer("billing", "onprem")["status"]))
        finally:
            site.set_link(names, up=True)
        eventually(lambda: one_ike_sa_per_pod(lab, "billing", "psk"), SITE_TIMEOUT, lab.logs)
        lab.ready_external_peer("billing", "onprem")
        assert_encrypted_to_site(lab, "billing/billing-0")

        # Deleting the Tunnel removes the SAs on both sides and the sidecars' routes.
        lab.delete(only(path, "Tunnel", tmp_path / "tunnel.yaml"))
        pods = pods_of(lab, "billing")
        eventually(lambda: not site.list_sas(lab.paths.site), 20, lab.logs)
        eventually(lambda: not any(routes_to_site(p) for p in pods), 20, lab.logs)
        assert all(sidecar_view(lab.paths, p).peers == 0 for p in pods)
    finally:
        lab.delete(path)


def test_certificates_from_a_foreign_ca_carry_pod_traffic_to_the_site(
    lab: Lab, tmp_path: Path
) -> None:
    config_map = lab.paths.site / "ca-configmap.yaml"
    path = EXAMPLES / "external-peer-certificates.yaml"
    lab.apply(config_map)
    lab.apply(path)
    try:
        lab.ready_external_peer("onprem-certs", "onprem-gw", timeout=90)
        sas = eventually(lambda: one_ike_sa_per_pod(lab, "onprem-certs", "certificates"), 20)
        # The pods prove their address with the operator-issued certificate.
        assert {sa.remote_id for sa in sas} == {p.ip for p in pods_of(lab, "onprem-certs")}
        assert_encrypted_to_site(lab, "onprem-certs/reports-0")
        expect_another_identity_then_the_right_one(lab, path, tmp_path)

        # Deleting the ExternalPeer removes the SAs on both sides and the routes.
        peer = tmp_path / "peer.yaml"
        peer.write_text(
            yaml.safe_dump_all(
                d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "ExternalPeer"
            )
        )
        lab.delete(peer)
        pods = pods_of(lab, "onprem-certs")
        eventually(lambda: not site.list_sas(lab.paths.site), 20, lab.logs)
        eventually(lambda: not any(routes_to_site(p) for p in pods), 20, lab.logs)
        assert all(sidecar_view(lab.paths, p).peers == 0 for p in pods)
    finally:
        lab.delete(path)
        lab.delete(config_map)


def expect_another_identity_then_the_right_one(lab: Lab, path: Path, tmp_path: Path) -> None:
    """With the certificate example's SAs up: expecting an identity the gateway does not
    prove (it proves gw.onprem.example) takes every SA of that peer down on both sides,
    the ExternalPeer names the pods' authentication_failed and points at spec.identity,
    nothing leaves in clear, and a PSK Tunnel to the same gateway keeps its SAs; the right
    identity brings the SAs back."""
    good = variant(EXAMPLES / "external-peer-psk.yaml", tmp_path / "good.yaml", "billing-good")

    def both_up() -> list[site.SiteSa] | None:
        return one_ike_sa_per_pod(
            lab, "onprem-certs", "certificates", besides=("billing-good", "psk")
        )

    lab.apply(good)
    try:
        lab.ready_external_peer("billing-good", "onprem")
        eventually(both_up, 30, lab.logs)
        wrong = variant(path, tmp_path / "wrong.yaml", identity={"fqdn": "other.onprem.example"})
        lab.apply(wrong)

        def refused() -> dict[str, Any] | None:
            status = lab.external_peer("onprem-certs", "onprem-gw").get("status") or {}
            errors = {(e["pod"], e["reason"]) for e in status.get("podErrors") or []}
            pods = pods_of(lab, "onprem-certs")
            expected = {(f"onprem-certs/{p.name}", "authentication_failed") for p in pods}
            if status.get("podsEstablished") == 0 and errors == expected:
                return status
            return None

        status = eventually(
            refused, 60, lambda: str(lab.external_peer("onprem-certs", "onprem-gw"))
        )
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] == "SidecarError", degraded
        assert "authentication_failed" in degraded["message"], degraded
        assert "spec.identity" in degraded["message"], degraded
        # Neither side holds an SA of the refused peer; the good Tunnel's stay, alone.
        eventually(lambda: no_child_sa(lab, "onprem-certs"), 20, lab.logs)
        assert one_ike_sa_per_pod(lab, "billing-good", "psk"), site.list_sas(lab.paths.site)
        assert_nothing_in_clear(lab, "onprem-certs/reports-1")
        assert one_ike_sa_per_pod(lab, "billing-good", "psk"), site.list_sas(lab.paths.site)
        assert lab.external_peer("billing-good", "onprem")["status"]["podsEstablished"] == 2
        assert_encrypted_to_site(lab, "billing-good/billing-0")

        lab.apply(path)  # the identity the gateway proves
        lab.ready_external_peer("onprem-certs", "onprem-gw", timeout=90)
        eventually(both_up, 30, lab.logs)
        assert_encrypted_to_site(lab, "onprem-certs/reports-1")
    finally:
        lab.delete(good)
    eventually(lambda: one_ike_sa_per_pod(lab, "onprem-certs", "certificates"), 30, lab.logs)


def test_the_gateway_initiates_to_a_pod_that_only_answers(lab: Lab, tmp_path: Path) -> None:
    # initiator: external: the pods never initiate (start none) and hold their traffic to
    # the site until the gateway brings an SA up; pod addresses are routable from the site.
    path = variant(
        EXAMPLES / "external-peer-psk.yaml",
        tmp_path / "answer.yaml",
        namespace="billing-answers",
        initiator="external",
        start=None,
        closeAction="none",
        dpdAction="none",
    )
    lab.apply(path)
    try:
        for name in ("billing-0", "billing-1"):
            lab.ready_pod_sidecar("billing-answers", name)
        pods = {p.name: p for p in pods_of(lab, "billing-answers")}
        eventually(lambda: all(sidecar_view(lab.paths, p).peers == 1 for p in pods.values()), 30)
        assert not site.list_sas(lab.paths.site)
        assert_nothing_in_clear(lab, "billing-answers/billing-1")

        site.initiate(lab.paths.site, lab.config.cidr, "billing-0", pods["billing-0"].ip)
        [sa] = eventually(lambda: site.list_sas(lab.paths.site), 20, lab.logs)
        assert sa.initiator and sa.remote_host == pods["billing-0"].ip and sa.children_installed
        assert_encrypted_to_site(lab, "billing-answers/billing-0")
        assert_nothing_in_clear(lab, "billing-answers/billing-1")
        assert len(site.list_sas(lab.paths.site)) == 1
    finally:
        lab.delete(path)
