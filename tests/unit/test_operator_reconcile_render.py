"""Pods → sidecar documents and their Secrets: valid for the sidecar, deterministic."""

from __future__ import annotations

import base64
from typing import Any

import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.render import CONFIG_KEY, MOUNT_PATH, plan
from kipsec_sidecar.config import load_config_string
from support.operator_objects import (
    MASTER_KEY_HEX,
    PSK,
    TRUST_BUNDLE,
    namespace,
    pod,
    psk_mesh_spec,
    psk_secret,
    secret,
    tunnel,
    two_sided_spec,
)
from support.pki import CertificateAuthority

BASE = [namespace("default"), psk_secret()]
MESH = [
    pod("m1", "10.0.0.1", labels={"app": "mesh"}, uid="0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"),
    pod("m2", "10.0.0.2", labels={"app": "mesh"}),
]


def _render(objects: list[dict[str, Any]], **bundles: str) -> dict[str, Any]:
    cluster = Cluster.of(objects, {("default", k): v for k, v in bundles.items()})
    rendering = plan(cluster)
    assert rendering.problems == {}
    return {f"{k[0]}/{k[1]}": v for k, v in rendering.pods.items()}


def _config_text(pod_config: Any) -> str:
    return base64.b64decode(pod_config.secret()["data"][CONFIG_KEY]).decode()


def test_the_config_file_loads_in_the_sidecar() -> None:
    pods = _render([*BASE, tunnel("t", psk_mesh_spec()), *MESH])
    config = load_config_string(_config_text(pods["default/m1"]))
    (peer,) = config.peers
    assert peer.name == "default/m2"
    assert peer.address == "10.0.0.2"
    assert (peer.mode, peer.protocol, peer.keying) == ("transport", "esp", "ike")


def test_every_pod_sidecar_keeps_its_peers_traffic_blocked_across_a_restart() -> None:
    pods = _render([*BASE, tunnel("t", psk_mesh_spec()), *MESH])
    for pod_config in pods.values():
        assert load_config_string(_config_text(pod_config)).fail_closed_on_exit is True


def test_the_psk_reaches_the_pod_as_a_file_in_its_secret_and_not_in_the_document() -> None:
    pods = _render([*BASE, tunnel("t", psk_mesh_spec()), *MESH])
    secret_manifest = pods["default/m1"].secret()
    psk_file = pods["default/m1"].document["peers"][0]["auth"]["psk"]["secretFile"]
    key = psk_file.removeprefix(MOUNT_PATH + "/")
    assert base64.b64decode(secret_manifest["data"][key]).decode() == PSK
    assert PSK not in _config_text(pods["default/m1"])


def test_the_secret_is_owned_by_the_pod_and_named_after_its_uid() -> None:
    manifest = _render([*BASE, tunnel("t", psk_mesh_spec()), *MESH])["default/m1"].secret()
    assert manifest["metadata"]["name"] == "kipsec-sidecar-0b1c2d3e4f506172"
    assert manifest["metadata"]["namespace"] == "default"
    (owner,) = manifest["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Pod",
        "m1",
        "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
    )


def test_rendering_twice_gives_identical_secrets() -> None:
    objects = [*BASE, tunnel("t", psk_mesh_spec()), *MESH]
    first = _render(objects)["default/m1"].secret()
    second = _render(list(reversed(objects)))["default/m1"].secret()
    assert first == second


def test_a_pod_without_an_ip_is_not_rendered_until_it_has_one() -> None:
    waiting = pod("m3", None, labels={"app": "mesh"})
    pods = _render([*BASE, tunnel("t", psk_mesh_spec()), *MESH, waiting])
    assert "default/m3" not in pods
    assert [p["name"] for p in pods["default/m1"].document["peers"]] == ["default/m2"]
    pods = _render(
        [*BASE, tunnel("t", psk_mesh_spec()), *MESH, pod("m3", "10.0.0.3", labels={"app": "mesh"})]
    )
    assert "default/m3" in pods
    assert [p["name"] for p in pods["default/m1"].document["peers"]] == ["default/m2", "default/m3"]


def test_a_lonely_mesh_pod_gets_a_document_without_peers() -> None:
    pods = _render([*BASE, tunnel("t", psk_mesh_spec()), MESH[0]])
    assert pods["default/m1"].document["peers"] == []


def test_unselected_pods_get_no_document() -> None:
    pods = _render([*BASE, tunnel("t", psk_mesh_spec()), *MESH, pod("x", "10.0.0.9")])
    assert "default/x" not in pods


def test_ah_is_rendered_raw_with_the_ah_proposals() -> None:
    spec = psk_mesh_spec()
    spec.update(protocol="ah", proposals={"ah": ["sha384"]})
    peer = _render([*BASE, tunnel("t", spec), *MESH])["default/m1"].document["peers"][0]
    assert (peer["protocol"], peer["encapsulation"]) == ("ah", "raw")
    assert peer["proposals"] == {"ike": ["aes256gcm16-prfsha256-x25519"], "ah": ["sha384"]}


def test_tunnel_mode_and_lifetimes_are_carried_to_each_peer() -> None:
    spec = psk_mesh_spec()
    spec.update(mode="tunnel", lifetimes={"ikeSa": "8h", "childSa": "30m", "rekeyMargin": "3m"})
    pods = _render([*BASE, tunnel("t", spec), *MESH])
    config = load_config_string(_config_text(pods["default/m1"]))
    peer = config.peers[0]
    assert peer.mode == "tunnel"
    lifetimes = config.lifetimes_for(peer)
    assert (lifetimes.ike_sa, lifetimes.child_sa, lifetimes.rekey_margin) == (28800, 1800, 180)


