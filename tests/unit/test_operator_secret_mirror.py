"""The Secret mirror: LIST, then WATCH from the list's version; relist on 410 Gone; not
trusted while the API server fails; held requests woken by changes.

The API server is a stand-in that serves scripted lists and watch streams (the mirror
against the emulator, through the real endpoint, is in
tests/operator/test_operator_config_delivery.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast

from kipsec_operator import list_watch
from kipsec_operator.kube import ApiError, Kube
from kipsec_operator.reconcile.render import MANAGED_BY
from kipsec_operator.secret_mirror import LABEL_SELECTOR, SecretMirror


def secret(name: str, version: int, value: str = "v", managed: bool = True) -> dict[str, Any]:
    labels = dict(MANAGED_BY) if managed else {"app": "other"}
    return {
        "metadata": {
            "namespace": "shop",
            "name": name,
            "resourceVersion": str(version),
            "labels": labels,
        },
        "data": {"config.yaml": value},
    }


class Api:
    """Lists answer ``lists`` in turn; each watch plays the next script of ``watches``
    (events, or an exception to raise), then waits until released."""

    def __init__(self) -> None:
        self.lists: list[dict[str, Any] | Exception] = []
        self.watches: list[list[dict[str, Any] | Exception]] = []
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.idle = asyncio.Event()

    async def list(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        self.calls.append(("list", dict(params)))
        answer = self.lists.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def watch(self, path: str, params: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("watch", dict(params)))
        script = self.watches.pop(0) if self.watches else []
        for item in script:
            if isinstance(item, Exception):
                raise item
            yield item
        self.idle.set()
        await asyncio.Event().wait()  # an open watch with nothing happening


async def until(check: Any, what: str) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(what)


def run(api: Api, body: Any) -> None:
    async def main() -> None:
        mirror = SecretMirror(cast(Kube, api))
        mirror.start()
        try:
            await body(mirror)
        finally:
            await mirror.stop()

    asyncio.run(main())


def listed(*items: dict[str, Any], version: int = 10) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": str(version)}, "items": list(items)}


def test_it_lists_then_watches_from_the_lists_version_and_follows_changes() -> None:
    api = Api()
    api.lists = [listed(secret("a", 5))]
    api.watches = [
        [
            {"type": "MODIFIED", "object": secret("a", 11, "new")},
            {"type": "ADDED", "object": secret("b", 12)},
            {"type": "ADDED", "object": secret("foreign", 13, managed=False)},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "14"}}},
        ]
    ]

    async def body(mirror: SecretMirror) -> None:
        await until(api.idle.is_set, "the watch was played")
        assert mirror.synced
        assert (mirror.get("shop", "a") or {})["data"] == {"config.yaml": "new"}
        assert mirror.get("shop", "b") is not None
        assert mirror.get("shop", "foreign") is None

    run(api, body)
    (kind, first), (kind2, second) = api.calls
    assert (kind, first) == ("list", {"labelSelector": LABEL_SELECTOR})
    assert kind2 == "watch" and second["resourceVersion"] == "10"


def test_a_410_gone_lists_again_and_a_deleted_secret_is_forgotten() -> None:
    api = Api()
    api.lists = [listed(secret("a", 5), secret("b", 6)), listed(secret("a", 20), version=21)]
    api.watches = [[ApiError(410, "Expired", "too old")]]

    async def body(mirror: SecretMirror) -> None:
        await until(api.idle.is_set, "the second watch is open")
        assert mirror.synced and mirror.get("shop", "b") is None
        assert mirror.get("shop", "a") is not None

    run(api, body)
    assert [kind for kind, _ in api.calls] == ["list", "watch", "list", "watch"]
    assert api.calls[-1][1]["resourceVersion"] == "21"


def test_while_the_api_fails_the_mirror_is_not_trusted(monkeypatch: Any) -> None:
    monkeypatch.setattr(list_watch, "RETRY_SECONDS", (0.01, 0.01))
    api = Api()
    api.lists = [listed(secret("a", 5)), ApiError(500, "InternalError", "etcd"), listed()]
    api.watches = [[ApiError(500, "InternalError", "etcd")]]

    async def body(mirror: SecretMirror) -> None:
        await until(api.idle.is_set, "listed again after the failures")
        assert mirror.synced and mirror.get("shop", "a") is None

    run(api, body)
    assert [kind for kind, _ in api.calls] == ["list", "watch", "list", "list", "watch"]


def test_a_held_request_wakes_on_its_secret_only_and_times_out_otherwise() -> None:
    api = Api()
    api.lists = [listed(secret("a", 5), secret("b", 6))]
    release = asyncio.Event()

    async def watch(path: str, params: Mapping[str, str]) -> AsyncIterator[dict[str, Any]]:
        await release.wait()
        yield {"type": "MODIFIED", "object": secret("b", 7, "changed")}
        await asyncio.Event().wait()

    api.watch = watch  # type: ignore[method-assign]

    async def body(mirror: SecretMirror) -> None:
        await until(lambda: mirror.synced, "listed")
        on_a = asyncio.ensure_future(mirror.changed("shop", "a", 0.3))
        on_b = asyncio.ensure_future(mirror.changed("shop", "b", 5.0))
        await asyncio.sleep(0.05)
        release.set()
        assert await on_b is True
        assert await on_a is False

    run(api, body)
