"""kmock's KubernetesEmulator with the bookkeeping the kipsec operator relies on.

kmock stores objects as plain dicts and merges patches. A real API server also assigns
`metadata.uid`, `resourceVersion`, `generation` and `creationTimestamp`, names objects
from `generateName` (kopf posts Events that way), answers TokenReviews from
:attr:`Emulator.token_reviews`, and its garbage collector deletes
the objects a deleted pod owns (the per-pod configuration Secrets). This subclass adds
exactly those (and answers a failed JSON-patch `test` with 422, as kopf expects), so the
tests can check "this Secret was not rewritten" by its
resourceVersion and "the Secret went with its pod". With :attr:`Emulator.admission`
set (the lab sets it), every pod CREATE goes through the mutating webhook first
(:mod:`kipsec_lab.admission`), failurePolicy Fail. Server-side apply and field managers
are not emulated: the operator writes with JSON merge patches.

The lab's API server and the operator tests' emulator are this one class.
"""

from __future__ import annotations

import datetime
import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import aiohttp.web
import jsonpatch
import kmock
from kmock._internal import enums, parsing, rendering

from kipsec_operator.crds import render as crd_render

from .admission import AdmissionRefused

_parse_path = parsing.parse_path


def _parse_path_with_namespaces(path: str) -> parsing.ParsedPath:
    """kmock 0.8 reads `/api/v1/namespaces[/name]` as a namespace prefix without a
    resource; the cluster-scoped `namespaces` resource is meant there."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) in (3, 4):
        name = parts[3] if len(parts) == 4 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, None)
    return _parse_path(path)


parsing.parse_path = _parse_path_with_namespaces

CORE_RESOURCES = {
    "v1/pods": ("Pod", True),
    "v1/namespaces": ("Namespace", False),
    "v1/secrets": ("Secret", True),
    "v1/services": ("Service", True),
    "v1/configmaps": ("ConfigMap", True),
    "v1/serviceaccounts": ("ServiceAccount", True),
    "v1/events": ("Event", True),
    "discovery.k8s.io/v1/endpointslices": ("EndpointSlice", True),
    "authentication.k8s.io/v1/tokenreviews": ("TokenReview", False),
    "kopf.dev/v1/clusterkopfpeerings": ("ClusterKopfPeering", False),
}


class Admission(Protocol):
    """Admits a pod being created (:class:`~kipsec_lab.admission.WebhookClient`)."""

    async def admit(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]: ...


class Emulator(kmock.KubernetesEmulator):
    """The emulator with uids, resourceVersions, generations, generateName and pod GC."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)
        self.token_reviews: dict[str, dict[str, Any]] = {}
        """Token → the TokenReview `status` to answer (unknown tokens: unauthenticated)."""
        self.watched: set[str] = set()
        """The resources some client watches (`v1/pods`, ...)."""
        self.admission: Admission | None = None
        """Called on every pod CREATE (None: no admission webhooks)."""
        for path, (kind, namespaced) in CORE_RESOURCES.items():
            self.resources[path] = kmock.ResourceInfo(
                kind=kind,
                namespaced=namespaced,
                verbs={"get", "list", "watch", "create", "patch", "delete"},
            )
        for crd in crd_render.crds().values():
            names = crd["spec"]["names"]
            for version in crd["spec"]["versions"]:
                self.resources[f"{crd['spec']['group']}/{version['name']}/{names['plural']}"] = (
                    kmock.ResourceInfo(
                        kind=names["kind"],
                        namespaced=crd["spec"]["scope"] == "Namespaced",
                        singular=names.get("singular"),
                        shortnames=set(names.get("shortNames") or []),
                        verbs={"get", "list", "watch", "create", "patch", "delete"},
                        subresources={"status"},
                    )
                )

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if (
            request.resource is not None
            and getattr(request.resource, "plural", "") == "tokenreviews"
            and isinstance(request.data, dict)
        ):
            self._forget(request)
            token = str((request.data.get("spec") or {}).get("token"))
            status = self.token_reviews.get(token, {"authenticated": False})
            return aiohttp.web.json_response({**request.data, "status": status}, status=201)
        if (
            self.admission is not None
            and request.resource is not None
            and request.action == enums.action.CREATE
            and _path(request.resource) == "v1/pods"
            and isinstance(request.data, dict)
        ):
            try:
                admitted = await self.admission.admit(request.data, request.namespace or "")
            except AdmissionRefused as exc:
                self._forget(request)
                raise kmock.KubernetesError(exc.code, exc.reason, str(exc)) from None
            request.data.clear()
            request.data.update(admitted)
        if request.resource is not None and request.action == enums.action.WATCH:
            self.watched.add(_path(request.resource))
        data = request.data if isinstance(request.data, dict) else None
        if request.resource is not None and data is not None:
            metadata = data.setdefault("metadata", {})
            if request.action == enums.action.CREATE:
                if not metadata.get("name") and metadata.get("generateName"):
                    metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
                metadata.setdefault("uid", str(uuid.uuid4()))
                metadata.setdefault(
                    "creationTimestamp",
                    datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                )
                metadata["resourceVersion"] = str(next(self._versions))
                if "spec" in data:
                    metadata["generation"] = 1
            elif request.action == enums.action.UPDATE and request.name is not None:
                metadata["resourceVersion"] = str(next(self._versions))
                if "spec" in data and request.subresource is None:
                    key = (request.resource, request.namespace, request.name)
                    if key in self.objects and not self.objects[key].deleted:
                        stored = self.objects[key]
                        current = stored.get("metadata", {}).get("generation") or 0
                        spec = stored.get("spec")
                        # Like the API server: only a change of the spec is a new generation.
                        if merge_patch(spec, data["spec"]) != spec:
                            metadata["generation"] = int(current) + 1
        if (
            request.resource is not None
            and request.action == enums.action.UPDATE
            and isinstance(request.data, list)
        ):
            version = str(next(self._versions))
            request.data.append(
                {"op": "add", "path": "/metadata/resourceVersion", "value": version}
            )
        owner_uid = None
        if (
            request.resource is not None
            and request.action == enums.action.DELETE
            and request.name is not None
        ):
            target = (request.resource, request.namespace, request.name)
            if target in self.objects and not self.objects[target].deleted:
                owner_uid = self.objects[target].get("metadata", {}).get("uid")
        try:
            response = await super()._handle(request)
        except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchTestFailed) as exc:
            raise kmock.KubernetesError(422, "Invalid", str(exc)) from exc  # kopf retries
        finally:
            self._forget(request)
        if owner_uid:
            await self._collect_garbage(owner_uid)
        return response

    def _forget(self, request: rendering.Request) -> None:
        """Drop a served request from kmock's record: kmock matches each new request by
        scanning every recorded one, which makes a long run quadratic; requests in
        flight (watches included) stay, which is all the matching needs."""
        for index in range(len(self._requests) - 1, -1, -1):
            if self._requests[index] is request:
                del self._requests[index]
                break

    async def _collect_garbage(self, owner_uid: str) -> None:
        """Delete what `owner_uid` owned, as the garbage collector would (background)."""
        async with self._lock:
            for (resource, _, _), obj in list(self.objects.items()):
                if obj.deleted:
                    continue
                owners = obj.get("metadata", {}).get("ownerReferences") or []
                if any(owner.get("uid") == owner_uid for owner in owners):
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})

    def stored(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object (None when absent or deleted)."""
        for (res, ns, nm), obj in self.objects.items():
            if nm == name and ns == namespace and _path(res) == resource and not obj.deleted:
                return dict(obj.raw)
        return None

    def listing(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every live stored object of `resource` (`v1/secrets`, `kipsec.io/v1alpha1/tunnels`)."""
        return [
            dict(obj.raw)
            for (res, ns, _), obj in self.objects.items()
            if _path(res) == resource and not obj.deleted and (namespace is None or ns == namespace)
        ]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of ``patch`` onto ``target`` (neither is modified)."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _path(resource: Any) -> str:
    group = getattr(resource, "group", "") or ""
    version = getattr(resource, "version", "")
    plural = getattr(resource, "plural", "")
    return f"{group}/{version}/{plural}" if group else f"{version}/{plural}"


@asynccontextmanager
async def serve() -> AsyncIterator[tuple[Emulator, str]]:
    """The emulator served on a random local port: (emulator, base URL)."""
    async with Emulator() as emulator, kmock.Server(emulator) as server:
        yield emulator, str(server.url).rstrip("/")
