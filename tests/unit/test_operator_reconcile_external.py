"""ExternalPeers: checks naming the field, the pods' peer entries, status from reports."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.external import external_peer_name
from kipsec_operator.reconcile.external_status import external_peer_status
from kipsec_operator.reconcile.render import plan
from kipsec_operator.reconcile.status import SidecarReport, tunnel_status
from kipsec_operator.webhook.selection import tunnel_selects
from kipsec_sidecar.config import load_config_string
from support.operator_objects import (
    PSK,
    external_peer,
    external_spec,
    namespace,
    pod,
    psk_mesh_spec,
    psk_secret,
    secret,
    service,
    tunnel,
)

BASE = [
    namespace("default"),
    psk_secret("site-psk"),
    psk_secret(),
    pod("c1", "10.0.0.1", labels={"app": "client"}),
    pod("c2", "10.0.0.2", labels={"app": "client"}),
    pod("m1", "10.0.1.1", labels={"app": "mesh"}),
    pod("m2", "10.0.1.2", labels={"app": "mesh"}),
]
SITE = external_peer_name(("default", "site"))


def _cluster(*objects: dict[str, Any], **kwargs: Any) -> Cluster:
    return Cluster.of([*BASE, *objects], **kwargs)


def _peer(rendering: Any, pod_name: str, name: str = SITE) -> dict[str, Any]:
    document = rendering.pods[("default", pod_name)].document
    return next(p for p in document["peers"] if p["name"] == name)


def test_every_selected_pod_gets_a_tunnel_mode_entry_towards_the_subnets() -> None:
    rendering = plan(_cluster(external_peer(), tunnel("t", external_spec())))
    assert rendering.problems == {}
    for name, ip in (("c1", "10.0.0.1"), ("c2", "10.0.0.2")):
        entry = _peer(rendering, name)
        assert entry["address"] == "192.0.2.10"
        assert entry["mode"] == "tunnel"
        assert entry["trafficSelectors"] == {"local": [f"{ip}/32"], "remote": ["172.20.0.0/24"]}
        assert entry["identity"] == {"address": "192.0.2.10"}
        config = rendering.pods[("default", name)]
        psk_file = entry["auth"]["psk"]["secretFile"]
        assert base64.b64decode(config.files[psk_file]).decode() == PSK
        text = base64.b64decode(config.files["config.yaml"]).decode()
        assert PSK not in text
        (peer,) = load_config_string(text).peers
        assert str(peer.address) == "192.0.2.10"


def test_a_single_host_is_reached_in_transport_mode_unless_the_tunnel_asks_for_tunnel() -> None:
    host = external_peer(subnets=None)
    rendering = plan(_cluster(host, tunnel("t", external_spec())))
    entry = _peer(rendering, "c1")
    assert entry["mode"] == "transport"
    assert entry["trafficSelectors"] == {"local": ["10.0.0.1/32"], "remote": ["192.0.2.10/32"]}
    spec = {**external_spec(), "mode": "tunnel"}
    assert _peer(plan(_cluster(host, tunnel("t", spec))), "c1")["mode"] == "tunnel"


def test_the_peers_proposals_lifetimes_identity_and_traffic_rules_are_rendered() -> None:
    peer = external_peer(
        identity={"fqdn": "vpn.example.com"},
        proposals={"ike": ["aes128gcm16-prfsha256-ecp256"], "esp": ["aes128gcm16"]},
        lifetimes={"ikeSa": "8h", "childSa": "2h", "rekeyMargin": "10m"},
    )
    spec = {**external_spec(), "traffic": [{"protocol": "TCP", "port": 443}]}
    entry = _peer(plan(_cluster(peer, tunnel("t", spec))), "c1")
    assert entry["identity"] == {"fqdn": "vpn.example.com"}
    assert entry["proposals"] == {"ike": ["aes128gcm16-prfsha256-ecp256"], "esp": ["aes128gcm16"]}
    assert entry["lifetimes"] == {"ikeSa": "8h", "childSa": "2h", "rekeyMargin": "10m"}
    assert entry["trafficSelectors"]["remote"] == [
        {"cidr": "172.20.0.0/24", "protocol": "tcp", "ports": 443}
    ]


def test_certificates_put_the_peers_ca_into_the_pods_trust_bundle_for_that_peer() -> None:
    ca = secret("site-ca", {"ca.crt": "-----BEGIN CERTIFICATE-----\nsite\n"})
    certificate = {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "TunnelCertificate",
        "metadata": {"name": "pods", "namespace": "default"},
        "spec": {"selector": {"podSelector": {"matchLabels": {"app": "client"}}}},
    }
    peer = external_peer(
        authentication={
            "certificate": {
                "caSecretRef": {"name": "site-ca"},
                "tunnelCertificateRef": {"name": "pods"},
            }
        },
        identity={"dn": "CN=vpn.example.com"},
    )
    rendering = plan(_cluster(ca, certificate, peer, tunnel("t", external_spec())))
    entry = _peer(rendering, "c1")
    auth = entry["auth"]["certificate"]
    assert auth["source"] == "operator"
    (ca_file,) = auth["caFiles"]
    files = rendering.pods[("default", "c1")].files
    assert base64.b64decode(files[ca_file]).decode().endswith("site\n")
    assert entry["identity"] == {"dn": "CN=vpn.example.com"}


def test_a_dns_name_uses_what_the_operator_resolved_and_is_refused_until_it_resolves() -> None:
    peer = external_peer(address="vpn.example.com")
    objects = (peer, tunnel("t", external_spec()))
    rendering = plan(_cluster(*objects, resolved={"vpn.example.com": ("192.0.2.77",)}))
    assert _peer(rendering, "c1")["address"] == "192.0.2.77"
    unresolved = _cluster(*objects)
    problems = unresolved.external_checks[("default", "site")]
    assert [p.path for p in problems] == ["spec.address"]
    assert "vpn.example.com" in str(problems[0])


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        ({"subnets": ["172.20.0.0/33"]}, "spec.subnets[0]", "not a CIDR"),
        ({"subnets": ["172.20.0.1/24"]}, "spec.subnets[0]", "host bits"),
        ({"subnets": ["10.0.0.0/24"]}, "spec.subnets[0]", "pod default/c1"),
        ({"subnets": ["10.96.0.0/16"]}, "spec.subnets[0]", "Service default/web"),
        ({"subnets": ["10.244.8.0/24"]}, "spec.subnets[0]", "cluster network 10.244.0.0/16"),
        ({"subnets": ["fd00::/64"]}, "spec.subnets[0]", "one family"),
        (
            {"authentication": {"psk": {"secretRef": {"name": "gone", "key": "psk"}}}},
            "spec.authentication.psk.secretRef.name",
            '"gone" not found',
        ),
        (
            {
                "authentication": {
                    "certificate": {
                        "caSecretRef": {"name": "no-ca"},
                        "tunnelCertificateRef": {"name": "no-cert"},
                    }
                }
            },
            "spec.authentication.certificate.caSecretRef.name",
            '"no-ca" not found',
        ),
        ({"ikeVersion": 1}, "spec.ikeVersion", "IKEv1 is not yet supported"),
        ({"proposals": {"ike": ["rot13-md4-modp768"]}}, "spec.proposals.ike[0]", ""),
    ],
)
def test_bad_input_is_a_problem_naming_the_field(
    spec: dict[str, Any], path: str, words: str
) -> None:
    web = service("web", ["10.96.0.10"], [{"port": 80}])
    cluster = _cluster(web, external_peer(**spec), cluster_networks=("10.244.0.0/16",))
    problems = cluster.external_checks[("default", "site")]
    assert isinstance(problems, list) and problems
    assert problems[0].path == path
    assert words in str(problems[0])


def test_of_two_overlapping_peers_the_later_one_is_refused_naming_the_first() -> None:
    first, second = external_peer("a-site"), external_peer("b-site", address="192.0.2.20")
    checks = _cluster(first, second).external_checks
    assert not isinstance(checks[("default", "a-site")], list)
    (problem,) = checks[("default", "b-site")]
    assert problem.path == "spec.subnets[0]" and '"a-site"' in str(problem)


def test_bad_tunnels_name_the_field_and_a_good_tunnel_in_the_namespace_still_renders() -> None:
    cluster = _cluster(
        external_peer("bad", subnets=["10.0.0.0/8"]),
        tunnel("to-missing", external_spec("client", "nowhere")),
        tunnel("to-bad", external_spec("client", "bad")),
        tunnel(
            "with-auth",
            {**external_spec("client", "bad"), "authentication": psk_mesh_spec()["authentication"]},
        ),
        tunnel("mesh", psk_mesh_spec()),
    )
    rendering = plan(cluster)
    paths = {key[1]: [p.path for p in found] for key, found in rendering.problems.items()}
    assert paths["to-missing"] == ["spec.selector.to.externalPeers[0]"]
    assert paths["to-bad"] == ["spec.selector.to.externalPeers[0]"]
    assert "spec.authentication" in paths["with-auth"]
    assert "mesh" not in paths
    assert {p["name"] for p in rendering.pods[("default", "m1")].document["peers"]} == {
        "default/m2"
    }
    assert ("default", "c1") not in rendering.pods


def test_start_follows_the_initiator_with_values_the_sidecar_accepts() -> None:
    def start(**spec: Any) -> str | None:
        entry = _peer(plan(_cluster(external_peer(**spec), tunnel("t", external_spec()))), "c1")
        return entry.get("start")

    assert start() is None  # auto: the sidecar's default
    assert start(start="onStart") == "onStart"
    assert start(initiator="pods", start="onDemand") == "onDemand"
    assert start(initiator="external") == "none"


def test_close_and_dead_peer_actions_reach_the_document_only_when_set() -> None:
    """Unset, the sidecar derives them from `start` (as before these fields existed);
    set, they are written as they are, and the sidecar's own loader accepts them."""

    def entry(**spec: Any) -> dict[str, Any]:
        return _peer(plan(_cluster(external_peer(**spec), tunnel("t", external_spec()))), "c1")

    assert "closeAction" not in entry() and "dpdAction" not in entry()
    chosen = entry(closeAction="restart", dpdAction="none")
    assert (chosen["closeAction"], chosen["dpdAction"]) == ("restart", "none")
    assert "closeAction" not in entry(dpdAction="onDemand")


