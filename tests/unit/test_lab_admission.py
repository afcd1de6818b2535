"""The lab API server applies the webhook's answer as a cluster's API server does."""

from __future__ import annotations

import base64
import json
from typing import Any

import jsonpatch
import pytest

from kipsec_lab.admission import AdmissionRefused, apply_response, review_for
from kipsec_operator.webhook.admission import review
from kipsec_operator.webhook.injection import InjectionSettings

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "labels": {"app": "cache"}},
    "spec": {"containers": [{"name": "app", "image": "x"}]},
}
NAMESPACE = {"metadata": {"name": "demo", "labels": {"kipsec.io/inject": "enabled"}}}


def answer(
    allowed: bool, patch: list[dict[str, Any]] | None = None, **status: Any
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": "u", "allowed": allowed}
    if patch is not None:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    if status:
        response["status"] = status
    return {"response": response}


def test_the_review_is_one_the_operator_webhook_accepts_and_patches() -> None:
    body = review_for(POD, "demo")
    reply = review(body, lambda name: NAMESPACE, [], InjectionSettings())
    admitted = apply_response(POD, reply)
    assert [c["name"] for c in admitted["spec"]["initContainers"]] == ["kipsec"]
    assert admitted["spec"]["initContainers"][0]["restartPolicy"] == "Always"


def test_an_allowed_answer_without_patch_leaves_the_pod_alone() -> None:
    assert apply_response(POD, answer(True)) == POD


def test_the_patch_is_applied() -> None:
    patch = [{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]
    assert apply_response(POD, answer(True, patch))["metadata"]["annotations"] == {"a": "b"}
    assert "annotations" not in POD["metadata"]


def test_a_refusal_keeps_the_webhook_code_and_message() -> None:
    with pytest.raises(AdmissionRefused, match=r"denied the request: spec\.volumes") as refused:
        apply_response(POD, answer(False, code=422, message="spec.volumes: reserved"))
    assert refused.value.code == 422


def test_a_patch_that_does_not_apply_fails_the_create() -> None:
    patch = [{"op": "replace", "path": "/spec/nothing/here", "value": 1}]
    with pytest.raises(AdmissionRefused, match="failed calling webhook") as refused:
        apply_response(POD, answer(True, patch))
    assert refused.value.code == 500


def test_a_reply_without_response_fails_the_create() -> None:
    with pytest.raises(AdmissionRefused, match="response: missing"):
        apply_response(POD, {})


def test_json_patch_library_agrees_with_the_operator_patch() -> None:
    reply = review(review_for(POD, "demo"), lambda name: NAMESPACE, [], InjectionSettings())
    ops = json.loads(base64.b64decode(reply["response"]["patch"]))
    assert jsonpatch.apply_patch(POD, ops) == apply_response(POD, reply)
