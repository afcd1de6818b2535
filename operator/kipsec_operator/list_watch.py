"""One collection of the API server followed by a LIST, then a WATCH from its version.

The loop every replica runs for what it keeps in memory without kopf: the Secret
mirror (:mod:`.secret_mirror`) and the reconciler's index (:mod:`.index_watches`).
A LIST hands the whole collection to `listed` (the consumer replaces what it held, so
an object deleted while the watch was down is dropped); each watch event then goes to
`changed`. The watch resumes from the last resourceVersion it saw; when it fails, or
the version is too old (410 Gone), the collection is listed again, after a pause
(doubling, with jitter) unless it was 410. Between a failure and the next successful
LIST the copy is not trusted (:attr:`ListWatch.synced` false; `untrusted` is called).
Nothing here is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .kube import ApiError, Kube
from .live_reads import API_ERRORS

log = logging.getLogger(__name__)

WATCH_SECONDS = 300
"""How long the API server keeps one watch open before the next one starts."""
RETRY_SECONDS = (1.0, 30.0)
"""First and longest pause (doubling, with jitter) after a failed LIST or WATCH."""

Key = tuple[str, str]
K8sObject = Mapping[str, Any]


class ListWatch:
    """Follow the collection at `path` (with `params`, e.g. a label selector).

    `listed(items)` gets every object of a LIST, `changed(type, obj)` every ADDED,
    MODIFIED or DELETED event after it (bookmarks only advance the version),
    `untrusted()` is called when the watch fails. All three run on the event loop,
    one at a time, and must not block.
    """

    def __init__(
        self,
        kube: Kube,
        path: str,
        params: Mapping[str, str],
        *,
        listed: Callable[[Sequence[K8sObject]], None],
        changed: Callable[[str, K8sObject], None],
        untrusted: Callable[[], None] = lambda: None,
        name: str = "list-watch",
    ) -> None:
        self.kube = kube
        self.path = path
        self.params = dict(params)
        self.synced = False
        self.listings = 0
        """How many LISTs succeeded (the first one makes the copy whole)."""
        self._listed = listed
        self._changed = changed
        self._untrusted = untrusted
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._distrust()

    async def wait_synced(self) -> None:
        """Return once a LIST has succeeded and no failure came since."""
        await self._synced.wait()

    def _distrust(self) -> None:
        self.synced = False
        self._synced.clear()
        self._untrusted()

    async def _run(self) -> None:
        pause = RETRY_SECONDS[0]
        loop = asyncio.get_running_loop()
        while True:
            try:
                version = await self._list()
                pause = RETRY_SECONDS[0]
                while True:
                    began = loop.time()
                    version = await self._watch(version)
                    if loop.time() - began < 1.0:
                        await asyncio.sleep(1.0)  # a watch ended at once: do not hammer
            except asyncio.CancelledError:
                raise
            except (*API_ERRORS, ValueError) as exc:
                self._distrust()
                gone = isinstance(exc, ApiError) and exc.status == 410
                if not gone:
                    log.warning(
                        "a watch lost the API server; listing again",
                        extra={"path": self.path, "error": f"{type(exc).__name__}: {exc}"[:200]},
                    )
                    await asyncio.sleep(pause * random.uniform(0.8, 1.2))  # noqa: S311
                    pause = min(pause * 2, RETRY_SECONDS[1])

    async def _list(self) -> str:
        answer = await self.kube.list(self.path, self.params)
        self._listed([item for item in answer.get("items") or [] if key_of(item) is not None])
        self.listings += 1
        self.synced = True
        self._synced.set()
        return str((answer.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, version: str) -> str:
        """Follow one watch; return the resourceVersion to resume from."""
        params = {**self.params, "timeoutSeconds": str(WATCH_SECONDS)}
        if version:
            params["resourceVersion"] = version
            params["allowWatchBookmarks"] = "true"
        async for event in self.kube.watch(self.path, params):
            obj = event.get("object") or {}
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            kind = event.get("type")
            if kind in ("ADDED", "MODIFIED", "DELETED") and key_of(obj) is not None:
                self._changed(str(kind), obj)
        return version


def key_of(obj: K8sObject) -> Key | None:
    """(namespace, name) of an object ("" for a cluster-scoped one), None without a name."""
    metadata = obj.get("metadata") or {}
    namespace, name = metadata.get("namespace") or "", metadata.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str):
        return None
    return namespace, name


__all__ = ["RETRY_SECONDS", "WATCH_SECONDS", "ListWatch", "key_of"]