def test_a_tunnel_certificate_gives_the_pod_identity_files_and_the_trust_bundle() -> None:
    spec = two_sided_spec()
    spec["authentication"] = {"certificate": {"tunnelCertificateRef": {"name": "ids"}}}
    certificate = {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "TunnelCertificate",
        "metadata": {"name": "ids", "namespace": "default"},
        "spec": {"selector": {}},
    }
    objects = [
        *BASE,
        certificate,
        tunnel("t", spec),
        pod("c1", "10.0.0.1", labels={"app": "client"}),
        pod("s1", "10.0.0.3", labels={"app": "server"}),
    ]
    pod_config = _render(objects, ids=TRUST_BUNDLE)["default/c1"]
    peer = pod_config.document["peers"][0]
    auth = peer["auth"]["certificate"]
    assert auth["keyFile"] == "/var/run/kipsec/identity/tls.key"
    ca_key = auth["caFiles"][0].removeprefix(MOUNT_PATH + "/")
    assert base64.b64decode(pod_config.files[ca_key]).decode() == TRUST_BUNDLE
    assert peer["identity"] == {"address": "10.0.0.3"}
    assert pod_config.document["local"]["identity"] == {"address": "10.0.0.1"}


def test_a_cert_manager_secret_is_copied_and_identities_are_left_to_the_ca() -> None:
    spec = psk_mesh_spec()
    spec["authentication"] = {"certificate": {"secretRef": {"name": "tls"}}}
    ca = CertificateAuthority.root("tls CA").cert.public_bytes(Encoding.PEM).decode()
    tls = secret(
        "tls",
        {"tls.crt": "CERT", "tls.key": "KEY", "ca.crt": ca},
        type_="kubernetes.io/tls",
    )
    pod_config = _render([*BASE, tls, tunnel("t", spec), *MESH])["default/m1"]
    auth = pod_config.document["peers"][0]["auth"]["certificate"]
    values = {
        name: base64.b64decode(pod_config.files[path.removeprefix(MOUNT_PATH + "/")]).decode()
        for name, path in (
            ("cert", auth["certFile"]),
            ("key", auth["keyFile"]),
            ("ca", auth["caFiles"][0]),
        )
    }
    assert values == {"cert": "CERT", "key": "KEY", "ca": ca}
    assert "identity" not in pod_config.document["peers"][0]
    assert "identity" not in pod_config.document["local"]


def test_manual_keying_writes_mirrored_spis_and_a_keys_file() -> None:
    spec = psk_mesh_spec()
    spec.pop("authentication")
    spec.update(keying="manual", encapsulation="raw", manual={"secretRef": {"name": "master"}})
    objects = [*BASE, secret("master", {"key": MASTER_KEY_HEX}), tunnel("t", spec), *MESH]
    pods = _render(objects)
    one = pods["default/m1"].document["peers"][0]["manual"]
    two = pods["default/m2"].document["peers"][0]["manual"]
    assert (one["spiIn"], one["spiOut"]) == (two["spiOut"], two["spiIn"])
    keys_file = one["keysFile"].removeprefix(MOUNT_PATH + "/")
    keys = yaml.safe_load(base64.b64decode(pods["default/m1"].files[keys_file]))
    assert sorted(keys) == ["encryptionIn", "encryptionOut"]
    assert len(bytes.fromhex(keys["encryptionIn"])) == 36  # aes256gcm16: key + salt
    load_config_string(_config_text(pods["default/m1"]))


def test_a_dual_stack_pod_lists_both_addresses() -> None:
    dual = pod("m1", "10.0.0.1", labels={"app": "mesh"}, ips=["10.0.0.1", "fd00::1"])
    pods = _render([*BASE, tunnel("t", psk_mesh_spec()), dual, MESH[1]])
    assert pods["default/m1"].document["local"]["addresses"] == ["10.0.0.1", "fd00::1"]


def test_an_invalid_tunnel_renders_nothing() -> None:
    spec = psk_mesh_spec(secret_name="missing")
    cluster = Cluster.of([*BASE, tunnel("t", spec), *MESH])
    rendering = plan(cluster)
    assert rendering.pods == {}
    assert [e.path for e in rendering.problems[("default", "t")]] == [
        "spec.authentication.psk.secretRef.name"
    ]


def test_the_secret_takes_the_name_the_webhook_recorded_on_the_pod() -> None:
    injected = pod("m1", "10.0.0.1", labels={"app": "mesh"})
    injected["metadata"]["annotations"] = {"kipsec.io/config-secret": "kipsec-sidecar-abc"}
    pods = _render([*BASE, tunnel("t", psk_mesh_spec()), injected, MESH[1]])
    assert pods["default/m1"].secret()["metadata"]["name"] == "kipsec-sidecar-abc"


def test_a_selected_pod_without_an_ip_gets_an_empty_bootstrap_secret() -> None:
    waiting = pod("m3", None, labels={"app": "mesh"})
    waiting["metadata"]["annotations"] = {"kipsec.io/config-secret": "kipsec-sidecar-m3"}
    rendering = plan(Cluster.of([*BASE, tunnel("t", psk_mesh_spec()), *MESH, waiting]))
    bootstrap = rendering.secrets()[("default", "m3")]
    assert bootstrap["metadata"]["name"] == "kipsec-sidecar-m3"
    assert bootstrap["metadata"]["ownerReferences"][0]["uid"] == "uid-default-m3"
    assert bootstrap["data"] == {}
