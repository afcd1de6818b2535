"""The sidecar document's IKEv1 public-key encryption (`certificate.publicKeyEncryption`
and `peerCertFile`): how it reaches the core's AuthConfig, and the errors naming the field
for the combinations that do not exist (IKEv2, non-RSA keys, a peer certificate without
the method)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from kipsec_sidecar.config import ConfigError, load_config_data, to_core
from support.pki import KeyKind
from support.sidecar_config_files import ExampleFiles

PEER_CERT = "/etc/kipsec/tls/peer.crt"


def files(own: KeyKind = "rsa", peer: KeyKind = "rsa") -> ExampleFiles:
    found = ExampleFiles()
    leaf = found.ca.issue("pod-a", key_kind=own, key_slot=90, dns=["pod-a.mesh.kipsec.test"])
    other = found.ca.issue("pod-b", key_kind=peer, key_slot=91, dns=["pod-b.mesh.kipsec.test"])
    found.files["/etc/kipsec/tls/tls.crt"] = leaf.cert.public_bytes(Encoding.PEM)
    found.files["/etc/kipsec/tls/tls.key"] = leaf.key.private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    found.files[PEER_CERT] = other.cert.public_bytes(Encoding.PEM)
    return found


def document(method: str | None = "rsa", *, ike_version: int = 1) -> dict[str, Any]:
    certificate: dict[str, Any] = {
        "certFile": "/etc/kipsec/tls/tls.crt",
        "keyFile": "/etc/kipsec/tls/tls.key",
        "caFiles": ["/etc/kipsec/tls/ca.crt"],
        "peerCertFile": PEER_CERT,
    }
    if method is not None:
        certificate["publicKeyEncryption"] = method
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {"addresses": ["10.244.1.10"], "auth": {"certificate": certificate}},
        "peers": [
            {
                "name": "legacy",
                "address": "10.244.2.20",
                "ikeVersion": ike_version,
                "identity": {"fqdn": "pod-b.mesh.kipsec.test"},
            }
        ],
    }


@pytest.mark.parametrize(("method", "number"), [("rsa", 4), ("revised", 5)])
def test_public_key_encryption_reaches_the_core(method: str, number: int) -> None:
    found = files()
    (plan,) = to_core(load_config_data(document(method)), read_file=found.read)
    assert plan.ike is not None
    assert plan.ike.auth.public_key_encryption == number
    assert plan.ike.auth.peer_certificate.startswith(b"\x30")  # DER
    assert PEER_CERT in found.reads


def errors_of(doc: dict[str, Any], found: ExampleFiles) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        to_core(load_config_data(doc), read_file=found.read)
    return [(e.path, e.message) for e in info.value.errors]


def test_public_key_encryption_with_ikev2_is_refused() -> None:
    ((path, message),) = errors_of(document(ike_version=2), files())
    assert path == "local.auth.certificate.publicKeyEncryption"
    assert "IKEv1 only" in message


def test_a_peer_certificate_without_the_method_is_refused() -> None:
    ((path, message),) = errors_of(document(None), files())
    assert path.startswith("local.auth.certificate")
    assert "peerCertFile" in message


def test_public_key_encryption_needs_rsa_keys_on_both_sides() -> None:
    ((path, _),) = errors_of(document(), files(own="ec256"))
    assert path == "local.auth.certificate.keyFile"
    ((path, _),) = errors_of(document(), files(peer="ec256"))
    assert path == "local.auth.certificate.peerCertFile"
