"""The operator's memory and its reconcile pass, without kopf and without HTTP.

kopf's event handlers feed every watched object to :meth:`Reconciler.observe`, which
keeps the index (the objects as the API returns them) and records a
:class:`~.reconcile.affected.Change` only when something the rendering reads changed
(a pod's status conditions do not count; a pod's labels, IPs or phase do). A worker
calls :meth:`Reconciler.reconcile` after a short quiet period, so a burst of events
(a Deployment scaling to 100 pods) costs one pass, not 100.

A pass renders the pods the batch can touch (all pods on the first pass) with
:func:`~.reconcile.render.plan` and compares each Secret with the one the API holds
(the operator watches its own Secrets), so an unchanged Secret is never rewritten, not
even after a restart. A pod that keeps its sidecar but is no longer selected gets a
document without peers (its sidecar then removes its SAs); deleting the Secret would
leave the kubelet's last copy in the pod. Tunnel status is recomputed for every
Tunnel (with only pod changes: for the Tunnels they touch, whose validation, selection
and links are also the only ones derived again) and written only when it differs; a
Tunnel's validation problems and pods running without the sidecar become Warning
Events once per distinct message.

Everything the pass writes goes through :class:`Writer`, so tests drive it with a fake
and the kopf handlers give it the real API.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from .reconcile.affected import Change, Kind, candidates, external_check_changes
from .reconcile.cluster import Cluster, K8sObject, ObjectKey, PodRef, key_of, pod_ref
from .reconcile.consent import ALLOW_TUNNELS_FROM
from .reconcile.external_status import external_peer_status
from .reconcile.failure_events import failure_events
from .reconcile.peers import Links, TunnelIndex, selected, selects_any
from .reconcile.render import (
    CONFIG_KEY,
    POD_ANNOTATION,
    POD_CERTIFICATE_KEY,
    Rendering,
    is_managed,
    plan,
    render_pod,
    with_operator_ca,
    with_pod_certificate,
)
from .reconcile.services import service_of_slice
from .reconcile.status import SidecarReport, tunnel_status
from .reconcile.validation import parse_spec
from .webhook.injection import InjectionSettings
from .webhook.policy import pods_missing_sidecar

WATCHED_KINDS = (
    "Pod",
    "Namespace",
    "Tunnel",
    "TunnelCertificate",
    "ExternalPeer",
    "Secret",
    "ConfigMap",
    "Service",
    "EndpointSlice",
)
"""The kinds the index holds (what :class:`~.reconcile.cluster.Cluster` reads)."""

log = logging.getLogger(__name__)

WRITE_CONCURRENCY = 16
"""Secret writes in flight at once during a pass."""

LONGEST_WAIT = 1.0
"""Seconds a pass waits at most for a stream of changes to pause (:meth:`Reconciler.run`)."""

FEW_PODS = 16
"""Changed pods up to which :func:`pod_batch` checks them against each Tunnel's selector
rather than selecting each Tunnel's pods (about the cost of selecting one Tunnel's)."""

_CHANGE_KINDS: dict[str, Kind] = {
    "Pod": "Pod",
    "Namespace": "Namespace",
    "Tunnel": "Tunnel",
    "TunnelCertificate": "TunnelCertificate",
    "ExternalPeer": "ExternalPeer",
    "Secret": "Secret",
    "ConfigMap": "ConfigMap",
    "Service": "Service",
    "EndpointSlice": "EndpointSlice",
}


class Writer(Protocol):
    """What a reconcile pass writes; the handlers implement it on the API."""

    async def apply_secret(
        self,
        manifest: Mapping[str, Any],
        previous: Mapping[str, str] | None,
        digests: Mapping[str, str],
    ) -> None:
        """Create the Secret (`previous` None) or merge-patch it; `previous` holds the
        keys of its data as the API holds them (their values are digests,
        :func:`data_digests`: a key absent from `manifest` is removed), `digests` those
        of `manifest`'s data (the pass has them: it compared them with `previous`)."""
        ...

    async def patch_status(self, tunnel: K8sObject, status: Mapping[str, Any]) -> None: ...

    async def event(self, obj: K8sObject, type_: str, reason: str, message: str) -> None:
        """Post a Kubernetes Event about `obj` (best effort, never raises)."""
        ...


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PassResult:
    """What one reconcile pass did (for metrics, logs and tests)."""

    rendered: int = 0
    configured: int = 0
    """Pods whose Secret holds a document (after the pass)."""
    secrets_written: list[ObjectKey] = field(default_factory=list)
    statuses_written: list[ObjectKey] = field(default_factory=list)
    seconds: float = 0.0


