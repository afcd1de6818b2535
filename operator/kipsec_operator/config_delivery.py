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
the token's SHA-256 (never the token), and a cached verdict still requires the pod to
be in the operator's index with the same uid.

The answer (JSON) is ``{"files": {key: base64 value}}``: the data of the pod's Secret as
the API holds it (the operator's index of its own Secrets), ``config.yaml`` and the
files it names, bytes for bytes. The ``ETag`` is a digest of that data: a request with
a matching ``If-None-Match`` gets 304 and no body. A pod without a Secret yet gets 404
``no-configuration`` (retryable). Refusals are the CSR endpoint's JSON
``{"code", "reason", "retryable"}`` with its status codes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .certificates.csr import Refused
from .certificates.endpoint import CsrBackend, authenticate_pod, bearer_token, refusal_response
from .reconcile.cluster import ObjectKey

TOKEN_CACHE_SECONDS = 60.0
"""How long a token's TokenReview verdict is reused (the pod's uid is checked each time)."""
TOKEN_CACHE_SIZE = 20_000
"""Cached verdicts kept at most (the oldest go first): more than pods per operator."""

PodUid = Callable[[ObjectKey], str | None]
"""The uid of a pod in the operator's index, None when it is not there."""
SecretData = Callable[[ObjectKey], Mapping[str, str] | None]
"""The data (base64 values) of a pod's configuration Secret as the API holds it."""


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


async def handle_config_get(
    authorization: str | None,
    if_none_match: str | None,
    backend: CsrBackend,
    secret_data: SecretData,
    pod_uid: PodUid,
    cache: TokenCache,
) -> ConfigAnswer:
    """The whole ``GET /v1/config``. Never raises for bad input; backend errors other
    than the refusals propagate (a 500 from the server)."""
    token = bearer_token(authorization)
    pod = cache.get(token) if token is not None else None
    if pod is not None and pod_uid((pod[0], pod[1])) != pod[2]:
        pod = None  # the pod left the index or was recreated: review the token again
    if pod is None:
        reviewed = await authenticate_pod(authorization, backend)
        if isinstance(reviewed, Refused):
            status, body = refusal_response(reviewed)
            return ConfigAnswer(status, body)
        pod = reviewed
        assert token is not None
        cache.put(token, pod)
    data = secret_data((pod[0], pod[1]))
    if not data:
        refused = Refused(
            "no-configuration",
            f"pod {pod[0]}/{pod[1]} has no configuration Secret yet; retry",
            retryable=True,
        )
        return ConfigAnswer(404, refusal_response(refused)[1])
    tag = etag(data)
    headers = {"ETag": tag, "Cache-Control": "no-store"}
    if if_none_match is not None and tag in (t.strip() for t in if_none_match.split(",")):
        return ConfigAnswer(304, None, headers)
    return ConfigAnswer(200, {"files": dict(sorted(data.items()))}, headers)


__all__ = [
    "TOKEN_CACHE_SECONDS",
    "ConfigAnswer",
    "TokenCache",
    "etag",
    "handle_config_get",
]
