"""AdmissionReview v1 in, AdmissionReview v1 out: the webhook's wire protocol.

:func:`review` answers every body it is given, never raises: a well-formed pod CREATE
gets ``allowed: true`` with the sidecar's JSON patch (base64, ``patchType: JSONPatch``)
or no patch; anything else it cannot make sense of gets ``allowed: false`` with a
``status`` that says what is wrong (code 400), echoing the request ``uid`` when there is
one. A pod that should be injected but cannot be (a reserved volume name) is refused
with code 422 and the field. Refusing is the fail-closed answer; the API server applies
the configured failurePolicy only when the webhook does not answer at all.

Other operations and kinds are allowed unchanged: the webhook configuration only sends
pod CREATEs, but a misconfigured one must not break other writes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .injection import InjectionConflict, InjectionSettings, mutate

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
MAX_BODY_SIZE = 3 * 1024 * 1024
"""The API server's own request limit; a larger body is refused before parsing."""

NamespaceLookup = Callable[[str], Mapping[str, Any] | None]


class MalformedReview(ValueError):
    """The body is not an AdmissionReview v1 request; ``uid`` when one was found."""

    def __init__(self, message: str, uid: str = "") -> None:
        super().__init__(message)
        self.uid = uid


@dataclass(frozen=True)
class AdmissionRequest:
    """The parts of ``request`` the webhook reads."""

    uid: str
    operation: str
    kind: str
    group: str
    namespace: str
    object: Mapping[str, Any] | None


def _response(uid: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "response": {"uid": uid, **body}}


def refuse(uid: str, message: str, code: int = 400) -> dict[str, Any]:
    return _response(uid, {"allowed": False, "status": {"code": code, "message": message}})


def allow(uid: str, patch: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {"allowed": True}
    if patch:
        encoded = json.dumps(list(patch), separators=(",", ":")).encode()
        body["patchType"] = "JSONPatch"
        body["patch"] = base64.b64encode(encoded).decode("ascii")
    return _response(uid, body)


def parse_request(body: object) -> AdmissionRequest:
    """Check and read an AdmissionReview v1 request; raises MalformedReview naming the field."""
    if isinstance(body, bytes | bytearray | str):
        if len(body) > MAX_BODY_SIZE:
            raise MalformedReview(f"body larger than {MAX_BODY_SIZE} bytes")
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise MalformedReview("body is not JSON") from None
    if not isinstance(body, Mapping):
        raise MalformedReview("body is not a JSON object")
    request = body.get("request")
    uid = ""
    if isinstance(request, Mapping) and isinstance(request.get("uid"), str):
        uid = request["uid"]
    if body.get("apiVersion") != API_VERSION or body.get("kind") != KIND:
        raise MalformedReview(f"apiVersion/kind: expected {API_VERSION} {KIND}", uid)
    if not isinstance(request, Mapping):
        raise MalformedReview("request: missing", uid)
    if not uid:
        raise MalformedReview("request.uid: missing")
    kind = request.get("kind")
    operation = request.get("operation")
    if not isinstance(kind, Mapping) or not isinstance(kind.get("kind"), str):
        raise MalformedReview("request.kind: missing", uid)
    if not isinstance(operation, str):
        raise MalformedReview("request.operation: missing", uid)
    namespace = request.get("namespace")
    obj = request.get("object")
    if obj is not None and not isinstance(obj, Mapping):
        raise MalformedReview("request.object: not an object", uid)
    return AdmissionRequest(
        uid=uid,
        operation=operation,
        kind=kind["kind"],
        group=str(kind.get("group") or ""),
        namespace=namespace if isinstance(namespace, str) else "",
        object=obj,
    )


def _pod_in(request: AdmissionRequest) -> dict[str, Any]:
    """The pod of a CREATE, with its namespace filled in from the request (the object
    of a CREATE often has none: the namespace comes from the URL)."""
    pod = request.object
    if pod is None:
        raise MalformedReview("request.object: missing for CREATE", request.uid)
    meta = pod.get("metadata")
    spec = pod.get("spec")
    if meta is not None and not isinstance(meta, Mapping):
        raise MalformedReview("request.object.metadata: not an object", request.uid)
    if not isinstance(spec, Mapping) or not isinstance(spec.get("containers"), list):
        raise MalformedReview("request.object.spec.containers: missing", request.uid)
    if not request.namespace:
        raise MalformedReview("request.namespace: missing for a pod CREATE", request.uid)
    copy = dict(pod)
    copy["metadata"] = {**(meta or {}), "namespace": request.namespace}
    return copy


def review(
    body: object,
    namespaces: NamespaceLookup,
    tunnels: Sequence[Mapping[str, Any]],
    settings: InjectionSettings,
) -> dict[str, Any]:
    """The AdmissionReview response for ``body`` (see the module docstring). Never raises.

    ``namespaces(name)`` returns the Namespace object (None when unknown); ``tunnels``
    are all Tunnels the operator knows of.
    """
    uid = ""
    try:
        request = parse_request(body)
        uid = request.uid
        if request.operation != "CREATE" or request.kind != "Pod" or request.group:
            return allow(uid)
        pod = _pod_in(request)
        namespace = namespaces(request.namespace)
        patch = mutate(pod, namespace, tunnels, settings, config_id=uid)
        return allow(uid, patch)
    except MalformedReview as exc:
        return refuse(exc.uid or uid, f"malformed AdmissionReview: {exc}")
    except InjectionConflict as exc:
        return refuse(uid, f"kipsec cannot inject its sidecar: {exc}", code=422)
    except Exception as exc:  # the webhook answers every request; a bug refuses (fails closed)
        return refuse(uid, f"kipsec webhook internal error: {type(exc).__name__}", code=500)
