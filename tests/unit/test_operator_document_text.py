"""`document_text` writes exactly what ``json.dumps(..., sort_keys=True, indent=2)``
writes (the bytes of every pod's `config.yaml`, so an operator upgrade rewrites no
Secret), for generated JSON values and for rendered documents."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.document_text import document_text
from kipsec_operator.reconcile.render import plan
from support.operator_objects import PSK, b64, namespace, pod, psk_mesh_spec, tunnel

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_generated_values_are_written_as_json_dumps_writes_them(value: Any) -> None:
    assert document_text(value) == json.dumps(value, sort_keys=True, indent=2)


def test_keys_other_than_strings_are_left_to_json_dumps() -> None:
    value = {"b": {2: "x", 1: [True, None]}, "a": 1.5}
    assert document_text(value) == json.dumps(value, sort_keys=True, indent=2)


def test_rendered_documents_are_written_as_json_dumps_writes_them() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "mesh-psk", "namespace": "default"},
        "data": {"psk": b64(PSK)},
    }
    pods = []
    for i in range(4):
        item = pod(f"p{i}", f"10.0.0.{i + 1}")
        item["metadata"]["labels"] = {"app": "a"}
        pods.append(item)
    rendering = plan(
        Cluster.of([namespace("default"), secret, tunnel("t", psk_mesh_spec(app="a")), *pods])
    )
    assert len(rendering.pods) == 4
    for config in rendering.pods.values():
        assert document_text(config.document) == json.dumps(
            config.document, sort_keys=True, indent=2
        )
