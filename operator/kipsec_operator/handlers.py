"""kopf handlers: thin glue between timers and the :class:`Reconciler`; the Operator.

The index is fed by the operator's own watches (:mod:`.index_watches`), in every
replica; kopf runs the timers, the login, startup and cleanup, and the peering that
makes one replica the leader (:mod:`.leadership`). A worker task started at startup
runs the reconcile passes (writes per-pod Secrets, Tunnel status, Events) while this
replica leads. Timers: per Tunnel, the sidecar reports (:mod:`.sidecar_reports`); per
TunnelCertificate, its issuer's trust bundle and CA rotation; per ExternalPeer, the
resolution of its DNS name (bounded by :data:`RESOLVE_TIMEOUT`). kopf's timers are the
one place a finalizer is needed (kopf puts its own on the resources it times so
it can stop the timer on deletion); they are paused with everything else on a replica
that is not the leader.

Handlers are registered on a registry passed in, so tests run an operator per test.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from aiohttp import web
from cryptography import x509

from .ca_store import CaStore, user_ca
from .certificates.csr import Approved, Refused
from .certificates.expiry import ca_expiring, ca_unusable
from .certificates.issuer_trust import issuer_trust
from .certificates.readiness import readiness
from .certificates.terms import TermsError, certificate_terms, issuer_secret_field
from .config_delivery import configuration_data
from .crds.models import GROUP, VERSION
from .index_watches import RESOURCES, IndexWatches
from .kube import ApiError, Credentials, Kube, object_path
from .leadership import Leadership
from .login import connection_info
from .metrics import OperatorMetrics
from .reconcile.cluster import K8sObject, ObjectKey, key_of, pod_ref
from .reconcile.external import is_ip
from .reconcile.render import POD_CERTIFICATE_KEY, is_managed, secret_name
from .reconciler import PassResult, Reconciler, data_digests
from .server import serve, serving_ca
from .sidecar_reports import Fetcher, HttpFetcher, poll
from .webhook.injection import InjectionSettings
from .webhook.selection import certificate_selects

log = logging.getLogger("kipsec.operator")

MAX_REFUSAL_TEXT = 512
"""Characters of a pod's refusal kept for the TunnelCertificate's condition."""

RESOLVE_TIMEOUT = 5.0
"""Seconds an ExternalPeer's DNS name may take to resolve (then: unresolvable)."""


