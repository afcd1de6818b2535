"""ExternalPeers: checks naming the field, the pods' peer entries, status from reports."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.external import external_peer_name
from kipsec_operator.reconcile.external_status import external_peer_status
from kipsec_operator.reconcile.render import plan
from kipsec_operator.reconcile.status import SidecarReport, tunnel_status
from kipsec_operator.webhook.selection import tunnel_selects
from kipsec_sidecar.config import load_config_string
from kipsec_sidecar.config.model import DEFAULT_IKEV1_PROPOSALS
from support.operator_objects import (
    PSK,
    config_map,
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
from support.pki import CertificateAuthority

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


SITE_CA = CertificateAuthority.root("site CA").cert.public_bytes(Encoding.PEM).decode()
"""A CA of the site's own (not kipsec's), as a gateway's certificate chains to."""


def _pods_certificate(app: str = "client") -> dict[str, Any]:
    """The TunnelCertificate "pods", selecting the pods labelled app=`app`."""
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "TunnelCertificate",
        "metadata": {"name": "pods", "namespace": "default"},
        "spec": {"selector": {"podSelector": {"matchLabels": {"app": app}}}},
    }


def _certificate_auth(ca: dict[str, Any], certificate: str = "pods") -> dict[str, Any]:
    """An ExternalPeer's certificate authentication: the CA reference(s) `ca`, the pods
    presenting the TunnelCertificate `certificate`."""
    return {"certificate": {**ca, "tunnelCertificateRef": {"name": certificate}}}


