"""The lab reads manifests as a user applies them: ordered, normalized, checked."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from kipsec_lab.manifests import ManifestError, fold_string_data, load, ordered, parse

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "operator"


def test_namespaces_come_first_and_pods_last() -> None:
    kinds = [m.kind for m in load([EXAMPLES / "certificate-tunnel.yaml"])]
    assert kinds == ["Namespace", "TunnelCertificate", "Tunnel", "Pod", "Pod"]


def test_deletion_order_is_the_reverse() -> None:
    manifests = load([EXAMPLES / "psk-mesh.yaml"])
    kinds = [m.kind for m in ordered(manifests, reverse=True)]
    assert (kinds[0], kinds[-1]) == ("Pod", "Namespace")


def test_order_is_across_files() -> None:
    kinds = [m.kind for m in load([EXAMPLES / "ah.yaml", EXAMPLES / "psk-mesh.yaml"])]
    assert kinds.index("Pod") > max(i for i, k in enumerate(kinds) if k == "Namespace")


def test_string_data_is_folded_into_data_as_the_api_server_stores_it() -> None:
    folded = fold_string_data(
        {"kind": "Secret", "data": {"a": "eA==", "b": "eA=="}, "stringData": {"b": "psk"}}
    )
    assert "stringData" not in folded
    assert folded["data"] == {"a": "eA==", "b": base64.b64encode(b"psk").decode()}


def test_a_namespaced_object_without_namespace_lands_in_default() -> None:
    [manifest] = parse(
        [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}], "inline"
    )
    assert manifest.namespace == "default"
    assert manifest.body["metadata"]["namespace"] == "default"


def test_empty_documents_are_skipped() -> None:
    assert parse([None, None], "inline") == []


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}, "kind"),
        ({"apiVersion": "v2", "kind": "Pod", "metadata": {"name": "x"}}, "apiVersion"),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {}}, "metadata.name"),
        (["not", "a", "mapping"], "mapping"),
    ],
)
def test_a_bad_document_is_refused_naming_the_field(document: object, field: str) -> None:
    with pytest.raises(ManifestError, match=field) as refused:
        parse([document], "file.yaml")
    assert "file.yaml#0" in str(refused.value)


def test_a_file_that_is_not_yaml_is_refused_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed\n")
    with pytest.raises(ManifestError, match=r"bad\.yaml: not YAML"):
        load([bad])