class Operator:
    """One operator instance: API client, reconciler, reports, CA, metrics.

    `fetcher` is how sidecar reports are read (default: HTTP to each pod's health
    port); `report_interval` and `debounce` are seconds. With `listen` (host, port; port
    0 picks one, see :attr:`endpoint_port`) the webhook/CSR/metrics endpoints are served
    on kopf's event loop from startup to cleanup, over HTTPS with `tls` (cert, key files).
    """

    def __init__(
        self,
        connection: Credentials,
        *,
        namespace: str = "kipsec-system",
        injection: InjectionSettings | None = None,
        fetcher: Fetcher | None = None,
        report_interval: float = 10.0,
        certificate_interval: float = 60.0,
        debounce: float = 0.2,
        listen: tuple[str, int] | None = None,
        tls: tuple[str, str] | None = None,
        resolve_interval: float = 60.0,
        cluster_networks: tuple[str, ...] = (),
    ) -> None:
        self.connection = connection
        self.namespace = namespace
        self.injection = injection or InjectionSettings()
        self.kube = Kube(connection)
        self.metrics = OperatorMetrics()
        self.reconciler = Reconciler(
            self,
            injection=self.injection,
            on_pass=self._observe_pass,
            cluster_networks=cluster_networks,
        )
        self.resolve_interval = resolve_interval
        self._http_fetcher = HttpFetcher() if fetcher is None else None
        self.fetcher: Fetcher = fetcher or self._http_fetcher  # type: ignore[assignment]
        self.report_interval = report_interval
        self.certificate_interval = certificate_interval
        self.debounce = debounce
        self.ca = CaStore(self.kube, namespace)
        self.leadership = Leadership()
        """Whether this replica writes (:func:`.main.run_operator` makes it follow kopf)."""
        self.namespaces: tuple[str, ...] = ()
        """Where the index watches (empty: cluster-wide); set before :meth:`start`."""
        self.watches: IndexWatches | None = None
        self._worker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.listen = listen
        self.tls = tls
        if tls is not None:  # pods verify the operator (CSR, /v1/config) with this CA
            self.reconciler.operator_ca = serving_ca(tls[0])
        self.endpoint_port: int | None = None
        self._runner: web.AppRunner | None = None
        self.issued: dict[ObjectKey, dict[ObjectKey, tuple[datetime, datetime]]] = {}
        """Per TunnelCertificate, per pod: (notAfter, renewalTime) of its last certificate."""
        self.refused: dict[ObjectKey, dict[ObjectKey, str]] = {}
        """Per TunnelCertificate, per pod: its last request's refusal, until it is issued."""
        self._certificate_statuses: dict[ObjectKey, dict[str, Any]] = {}
        self._certificate_locks: dict[ObjectKey, asyncio.Lock] = {}
        """Per TunnelCertificate: held while its status is read, computed and written, so
        that two writers (a watch event and the timer) never interleave and the last one
        to finish never drops what the other remembered (``issuerCA``)."""
        self._issuer_warned: dict[ObjectKey, str] = {}
        self._expiry_warned: dict[ObjectKey, str] = {}

    # --- Writer ----------------------------------------------------------------------
    async def apply_secret(
        self,
        manifest: Mapping[str, Any],
        previous: Mapping[str, str] | None,
        digests: Mapping[str, str],
    ) -> None:
        metadata = manifest["metadata"]
        path = object_path("v1", "secrets", metadata["namespace"], metadata["name"])
        if previous is None:
            try:
                await self.kube.create(
                    object_path("v1", "secrets", metadata["namespace"]), manifest
                )
                return
            except ApiError as exc:
                if exc.status != 409:
                    raise
                current = await self.kube.get(path) or {}
                previous = data_digests(current.get("data"))
        # Only the keys that differ from `previous` (digests, as the reconciler keeps
        # them), and never the pod's certificate, which the signing replica writes (it
        # may have done so since `previous`).
        data: dict[str, Any] = {
            key: None
            for key in previous
            if key not in manifest["data"] and key != POD_CERTIFICATE_KEY
        }
        data.update(
            (k, v)
            for k, v in manifest["data"].items()
            if previous.get(k) != digests[k] and k != POD_CERTIFICATE_KEY
        )
        patch = {
            "metadata": {
                "labels": metadata["labels"],
                "annotations": metadata["annotations"],
                "ownerReferences": metadata["ownerReferences"],
            },
            "data": data,
        }
        await self.kube.merge_patch(path, patch)

    async def patch_status(self, tunnel: K8sObject, status: Mapping[str, Any]) -> None:
        namespace, name = key_of(tunnel)
        plural = RESOURCES[str(tunnel.get("kind") or "Tunnel")][2]
        path = object_path(f"{GROUP}/{VERSION}", plural, namespace, name) + "/status"
        try:
            await self.kube.merge_patch(path, {"status": dict(status)})
        except ApiError as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    async def event(self, obj: K8sObject, type_: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about `obj`; a failure is logged, never raised (an Event
        is a courtesy, the status is the record)."""
        namespace, name = key_of(obj)
        metadata = obj.get("metadata") or {}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.kipsec-", "namespace": namespace or "default"},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": name,
                "namespace": namespace or None,
                "uid": metadata.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "kipsec-operator"},
            "reportingComponent": "kipsec-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.create(object_path("v1", "events", namespace or "default"), body)
        except (ApiError, OSError) as exc:
            log.warning("event not posted", extra={"reason": reason, "error": str(exc)})

    async def store_certificate(self, decision: Approved, certificate_pem: str) -> None:
        """Write a certificate this replica signed into its pod's configuration Secret
        (:data:`~.reconcile.render.POD_CERTIFICATE_KEY`; public, the key stays in the
        pod), whence the leader gives it to the pod's peers for IKEv1 public-key
        encryption. Only a Secret the operator wrote for that very pod (uid) is patched;
        a pod without one yet, or an API error, is logged and skipped: the sidecar has
        its certificate either way, and renews it."""
        path = object_path("v1", "pods", decision.pod_namespace, decision.pod_name)
        try:
            pod = await self.kube.get(path)
            ref = pod_ref(pod, require_ip=False) if pod is not None else None
            if pod is None or ref is None or ref.uid != decision.pod_uid:
                return
            secret_path = object_path("v1", "secrets", ref.namespace, secret_name(ref))
            data = configuration_data(await self.kube.get(secret_path), pod)
            value = base64.b64encode(certificate_pem.encode()).decode()
            if not data or data.get(POD_CERTIFICATE_KEY) == value:
                return
            await self.kube.merge_patch(secret_path, {"data": {POD_CERTIFICATE_KEY: value}})
        except ApiError as exc:
            log.warning(
                "pod certificate not stored in its Secret",
                extra={
                    "pod": f"{decision.pod_namespace}/{decision.pod_name}",
                    "status": exc.status,
                },
            )

    async def record_issued(
        self, certificate_pem: str, not_after: datetime, renewal: datetime
    ) -> None:
        """Attribute a signed certificate to its pod's TunnelCertificates (for the
        expiry metric): the pod is found by the certificate's IP SANs in the index."""
        try:
            cert = x509.load_pem_x509_certificate(certificate_pem.encode())
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound):
            return
        addresses = {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
        index = self.reconciler.objects
        touched = []
        for key, pod in index["Pod"].items():
            ref = pod_ref(pod)
            if ref is None or not addresses & set(ref.ips):
                continue
            namespace = index["Namespace"].get(("", key[0]))
            for tc_key, tc in index["TunnelCertificate"].items():
                if tc_key[0] == key[0] and certificate_selects(tc, pod, namespace):
                    self.issued.setdefault(tc_key, {})[key] = (not_after, renewal)
                    self.refused.get(tc_key, {}).pop(key, None)
                    touched.append(tc)
        self._observe_certificates()
        for tc in touched:
            await self.certificate_status(tc)

    async def certificates_changed(self, kind: str, obj: K8sObject) -> None:
        """Rewrite the status of the TunnelCertificates a watch event may have changed
        (the TunnelCertificate itself, or a Secret its issuer names) at once rather
        than on the next timer tick: a spec that became invalid, or an issuer Secret
        deleted, shows in `Ready` within the second (the write happens only when the
        status changes)."""
        namespace, name = key_of(obj)
        index = self.reconciler.objects["TunnelCertificate"]
        if kind == "TunnelCertificate":
            current = index.get((namespace, name))
            touched = [current] if current is not None else []
        elif kind == "Secret":
            touched = [
                tc
                for (tc_namespace, _), tc in index.items()
                if tc_namespace == namespace
                and _field(_field(_field(tc, "spec"), "issuer"), "caSecretRef").get("name") == name
            ]
        else:
            return
        for tunnel_certificate in touched:
            try:
                await self.certificate_status(tunnel_certificate)
            except (ApiError, OSError) as exc:  # the timer writes it on its next tick
                log.warning(
                    "TunnelCertificate status not written",
                    extra={
                        "name": f"{namespace}/{key_of(tunnel_certificate)[1]}",
                        "error": str(exc),
                    },
                )

    async def record_refused(self, refused: Refused) -> None:
        """Remember a CSR endpoint refusal about a selected pod (``refused.about``) for
        its TunnelCertificate's `Ready` condition (`IssuanceFailed`) until the pod is
        issued a certificate. The text is the refusal the pod was answered: the endpoint
        never puts a token or a key in it."""
        if refused.about is None:
            return
        tc_key, pod_key = refused.about
        text = f"{refused.code}: {refused.reason}"[:MAX_REFUSAL_TEXT]
        self.refused.setdefault(tc_key, {})[pod_key] = text
        tc = self.reconciler.objects["TunnelCertificate"].get(tc_key)
        if tc is not None:
            await self.certificate_status(tc)

    def _observe_certificates(self) -> None:
        pods = self.reconciler.objects["Pod"]
        earliest = {}
        for tc_key, by_pod in list(self.issued.items()):
            current = {k: v for k, v in by_pod.items() if k in pods}
            if current and tc_key in self.reconciler.objects["TunnelCertificate"]:
                self.issued[tc_key] = current
                earliest[tc_key] = min(not_after for not_after, _ in current.values())
            else:
                del self.issued[tc_key]
        for tc_key, refusals in list(self.refused.items()):
            kept = {k: v for k, v in refusals.items() if k in pods}
            if kept and tc_key in self.reconciler.objects["TunnelCertificate"]:
                self.refused[tc_key] = kept
            else:
                del self.refused[tc_key]
        self.metrics.observe_certificates(earliest, datetime.now(UTC))

    def _observe_pass(self, result: PassResult, cluster: Any) -> None:
        self._observe_certificates()
        self.metrics.observe_pass(
            result,
            self.reconciler.statuses,
            matched=len(self.reconciler.actual),
            missing=self.reconciler.missing_sidecars,
        )
        self.metrics.observe_external_peers(self.reconciler.external_statuses)
        if result.secrets_written or result.statuses_written:
            log.info(
                "reconciled",
                extra={
                    "secrets": len(result.secrets_written),
                    "statuses": len(result.statuses_written),
                    "seconds": round(result.seconds, 3),
                },
            )

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        await self.kube.__aenter__()
        self.watches = IndexWatches(
            self.kube, self.reconciler, self.namespaces, changed=self._index_changed
        )
        self.watches.start()
        self._worker = asyncio.create_task(self._work(), name="kipsec-reconcile")
        if self.listen is not None:
            cert, key = self.tls or (None, None)
            self._runner = await serve(self, self.listen[0], self.listen[1], cert, key)
            self.endpoint_port = int(self._runner.addresses[0][1])

    def _index_changed(self, kind: str, event_type: str, obj: K8sObject) -> None:
        """After a watch event: the TunnelCertificates it may concern get their status
        rewritten at once (:meth:`certificates_changed`; the leader only)."""
        if not self.leadership.active or not self.reconciler.objects["TunnelCertificate"]:
            return
        if kind == "Secret":
            if is_managed(obj):
                return  # a per-pod Secret is no issuer
        elif kind != "TunnelCertificate":
            return
        task = asyncio.create_task(self.certificates_changed(kind, obj))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _work(self) -> None:
        """Reconcile while this replica leads, from a whole index: each time it becomes
        the leader, once every kind is listed, a pass over everything; when it stops
        leading, the pass under way is cancelled (a standby writes nothing)."""
        assert self.watches is not None
        while True:
            await self._stand_by()
            await self.watches.wait_synced()
            if not self.leadership.active:
                continue
            log.info("leading: reconciling")
            self.reconciler.take_over()
            passes = asyncio.create_task(self._passes(), name="kipsec-passes")
            paused = asyncio.create_task(self.leadership.until_paused())
            try:
                await asyncio.wait({passes, paused}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (passes, paused):
                    task.cancel()
                await asyncio.gather(passes, paused, return_exceptions=True)
            log.info("paused: a standby does not reconcile")

    async def _stand_by(self) -> None:
        """Until this replica leads, dropping the changes its index records every
        second (a standby never passes; its first pass as leader looks at everything)."""
        leading = asyncio.create_task(self.leadership.until_active())
        try:
            while not leading.done():
                self.reconciler.take_over()
                await asyncio.wait({leading}, timeout=1.0)
        finally:
            leading.cancel()
            await asyncio.gather(leading, return_exceptions=True)

    async def _passes(self) -> None:
        while True:
            try:
                await self.reconciler.run(self.debounce)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile pass failed; retrying")
                self.metrics.reconcile_errors.inc()
                self.reconciler.retry_all()
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.watches is not None:
            await self.watches.stop()
        if self._http_fetcher is not None:
            await self._http_fetcher.close()
        await self.kube.__aexit__()

    # --- timers ------------------------------------------------------------------------
    async def poll_reports(self, namespace: str, name: str) -> None:
        targets = self.reconciler.report_targets((namespace, name))
        if targets:
            await self.reconciler.set_reports(await poll(targets, self.fetcher))

    async def resolve(self, external_peer: K8sObject) -> None:
        """Resolve an ExternalPeer's DNS name (an IP needs nothing), within
        :data:`RESOLVE_TIMEOUT`; a failure records it as unresolvable (a condition)."""
        address = str(_field(external_peer, "spec").get("address") or "")
        if not address or is_ip(address):
            return
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(address, None, type=socket.SOCK_DGRAM), RESOLVE_TIMEOUT
            )
            found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        except (OSError, TimeoutError, UnicodeError):
            found = []
        self.reconciler.set_resolved(address, found)

    async def publish_trust(self, tunnel_certificate: K8sObject) -> None:
        """Publish the issuer's bundle for the Tunnels that use this TunnelCertificate,
        and its status (also when the issuer or the spec is unusable: the status says so)."""
        async with self._certificate_lock(tunnel_certificate):
            await self._publish_trust(tunnel_certificate)

    def _certificate_lock(self, tunnel_certificate: K8sObject) -> asyncio.Lock:
        return self._certificate_locks.setdefault(key_of(tunnel_certificate), asyncio.Lock())

    async def _publish_trust(self, tunnel_certificate: K8sObject) -> None:
        namespace, name = key_of(tunnel_certificate)
        issuer = _field(_field(tunnel_certificate, "spec"), "issuer")
        issuer_status: dict[str, Any] | None = None
        if issuer.get("type") == "CASecret":
            secret_name = str(_field(issuer, "caSecretRef").get("name") or "")
            secret = self.reconciler.objects["Secret"].get((namespace, secret_name))
            try:
                ca, current = user_ca(secret, namespace, secret_name)
                overlap = certificate_terms(tunnel_certificate).duration
            except (LookupError, TermsError) as exc:
                if self._issuer_warned.get((namespace, name)) != str(exc):
                    self._issuer_warned[(namespace, name)] = str(exc)
                    await self.event(tunnel_certificate, "Warning", "IssuerUnavailable", str(exc))
                await self._certificate_status(tunnel_certificate)
                return
            self._issuer_warned.pop((namespace, name), None)
            # A CA replaced in the Secret stays trusted for spec.duration (issuer_trust).
            last = self._certificate_statuses.get((namespace, name))
            trust = issuer_trust(
                current, last or tunnel_certificate.get("status") or {}, datetime.now(UTC), overlap
            )
            bundle, issuer_status = trust.bundle, trust.status
        else:
            await self.ca.rotate()
            ca, bundle = await self.ca.signing()
            state = self.ca.state
            if state is not None:
                seconds = (state.signing.not_after - datetime.now(UTC)).total_seconds()
                self.metrics.ca_expiry.set(seconds)
        self.reconciler.set_trust_bundle((namespace, name), bundle.decode("ascii"))
        await self._certificate_status(tunnel_certificate, issuer_status)
        await self._warn_ca_expiry(tunnel_certificate, ca.not_after)

    async def _warn_ca_expiry(self, tunnel_certificate: K8sObject, ca_not_after: datetime) -> None:
        """A `CertificateExpiring` Warning on the TunnelCertificate, once per CA, when the CA
        that signs its pods expires within `spec.duration` (:mod:`.certificates.expiry`)."""
        key = key_of(tunnel_certificate)
        try:
            terms = certificate_terms(tunnel_certificate)
        except TermsError:
            return  # the CSR endpoint refuses, naming the field
        message = ca_expiring(ca_not_after, terms, datetime.now(UTC))
        if message is None:
            self._expiry_warned.pop(key, None)
        elif self._expiry_warned.get(key) != message:
            self._expiry_warned[key] = message
            await self.event(tunnel_certificate, "Warning", "CertificateExpiring", message)

    async def certificate_status(
        self, tunnel_certificate: K8sObject, issuer: Mapping[str, Any] | None = None
    ) -> None:
        """Write the TunnelCertificate's status when it changed: pods holding a current
        certificate, earliest notAfter and renewalTime, Ready as
        :func:`.certificates.readiness.readiness` decides it (the spec, the issuer's
        Secret, the pods' certificates and refusals), and
        the CASecret issuer's CA memory (``issuer``: :func:`.issuer_trust.issuer_trust`,
        kept as it was when not given)."""
        async with self._certificate_lock(tunnel_certificate):
            await self._certificate_status(tunnel_certificate, issuer)

    async def _certificate_status(
        self, tunnel_certificate: K8sObject, issuer: Mapping[str, Any] | None = None
    ) -> None:
        key = key_of(tunnel_certificate)
        index = self.reconciler.objects
        namespace = index["Namespace"].get(("", key[0]))
        selected = [
            pod_key
            for pod_key, pod in index["Pod"].items()
            if pod_key[0] == key[0]
            and pod_ref(pod) is not None
            and certificate_selects(tunnel_certificate, pod, namespace)
        ]
        now = datetime.now(UTC)
        issued = {k: v for k, v in self.issued.get(key, {}).items() if k in selected and v[0] > now}
        invalid_spec, issuer_problem = self._problems(tunnel_certificate, now)
        verdict = readiness(
            selected,
            {k: not_after for k, (not_after, _) in self.issued.get(key, {}).items()},
            self.refused.get(key, {}),
            now,
            invalid_spec=invalid_spec,
            issuer_problem=issuer_problem,
        )
        ready, reason, message = verdict.ready, verdict.reason, verdict.message
        previous = self._certificate_statuses.get(key) or tunnel_certificate.get("status") or {}
        since = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        for old in previous.get("conditions") or []:
            if old.get("type") == "Ready" and old.get("status") == str(ready):
                since = old.get("lastTransitionTime") or since
        status: dict[str, Any] = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": str(ready),
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": since,
                }
            ],
            "podsIssued": len(issued),
            "notAfter": None,
            "renewalTime": None,
        }
        for field_name in ("issuerCA", "retiredIssuerCAs"):
            if issuer is not None and field_name in issuer:
                status[field_name] = issuer[field_name]
            elif field_name in previous:
                status[field_name] = previous[field_name]
        generation = (tunnel_certificate.get("metadata") or {}).get("generation")
        if generation is not None:
            status["observedGeneration"] = generation
            status["conditions"][0]["observedGeneration"] = generation
        if issued:
            status["notAfter"] = min(a for a, _ in issued.values()).isoformat()
            status["renewalTime"] = min(r for _, r in issued.values()).isoformat()
        if status == previous or not self.leadership.active:
            return  # a standby writes nothing (the CSR endpoint runs in every replica)
        path = object_path(f"{GROUP}/{VERSION}", "tunnelcertificates", *key) + "/status"
        try:
            await self.kube.merge_patch(path, {"status": status})
        except ApiError as exc:
            if exc.status != 404:
                raise
        self._certificate_statuses[key] = status

    def _problems(
        self, tunnel_certificate: K8sObject, now: datetime
    ) -> tuple[str | None, str | None]:
        """(why the spec cannot be used, why its CASecret issuer cannot sign), each
        naming the field or the Secret, or None."""
        try:
            terms = certificate_terms(tunnel_certificate)
        except TermsError as exc:
            return str(exc), None
        if terms.issuer_secret is None:
            return None, None
        secret = self.reconciler.objects["Secret"].get((terms.namespace, terms.issuer_secret))
        try:
            ca, _ = user_ca(secret, terms.namespace, terms.issuer_secret)
        except LookupError as exc:
            return None, str(exc)
        where = issuer_secret_field(terms.namespace, terms.issuer_secret)
        return None, ca_unusable(ca.not_after, now, where)


