"""``GET /v1/config``: a pod's configuration in seconds, not at the kubelet's next sync.

The kubelet refreshes a mounted Secret only on its periodic pod sync (about a minute,
plus its cache's TTL), so a peer added or a PSK rotated would reach the sidecar a minute
late, and a new pod would wait that long for its first document. The sidecar therefore
also asks the operator, every few seconds, for exactly what its Secret holds.

Authentication is the CSR endpoint's (:func:`~.certificates.endpoint.authenticate_pod`):
the bearer token is the pod's projected ServiceAccount token (audience ``kipsec``),
sent to a TokenReview, and must be bound to a live pod of that name and uid; a pod only
ever gets its own Secret. A TokenReview per poll would cost the API server a request
per pod every few seconds, so a verdict is cached for :data:`TOKEN_CACHE_SECONDS` under
the token's SHA-256 (never the token), and a cached verdict still requires the pod,
read from the API server, to have the same uid.

The answer (JSON) is ``{"files": {key: base64 value}}``: the data of the pod's Secret,
``config.yaml`` and the files it names, bytes for bytes. It is read from the replica's
own :class:`~.secret_mirror.SecretMirror` (a LIST and a WATCH that every replica keeps,
holding the documents' text, which the index does not: a sidecar polling through the
Service must get the same document from every replica), or from the API
server while the mirror has not listed. A request with ``?wait=S`` and a current
``If-None-Match`` is held until the Secret changes or S seconds (at most
:data:`MAX_WAIT_SECONDS`) pass, so a sidecar asking every few seconds costs the API
server nothing between changes and still hears of one at once. The Secret
is the one named by the pod's ``kipsec.io/config-secret`` annotation (else derived from
its uid, :func:`~.reconcile.render.secret_name`), and is served only when the operator
wrote it for that pod (managed-by label, ``kipsec.io/pod`` annotation, owner uid): an
annotation set by the pod's author cannot make the operator hand out another Secret.
The ``ETag`` is a digest of that data, so every replica gives the same one: a request
with a matching ``If-None-Match`` gets 304 and no body. A pod without a Secret yet gets 404
``no-configuration`` (retryable). Refusals are the CSR endpoint's JSON
``{"code", "reason", "retryable"}`` with its status codes; the server answers 503
``api-unavailable`` (retryable) when the API server cannot be read.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .certificates.csr import Refused
from .certificates.endpoint import CsrBackend, authenticate_pod, bearer_token, refusal_response
from .reconcile.cluster import pod_ref
from .reconcile.render import MANAGED_BY, POD_ANNOTATION, secret_name
from .secret_mirror import SecretMirror

TOKEN_CACHE_SECONDS = 60.0
"""How long a token's TokenReview verdict is reused (the pod's uid is checked each time)."""
MAX_WAIT_SECONDS = 30.0
"""The longest a request with a current ETag is held (``?wait=``)."""
TOKEN_CACHE_SIZE = 20_000
"""Cached verdicts kept at most (the oldest go first): more than pods per operator."""


class ConfigBackend(CsrBackend, Protocol):
    """The CSR endpoint's reads and the pod's Secret."""

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...


@dataclass
class TokenCache:
    """Token digest → (expiry, pod namespace, name, uid); bounded, time injectable."""

    ttl: float = TOKEN_CACHE_SECONDS
    size: int = TOKEN_CACHE_SIZE
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[str, tuple[float, tuple[str, str, str]]] = field(
        default_factory=OrderedDict
    )

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> tuple[str, str, str] | None:
        entry = self._entries.get(self.key(token))
        if entry is None or entry[0] <= self.clock():
            return None
        return entry[1]

    def put(self, token: str, pod: tuple[str, str, str]) -> None:
        digest = self.key(token)
        self._entries.pop(digest, None)
        self._entries[digest] = (self.clock() + self.ttl, pod)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def etag(data: Mapping[str, str]) -> str:
    """A strong ETag (quoted) of a Secret's data: equal data, equal tag."""
    canonical = json.dumps(dict(sorted(data.items())), separators=(",", ":")).encode()
    return '"' + hashlib.sha256(canonical).hexdigest()[:32] + '"'


