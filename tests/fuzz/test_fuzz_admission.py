"""Random AdmissionReview bodies: the webhook always answers a well-formed AdmissionReview.

Three sources: arbitrary JSON values and bytes, valid pod-CREATE reviews with one value
replaced anywhere by junk, and valid reviews with junk Tunnels. Whatever comes in, the
answer is an admission.k8s.io/v1 AdmissionReview response with a string uid and a
boolean `allowed`; a refusal carries a 400/422 code (never the 500 of the last-resort
guard, which would hide a bug) and a message; a patch decodes to a
JSON list that the `jsonpatch` package applies to the pod it came with.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipsec_operator.webhook.admission import review
from kipsec_operator.webhook.injection import InjectionSettings

SETTINGS = InjectionSettings()
NAMESPACES = {
    "shop": {"metadata": {"name": "shop", "labels": {}}},
    "lab": {"metadata": {"name": "lab", "labels": {"kipsec.io/inject": "enabled"}}},
}
TUNNEL = {
    "apiVersion": "kipsec.io/v1alpha1",
    "kind": "Tunnel",
    "metadata": {"name": "mesh", "namespace": "shop"},
    "spec": {"selector": {"from": {"podSelector": {"matchLabels": {"app": "cart"}}}}},
}
VALID_REVIEW: dict[str, Any] = {
    "apiVersion": "admission.k8s.io/v1",
    "kind": "AdmissionReview",
    "request": {
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "shop",
        "operation": "CREATE",
        "object": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": "cart-",
                "labels": {"app": "cart"},
                "annotations": {"a/b~c": "d"},
            },
            "spec": {
                "containers": [{"name": "app", "image": "x"}],
                "initContainers": [{"name": "init", "image": "y"}],
                "volumes": [{"name": "data", "emptyDir": {}}],
            },
        },
    },
}

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=10)
    | st.sampled_from(["CREATE", "Pod", "v1", "shop", "lab", "kipsec", "false", "enabled"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


ALL_PATHS = paths(VALID_REVIEW)[1:]


def replaced(document: dict[str, Any], path: tuple[Any, ...], junk: Any) -> dict[str, Any]:
    result = copy.deepcopy(document)
    target: Any = result
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = junk
    return result


def check_response(body: object, answer: dict[str, Any]) -> None:
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert isinstance(response["uid"], str)
    assert isinstance(response["allowed"], bool)
    if not response["allowed"]:
        # 500 is the last-resort guard for a bug in the webhook: fuzzing must not reach it.
        assert response["status"]["code"] in (400, 422), response["status"]
        assert isinstance(response["status"]["message"], str)
        assert "patch" not in response
    if "patch" in response:
        assert response["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(response["patch"], validate=True))
        assert isinstance(ops, list) and ops
        assert isinstance(body, dict)
        jsonpatch.apply_patch(body["request"]["object"], ops)


def answer(body: object, tunnels: list[Any] | None = None) -> dict[str, Any]:
    return review(body, NAMESPACES.get, [TUNNEL] if tunnels is None else tunnels, SETTINGS)


def test_the_valid_review_is_patched() -> None:
    response = answer(VALID_REVIEW)
    check_response(VALID_REVIEW, response)
    assert "patch" in response["response"]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_any_json_value_gets_a_well_formed_answer(body: Any) -> None:
    check_response(body, answer(body))


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_any_bytes_get_a_well_formed_answer(body: bytes) -> None:
    check_response(body, answer(body))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL_PATHS), JSON)
def test_a_review_with_junk_anywhere_gets_a_well_formed_answer(
    path: tuple[Any, ...], junk: Any
) -> None:
    body = replaced(VALID_REVIEW, path, junk)
    check_response(body, answer(body))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(JSON, max_size=3))
def test_junk_tunnels_never_break_the_answer(tunnels: list[Any]) -> None:
    check_response(VALID_REVIEW, answer(VALID_REVIEW, tunnels))
