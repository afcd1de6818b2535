"""Documents are validated once per shape; the shape keeps what the loader's verdict uses."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.render import plan
from kipsec_operator.reconcile.shapes import shape, validate_document
from kipsec_sidecar.config import ConfigError
from support.operator_objects import namespace, pod, psk_mesh_spec, psk_secret, tunnel


def mesh_documents(*ips: str, spec: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    objects = [namespace("default"), psk_secret(), tunnel("mesh", spec or psk_mesh_spec())]
    objects += [pod(f"p{i}", ip, labels={"app": "mesh"}) for i, ip in enumerate(ips)]
    rendering = plan(Cluster.of(objects))
    return [dict(config.document) for config in rendering.pods.values()]


def test_pods_of_one_tunnel_share_a_shape_whatever_their_addresses() -> None:
    first, *others = mesh_documents("10.0.0.1", "10.0.0.2", "10.0.9.3")
    assert all(shape(other) == shape(first) for other in others)


def test_a_different_tunnel_spec_is_a_different_shape() -> None:
    spec = psk_mesh_spec()
    spec["proposals"] = {"esp": ["aes128gcm16"]}
    plain, _ = mesh_documents("10.0.0.1", "10.0.0.2")
    narrowed, _ = mesh_documents("10.0.0.1", "10.0.0.2", spec=spec)
    assert shape(plain) != shape(narrowed)


def test_the_ip_version_is_part_of_the_shape() -> None:
    v4, _ = mesh_documents("10.0.0.1", "10.0.0.2")
    v6, _ = mesh_documents("fd00::1", "fd00::2")
    assert shape(v4) != shape(v6)


def test_two_peers_at_one_address_keep_that_in_the_shape() -> None:
    document, *_ = mesh_documents("10.0.0.1", "10.0.0.2", "10.0.0.3")
    clash = copy.deepcopy(document)
    clash["peers"][1]["address"] = clash["peers"][0]["address"]
    assert shape(clash) != shape(document)
    with pytest.raises(ConfigError, match="one peer per address and port"):
        validate_document(clash, source="test")


def test_a_wide_selector_is_kept_literally() -> None:
    document, *_ = mesh_documents("10.0.0.1", "10.0.0.2")
    wide, wider = copy.deepcopy(document), copy.deepcopy(document)
    wide["peers"][0]["trafficSelectors"]["remote"] = ["10.0.0.0/24"]
    wider["peers"][0]["trafficSelectors"]["remote"] = ["10.0.1.0/24"]
    assert shape(wide) != shape(wider)


def test_an_invalid_document_is_refused_after_a_valid_one_of_another_shape() -> None:
    document, *_ = mesh_documents("10.0.0.1", "10.0.0.2")
    validate_document(document, source="test")
    broken = copy.deepcopy(document)
    broken["peers"][0]["protocol"] = "ah"
    broken["peers"][0]["encapsulation"] = "udp"
    with pytest.raises(ConfigError, match="AH cannot be UDP-encapsulated"):
        validate_document(broken, source="test")


def tunnel_documents(name: str) -> list[dict[str, Any]]:
    objects = [namespace("default"), psk_secret(), tunnel(name, psk_mesh_spec())]
    objects += [pod(f"p{i}", f"10.0.0.{i + 1}", labels={"app": "mesh"}) for i in range(3)]
    return [dict(config.document) for config in plan(Cluster.of(objects)).pods.values()]


def test_tunnels_with_one_spec_share_a_shape_whatever_their_file_tags() -> None:
    first, second = tunnel_documents("mesh")[0], tunnel_documents("other")[0]
    assert first["peers"][0]["auth"] != second["peers"][0]["auth"]  # psk-<tag of the Tunnel>
    assert shape(first) == shape(second)


def test_which_peers_share_a_file_stays_in_the_shape() -> None:
    document, *_ = mesh_documents("10.0.0.1", "10.0.0.2", "10.0.0.3")
    shared = document["peers"][0]["auth"]["psk"]["secretFile"]
    apart = copy.deepcopy(document)
    apart["peers"][1]["auth"]["psk"]["secretFile"] = "psk-0123456789ab"
    assert document["peers"][1]["auth"]["psk"]["secretFile"] == shared
    assert shape(apart) != shape(document)


def test_a_file_name_without_a_tag_is_kept_literally() -> None:
    document, *_ = mesh_documents("10.0.0.1", "10.0.0.2")
    one, other = copy.deepcopy(document), copy.deepcopy(document)
    one["peers"][0]["auth"]["psk"]["secretFile"] = "psk-file"
    other["peers"][0]["auth"]["psk"]["secretFile"] = "../psk-0123456789ab"
    assert shape(one) != shape(document) != shape(other)
