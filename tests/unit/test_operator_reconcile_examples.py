"""Every example in examples/operator reconciles to valid sidecar documents (the
certificate ExternalPeer example with the CA ConfigMap the lab's external site writes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from kipsec_lab import site
from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.render import plan
from kipsec_sidecar.config import load_config_data
from support.operator_objects import example_objects, example_trust_bundles, pod_certificates
from support.pki import CertificateAuthority

RSA_CA = CertificateAuthority.root("kipsec pods", key_kind="rsa", key_slot=10)
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "operator").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_renders_a_valid_document_with_peers_for_every_pod(
    path: Path, tmp_path: Path
) -> None:
    objects = example_objects(path)
    if path.name == "external-peer-certificates.yaml":
        site.configure(tmp_path, "10.1.0.0/16")  # the site CA's ConfigMap, as the lab writes it
        objects = example_objects(tmp_path / "ca-configmap.yaml") + objects
    bundles, certificates = example_trust_bundles(objects), {}
    if path.name == "ikev1-public-key-encryption.yaml":
        # The certificates the operator signed for the pods and recorded in their Secrets.
        pem = RSA_CA.cert.public_bytes(Encoding.PEM).decode()
        bundles = dict.fromkeys(bundles, pem)
        certificates = pod_certificates(objects, RSA_CA)
    cluster = Cluster.of(objects, bundles, pod_certificates=certificates)
    rendering = plan(cluster)
    assert rendering.problems == {}
    pods = {key for key, obj in cluster.pods.items()}
    assert set(rendering.pods) == pods
    for config in rendering.pods.values():
        assert config.document["peers"], f"{config.pod.peer_name} has no peer"
        load_config_data(config.document)


def test_the_ikev1_example_renders_ikev1_peers_with_the_sidecars_ikev1_proposals() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "operator" / "ikev1-certificates.yaml"
    objects = example_objects(path)
    rendering = plan(Cluster.of(objects, example_trust_bundles(objects)))
    assert rendering.problems == {}
    peers = [p for config in rendering.pods.values() for p in config.document["peers"]]
    assert len(peers) == 2
    for peer in peers:
        assert peer["ikeVersion"] == 1 and "ike" not in peer["proposals"]
        assert "certificate" in peer["auth"]
