"""The reconciler's index, fed by the operator's own LIST+WATCH of every kind it reads.

kopf used to feed it, one `on.event` handler per kind. At thousands of pods that was
the largest item of the operator's CPU (about three watch events per pod, each through
kopf's per-object worker, cause detection, logger adapters and handler kwargs), and
kopf's peering paused a standby's watches, whose index went stale (or stayed empty).
Each kind here is one :class:`~.list_watch.ListWatch` (per namespace with
``--namespace``), in every replica, so a standby's index is whole and current when it
takes over (:mod:`.leadership` tells whether this replica writes; this module never
does).

What :meth:`~.reconciler.Reconciler.observe` receives is what kopf gave it: each listed
object (event type None), then each watch event; and, because a LIST replaces what the
last one showed, a ``DELETED`` for every object the previous LIST or watch had shown
that the new LIST lacks (deleted while the watch was down).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .crds.models import GROUP, VERSION
from .kube import Kube, object_path
from .list_watch import Key, ListWatch, key_of
from .reconciler import Reconciler

RESOURCES: dict[str, tuple[str, str, str]] = {
    "Pod": ("", "v1", "pods"),
    "Namespace": ("", "v1", "namespaces"),
    "Secret": ("", "v1", "secrets"),
    "ConfigMap": ("", "v1", "configmaps"),
    "Service": ("", "v1", "services"),
    "EndpointSlice": ("discovery.k8s.io", "v1", "endpointslices"),
    "Tunnel": (GROUP, VERSION, "tunnels"),
    "TunnelCertificate": (GROUP, VERSION, "tunnelcertificates"),
    "ExternalPeer": (GROUP, VERSION, "externalpeers"),
}
"""The kinds the index holds: (group, version, plural)."""

Changed = Callable[[str, str, Mapping[str, Any]], None]
"""Told (kind, event type, object) after the index took a watch event."""


class IndexWatches:
    """One LIST+WATCH per kind (per namespace of `namespaces`; none: cluster-wide)
    feeding `reconciler`; `changed` hears each watch event after it."""

    def __init__(
        self,
        kube: Kube,
        reconciler: Reconciler,
        namespaces: Sequence[str] = (),
        changed: Changed | None = None,
    ) -> None:
        self.reconciler = reconciler
        self._changed = changed
        self._follows: list[ListWatch] = []
        for kind, (group, version, plural) in RESOURCES.items():
            api_version = f"{group}/{version}" if group else version
            scopes: Sequence[str | None] = (
                list(namespaces) if namespaces and kind != "Namespace" else [None]
            )
            for namespace in scopes:
                self._follows.append(self._follow(kube, kind, api_version, plural, namespace))

    def _follow(
        self, kube: Kube, kind: str, api_version: str, plural: str, namespace: str | None
    ) -> ListWatch:
        seen: dict[Key, Mapping[str, Any]] = {}
        """Metadata of each object the last LIST and the watch showed (for deletions)."""
        observe = self.reconciler.observe

        def listed(items: Sequence[Mapping[str, Any]]) -> None:
            current: dict[Key, Mapping[str, Any]] = {}
            for item in items:
                if isinstance(item, dict):
                    item.setdefault("kind", kind)
                    item.setdefault("apiVersion", api_version)
                metadata = item.get("metadata") or {}
                current[key_of(item) or ("", "")] = metadata
            for key in seen.keys() - current.keys():
                gone = {"apiVersion": api_version, "kind": kind, "metadata": seen[key]}
                observe(kind, "DELETED", gone)
            seen.clear()
            seen.update(current)
            for item in items:
                observe(kind, None, item)

        def changed(event_type: str, obj: Mapping[str, Any]) -> None:
            key = key_of(obj) or ("", "")
            if event_type == "DELETED":
                seen.pop(key, None)
            else:
                seen[key] = obj.get("metadata") or {}
            observe(kind, event_type, obj)
            if self._changed is not None:
                self._changed(kind, event_type, obj)

        return ListWatch(
            kube,
            object_path(api_version, plural, namespace),
            {},
            listed=listed,
            changed=changed,
            name=f"kipsec-watch-{plural}",
        )

    def start(self) -> None:
        for follow in self._follows:
            follow.start()

    async def stop(self) -> None:
        await asyncio.gather(*(follow.stop() for follow in self._follows))

    @property
    def synced(self) -> bool:
        """Whether every kind has been listed and no watch has failed since."""
        return all(follow.synced for follow in self._follows)

    async def wait_synced(self) -> None:
        """Return once every kind has been listed (and no watch failed since)."""
        while not self.synced:
            await asyncio.gather(*(follow.wait_synced() for follow in self._follows))


__all__ = ["RESOURCES", "IndexWatches"]