def _field(obj: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """``obj[name]`` when it is an object, else empty (a spec stored under an older CRD
    may hold anything)."""
    value = obj.get(name)
    return value if isinstance(value, Mapping) else {}


def register(operator: Operator, registry: kopf.OperatorRegistry) -> None:
    """Register the handlers of `operator` on `registry`."""

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        return await connection_info(operator.connection)

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        await operator.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await operator.stop()

    @kopf.timer(GROUP, VERSION, "tunnels", interval=operator.report_interval, registry=registry)
    async def sidecar_reports(namespace: str | None, name: str, **_: Any) -> None:
        await operator.poll_reports(namespace or "", name)

    @kopf.timer(
        GROUP,
        VERSION,
        "externalpeers",
        interval=operator.resolve_interval,
        initial_delay=0.0,
        registry=registry,
    )
    async def resolve_address(body: kopf.Body, **_: Any) -> None:
        await operator.resolve(dict(body))

    @kopf.timer(
        GROUP,
        VERSION,
        "tunnelcertificates",
        interval=operator.certificate_interval,
        initial_delay=0.0,
        registry=registry,
    )
    async def trust_bundle(body: kopf.Body, **_: Any) -> None:
        await operator.publish_trust(dict(body))


__all__ = ["RESOURCES", "Operator", "register"]
