"""Semantic checks of a Tunnel: each problem names the exact field, never a secret."""

from __future__ import annotations

from typing import Any

import pytest

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

TLS = secret("tls", {"tls.crt": "C", "tls.key": "K"}, type_="kubernetes.io/tls")
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
