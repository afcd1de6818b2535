"""The operator's HTTPS endpoints: admission webhook, CSR/identity exchange, metrics.

One aiohttp application rather than kopf's admission machinery: the webhook logic is
already a pure function from an AdmissionReview to its response
(:func:`~.webhook.admission.review`), and kopf's webhook server would add its own
handler signature, its own TLS and its own webhook-configuration management (the chart
owns the MutatingWebhookConfiguration). A plain aiohttp route is three lines and a test
posts to it over HTTP(S) like the API server does.

Routes: `POST /mutate-pods`, `GET /v1/identity`, `POST /v1/csr`, `GET /v1/config`
(:mod:`.config_delivery`), `GET /metrics`, `GET /healthz`. The bearer token of the CSR
and configuration routes is passed to a TokenReview and nowhere else.

Every route answers from the API server, never from the watch index
(:mod:`.live_reads`): both replicas serve behind one Service and an index lags the API
by a watch event, so reading it would let a replica inject without a new Tunnel or serve an old
configuration. When the API server cannot be read the webhook refuses the pod (503,
fail closed: a pod must not start without the sidecar it should have) and the
configuration, identity and CSR routes answer 503 ``api-unavailable`` (retryable).
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .ca_store import user_ca
from .certificates.ca import CertificateAuthority
from .certificates.csr import Approved, Refused
from .certificates.endpoint import api_unavailable, handle_csr_post, handle_identity_get
from .config_delivery import TokenCache, handle_config_get
from .crds.models import GROUP, VERSION
from .kube import object_path
from .live_reads import API_ERRORS, AdmissionReads
from .secret_mirror import SecretMirror
from .webhook.admission import MalformedReview, parse_request, refuse, review

if TYPE_CHECKING:
    from .handlers import Operator

MAX_REVIEW_BYTES = 4 * 1024 * 1024


class KubeCsrBackend:
    """:class:`~.config_delivery.ConfigBackend` (the CSR endpoint's reads and the pod's
    Secret) over the API server: every read is live, none from the watch index."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator

    async def review_token(self, token_review: Mapping[str, Any]) -> Mapping[str, Any]:
        path = object_path("authentication.k8s.io/v1", "tokenreviews", None)
        created = await self.operator.kube.create(path, token_review)
        status: Mapping[str, Any] = created.get("status") or {}
        return status

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return await self.operator.kube.get(object_path("v1", "pods", namespace, name))

    async def get_namespace(self, name: str) -> Mapping[str, Any] | None:
        return await self.operator.kube.get(object_path("v1", "namespaces", None, name))

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return await self.operator.kube.get(object_path("v1", "secrets", namespace, name))

    async def list_tunnel_certificates(self) -> Sequence[Mapping[str, Any]]:
        path = object_path(f"{GROUP}/{VERSION}", "tunnelcertificates", None)
        listed = await self.operator.kube.get(path) or {}
        items: list[Mapping[str, Any]] = listed.get("items") or []
        return items

    async def signing_ca(
        self, issuer_secret: str | None, namespace: str
    ) -> tuple[CertificateAuthority, bytes]:
        if issuer_secret is None:
            return await self.operator.ca.current()
        secret = await self.operator.kube.get(
            object_path("v1", "secrets", namespace, issuer_secret)
        )
        return user_ca(secret, namespace, issuer_secret)