def _managed_pod(obj: K8sObject) -> ObjectKey | None:
    metadata = obj.get("metadata") or {}
    pod = (metadata.get("annotations") or {}).get(POD_ANNOTATION)
    return (str(metadata.get("namespace") or ""), str(pod)) if pod else None


def _relevant(kind: str, obj: K8sObject | None) -> Any:
    """The part of an object the rendering reads: a change elsewhere is no Change."""
    if obj is None:
        return None
    metadata = obj.get("metadata") or {}
    if kind == "Pod":
        return (
            pod_ref(obj, require_ip=False),
            metadata.get("labels") or {},
            (obj.get("status") or {}).get("phase"),
        )
    if kind == "Namespace":
        consent = (metadata.get("annotations") or {}).get(ALLOW_TUNNELS_FROM)
        return (metadata.get("labels") or {}, consent)
    if kind in ("Tunnel", "TunnelCertificate", "ExternalPeer"):
        return obj.get("spec")
    if kind == "Secret":
        return (obj.get("type"), obj.get("data"))
    if kind == "ConfigMap":
        return (obj.get("data"), obj.get("binaryData"))
    if kind == "EndpointSlice":
        return (service_of_slice(obj), obj.get("endpoints"), obj.get("ports"))
    return obj.get("spec")


class Reconciler:
    """The index, the reports, and the pass that turns them into writes."""

    def __init__(
        self,
        writer: Writer,
        *,
        injection: InjectionSettings | None = None,
        clock: Callable[[], str] = now_rfc3339,
        on_pass: Callable[[PassResult, Cluster], None] | None = None,
        cluster_networks: Iterable[str] = (),
    ) -> None:
        self.writer = writer
        self.injection = injection or InjectionSettings()
        self.clock = clock
        self.on_pass = on_pass
        self.objects: dict[str, dict[ObjectKey, K8sObject]] = {k: {} for k in WATCHED_KINDS}
        self.reports: dict[ObjectKey, SidecarReport] = {}
        self.trust_bundles: dict[ObjectKey, str] = {}
        self.resolved: dict[str, tuple[str, ...]] = {}
        """DNS name of an ExternalPeer's address → the addresses it resolved to."""
        self.cluster_networks = tuple(cluster_networks)
        """The pod and Service ranges external subnets must not overlap (settings)."""
        self.actual: dict[ObjectKey, Mapping[str, str]] = {}
        """Per pod, the data of its configuration Secret as the API holds it, each value
        as its digest (:func:`data_digests`): the documents' text is the API's (and the
        Secret mirror's) to keep, about 10 KiB per pod at 5,000 pods."""
        self.pod_certificates: dict[ObjectKey, str] = {}
        """Per pod, the :data:`POD_CERTIFICATE_KEY` value its configuration Secret holds
        (the certificate the signing replica recorded; public, never a key): kept as
        text, because peers' documents deliver it (IKEv1 public-key encryption)."""
        self._relevance: dict[tuple[str, ObjectKey], Any] = {}
        """Per indexed object, what :func:`_relevant` found in it (not computed twice)."""
        self._changes: list[Change] = []
        self._full = True
        self._reports_changed = False
        self._before = Cluster()
        self._before_selected: Mapping[ObjectKey, frozenset[ObjectKey]] = {}
        """The pods each valid Tunnel of `_before` selects (the pass that made it found them)."""
        self._statuses: dict[ObjectKey, dict[str, Any]] = {}
        self._warned: dict[tuple[str, ObjectKey], str] = {}
        """Per (kind, key), the last Warning Event's message (posted once per message)."""
        self._external_statuses: dict[ObjectKey, dict[str, Any]] = {}
        self._missing: set[ObjectKey] = set()
        self._missing_full = True
        self._wake = asyncio.Event()
        self.links = Links()
        """The links of the last pass (whom each pod's sidecar should report on)."""
        self.rendering = Rendering({}, {}, Links(), {})
        """The last pass's rendering (its links to ExternalPeers, for reports)."""
        self._tunnels = TunnelIndex({}, {}, {}, frozenset())
        """Which Tunnels may select a pod, by its labels (:meth:`_tunnel_index`)."""
        self.operator_ca: str | None = None
        """PEM of the operator's serving CA, added to every pod's Secret (None: no TLS)."""

    # --- input ---------------------------------------------------------------------
    def observe(self, kind: str, event_type: str | None, obj: K8sObject) -> None:
        """Take one watch event (`ADDED`/`MODIFIED`/`DELETED`, or None while listing)."""
        key = key_of(obj)
        if kind == "Namespace":
            key = ("", key[1])
        deleted = event_type == "DELETED" or (
            kind in ("Tunnel", "ExternalPeer")
            and bool((obj.get("metadata") or {}).get("deletionTimestamp"))
        )
        bucket = self.objects[kind]
        old = bucket.get(key)
        if kind == "Secret" and is_managed(obj):
            self._observe_own_secret(obj, deleted)
            return
        if deleted:
            bucket.pop(key, None)
        else:
            bucket[key] = obj
        if kind == "Pod" and deleted:
            self.reports.pop(key, None)
            self._missing.discard(key)
        if kind == "TunnelCertificate" and deleted:
            self.trust_bundles.pop(key, None)
        before = self._relevance.pop((kind, key), None) if old is not None else None
        after = None if deleted else _relevant(kind, obj)
        if not deleted:
            self._relevance[(kind, key)] = after
        if before != after:
            change_kind = _CHANGE_KINDS.get(kind)
            if change_kind is not None:
                name = "" if kind == "Namespace" else key[1]
                namespace = key[1] if kind == "Namespace" else key[0]
                self._changes.append(Change(change_kind, namespace, name))
            self._wake.set()

    def _observe_own_secret(self, obj: K8sObject, deleted: bool) -> None:
        pod = _managed_pod(obj)
        if pod is None:
            return
        raw = obj.get("data") or {}
        certificate = None if deleted else raw.get(POD_CERTIFICATE_KEY)
        if certificate is None:
            self.pod_certificates.pop(pod, None)
        else:
            self.pod_certificates[pod] = certificate
        data = data_digests(raw)
        if deleted:
            self.actual.pop(pod, None)
        elif self.actual.get(pod) == data:
            return
        else:
            self.actual[pod] = data
        if pod in self.objects["Pod"]:  # edited or deleted by someone else: restore it
            self._changes.append(Change("Pod", *pod))
            self._wake.set()

    async def set_reports(self, reports: Mapping[ObjectKey, SidecarReport]) -> bool:
        """Merge sidecar reports; True (and a pass is scheduled) when any changed.

        A failure a report newly shows becomes a Warning Event on its Tunnel
        (:mod:`.reconcile.failure_events`: once per appearance, bounded per poll).
        """
        due = failure_events(self.reports, reports, self.links.by_pod)
        posts: list[tuple[ObjectKey, Callable[[], Awaitable[None]]]] = [
            (
                event.tunnel,
                partial(self.writer.event, tunnel, "Warning", event.reason, event.message),
            )
            for event in due.events
            if (tunnel := self.objects["Tunnel"].get(event.tunnel)) is not None
        ]
        if due.dropped:
            log.warning("sidecar failure events dropped", extra={"dropped": due.dropped})
        changed = False
        for key, report in reports.items():
            if self.reports.get(key) != report:
                self.reports[key] = report
                changed = True
        if changed:
            self._reports_changed = True
            self._wake.set()
        await _bounded(posts)
        return changed

    def set_trust_bundle(self, tunnel_certificate: ObjectKey, pem: str) -> None:
        """Publish the CA bundle of a TunnelCertificate's issuer (a change for its Tunnels)."""
        if self.trust_bundles.get(tunnel_certificate) != pem:
            self.trust_bundles[tunnel_certificate] = pem
            self._changes.append(Change("TunnelCertificate", *tunnel_certificate))
            self._wake.set()

    def set_resolved(self, name: str, addresses: Iterable[str]) -> None:
        """Record what an ExternalPeer's DNS name resolved to (empty: it did not); a
        change is a change of every ExternalPeer with that address."""
        name = name.lower().rstrip(".")
        found = tuple(addresses)
        if self.resolved.get(name) == found:
            return
        self.resolved[name] = found
        for key, peer in self.objects["ExternalPeer"].items():
            address = str((peer.get("spec") or {}).get("address") or "")
            if address.lower().rstrip(".") == name:
                self._changes.append(Change("ExternalPeer", *key))
        self._wake.set()

    def report_targets(self, tunnel: ObjectKey) -> dict[ObjectKey, tuple[PodRef, frozenset[str]]]:
        """The pods of `tunnel` and the peer names each one's document lists."""
        targets: dict[ObjectKey, tuple[PodRef, frozenset[str]]] = {}
        pods = {link.local.key: link.local for link in self.links.of_tunnel(tunnel)}
        pods.update(
            (link.local.key, link.local) for link in self.rendering.external_of_tunnel(tunnel)
        )
        for key, ref in pods.items():
            names = {p.remote.peer_name for p in self.links.by_pod.get(key, ())}
            names |= {p.peer_name for p in self.rendering.external.get(key, ())}
            targets[key] = (ref, frozenset(names))
        return targets

    def snapshot(self) -> Cluster:
        return Cluster(
            pods=dict(self.objects["Pod"]),
            namespaces={k[1]: v for k, v in self.objects["Namespace"].items()},
            tunnels=dict(self.objects["Tunnel"]),
            tunnel_certificates=dict(self.objects["TunnelCertificate"]),
            secrets=dict(self.objects["Secret"]),
            config_maps=dict(self.objects["ConfigMap"]),
            services=dict(self.objects["Service"]),
            endpoint_slices=dict(self.objects["EndpointSlice"]),
            trust_bundles=dict(self.trust_bundles),
            external_peers=dict(self.objects["ExternalPeer"]),
            resolved=dict(self.resolved),
            cluster_networks=self.cluster_networks,
            pod_certificates=dict(self.pod_certificates),
        )

    def _tunnel_index(self, cluster: Cluster) -> TunnelIndex:
        """The :class:`~.reconcile.peers.TunnelIndex` of `cluster`'s Tunnels (rebuilt
        when one of them is not the object the last index was built from, parsing only
        the specs that changed: every status write replaces a Tunnel object)."""
        if not self._tunnels.current(cluster.tunnels):
            specs = {}
            for key, tunnel in cluster.tunnels.items():
                parsed = self._tunnels.spec_of(key, tunnel) or parse_spec(tunnel)
                if not isinstance(parsed, list):
                    specs[key] = parsed
            self._tunnels = TunnelIndex.of(cluster.tunnels, specs)
        return self._tunnels

    # --- the pass --------------------------------------------------------------------
    async def run(self, debounce: float = 0.2, longest: float = LONGEST_WAIT) -> None:
        """Reconcile after each burst of changes, forever (cancel to stop): once no
        change came for `debounce` seconds, or `longest` seconds after the burst's
        first change while changes keep coming. A lone change waits `debounce`; a
        stream of them (thousands of pods applied) costs a pass per `longest` rather
        than one per `debounce`, each pass's cost in proportion to the cluster and
        every pod re-rendered once per pass its Tunnel's pods changed in."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            first = loop.time()
            while True:
                self._wake.clear()
                await asyncio.sleep(min(debounce, max(0.0, first + longest - loop.time())))
                if not self._wake.is_set() or loop.time() - first >= longest:
                    break
            self._wake.clear()
            await self.reconcile()

    async def reconcile(self) -> PassResult:
        """One pass over the changes recorded since the last one."""
        started = time.perf_counter()
        after = self.snapshot()
        changes, self._changes = self._changes, []
        reports_changed, self._reports_changed = self._reports_changed, False
        keys: set[ObjectKey] | None = None
        # With only pod changes: the Tunnels whose pods (before or after) changed; the
        # others' parts, and their status, are what the last pass found.
        touched: set[ObjectKey] | None = None
        if not self._full:
            # A pod can flip an ExternalPeer's validity (an address inside its subnets),
            # which changes Tunnels whose own pods did not change: no reuse then.
            if all(c.kind == "Pod" for c in changes) and not external_check_changes(
                self._before, after
            ):
                keys, touched = pod_batch(
                    self._before,
                    after,
                    {c.key for c in changes},
                    self._before_selected,
                    self._tunnel_index(after),
                )
            else:
                keys = batch_candidates(self._before, after, changes)
        self._full = False
        reuse = None
        if touched is not None:
            reuse = {k: p for k, p in self.rendering.parts.items() if k not in touched}
        rendering = plan(after, only=keys, reuse=reuse)
        desired = rendering.secrets()
        self.links = rendering.links
        self.rendering = rendering
        result = PassResult(rendered=len(rendering.pods))
        consider = set(desired) | set(self.actual) if keys is None else keys
        writes = []
        for key in sorted(consider):
            manifest = desired.get(key) or self._idle(key, after)
            if manifest is not None:
                manifest = with_operator_ca(manifest, self.operator_ca)
                certificate = self.pod_certificates.get(key)
                manifest = with_pod_certificate(
                    manifest, None if certificate is None else {POD_CERTIFICATE_KEY: certificate}
                )
            if manifest is None:
                continue
            digests = data_digests(manifest.get("data"))
            if self.actual.get(key) != digests:
                writes.append((key, manifest, digests))
        await self._write_secrets(writes, result)
        patches: list[tuple[ObjectKey, Callable[[], Awaitable[None]]]] = []
        for key, tunnel in sorted(after.tunnels.items()):
            if not (reports_changed or touched is None or _status_due(key, tunnel, touched)):
                continue  # nothing its status reads changed (see `touched`)
            previous = self._statuses.get(key) or tunnel.get("status")
            status = tunnel_status(
                tunnel, rendering, after, self.reports, now=self.clock(), previous=previous
            )
            refused = _condition_of(status, "Degraded")
            if key in rendering.problems:
                await self._warn(tunnel, "InvalidSpec", _condition_message(status))
            elif refused.get("reason") == "NamespaceNotConsenting":
                await self._warn(tunnel, "NamespaceNotConsenting", str(refused.get("message")))
            elif status.get("warnings"):
                await self._warn(tunnel, "Deprecated", "; ".join(status["warnings"]))
            else:
                self._warned.pop(("Tunnel", key), None)
            if status != previous:
                patches.append((key, partial(self._patch_status, key, tunnel, status)))
        patches += await self._external_peer_statuses(after, rendering)
        result.statuses_written += await _bounded(patches)
        for gone in set(self._statuses) - set(after.tunnels):
            del self._statuses[gone]
        for gone in set(self._external_statuses) - set(after.external_peers):
            del self._external_statuses[gone]
        await self._report_missing_sidecars(after, changes, rendering)
        self._before, self._before_selected = after, rendering.selected
        result.configured = sum(1 for data in self.actual.values() if CONFIG_KEY in data)
        result.seconds = time.perf_counter() - started
        if self.on_pass is not None:
            self.on_pass(result, after)
        return result

    async def _external_peer_statuses(
        self, cluster: Cluster, rendering: Rendering
    ) -> list[tuple[ObjectKey, Callable[[], Awaitable[None]]]]:
        """Status patches of the ExternalPeers whose status changed, and their Warning
        Events (an invalid spec; pods reporting failures), once per distinct message."""
        patches: list[tuple[ObjectKey, Callable[[], Awaitable[None]]]] = []
        for key, peer in sorted(cluster.external_peers.items()):
            previous = self._external_statuses.get(key) or peer.get("status")
            status = external_peer_status(
                peer, rendering, cluster, self.reports, now=self.clock(), previous=previous
            )
            degraded = _condition_of(status, "Degraded")
            if degraded.get("status") == "True":
                await self._warn(peer, str(degraded.get("reason")), str(degraded.get("message")))
            elif status.get("warnings"):
                await self._warn(peer, "Deprecated", "; ".join(status["warnings"]))
            else:
                self._warned.pop(("ExternalPeer", key), None)
            if status != previous:
                patches.append((key, partial(self._patch_status, key, peer, status)))
        return patches

    async def _write_secrets(
        self, writes: list[tuple[ObjectKey, dict[str, Any], dict[str, str]]], result: PassResult
    ) -> None:
        result.secrets_written += await _bounded(
            [
                (key, partial(self._write_secret, key, manifest, digests))
                for key, manifest, digests in writes
            ]
        )

    async def _write_secret(
        self, key: ObjectKey, manifest: dict[str, Any], digests: dict[str, str]
    ) -> None:
        await self.writer.apply_secret(manifest, self.actual.get(key), digests)
        self.actual[key] = digests

    async def _patch_status(
        self, key: ObjectKey, tunnel: K8sObject, status: dict[str, Any]
    ) -> None:
        await self.writer.patch_status(tunnel, status)
        kept = self._external_statuses if tunnel.get("kind") == "ExternalPeer" else self._statuses
        kept[key] = status

    def _idle(self, key: ObjectKey, cluster: Cluster) -> dict[str, Any] | None:
        """A peers-less document for a pod that has a Secret but no Tunnel any more."""
        if key not in self.actual or key not in cluster.pods:
            return None
        ref = pod_ref(cluster.pods[key])
        if ref is None:
            return None
        return render_pod(ref, (), {}, cluster).secret()

    async def _warn(self, obj: K8sObject, reason: str, message: str) -> None:
        key = (str(obj.get("kind")), key_of(obj))
        if self._warned.get(key) != message:
            self._warned[key] = message
            await self.writer.event(obj, "Warning", reason, message)

    async def _report_missing_sidecars(
        self, cluster: Cluster, changes: Iterable[Change], rendering: Rendering
    ) -> None:
        touched = {c.key for c in changes if c.kind == "Pod"}
        keys = [
            key
            for key in cluster.pods
            if key not in self._missing and (self._missing_full or key in touched)
        ]
        self._missing_full = False
        found = []
        for pod_keys, tunnels in _by_selecting_tunnels(keys, cluster, rendering):
            pods = [cluster.pods[key] for key in pod_keys]
            found += pods_missing_sidecar(pods, cluster.namespaces, tunnels, self.injection)
        events: list[tuple[ObjectKey, Callable[[], Awaitable[None]]]] = []
        for missing in sorted(found, key=lambda m: (m.namespace, m.name)):
            key = (missing.namespace, missing.name)
            self._missing.add(key)
            pod = cluster.pods[key]
            post = partial(self.writer.event, pod, "Warning", "SidecarMissing", missing.message)
            events.append((key, post))
        await _bounded(events)

    @property
    def statuses(self) -> Mapping[ObjectKey, Mapping[str, Any]]:
        """The Tunnel statuses last written."""
        return self._statuses

    @property
    def external_statuses(self) -> Mapping[ObjectKey, Mapping[str, Any]]:
        """The ExternalPeer statuses last written."""
        return self._external_statuses

    def retry_all(self) -> None:
        """After a failed pass: reconsider every pod on the next one (and drop the
        changes recorded meanwhile, which that pass covers)."""
        self._full = True
        self._missing_full = True
        self._changes.clear()
        self._wake.set()

    def take_over(self) -> None:
        """When this replica starts leading: the next pass looks at everything, and a
        status this replica wrote when it led before counts as written only if the
        object still holds it (another leader may have replaced it since). Called on a
        standby too, which passes never, so that its recorded changes do not pile up."""
        for kind, kept in (("Tunnel", self._statuses), ("ExternalPeer", self._external_statuses)):
            for key, status in list(kept.items()):
                current = self.objects[kind].get(key)
                if current is None or current.get("status") != status:
                    del kept[key]
        self.retry_all()

    @property
    def missing_sidecars(self) -> int:
        return len(self._missing)


def data_digests(data: Mapping[str, Any] | None) -> dict[str, str]:
    """A Secret's data with each value replaced by its BLAKE2b-128 digest: enough to
    tell whether a rendered document differs from what the API holds (only a digest
    collision could hide a change) without keeping every pod's document in memory."""
    return {
        key: hashlib.blake2b(str(value).encode(), digest_size=16).hexdigest()
        for key, value in (data or {}).items()
    }