@dataclass(frozen=True)
class ConfigAnswer:
    """What ``GET /v1/config`` answers: status, JSON body (None for 304), headers."""

    status: int
    body: dict[str, object] | None
    headers: dict[str, str] = field(default_factory=dict)


def configuration_data(secret: Mapping[str, Any] | None, pod: Mapping[str, Any]) -> dict[str, str]:
    """The data of `secret` when the operator wrote it for `pod`, else empty."""
    if secret is None:
        return {}
    metadata = secret.get("metadata") or {}
    pod_metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    owners = {str(o.get("uid")) for o in metadata.get("ownerReferences") or []}
    if (
        any(labels.get(k) != v for k, v in MANAGED_BY.items())
        or (metadata.get("annotations") or {}).get(POD_ANNOTATION) != pod_metadata.get("name")
        or str(pod_metadata.get("uid")) not in owners
    ):
        return {}
    return {str(k): str(v) for k, v in (secret.get("data") or {}).items()}


async def _requester(
    authorization: str | None, backend: ConfigBackend, cache: TokenCache
) -> tuple[tuple[str, str, str], Mapping[str, Any]] | Refused:
    """Who asks and their pod, live: a cached verdict when the pod still has its uid
    (one GET), else a TokenReview (which reads the pod too)."""
    token = bearer_token(authorization)
    who = cache.get(token) if token is not None else None
    if who is not None:
        pod = await backend.get_pod(who[0], who[1])
        if pod is not None and (pod.get("metadata") or {}).get("uid") == who[2]:
            return who, pod
        # the pod is gone or was recreated: review the token again
    reviewed = await authenticate_pod(authorization, backend)
    if not isinstance(reviewed, Refused):
        assert token is not None  # a request without one is refused
        cache.put(token, reviewed[0])
    return reviewed


async def handle_config_get(
    authorization: str | None,
    if_none_match: str | None,
    backend: ConfigBackend,
    cache: TokenCache,
    *,
    mirror: SecretMirror | None = None,
    wait: float = 0.0,
) -> ConfigAnswer:
    """The whole ``GET /v1/config``. Never raises for bad input; backend errors other
    than the refusals propagate (the server turns API errors into a retryable 503).

    With a synced ``mirror`` the Secret is read from it, not the API server, and a
    request whose ``If-None-Match`` is current is held up to ``wait`` seconds until the
    Secret changes (then answered at once) or the time is up (304)."""
    requester = await _requester(authorization, backend, cache)
    if isinstance(requester, Refused):
        status, body = refusal_response(requester)
        return ConfigAnswer(status, body)
    who, pod = requester
    ref = pod_ref(pod, require_ip=False)
    if ref is None:
        return _unconfigured(who)
    name = secret_name(ref)
    deadline = asyncio.get_running_loop().time() + max(0.0, min(wait, MAX_WAIT_SECONDS))
    while True:
        if mirror is not None and mirror.synced:
            data = configuration_data(mirror.get(ref.namespace, name), pod)
        else:
            data = configuration_data(await backend.get_secret(ref.namespace, name), pod)
        tag = etag(data) if data else None
        current = tag is not None and if_none_match is not None and tag in _tags(if_none_match)
        left = deadline - asyncio.get_running_loop().time()
        # No await between the read above and the wait below: no change is missed.
        if not current or mirror is None or not mirror.synced or left <= 0:
            break
        if not await mirror.changed(ref.namespace, name, left):
            break
    if not data or tag is None:
        return _unconfigured(who)
    headers = {"ETag": tag, "Cache-Control": "no-store"}
    if current:
        return ConfigAnswer(304, None, headers)
    return ConfigAnswer(200, {"files": dict(sorted(data.items()))}, headers)


def _tags(if_none_match: str) -> list[str]:
    return [t.strip() for t in if_none_match.split(",")]


def _unconfigured(who: tuple[str, str, str]) -> ConfigAnswer:
    refused = Refused(
        "no-configuration",
        f"pod {who[0]}/{who[1]} has no configuration Secret yet; retry",
        retryable=True,
    )
    return ConfigAnswer(404, refusal_response(refused)[1])


__all__ = [
    "MAX_WAIT_SECONDS",
    "TOKEN_CACHE_SECONDS",
    "ConfigAnswer",
    "ConfigBackend",
    "TokenCache",
    "configuration_data",
    "etag",
    "handle_config_get",
]