def _certificate_peer(ca: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """An ExternalPeer with certificates, the CA from `ca` (default the Secret "site-ca")."""
    authentication = _certificate_auth(ca or {"caSecretRef": {"name": "site-ca"}})
    return external_peer(authentication=authentication, **spec)


def _ca_file(rendering: Any, pod_name: str) -> str:
    entry = _peer(rendering, pod_name)
    (ca_file,) = entry["auth"]["certificate"]["caFiles"]
    return base64.b64decode(rendering.pods[("default", pod_name)].files[ca_file]).decode()


def test_certificates_put_the_peers_ca_into_the_pods_trust_bundle_for_that_peer() -> None:
    ca = secret("site-ca", {"ca.crt": SITE_CA})
    peer = _certificate_peer(identity={"dn": "CN=vpn.example.com"})
    rendering = plan(_cluster(ca, _pods_certificate(), peer, tunnel("t", external_spec())))
    entry = _peer(rendering, "c1")
    auth = entry["auth"]["certificate"]
    assert auth["source"] == "operator"
    assert auth["certFile"].endswith("/identity/tls.crt")
    assert _ca_file(rendering, "c1") == SITE_CA
    assert entry["identity"] == {"dn": "CN=vpn.example.com"}


@pytest.mark.parametrize("field", ["data", "binaryData"])
def test_the_peers_ca_may_come_from_a_configmap(field: str) -> None:
    value = SITE_CA if field == "data" else base64.b64encode(SITE_CA.encode()).decode()
    public = config_map("public-cas", {"bundle.pem": value}, field=field)
    peer = _certificate_peer({"caConfigMapRef": {"name": "public-cas", "key": "bundle.pem"}})
    rendering = plan(_cluster(public, _pods_certificate(), peer, tunnel("t", external_spec())))
    assert _ca_file(rendering, "c1") == SITE_CA
    config = rendering.pods[("default", "c1")]
    load_config_string(base64.b64decode(config.files["config.yaml"]).decode())


def test_pods_the_peers_tunnelcertificate_does_not_select_get_no_entry_and_are_named() -> None:
    """A pod without a certificate from that TunnelCertificate could not authenticate:
    it is left out (its other peers are kept) and the Tunnel says which pod and why."""
    ca = secret("site-ca", {"ca.crt": SITE_CA})
    only_c1 = _pods_certificate()
    only_c1["spec"]["selector"]["podSelector"] = {"matchLabels": {"app": "client", "n": "1"}}
    c1 = pod("c1", "10.0.0.1", labels={"app": "client", "n": "1"})
    cluster = _cluster(ca, only_c1, c1, _certificate_peer(), tunnel("t", external_spec()))
    rendering = plan(cluster)
    assert _peer(rendering, "c1")
    assert all(p["name"] != SITE for p in rendering.pods[("default", "c2")].document["peers"])
    status = tunnel_status(cluster.tunnels[("default", "t")], rendering, cluster, {}, now="T")
    degraded = status["conditions"][1]
    assert degraded["reason"] == "NoCertificate"
    assert "pod default/c2" in degraded["message"] and '"pods"' in degraded["message"]
    assert status["peersExpected"] == 1


def test_two_tunnels_linking_one_pod_to_one_peer_keep_the_first_and_name_both() -> None:
    cluster = _cluster(
        external_peer(), tunnel("a-first", external_spec()), tunnel("b-second", external_spec())
    )
    rendering = plan(cluster)
    assert [p["name"] for p in rendering.pods[("default", "c1")].document["peers"]] == [SITE]
    first = tunnel_status(cluster.tunnels[("default", "a-first")], rendering, cluster, {}, now="T")
    assert first["conditions"][1]["reason"] == "AsExpected"
    second = tunnel_status(
        cluster.tunnels[("default", "b-second")], rendering, cluster, {}, now="T"
    )
    ready, degraded = second["conditions"]
    assert (ready["reason"], degraded["reason"]) == ("PeerConflict", "PeerConflict")
    message = degraded["message"]
    assert "'a-first'" in message and "'b-second'" in message and '"site"' in message
    assert "pod default/c1" in message and "(and 1 more pairs)" in message


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
            {"authentication": _certificate_auth({"caSecretRef": {"name": "no-ca"}})},
            "spec.authentication.certificate.caSecretRef.name",
            '"no-ca" not found',
        ),
        (
            {"authentication": _certificate_auth({"caSecretRef": {"name": "site-ca"}}, "no-cert")},
            "spec.authentication.certificate.tunnelCertificateRef.name",
            'TunnelCertificate "no-cert" not found',
        ),
        (
            {"authentication": {"psk": {"secretRef": {"name": "site-psk", "key": "nokey"}}}},
            "spec.authentication.psk.secretRef.key",
            'no key "nokey"',
        ),
        (
            {"authentication": _certificate_auth({"caConfigMapRef": {"name": "no-cas"}})},
            "spec.authentication.certificate.caConfigMapRef.name",
            'ConfigMap "no-cas" not found',
        ),
        (
            {
                "authentication": _certificate_auth(
                    {"caConfigMapRef": {"name": "public-cas", "key": "other.pem"}}
                )
            },
            "spec.authentication.certificate.caConfigMapRef.key",
            'has no key "other.pem"',
        ),
        (
            {
                "authentication": _certificate_auth(
                    {"caConfigMapRef": {"name": "public-cas", "key": "junk.pem"}}
                )
            },
            "spec.authentication.certificate.caConfigMapRef.key",
            "holds no PEM CA certificate",
        ),
        (
            {
                "authentication": _certificate_auth(
                    {"caSecretRef": {"name": "site-psk", "key": "psk"}}
                )
            },
            "spec.authentication.certificate.caSecretRef.key",
            'Secret "site-psk" key "psk" holds no PEM CA certificate',
        ),
        (
            {
                "authentication": _certificate_auth(
                    {"caSecretRef": {"name": "site-ca"}, "caConfigMapRef": {"name": "public-cas"}}
                )
            },
            "spec.authentication.certificate",
            "exactly one of caSecretRef, caConfigMapRef",
        ),
        ({"identity": {"dn": "not a dn"}}, "spec.identity.dn", "RFC 4514"),
        ({"identity": {"fqdn": "vpn..example.com"}}, "spec.identity.fqdn", ""),
        ({"identity": {"address": "vpn.example.com"}}, "spec.identity.address", ""),
        ({"identity": {"email": "nobody"}}, "spec.identity.email", ""),
        ({"identity": {"fqdn": "a.example", "dn": "CN=a"}}, "spec.identity", "exactly one"),
        (
            {
                "identity": {"keyId": "gw"},
                "authentication": _certificate_auth({"caSecretRef": {"name": "site-ca"}}),
            },
            "spec.identity.keyId",
            "only works with PSK",
        ),
        (
            {"ikeVersion": 1, "proposals": {"ike": ["aes256gcm16-prfsha256-ecp256"]}},
            "spec.proposals.ike[0]",
            "with spec.ikeVersion 1: IKEv1 has no AEAD cipher for the ISAKMP SA",
        ),
        ({"proposals": {"ike": ["rot13-md4-modp768"]}}, "spec.proposals.ike[0]", ""),
    ],
)
def test_bad_input_is_a_problem_naming_the_field(
    spec: dict[str, Any], path: str, words: str
) -> None:
    web = service("web", ["10.96.0.10"], [{"port": 80}])
    cluster = _cluster(
        web,
        external_peer(**spec),
        secret("site-ca", {"ca.crt": SITE_CA}),
        config_map("public-cas", {"ca.crt": SITE_CA, "junk.pem": "-----BEGIN CERTIFICATE-----"}),
        _pods_certificate(),
        tunnel("t", external_spec()),
        tunnel("mesh", psk_mesh_spec()),
        cluster_networks=("10.244.0.0/16",),
    )
    problems = cluster.external_checks[("default", "site")]
    assert isinstance(problems, list) and problems
    assert [p.path for p in problems] == [path]
    assert words in str(problems[0])
    rendering = plan(cluster)  # never a crash: no pod is configured towards the peer
    assert [p.path for p in rendering.problems[("default", "t")]] == [
        "spec.selector.to.externalPeers[0]"
    ]
    assert ("default", "c1") not in rendering.pods
    assert ("default", "m1") in rendering.pods


