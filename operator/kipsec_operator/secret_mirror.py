"""Every replica's own copy of the per-pod Secrets, kept by one LIST and a WATCH.

``GET /v1/config`` used to read the pod's Secret from the API server on every poll, so
each sidecar cost the API server a GET every few seconds (two with the pod's). The
Secrets the operator writes for pods carry its managed-by label; this mirror LISTs them
once, then follows a WATCH from the list's resourceVersion, in every replica —
independently of kopf, whose peering pauses the standby's watches and lets its index go
stale. The configuration endpoint reads the mirror once it has listed (:attr:`synced`)
and the API server before that, and can hold a request whose ETag is current until the
pod's Secret changes (:meth:`SecretMirror.changed`), so a sidecar learns of a new
document as soon as the watch does.

When the watch fails the mirror is not trusted (``synced`` false) until the next LIST
succeeds; the endpoint then reads the API server as before. Nothing here is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from typing import Any

from .kube import ApiError, Kube
from .live_reads import API_ERRORS
from .reconcile.render import MANAGED_BY

log = logging.getLogger(__name__)

SECRETS = "/api/v1/secrets"
LABEL_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())
WATCH_SECONDS = 300
"""How long the API server keeps one watch open before the mirror starts the next."""
RETRY_SECONDS = (1.0, 30.0)
"""First and longest pause (doubling, with jitter) after a failed LIST or WATCH."""

Key = tuple[str, str]


class SecretMirror:
    """The operator's per-pod Secrets by (namespace, name), as the watch last saw them."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.synced = False
        self._secrets: dict[Key, Mapping[str, Any]] = {}
        self._changes: dict[Key, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="kipsec-secrets")

    async def stop(self) -> None:
        """Stop following; requests held in :meth:`changed` return at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._untrusted()

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The Secret as last seen (None: there is none). Only meaningful when synced."""
        return self._secrets.get((namespace, name))

    async def changed(self, namespace: str, name: str, timeout: float) -> bool:
        """Wait until the Secret is added, modified or deleted, or the mirror stops being
        trusted; False when `timeout` seconds passed first."""
        key = (namespace, name)
        event = self._changes.setdefault(key, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            if self._changes.get(key) is event and event.is_set():
                del self._changes[key]
        return True

    def _notify(self, key: Key) -> None:
        event = self._changes.pop(key, None)
        if event is not None:
            event.set()

    def _untrusted(self) -> None:
        self.synced = False
        for key in list(self._changes):
            self._notify(key)  # held requests answer from the API server again

    async def _run(self) -> None:
        pause = RETRY_SECONDS[0]
        while True:
            try:
                version = await self._list()
                pause = RETRY_SECONDS[0]
                while True:
                    began = asyncio.get_running_loop().time()
                    version = await self._watch(version)
                    if asyncio.get_running_loop().time() - began < 1.0:
                        await asyncio.sleep(1.0)  # a watch ended at once: do not hammer
            except asyncio.CancelledError:
                raise
            except (*API_ERRORS, ValueError) as exc:
                self._untrusted()
                gone = isinstance(exc, ApiError) and exc.status == 410
                if not gone:
                    log.warning(
                        "the Secret mirror lost the API server; reading Secrets live",
                        extra={"error": f"{type(exc).__name__}: {exc}"[:200]},
                    )
                    await asyncio.sleep(pause * random.uniform(0.8, 1.2))  # noqa: S311
                    pause = min(pause * 2, RETRY_SECONDS[1])

    async def _list(self) -> str:
        answer = await self.kube.list(SECRETS, {"labelSelector": LABEL_SELECTOR})
        listed = {}
        for item in answer.get("items") or []:
            key = _key(item)
            if key is not None and _managed(item):
                listed[key] = item
        for key in set(self._secrets) | set(listed):
            if self._secrets.get(key) != listed.get(key):
                self._notify(key)
        self._secrets = listed
        self.synced = True
        return str((answer.get("metadata") or {}).get("resourceVersion") or "")

    async def _watch(self, version: str) -> str:
        """Follow one watch; return the resourceVersion to resume from."""
        params = {"labelSelector": LABEL_SELECTOR, "timeoutSeconds": str(WATCH_SECONDS)}
        if version:
            params["resourceVersion"] = version
            params["allowWatchBookmarks"] = "true"
        async for event in self.kube.watch(SECRETS, params):
            obj = event.get("object") or {}
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            key = _key(obj)
            if key is None or event.get("type") == "BOOKMARK":
                continue
            if event.get("type") == "DELETED" or not _managed(obj):
                self._secrets.pop(key, None)
            else:
                self._secrets[key] = obj
            self._notify(key)
        return version


def _key(obj: Mapping[str, Any]) -> Key | None:
    metadata = obj.get("metadata") or {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str):
        return None
    return namespace, name


def _managed(obj: Mapping[str, Any]) -> bool:
    """The label check the API server's selector made (the test emulator ignores it)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())


__all__ = ["LABEL_SELECTOR", "SecretMirror"]
