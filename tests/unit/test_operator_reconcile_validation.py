"""Semantic checks of a Tunnel: each problem names the exact field, never a secret."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.validation import validate_tunnel
from support.operator_objects import (
    MASTER_KEY_HEX,
    namespace,
    psk_mesh_spec,
    psk_secret,
    secret,
    tunnel,
)
from support.pki import CertificateAuthority

TLS_TYPE = "kubernetes.io/tls"
TLS = secret("tls", {"tls.crt": "C", "tls.key": "K"}, type_=TLS_TYPE)
OBJECTS = [
    namespace("default"),
    psk_secret(),
    TLS,
    secret("short", {"psk": "abc"}),
    secret("master", {"key": MASTER_KEY_HEX}),
    secret("weak", {"key": "abcd"}),
]


def _problems(spec: dict[str, Any]) -> list[tuple[str, str]]:
    cluster = Cluster.of(OBJECTS)
    return [(e.path, e.message) for e in validate_tunnel(tunnel("t", spec), cluster)]


def _spec(**changes: Any) -> dict[str, Any]:
    spec = psk_mesh_spec()
    spec.update(changes)
    return {k: v for k, v in spec.items() if v is not None}


def test_a_valid_tunnel_has_no_problems() -> None:
    assert _problems(_spec()) == []


@pytest.mark.parametrize(
    ("spec", "path", "message_part"),
    [
        (
            _spec(authentication={"psk": {"secretRef": {"name": "x", "key": "psk"}}}),
            "spec.authentication.psk.secretRef.name",
            'Secret "x" not found',
        ),
        (
            _spec(authentication={"psk": {"secretRef": {"name": "mesh-psk", "key": "nope"}}}),
            "spec.authentication.psk.secretRef.key",
            'has no key "nope"',
        ),
        (
            _spec(authentication={"psk": {"secretRef": {"name": "short", "key": "psk"}}}),
            "spec.authentication.psk.secretRef.key",
            "shorter than 8 bytes",
        ),
        (_spec(proposals={"esp": ["aes256gcm16", "3des-sha1"]}), "spec.proposals.esp[1]", "3DES"),
        (
            _spec(proposals={"ike": ["aes256gcm16-prfsha256-modp1024"]}),
            "spec.proposals.ike[0]",
            "MODP-1024 (DH group 2) is refused",
        ),
        (
            _spec(proposals={"ike": ["aes256gcm16-prfsha256"]}),
            "spec.proposals.ike[0]",
            "Diffie-Hellman",
        ),
        (
            _spec(protocol="ah", proposals={"ah": ["aes256gcm16"]}, encapsulation="raw"),
            "spec.proposals.ah[0]",
            "AH takes no encryption",
        ),
        (_spec(protocol="ah", encapsulation="udp"), "spec.encapsulation", "AH cannot be UDP"),
        (_spec(authentication=None), "spec.authentication", "required with keying: ike"),
        (
            _spec(
                authentication={
                    "psk": {"secretRef": {"name": "mesh-psk", "key": "psk"}},
                    "certificate": {"secretRef": {"name": "tls"}},
                }
            ),
            "spec.authentication",
            "exactly one of psk, certificate",
        ),
        (
            _spec(authentication={"certificate": {"secretRef": {"name": "tls"}}}),
            "spec.authentication.certificate.caSecretRef",
            "has no ca.crt",
        ),
        (
            _spec(authentication={"certificate": {"secretRef": {"name": "mesh-psk"}}}),
            "spec.authentication.certificate.secretRef.name",
            "not of type kubernetes.io/tls",
        ),
        (
            _spec(authentication={"certificate": {"tunnelCertificateRef": {"name": "ids"}}}),
            "spec.authentication.certificate.tunnelCertificateRef.name",
            'TunnelCertificate "ids" not found',
        ),
        (
            _spec(
                authentication={
                    "certificate": {"secretRef": {"name": "tls"}, "caSecretRef": {"name": "ca"}}
                }
            ),
            "spec.authentication.certificate.caSecretRef.name",
            'Secret "ca" not found',
        ),
        (
            _spec(lifetimes={"childSa": "10m", "rekeyMargin": "10m"}),
            "spec.lifetimes.rekeyMargin",
            "shorter than childSa",
        ),
        (
            _spec(traffic=[{"protocol": "ICMP", "port": 7}]),
            "spec.traffic[0].port",
            "TCP, UDP or SCTP",
        ),
        (_spec(traffic=[{"port": 90, "endPort": 80}]), "spec.traffic[0].endPort", "not be below"),
        (_spec(mode="bus"), "spec.mode", "'transport' or 'tunnel'"),
        (
            _spec(
                selector={
                    "from": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}
                }
            ),
            "spec.selector.from.podSelector.matchExpressions[0].values",
            "non-empty",
        ),
        (_spec(proposal=["x"]), "spec.proposal", "did you mean 'proposals'"),
        (
            _spec(keying="manual", authentication=None),
            "spec.manual",
            "required with keying: manual",
        ),
        (
            _spec(keying="manual", authentication=None, manual={"secretRef": {"name": "weak"}}),
            "spec.manual.secretRef.name",
            "at least 32 bytes",
        ),
        (
            _spec(keying="manual", authentication=None, manual={"secretRef": {"name": "psk"}}),
            "spec.manual.secretRef.name",
            'Secret "psk" not found',
        ),
        (
            _spec(
                keying="manual",
                authentication=None,
                manual={"secretRef": {"name": "master"}, "encryption": "aes256gcm16-aes128"},
            ),
            "spec.manual.encryption",
            "exactly one",
        ),
        (
            _spec(manual={"secretRef": {"name": "master"}}),
            "spec.manual",
            "only with keying: manual",
        ),
    ],
)
def test_problem_names_the_field(spec: dict[str, Any], path: str, message_part: str) -> None:
    problems = _problems(spec)
    assert path in [p for p, _ in problems], problems
    message = next(m for p, m in problems if p == path)
    assert message_part in message


def test_a_short_psk_is_reported_without_its_value() -> None:
    problems = _problems(
        _spec(authentication={"psk": {"secretRef": {"name": "short", "key": "psk"}}})
    )
    assert "abc" not in str(problems)


def test_a_missing_spec_is_reported() -> None:
    cluster = Cluster.of(OBJECTS)
    obj = tunnel("t", {})
    del obj["spec"]
    assert [e.path for e in validate_tunnel(obj, cluster)] == ["spec"]


CA_PEM = CertificateAuthority.root("peers' CA").cert.public_bytes(Encoding.PEM).decode()
CA_SECRETS = [
    secret("good-ca", {"ca.crt": CA_PEM}),
    secret("junk-ca", {"ca.crt": "-----BEGIN CERTIFICATE-----\nnot one\n"}),
    secret("tls-with-ca", {"tls.crt": "C", "tls.key": "K", "ca.crt": CA_PEM}, type_=TLS_TYPE),
    secret("tls-junk-ca", {"tls.crt": "C", "tls.key": "K", "ca.crt": "CA"}, type_=TLS_TYPE),
]


def _certificate(tls: str, ca: dict[str, str] | None = None) -> dict[str, Any]:
    certificate: dict[str, Any] = {"secretRef": {"name": tls}}
    if ca is not None:
        certificate["caSecretRef"] = ca
    return _spec(authentication={"certificate": certificate})


@pytest.mark.parametrize(
    ("spec", "problems"),
    [
        (_certificate("tls", {"name": "good-ca"}), []),
        (_certificate("tls-with-ca"), []),
        (
            _certificate("tls", {"name": "junk-ca"}),
            [
                (
                    "spec.authentication.certificate.caSecretRef.key",
                    'Secret "junk-ca" key "ca.crt" holds no PEM CA certificate',
                )
            ],
        ),
        (
            _certificate("tls", {"name": "good-ca", "key": "other.crt"}),
            [("spec.authentication.certificate.caSecretRef.key", 'Secret "good-ca" has no key')],
        ),
        (
            _certificate("tls-junk-ca"),
            [
                (
                    "spec.authentication.certificate.secretRef.name",
                    'Secret "tls-junk-ca" key "ca.crt" holds no PEM CA certificate',
                )
            ],
        ),
    ],
    ids=["ca-secret", "tls-ca", "junk-ca-secret", "missing-key", "junk-tls-ca"],
)
def test_the_ca_a_tunnel_trusts_is_checked_as_an_external_peers_is(
    spec: dict[str, Any], problems: list[tuple[str, str]]
) -> None:
    """The same check as an ExternalPeer's `caSecretRef` (the sidecar refuses a whole
    document over a CA file it cannot read, so the Tunnel is refused instead)."""
    cluster = Cluster.of([*OBJECTS, *CA_SECRETS])
    found = [(e.path, e.message) for e in validate_tunnel(tunnel("t", spec), cluster)]
    assert [path for path, _ in found] == [path for path, _ in problems]
    for (_, message), (_, words) in zip(found, problems, strict=True):
        assert words in message