def test_a_tunnelcertificate_without_the_pod_ips_is_refused_naming_the_field() -> None:
    """The pods' documents name them by address (`local.identity`), which the sidecar
    refuses unless their certificate carries it."""
    issuer = _pods_certificate()
    issuer["spec"]["identity"] = {"includePodIps": False}
    cluster = _cluster(
        secret("site-ca", {"ca.crt": SITE_CA}),
        issuer,
        _certificate_peer(),
        tunnel("t", external_spec()),
        tunnel("mesh", psk_mesh_spec()),
    )
    (problem,) = cluster.external_checks[("default", "site")]
    assert problem.path == "spec.authentication.certificate.tunnelCertificateRef.name"
    assert "includePodIps: false" in problem.message
    rendering = plan(cluster)
    assert ("default", "c1") not in rendering.pods
    assert ("default", "m1") in rendering.pods


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
    assert "spec.identity" in degraded["message"]  # a gateway proving another identity
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


def test_an_ikev1_peer_gets_v1_entries_the_v1_default_proposals_and_a_warning() -> None:
    cluster = _cluster(
        external_peer(ikeVersion=1),
        tunnel("t", external_spec()),
        tunnel("mesh", psk_mesh_spec()),
    )
    rendering = plan(cluster)
    assert rendering.problems == {}
    entry = _peer(rendering, "c1")
    assert entry["ikeVersion"] == 1
    assert "ike" not in entry["proposals"]  # the sidecar's IKEv1 default applies
    text = base64.b64decode(rendering.pods[("default", "c1")].files["config.yaml"]).decode()
    loaded = load_config_string(text)
    assert loaded.proposals_for(loaded.peers[0]).ike == list(DEFAULT_IKEV1_PROPOSALS)
    mesh = rendering.pods[("default", "m1")].document["peers"]
    assert all("ikeVersion" not in p for p in mesh)
    status = external_peer_status(
        cluster.external_peers[("default", "site")], rendering, cluster, {}, now="T"
    )
    assert [w.split(":")[0] for w in status["warnings"]] == ["spec.ikeVersion"]
    tunnel_warnings = tunnel_status(
        cluster.tunnels[("default", "t")], rendering, cluster, {}, now="T"
    )
    assert tunnel_warnings["warnings"] == []  # the ExternalPeer warns, not each Tunnel


def test_a_tunnel_to_external_peers_keeps_ike_version_2_and_says_where_to_set_it() -> None:
    spec = {**external_spec(), "ikeVersion": 1}
    rendering = plan(_cluster(external_peer(), tunnel("t", spec)))
    assert [p.path for p in rendering.problems[("default", "t")]] == ["spec.ikeVersion"]
    assert "ExternalPeer's spec.ikeVersion" in str(rendering.problems[("default", "t")][0])
