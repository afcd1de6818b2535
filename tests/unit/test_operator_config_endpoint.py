"""`GET /v1/config` without HTTP: the TokenReview cache, the ETag, 304 and 404.

The backend answers like the API server would (a TokenReview status, the pod); the
HTTPS exchange with the real operator and sidecar is in
tests/operator/test_operator_config_delivery.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from kipsec_operator.config_delivery import ConfigAnswer, TokenCache, etag, handle_config_get

POD = {
    "metadata": {"name": "a", "namespace": "shop", "uid": "uid-a"},
    "spec": {"serviceAccountName": "default"},
    "status": {"phase": "Running", "podIP": "10.0.0.1"},
}
DATA = {"config.yaml": "e30K", "psk-1": "c2VjcmV0"}


class Backend:
    """Counts TokenReviews; authenticates `good` as bound to shop/a with `uid`."""

    def __init__(self, uid: str = "uid-a") -> None:
        self.reviews = 0
        self.uid = uid

    async def review_token(self, token_review: Mapping[str, Any]) -> Mapping[str, Any]:
        self.reviews += 1
        if token_review["spec"]["token"] != "good":
            return {"authenticated": False}
        extra = {
            "authentication.kubernetes.io/pod-name": ["a"],
            "authentication.kubernetes.io/pod-uid": [self.uid],
        }
        return {
            "authenticated": True,
            "audiences": ["kipsec"],
            "user": {"username": "system:serviceaccount:shop:default", "extra": extra},
        }

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return POD if (namespace, name) == ("shop", "a") else None

    async def get_namespace(self, name: str) -> Mapping[str, Any] | None:
        return {"metadata": {"name": name}}

    async def list_tunnel_certificates(self) -> Sequence[Mapping[str, Any]]:
        return []

    async def signing_ca(self, issuer_secret: str | None, namespace: str) -> Any:
        raise LookupError("not used")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def ask(
    backend: Backend,
    cache: TokenCache,
    *,
    token: str = "good",
    if_none_match: str | None = None,
    data: Mapping[str, str] | None = DATA,
    uid: str | None = "uid-a",
) -> ConfigAnswer:
    return asyncio.run(
        handle_config_get(
            f"Bearer {token}", if_none_match, backend, lambda _: data, lambda _: uid, cache
        )
    )


def test_the_pod_gets_its_secrets_data_with_an_etag() -> None:
    answer = ask(Backend(), TokenCache())
    assert answer == ConfigAnswer(
        200, {"files": DATA}, {"ETag": etag(DATA), "Cache-Control": "no-store"}
    )


def test_a_matching_if_none_match_is_304_without_a_body() -> None:
    answer = ask(Backend(), TokenCache(), if_none_match=etag(DATA))
    assert (answer.status, answer.body) == (304, None)


def test_a_pod_without_a_secret_is_told_to_retry() -> None:
    answer = ask(Backend(), TokenCache(), data=None)
    assert answer.status == 404
    assert answer.body == {
        "code": "no-configuration",
        "reason": "pod shop/a has no configuration Secret yet; retry",
        "retryable": True,
    }


def test_a_token_is_reviewed_once_per_cache_period() -> None:
    backend, clock = Backend(), Clock()
    cache = TokenCache(ttl=60.0, clock=clock)

    ask(backend, cache)
    clock.now = 59.0
    ask(backend, cache)
    assert backend.reviews == 1
    clock.now = 61.0
    ask(backend, cache)
    assert backend.reviews == 2


def test_a_cached_verdict_for_a_recreated_pod_is_reviewed_again_and_refused() -> None:
    backend, cache = Backend(), TokenCache()
    ask(backend, cache)
    backend.uid = "uid-of-the-old-pod"

    answer = ask(backend, cache, uid="uid-a-recreated")

    assert backend.reviews == 2
    assert answer.status == 403
    assert answer.body is not None and answer.body["code"] == "pod-mismatch"


def test_an_unauthenticated_token_is_401_and_never_cached() -> None:
    backend, cache = Backend(), TokenCache()

    assert ask(backend, cache, token="forged").status == 401
    assert ask(backend, cache, token="forged").status == 401
    assert backend.reviews == 2


def test_the_cache_is_bounded() -> None:
    cache = TokenCache(size=2)
    for token in ("t1", "t2", "t3"):
        cache.put(token, ("shop", token, "uid"))
    assert cache.get("t1") is None
    assert cache.get("t3") == ("shop", "t3", "uid")
