"""IKEv1 public-key encryption on a Tunnel: each pod's document names its peers'
certificates, which the operator delivers in the pod's Secret (never a key)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from kipsec_operator.reconcile.cluster import Cluster, ObjectKey
from kipsec_operator.reconcile.render import (
    CONFIG_KEY,
    POD_CERTIFICATE_KEY,
    PodConfig,
    plan,
    with_pod_certificate,
)
from kipsec_operator.reconcile.status import SidecarReport, tunnel_status
from kipsec_sidecar.config import load_config_string
from support.operator_objects import namespace, pod, tunnel, two_sided_spec
from support.pki import CertificateAuthority

CA = CertificateAuthority.root("kipsec pods", key_kind="rsa", key_slot=10)
OTHER_CA = CertificateAuthority.root("somebody else", key_kind="rsa", key_slot=11)
BUNDLE = CA.cert.public_bytes(Encoding.PEM).decode()
CLIENT, SERVER = ("default", "c1"), ("default", "s1")
PODS = [
    pod("c1", "10.0.0.1", labels={"app": "client"}),
    pod("s1", "10.0.0.3", labels={"app": "server"}),
]


def _certificate(
    ip: str, *, ca: CertificateAuthority = CA, key_kind: Any = "rsa", slot: int = 12
) -> str:
    """A pod certificate as its Secret holds it (base64 PEM)."""
    issued = ca.issue(ip, key_kind=key_kind, key_slot=slot, ips=[ip])
    return base64.b64encode(issued.cert.public_bytes(Encoding.PEM)).decode()


CERTIFICATES = {
    CLIENT: _certificate("10.0.0.1", slot=12),
    SERVER: _certificate("10.0.0.3", slot=13),
}


def _tunnel_certificate(algorithm: str = "RSA", **identity: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {}, "privateKey": {"algorithm": algorithm}}
    if identity:
        spec["identity"] = identity
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "TunnelCertificate",
        "metadata": {"name": "ids", "namespace": "default"},
        "spec": spec,
    }


def _spec(method: str = "rsa", **extra: Any) -> dict[str, Any]:
    spec = two_sided_spec(ikeVersion=1, **extra)
    spec["authentication"] = {
        "certificate": {"tunnelCertificateRef": {"name": "ids"}, "publicKeyEncryption": method}
    }
    return spec


def _plan(
    spec: dict[str, Any],
    certificates: dict[ObjectKey, str],
    algorithm: str = "RSA",
    **identity: Any,
) -> Any:
    issuer = _tunnel_certificate(algorithm, **identity)
    objects = [namespace("default"), issuer, tunnel("t", spec), *PODS]
    return plan(Cluster.of(objects, {("default", "ids"): BUNDLE}, pod_certificates=certificates))


def _pods(spec: dict[str, Any], certificates: dict[ObjectKey, str]) -> dict[ObjectKey, PodConfig]:
    rendering = _plan(spec, certificates)
    assert rendering.problems == {}
    return dict(rendering.pods)


def _file(config: PodConfig, name: str) -> str:
    return base64.b64decode(config.files[name]).decode()


@pytest.mark.parametrize("method", ["rsa", "revised"])
def test_each_pod_gets_its_peers_certificate_and_the_method(method: str) -> None:
    pods = _pods(_spec(method), CERTIFICATES)
    for local, remote in ((CLIENT, SERVER), (SERVER, CLIENT)):
        config = pods[local]
        (peer,) = config.document["peers"]
        certificate = peer["auth"]["certificate"]
        assert peer["ikeVersion"] == 1
        assert certificate["publicKeyEncryption"] == method
        assert certificate["source"] == "operator"
        assert config.files[certificate["peerCertFile"]] == CERTIFICATES[remote]
        # The sidecar's own loader takes the document (the keys, and so methods 4 and
        # 5 themselves, are checked in the pod, where they are).
        loaded = load_config_string(_file(config, CONFIG_KEY))
        auth = loaded.peers[0].auth
        assert auth is not None and auth.certificate is not None
        assert auth.certificate.public_key_encryption == method


def test_no_private_key_is_in_any_secret() -> None:
    for config in _pods(_spec(), CERTIFICATES).values():
        for name in config.files:
            assert "PRIVATE KEY" not in _file(config, name), name


def test_a_peer_without_a_known_certificate_is_left_out_but_the_pod_still_enrolls() -> None:
    pods = _pods(_spec(), {CLIENT: CERTIFICATES[CLIENT]})
    # c1 does not know s1's certificate yet: no entry for s1, but local.auth asks the
    # sidecar for its own certificate (source operator) so that s1 can get it.
    client = pods[CLIENT].document
    assert client["peers"] == []
    assert client["local"]["auth"]["certificate"]["source"] == "operator"
    assert "publicKeyEncryption" not in client["local"]["auth"]["certificate"]
    (peer,) = pods[SERVER].document["peers"]
    assert peer["name"] == "default/c1"


@pytest.mark.parametrize(
    "server_certificate",
    [
        _certificate("10.0.0.3", ca=OTHER_CA, slot=13),  # not signed by the bundle
        _certificate("10.0.0.9", slot=13),  # names another pod's address
        _certificate("10.0.0.3", key_kind="ec256", slot=13),  # no RSA key
        base64.b64encode(b"not a certificate").decode(),
    ],
    ids=["other-ca", "other-address", "ecdsa", "garbage"],
)
def test_a_certificate_the_operator_would_not_have_issued_is_not_handed_out(
    server_certificate: str,
) -> None:
    pods = _pods(_spec(), {**CERTIFICATES, SERVER: server_certificate})
    assert pods[CLIENT].document["peers"] == []
    assert server_certificate not in pods[CLIENT].files.values()


def test_a_renewed_certificate_changes_the_peers_document() -> None:
    before = _pods(_spec(), CERTIFICATES)[CLIENT]
    renewed = _pods(_spec(), {**CERTIFICATES, SERVER: _certificate("10.0.0.3", slot=14)})[CLIENT]
    old = before.document["peers"][0]["auth"]["certificate"]["peerCertFile"]
    new = renewed.document["peers"][0]["auth"]["certificate"]["peerCertFile"]
    assert old != new and old not in renewed.files
    assert renewed.files[CONFIG_KEY] != before.files[CONFIG_KEY]


def test_the_pods_own_certificate_is_kept_as_its_secret_holds_it() -> None:
    config = _pods(_spec(), CERTIFICATES)[CLIENT]
    assert POD_CERTIFICATE_KEY not in config.files
    current = {POD_CERTIFICATE_KEY: CERTIFICATES[CLIENT], CONFIG_KEY: "old"}
    kept = with_pod_certificate(config.secret(), current)
    assert kept["data"][POD_CERTIFICATE_KEY] == CERTIFICATES[CLIENT]
    assert kept["data"][CONFIG_KEY] == config.files[CONFIG_KEY]
    assert with_pod_certificate(config.secret(), {CONFIG_KEY: "old"}) == config.secret()


FIELD = "spec.authentication.certificate.publicKeyEncryption"


@pytest.mark.parametrize(
    ("spec", "algorithm", "message"),
    [
        ({**_spec(), "ikeVersion": 2}, "RSA", "only with spec.ikeVersion: 1"),
        (_spec(), "ECDSA", 'TunnelCertificate "ids" issues ECDSA keys'),
        (_spec(), "Ed25519", 'TunnelCertificate "ids" issues Ed25519 keys'),
        (
            {
                **_spec(),
                "authentication": {
                    "certificate": {"secretRef": {"name": "tls"}, "publicKeyEncryption": "rsa"}
                },
            },
            "RSA",
            "only with tunnelCertificateRef",
        ),
        (
            {**_spec(), "keying": "manual", "ikeVersion": 2},
            "RSA",
            "only with keying: ike",
        ),
        (
            {
                **_spec(),
                "selector": {
                    "from": {"podSelector": {"matchLabels": {"app": "client"}}},
                    "to": {"externalPeers": ["gw"]},
                },
                "ikeVersion": 2,
            },
            "RSA",
            "not with spec.selector.to.externalPeers",
        ),
    ],
    ids=["ikev2", "ecdsa", "ed25519", "shared-secret", "manual", "external-peers"],
)
def test_what_cannot_work_is_refused_naming_the_field(
    spec: dict[str, Any], algorithm: str, message: str
) -> None:
    rendering = _plan(spec, CERTIFICATES, algorithm)
    problems = rendering.problems[("default", "t")]
    assert any(p.path == FIELD and message in p.message for p in problems), problems
    assert rendering.pods == {}


@pytest.mark.parametrize("method", ["rsa", None], ids=["public-key-encryption", "signatures"])
def test_a_tunnelcertificate_without_the_pod_ips_is_refused_naming_the_field(
    method: str | None,
) -> None:
    """Without the pods' IPs in their certificates no peer certificate would ever be
    handed out (public-key encryption), and every document names the pods by address,
    which the sidecar refuses unless the certificate carries it: refused up front."""
    spec = _spec(method or "rsa")
    if method is None:
        del spec["authentication"]["certificate"]["publicKeyEncryption"]
    rendering = _plan(spec, CERTIFICATES, includePodIps=False)
    (problem,) = rendering.problems[("default", "t")]
    assert problem.path == "spec.authentication.certificate.tunnelCertificateRef.name"
    assert 'TunnelCertificate "ids" has spec.identity.includePodIps: false' in problem.message
    assert rendering.pods == {}  # nothing half-configured
    assert _plan(spec, CERTIFICATES, includePodIps=True).problems == {}


def _ready(certificates: dict[ObjectKey, str], established: bool = False) -> dict[str, Any]:
    """The Tunnel's Ready condition, its sidecars reporting their links up or none."""
    spec = _spec()
    objects = [namespace("default"), _tunnel_certificate(), tunnel("t", spec), *PODS]
    cluster = Cluster.of(objects, {("default", "ids"): BUNDLE}, pod_certificates=certificates)
    rendering = plan(cluster, only=[])  # the status holds for pods not rendered in a pass
    reports = {
        CLIENT: SidecarReport(frozenset({"default/s1"})),
        SERVER: SidecarReport(frozenset({"default/c1"})),
    }
    status = tunnel_status(
        cluster.tunnels[("default", "t")],
        rendering,
        cluster,
        reports if established else {},
        now="T",
    )
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def test_pods_waiting_for_their_peers_certificates_are_told_apart_from_pending_sas() -> None:
    for certificates, waiting in (({}, 2), ({CLIENT: CERTIFICATES[CLIENT]}, 1)):
        ready = _ready(certificates)
        assert (ready["status"], ready["reason"]) == ("False", "PeerCertificatesPending")
        assert ready["message"].startswith(f"{waiting} pod(s) wait for their peers' certificates")
        assert ready["message"].endswith("0 of 2 child SAs established")
    # Every certificate known: what is left is the IKE exchanges.
    assert _ready(CERTIFICATES)["reason"] == "SasPending"
    assert _ready(CERTIFICATES, established=True)["reason"] == "AllSasEstablished"
