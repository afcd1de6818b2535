"""`GET /v1/config` without HTTP: the TokenReview cache, the ETag, 304 and 404.

The backend answers like the API server would (a TokenReview status, the pod, the
pod's Secret as the operator writes it); the HTTPS exchange with the real operator and sidecar is in
tests/operator/test_operator_config_delivery.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from kipsec_operator.config_delivery import ConfigAnswer, TokenCache, etag, handle_config_get
from kipsec_operator.reconcile.cluster import CONFIG_SECRET_ANNOTATION, pod_ref
from kipsec_operator.reconcile.render import secret_manifest

DATA = {"config.yaml": "e30K", "psk-1": "c2VjcmV0"}


def pod(uid: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "a",
            "namespace": "shop",
            "uid": uid,
            "annotations": {CONFIG_SECRET_ANNOTATION: "kipsec-a"},
        },
        "spec": {"serviceAccountName": "default"},
        "status": {"phase": "Running", "podIP": "10.0.0.1"},
    }


def secret(data: Mapping[str, str], owner_uid: str = "uid-a") -> dict[str, Any]:
    """The Secret as the reconciler writes it for pod shop/a."""
    ref = pod_ref(pod(owner_uid))
    assert ref is not None
    return secret_manifest(ref, data)


class Backend:
    """Counts TokenReviews and pod reads; authenticates `good` as bound to shop/a with
    `uid`; the live pod has `pod_uid`, its Secret `kipsec-a` is `secret`."""

    def __init__(self, uid: str = "uid-a") -> None:
        self.reviews = 0
        self.pod_reads = 0
        self.uid = uid
        self.pod_uid = uid
        self.secret: Mapping[str, Any] | None = secret(DATA)

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
        self.pod_reads += 1
        return pod(self.pod_uid) if (namespace, name) == ("shop", "a") else None

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.secret if (namespace, name) == ("shop", "kipsec-a") else None

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
) -> ConfigAnswer:
    return asyncio.run(handle_config_get(f"Bearer {token}", if_none_match, backend, cache))


def test_the_pod_gets_its_secrets_data_with_an_etag() -> None:
    answer = ask(Backend(), TokenCache())
    assert answer == ConfigAnswer(
        200, {"files": DATA}, {"ETag": etag(DATA), "Cache-Control": "no-store"}
    )


def test_a_matching_if_none_match_is_304_without_a_body() -> None:
    answer = ask(Backend(), TokenCache(), if_none_match=etag(DATA))
    assert (answer.status, answer.body) == (304, None)


def test_a_pod_without_a_secret_is_told_to_retry() -> None:
    backend = Backend()
    backend.secret = None
    answer = ask(backend, TokenCache())
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
    backend.pod_uid = "uid-a-recreated"

    answer = ask(backend, cache)

    assert backend.reviews == 2
    assert answer.status == 403
    assert answer.body is not None and answer.body["code"] == "pod-mismatch"


def test_an_unauthenticated_token_is_401_and_never_cached() -> None:
    backend, cache = Backend(), TokenCache()

    assert ask(backend, cache, token="forged").status == 401
    assert ask(backend, cache, token="forged").status == 401
    assert backend.reviews == 2


def test_each_poll_reads_the_secret_live_so_a_new_document_is_served_at_once() -> None:
    backend, cache = Backend(), TokenCache()
    ask(backend, cache)
    newer = {**DATA, "config.yaml": "bmV3Cg=="}
    backend.secret = secret(newer)

    answer = ask(backend, cache)

    assert answer.body == {"files": newer}
    assert answer.headers["ETag"] == etag(newer)


def test_a_cached_verdict_still_reads_the_pod_to_check_its_uid() -> None:
    backend, cache = Backend(), TokenCache()
    ask(backend, cache)
    reads = backend.pod_reads

    ask(backend, cache)

    assert (backend.reviews, backend.pod_reads) == (1, reads + 1)


def test_a_secret_the_operator_did_not_write_for_the_pod_is_not_served() -> None:
    backend = Backend()
    backend.secret = secret(DATA, owner_uid="uid-of-another-pod")

    answer = ask(backend, TokenCache())

    assert answer.status == 404
    assert answer.body is not None and answer.body["code"] == "no-configuration"


def test_the_cache_is_bounded() -> None:
    cache = TokenCache(size=2)
    for token in ("t1", "t2", "t3"):
        cache.put(token, ("shop", token, "uid"))
    assert cache.get("t1") is None
    assert cache.get("t3") == ("shop", "t3", "uid")