def _condition_of(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """The condition of type `kind` in `status` (empty when absent)."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def _condition_message(status: Mapping[str, Any]) -> str:
    return str(_condition_of(status, "Ready").get("message") or "")


async def _bounded(calls: list[tuple[ObjectKey, Callable[[], Awaitable[None]]]]) -> list[ObjectKey]:
    """Run the API calls :data:`WRITE_CONCURRENCY` at a time (one round trip after another
    was most of a pass at thousands of pods) and return their keys, in order.

    The first failure is raised only once every call has finished; each call records its
    own success (`actual`, `_statuses`), so that record stays true after a failed pass.
    """
    limit = asyncio.Semaphore(WRITE_CONCURRENCY)

    async def one(call: Callable[[], Awaitable[None]]) -> None:
        async with limit:
            await call()

    outcomes = await asyncio.gather(*(one(call) for _, call in calls), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return [key for key, _ in calls]


def _by_selecting_tunnels(
    keys: Iterable[ObjectKey], cluster: Cluster, rendering: Rendering
) -> list[tuple[list[ObjectKey], list[K8sObject]]]:
    """`keys` grouped by the Tunnels that may select them, with those Tunnels.

    The webhook's rule (:func:`~.webhook.policy.pods_missing_sidecar`) is evaluated per
    group against those Tunnels only: the valid Tunnels whose rendering selected the pod
    (the label index found them) and every invalid Tunnel (not rendered, so not
    indexed). Asking every Tunnel about every pod cost Tunnels × pods per pass.
    """
    keys = list(keys)
    asked = frozenset(keys)
    selecting: dict[ObjectKey, list[ObjectKey]] = {}
    if asked:
        for tunnel, members in sorted(rendering.selected.items()):
            for member in members & asked:  # not every member: a pass asks about a few
                selecting.setdefault(member, []).append(tunnel)
    invalid = sorted(rendering.problems)
    groups: dict[tuple[ObjectKey, ...], list[ObjectKey]] = {}
    for key in keys:
        groups.setdefault((*selecting.get(key, ()), *invalid), []).append(key)
    return [
        (pod_keys, [cluster.tunnels[t] for t in tunnels if t in cluster.tunnels])
        for tunnels, pod_keys in groups.items()
    ]


def _status_due(key: ObjectKey, tunnel: K8sObject, touched: set[ObjectKey]) -> bool:
    """Whether a pass with only pod changes (`touched`: the Tunnels whose pods changed)
    must recompute `tunnel`'s status: it is touched; or a side has a
    `namespaceSelector` (its refusals name pods outside its selection)."""
    if key in touched:
        return True
    selector = (tunnel.get("spec") or {}).get("selector") or {}
    return any(
        isinstance(side, Mapping) and side.get("namespaceSelector") is not None
        for side in selector.values()
    )


def pod_batch(
    before: Cluster,
    after: Cluster,
    pods: set[ObjectKey],
    selected_before: Mapping[ObjectKey, frozenset[ObjectKey]] | None = None,
    index: TunnelIndex | None = None,
) -> tuple[set[ObjectKey], set[ObjectKey]]:
    """(the pods a batch of pod changes may touch, the Tunnels that select one of the
    changed `pods` in `before` or `after`): the changed pods and every pod of those
    Tunnels, with the Tunnels' memberships computed once per batch.

    `selected_before` is what the pass that rendered `before` found each valid Tunnel
    to select (:attr:`~.render.Rendering.selected`), not selected again; a Tunnel it
    does not hold is asked. In `after`, a batch of at most :data:`FEW_PODS` pods is
    checked against each Tunnel's selector (:func:`~.peers.selects_any`) and only the
    Tunnels selecting one select their pods. `index` (built from `after`'s Tunnels)
    narrows that to the Tunnels whose `matchLabels` the changed pods carry."""
    keys = set(pods)
    tunnels: set[ObjectKey] = set()
    if not pods:
        return keys, tunnels
    may: set[ObjectKey] | None = None
    if index is not None:
        labels = after.pod_labels
        may = set()
        for pod in pods:
            if pod in labels:
                may |= index.may_select(labels[pod])
    for cluster, known in ((before, selected_before or {}), (after, {})):
        for key, tunnel in cluster.tunnels.items():
            found = known.get(key)
            if found is None and cluster is after and may is not None and key not in may:
                continue
            if found is None and cluster is after and len(pods) <= FEW_PODS:
                parsed = parse_spec(tunnel)
                if isinstance(parsed, list) or not selects_any(tunnel, parsed, after, pods):
                    continue
            members = _members(tunnel, cluster) if found is None else found
            if not members.isdisjoint(pods):
                keys |= members
                tunnels.add(key)
    return keys, tunnels


def batch_candidates(before: Cluster, after: Cluster, changes: Iterable[Change]) -> set[ObjectKey]:
    """The pods a batch of changes may touch (:func:`~.reconcile.affected.candidates`,
    with the Tunnels' memberships computed once per batch for the many pod changes, and
    a Tunnel change looking at that Tunnel only: applying 500 Tunnels at once cost
    Tunnels × Tunnels selector evaluations)."""
    keys: set[ObjectKey] = set()
    pods = {c.key for c in changes if c.kind == "Pod"}
    tunnels = {c.key for c in changes if c.kind == "Tunnel"}
    others = {c for c in changes if c.kind not in ("Pod", "Tunnel")}
    keys |= pod_batch(before, after, pods)[0]
    for cluster in (before, after):
        for key in tunnels & cluster.tunnels.keys():
            keys |= _members(cluster.tunnels[key], cluster)
    for change in others:
        keys |= candidates(before, change) | candidates(after, change)
    keys |= external_check_changes(before, after)
    return keys


def _members(tunnel: K8sObject, cluster: Cluster) -> set[ObjectKey] | frozenset[ObjectKey]:
    """The pods either side of `tunnel` selects in `cluster` (none when its spec is invalid)."""
    parsed = parse_spec(tunnel)
    if isinstance(parsed, list):
        return set()
    from_keys, to_keys = selected(tunnel, parsed, cluster)
    return {*from_keys, *to_keys}


__all__ = [
    "WATCHED_KINDS",
    "PassResult",
    "Reconciler",
    "Writer",
    "batch_candidates",
    "data_digests",
    "now_rfc3339",
    "pod_batch",
]
