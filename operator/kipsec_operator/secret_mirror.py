"""Every replica's own copy of the per-pod Secrets, kept by one LIST and a WATCH.

``GET /v1/config`` used to read the pod's Secret from the API server on every poll, so
each sidecar cost the API server a GET every few seconds (two with the pod's). The
Secrets the operator writes for pods carry its managed-by label; this mirror LISTs them
once, then follows a WATCH from the list's resourceVersion, in every replica (the
index keeps only digests of the documents, :mod:`.index_watches`). The configuration
endpoint reads the mirror once it has listed (:attr:`synced`) and the API server
before that, and can hold a request whose ETag is current until the
pod's Secret changes (:meth:`SecretMirror.changed`), so a sidecar learns of a new
document as soon as the watch does.

When the watch fails the mirror is not trusted (``synced`` false) until the next LIST
succeeds; the endpoint then reads the API server as before. Nothing here is written.
The LIST+WATCH loop is :class:`~.list_watch.ListWatch`, the reconciler's index uses it
too (:mod:`.index_watches`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .kube import Kube
from .list_watch import Key, ListWatch, key_of
from .reconcile.render import MANAGED_BY, is_managed

log = logging.getLogger(__name__)

SECRETS = "/api/v1/secrets"
LABEL_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())


class SecretMirror:
    """The operator's per-pod Secrets by (namespace, name), as the watch last saw them."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._secrets: dict[Key, Mapping[str, Any]] = {}
        self._changes: dict[Key, asyncio.Event] = {}
        self._follow = ListWatch(
            kube,
            SECRETS,
            {"labelSelector": LABEL_SELECTOR},
            listed=self._listed,
            changed=self._changed,
            untrusted=self._untrusted,
            name="kipsec-secrets",
        )

    @property
    def synced(self) -> bool:
        """Whether the mirror has listed and its watch has not failed since."""
        return self._follow.synced

    def start(self) -> None:
        self._follow.start()

    async def stop(self) -> None:
        """Stop following; requests held in :meth:`changed` return at once."""
        await self._follow.stop()

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
        for key in list(self._changes):
            self._notify(key)  # held requests answer from the API server again

    def _listed(self, items: Sequence[Mapping[str, Any]]) -> None:
        listed = {}
        for item in items:
            key = key_of(item)
            if key is not None and is_managed(item):
                listed[key] = item
        for key in set(self._secrets) | set(listed):
            if self._secrets.get(key) != listed.get(key):
                self._notify(key)
        self._secrets = listed

    def _changed(self, kind: str, obj: Mapping[str, Any]) -> None:
        key = key_of(obj)
        if key is None:
            return
        if kind == "DELETED" or not is_managed(obj):
            self._secrets.pop(key, None)
        else:
            self._secrets[key] = obj
        self._notify(key)


__all__ = ["LABEL_SELECTOR", "SecretMirror"]
