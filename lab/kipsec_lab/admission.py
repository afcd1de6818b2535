"""Mutating admission as the API server does it: AdmissionReview out, JSON patch in.

The lab's API server calls the operator's ``/mutate-pods`` on every pod CREATE, like
a cluster with the chart's MutatingWebhookConfiguration (``failurePolicy: Fail``): a
webhook that does not answer refuses the create with the API server's own wording, a
webhook that refuses refuses it with its message, and an allowed answer's patch is
applied before the pod is stored. :func:`review_for` and :func:`apply_response` are
pure; :class:`WebhookClient` is the HTTPS call.
"""

from __future__ import annotations

import base64
import json
import ssl
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp
import jsonpatch
from jsonpointer import JsonPointerException

WEBHOOK_NAME = "pods.kipsec.io"
"""The webhook's name in refusals (the chart's MutatingWebhookConfiguration entry)."""


class AdmissionRefused(Exception):
    """The create is refused: ``code`` is the HTTP status the API server answers."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


def review_for(obj: Mapping[str, Any], namespace: str, uid: str | None = None) -> dict[str, Any]:
    """The AdmissionReview v1 request for creating pod ``obj`` in ``namespace``."""
    metadata = obj.get("metadata") or {}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid or str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": namespace,
            "name": metadata.get("name", ""),
            "object": dict(obj),
            "dryRun": False,
            "userInfo": {"username": "kipsec-lab"},
        },
    }


def apply_response(obj: Mapping[str, Any], answer: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as admitted by the AdmissionReview ``answer`` (patched when it carries a
    JSONPatch); raises :class:`AdmissionRefused` when the webhook refused or answered
    something the API server would reject."""
    response = answer.get("response")
    if not isinstance(response, Mapping):
        raise AdmissionRefused(500, "InternalError", _failed("response: missing"))
    if response.get("allowed") is not True:
        status = response.get("status") or {}
        message = str(status.get("message") or "denied")
        code = int(status.get("code") or 400)
        raise AdmissionRefused(
            code,
            str(status.get("reason") or "Forbidden"),
            f'admission webhook "{WEBHOOK_NAME}" denied the request: {message}',
        )
    patch = response.get("patch")
    if not patch:
        return dict(obj)
    if response.get("patchType") != "JSONPatch":
        raise AdmissionRefused(500, "InternalError", _failed("patchType: expected JSONPatch"))
    try:
        ops = json.loads(base64.b64decode(str(patch)))
        patched: dict[str, Any] = jsonpatch.apply_patch(dict(obj), ops)
    except (ValueError, jsonpatch.JsonPatchException, JsonPointerException) as exc:
        raise AdmissionRefused(500, "InternalError", _failed(f"patch: {exc}")) from None
    return patched


def _failed(why: str) -> str:
    return f'Internal error occurred: failed calling webhook "{WEBHOOK_NAME}": {why}'


class WebhookClient:
    """POSTs AdmissionReviews to ``url`` over HTTPS, trusting ``ca_file`` only."""

    def __init__(self, url: str, ca_file: str, timeout: float = 10.0) -> None:
        self.url = url
        self.ssl = ssl.create_default_context(cafile=ca_file)
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def admit(self, obj: Mapping[str, Any], namespace: str) -> dict[str, Any]:
        """``obj`` as admitted; raises :class:`AdmissionRefused` (failurePolicy Fail)."""
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as session,
                session.post(self.url, json=review_for(obj, namespace), ssl=self.ssl) as answer,
            ):
                if answer.status != 200:
                    raise AdmissionRefused(
                        500, "InternalError", _failed(f"HTTP {answer.status} from {self.url}")
                    )
                body = await answer.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise AdmissionRefused(
                500, "InternalError", _failed(f"Post {self.url}: {type(exc).__name__}: {exc}")
            ) from None
        return apply_response(obj, body)


__all__ = ["WEBHOOK_NAME", "AdmissionRefused", "WebhookClient", "apply_response", "review_for"]