def _json(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.json_response(dict(body), status=status)


def _seconds(value: str | None) -> float:
    """A ``?wait=`` value: seconds, 0 when absent or not a finite non-negative number."""
    try:
        seconds = float(value) if value is not None else 0.0
    except ValueError:
        return 0.0
    return seconds if 0.0 <= seconds < float("inf") else 0.0


def _pod_create(body: object) -> tuple[str, str] | None:
    """(uid, namespace) of a review the webhook injects into (a pod CREATE), else None:
    only those need the Tunnels and the Namespace read."""
    try:
        request = parse_request(body)
    except MalformedReview:
        return None
    if request.operation != "CREATE" or request.kind != "Pod" or request.group:
        return None
    if not request.namespace:
        return None
    return request.uid, request.namespace


def application(operator: Operator) -> web.Application:
    """The aiohttp application of `operator`'s endpoints."""
    backend = KubeCsrBackend(operator)
    tokens = TokenCache()
    admission = AdmissionReads(operator.kube)
    mirror = SecretMirror(operator.kube)
    app = web.Application(client_max_size=MAX_REVIEW_BYTES)

    async def follow_secrets(_: web.Application) -> None:
        mirror.start()

    async def release_held(_: web.Application) -> None:
        # on_shutdown runs before the server waits for its handlers: held /v1/config
        # requests answer now instead of holding the operator's exit for their wait.
        await mirror.stop()

    app.on_startup.append(follow_secrets)
    app.on_shutdown.append(release_held)

    async def mutate_pods(request: web.Request) -> web.Response:
        try:
            body: object = json.loads(await request.read())
        except ValueError:
            body = None
        create = _pod_create(body)
        if create is None:  # answered without the cluster's state
            return _json(200, review(body, lambda _: None, [], operator.injection))
        uid, namespace_name = create
        try:
            tunnels = await admission.tunnels()
            namespace = await admission.namespace(namespace_name)
        except API_ERRORS as exc:
            message = (
                "kipsec webhook cannot read Tunnels and Namespaces from the API server "
                f"({type(exc).__name__}); the pod is refused rather than created without "
                "its sidecar: retry"
            )
            return _json(200, refuse(uid, message, code=503))
        answer = review(
            body,
            lambda name: namespace if name == namespace_name else None,
            tunnels,
            operator.injection,
        )
        return _json(200, answer)

    async def identity(request: web.Request) -> web.Response:
        refusals: list[Refused] = []
        try:
            status, body = await handle_identity_get(
                request.headers.get("Authorization"), backend, refusals.append
            )
        except API_ERRORS as exc:
            status, body = api_unavailable(exc)
        for refused in refusals:
            await operator.record_refused(refused)
        return _json(status, body)

    async def csr(request: web.Request) -> web.Response:
        refusals: list[Refused] = []
        signed: list[tuple[Approved, str]] = []
        try:
            status, body = await handle_csr_post(
                await request.read(),
                request.headers.get("Authorization"),
                backend,
                datetime.now(UTC),
                os.urandom,
                refusals.append,
                lambda decision, pem: signed.append((decision, pem)),
            )
        except API_ERRORS as exc:
            status, body = api_unavailable(exc)
        for refused in refusals:
            await operator.record_refused(refused)
        if status == 200:
            operator.metrics.certificates_issued.inc()
            await operator.record_issued(
                str(body["certificate"]),
                datetime.fromisoformat(str(body["notAfter"])),
                datetime.fromisoformat(str(body["renewalTime"])),
            )
            for decision, pem in signed:
                await operator.store_certificate(decision, pem)
        else:
            operator.metrics.csr_refused.labels(code=str(body.get("code"))).inc()
        return _json(status, body)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(operator.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def config(request: web.Request) -> web.Response:
        try:
            answer = await handle_config_get(
                request.headers.get("Authorization"),
                request.headers.get("If-None-Match"),
                backend,
                tokens,
                mirror=mirror,
                wait=_seconds(request.query.get("wait")),
            )
        except API_ERRORS as exc:
            return _json(*api_unavailable(exc))
        if answer.body is None:
            return web.Response(status=answer.status, headers=answer.headers)
        return web.json_response(answer.body, status=answer.status, headers=answer.headers)

    app.router.add_post("/mutate-pods", mutate_pods)
    app.router.add_get("/v1/identity", identity)
    app.router.add_post("/v1/csr", csr)
    app.router.add_get("/v1/config", config)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(
    operator: Operator,
    host: str = "0.0.0.0",  # noqa: S104 - the pod's port, reached through its Service
    port: int = 8443,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> web.AppRunner:
    """Start the endpoints (HTTPS when a certificate is given); returns the runner to
    clean up."""
    context = None
    if cert_file and key_file:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
    runner = web.AppRunner(application(operator), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    return runner


def serving_ca(cert_file: str) -> str:
    """The PEM of the CA that signed the serving certificate in `cert_file`, for the pods
    to verify the operator: `ca.crt` beside it (the chart's and cert-manager's TLS
    Secrets hold one), else the certificate itself (a self-signed one is its own CA).
    Raises OSError when neither can be read."""
    sibling = os.path.join(os.path.dirname(cert_file), "ca.crt")
    with open(sibling if os.path.exists(sibling) else cert_file, encoding="ascii") as handle:
        return handle.read()


__all__ = ["KubeCsrBackend", "application", "serve", "serving_ca"]
