"""The lab's external site without root: it mirrors the ExternalPeer examples (address,
subnet, PSK, gateway identity, CA ConfigMap), and its configuration is what charon reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from kipsec_lab import site
from kipsec_lab.topology import Names

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "operator"


def documents(name: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d}


def test_the_psk_example_names_the_sites_gateway_subnet_and_key() -> None:
    found = documents("external-peer-psk.yaml")
    spec = found["ExternalPeer"]["spec"]
    assert spec["address"] == site.PSK_GATEWAY
    assert spec["subnets"] == [str(site.SUBNET)]
    assert found["Secret"]["stringData"]["psk"] == site.PSK


def test_the_certificate_example_names_the_sites_gateway_identity_and_ca_config_map() -> None:
    found = documents("external-peer-certificates.yaml")
    peer = found["ExternalPeer"]
    spec = peer["spec"]
    assert spec["address"] == site.CERT_GATEWAY
    assert spec["subnets"] == [str(site.SUBNET)]
    assert spec["identity"] == {"fqdn": site.GATEWAY_ID}
    ca = spec["authentication"]["certificate"]["caConfigMapRef"]
    assert (peer["metadata"]["namespace"], ca["name"]) == site.CA_CONFIG_MAP
    assert ca["key"] == "ca.crt"


def test_the_ca_config_map_manifest_holds_the_site_ca_for_the_example() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    namespace, config_map = yaml.safe_load_all(site.ca_config_map_manifest(pem + pem))
    assert namespace["kind"] == "Namespace"
    assert namespace["metadata"]["name"] == site.CA_CONFIG_MAP[0]
    metadata = config_map["metadata"]
    assert config_map["kind"] == "ConfigMap"
    assert (metadata["namespace"], metadata["name"]) == site.CA_CONFIG_MAP
    assert config_map["data"]["ca.crt"].encode() == pem + pem


def test_the_gateway_certificate_chains_to_the_site_ca_and_names_the_gateway(
    tmp_path: Path,
) -> None:
    site.configure(tmp_path, "10.215.0.0/16")
    ca = x509.load_pem_x509_certificate((tmp_path / "site-ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "swanctl/x509/gateway.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [site.GATEWAY_ID]
    assert (tmp_path / "swanctl/private/gateway.key").stat().st_mode & 0o077 == 0
    # The gateway trusts the pods' issuer (kipsec's CA) only, not its own site CA.
    assert not list((tmp_path / "swanctl/x509ca").iterdir())
    config_map = list(yaml.safe_load_all((tmp_path / "ca-configmap.yaml").read_text()))[1]
    assert config_map["data"]["ca.crt"].encode() == (tmp_path / "site-ca.crt").read_bytes()


def test_swanctl_conf_answers_every_pod_and_initiates_to_the_pods_named() -> None:
    text = site.swanctl_conf("10.215.0.0/16", {"billing-0": "10.215.1.2"})
    for line in text.splitlines():  # charon takes one `key = value` per line
        assert line.count(" = ") <= 1, line
    assert text.count("{") == text.count("}")
    assert "remote_ts = 10.215.0.0/16" in text
    assert "psk-to-billing-0 {" in text and "remote_addrs = 10.215.1.2" in text
    assert "remote_ts = 10.215.1.2/32" in text
    assert f'secret = "{site.PSK}"' in text
    assert f"id = {site.GATEWAY_ID}" in text and "unique = replace" in text


def test_strongswan_conf_keeps_charons_own_packets_off_the_tunnel_routes(tmp_path: Path) -> None:
    text = site.strongswan_conf(tmp_path)
    assert "allow_peer_ts = yes" in text
    assert f"fwmark = {site.IKE_MARK}" in text and f"fwmark = !{site.IKE_MARK}" in text
    assert f"socket = unix://{tmp_path}/charon.vici" in text


@pytest.mark.parametrize(
    ("cidr", "clash"),
    [("10.213.0.0/16", None), ("198.51.100.0/23", "198.51.100.0/24"), ("203.0.0.0/8", "203.0")],
)
def test_the_lab_network_must_not_overlap_the_site(cidr: str, clash: str | None) -> None:
    problem = site.overlap(cidr)
    assert (problem is None) if clash is None else (clash in (problem or ""))


def test_the_site_namespaces_belong_to_the_lab_and_are_swept() -> None:
    names = Names("kipsec-lab")
    assert names.owns(site.gateway_netns(names)) and names.owns(site.host_netns(names))
    assert not Names("other").owns(site.gateway_netns(names))