def test_a_tunnel_counts_its_external_links_and_the_peer_its_established_pods() -> None:
    cluster = _cluster(external_peer(), tunnel("t", external_spec()))
    rendering = plan(cluster)
    reports = {
        ("default", "c1"): SidecarReport(frozenset({SITE})),
        ("default", "c2"): SidecarReport(
            failures=frozenset({(SITE, "AUTHENTICATION_FAILED")}), last_error="boom"
        ),
    }
    peer_status = external_peer_status(
        cluster.external_peers[("default", "site")], rendering, cluster, reports, now="T"
    )
    assert (peer_status["pods"], peer_status["podsEstablished"], peer_status["tunnels"]) == (
        2,
        1,
        1,
    )
    assert peer_status["podErrors"] == [{"pod": "default/c2", "reason": "AUTHENTICATION_FAILED"}]
    ready, degraded = peer_status["conditions"]
    assert (ready["reason"], degraded["reason"]) == ("SasPending", "SidecarError")
    assert "default/c2: AUTHENTICATION_FAILED" in degraded["message"]
    status = tunnel_status(cluster.tunnels[("default", "t")], rendering, cluster, reports, now="T")
    assert (status["peersExpected"], status["childSasEstablished"]) == (2, 1)


def test_an_invalid_peer_says_so_in_its_status_and_an_unused_one_is_not_ready() -> None:
    cluster = _cluster(
        external_peer(subnets=["nope"]),
        external_peer("idle", address="192.0.2.9", subnets=["172.30.0.0/24"]),
    )
    rendering = plan(cluster)
    bad = external_peer_status(
        cluster.external_peers[("default", "site")], rendering, cluster, {}, now="T"
    )
    assert bad["conditions"][0]["reason"] == "InvalidSpec"
    assert "spec.subnets[0]" in bad["conditions"][0]["message"]
    idle = external_peer_status(
        cluster.external_peers[("default", "idle")], rendering, cluster, {}, now="T"
    )
    assert idle["conditions"][0]["reason"] == "NotUsed"


def test_a_tunnels_start_reaches_its_pod_peers_and_auto_leaves_the_document_unchanged() -> None:
    def starts(**extra: Any) -> set[str | None]:
        rendering = plan(_cluster(tunnel("mesh", {**psk_mesh_spec(), **extra})))
        document = rendering.pods[("default", "m1")].document
        return {peer.get("start") for peer in document["peers"]}

    assert starts() == {None}
    assert starts(start="onDemand") == {"onDemand"}
    assert starts(start="none", closeAction="restart", dpdAction="none") == {"none"}
    rendering = plan(_cluster(tunnel("mesh", {**psk_mesh_spec(), "closeAction": "restart"})))
    peers = rendering.pods[("default", "m1")].document["peers"]
    assert peers and all(p["closeAction"] == "restart" and "dpdAction" not in p for p in peers)


def test_the_webhook_selects_only_the_from_pods_of_a_tunnel_to_external_peers() -> None:
    to_site = tunnel("t", external_spec())
    default = namespace("default")
    assert tunnel_selects(to_site, pod("c9", "10.0.0.9", labels={"app": "client"}), default)
    assert not tunnel_selects(to_site, pod("x", "10.0.0.8", labels={"app": "other"}), default)
