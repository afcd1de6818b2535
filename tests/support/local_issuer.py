"""A small local issuer: the operator's real CSR endpoint code and CA, without Kubernetes.

``GET /v1/identity`` and ``POST /v1/csr`` are answered by the operator's own
:func:`~kipsec_operator.certificates.endpoint.handle_identity_get` and
:func:`~kipsec_operator.certificates.endpoint.handle_csr_post`, signing with a real
:class:`~kipsec_operator.certificates.ca.CertificateAuthority`; only the Kubernetes
reads are an in-memory :class:`LocalBackend` (a token names a pod, as a TokenReview of a
projected token does). Tests of the sidecar's enrollment use it in-process
(:func:`issuer_app`), and the netns end-to-end test runs it inside a pod's namespace::

    python -m support.local_issuer --state FILE --listen 127.0.0.1:8443

where FILE (JSON) holds the CA, the pods by token and the TunnelCertificate; the issuer
re-reads it on every request, so a test rotates the CA or shortens lifetimes by
rewriting it. The issuer records every request body it received (:attr:`LocalBackend.bodies`)
so a test can show that no private key ever reached it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from kipsec_operator.certificates import terms
from kipsec_operator.certificates.ca import CaState, CertificateAuthority, from_secret_data
from kipsec_operator.certificates.endpoint import handle_csr_post, handle_identity_get
from support import operator_objects


def pod(name: str, ip: str, namespace: str = "shop", account: str = "cart") -> dict[str, Any]:
    """A running pod of ServiceAccount ``account``, labelled app=kipsec-e2e."""
    found = operator_objects.pod(name, ip, namespace=namespace, labels={"app": "kipsec-e2e"})
    found["spec"]["serviceAccountName"] = account
    return found


def tunnel_certificate(
    namespace: str = "shop", duration: str = "24h", renew_before: str = "8h"
) -> dict[str, Any]:
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "TunnelCertificate",
        "metadata": {"name": "ids", "namespace": namespace},
        "spec": {
            "selector": {"podSelector": {"matchLabels": {"app": "kipsec-e2e"}}},
            "duration": duration,
            "renewBefore": renew_before,
        },
    }


def token_review(pod: Mapping[str, Any], uid: str | None = None) -> dict[str, Any]:
    """The TokenReview status of a projected token bound to ``pod`` (``uid`` overrides
    the pod's, as for a token of a deleted namesake)."""
    meta = pod["metadata"]
    account = f"system:serviceaccount:{meta['namespace']}:{pod['spec']['serviceAccountName']}"
    return {
        "authenticated": True,
        "audiences": ["kipsec"],
        "user": {
            "username": account,
            "extra": {
                "authentication.kubernetes.io/pod-name": [meta["name"]],
                "authentication.kubernetes.io/pod-uid": [uid or meta["uid"]],
            },
        },
    }


@dataclass
class LocalBackend:
    """:class:`~kipsec_operator.certificates.endpoint.CsrBackend` over dicts."""

    ca: CertificateAuthority
    pods: list[dict[str, Any]]
    tunnel_certificates: list[dict[str, Any]]
    reviews: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Token → TokenReview status; unknown tokens are not authenticated."""
    bundle: bytes = b""
    """The trust bundle to answer (default: the CA's certificate)."""
    bodies: list[bytes] = field(default_factory=list)

    async def review_token(self, token_review: Mapping[str, Any]) -> Mapping[str, Any]:
        token = str(token_review["spec"]["token"])
        return self.reviews.get(token, {"authenticated": False, "error": "token not known"})

    async def get_pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        for item in self.pods:
            if (item["metadata"]["namespace"], item["metadata"]["name"]) == (namespace, name):
                return item
        return None

    async def get_namespace(self, name: str) -> Mapping[str, Any] | None:
        return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}

    async def list_tunnel_certificates(self) -> Sequence[Mapping[str, Any]]:
        return self.tunnel_certificates

    async def signing_ca(
        self, issuer_secret: str | None, namespace: str
    ) -> tuple[CertificateAuthority, bytes]:
        return self.ca, self.bundle or self.ca.cert_pem()


def issuer_app(
    backend: Callable[[], LocalBackend], clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> web.Application:
    """The two routes of the operator's identity endpoint over ``backend()`` (called per
    request, so the state may change between requests), signing at ``clock()``."""
    app = web.Application()
    rng = random.Random(5).randbytes

    async def identity(request: web.Request) -> web.Response:
        status, body = await handle_identity_get(request.headers.get("Authorization"), backend())
        return web.json_response(body, status=status)

    async def csr(request: web.Request) -> web.Response:
        current = backend()
        data = await request.read()
        current.bodies.append(data)
        status, body = await handle_csr_post(
            data, request.headers.get("Authorization"), current, clock(), rng
        )
        return web.json_response(body, status=status)

    app.router.add_get("/v1/identity", identity)
    app.router.add_post("/v1/csr", csr)
    return app


def write_state(
    path: Path,
    state: CaState,
    pods_by_token: Mapping[str, dict[str, Any]],
    tunnel_certificate: dict[str, Any],
) -> None:
    """The state file the command-line issuer reads (replaced atomically)."""
    from kipsec_operator.certificates.ca import to_secret_data

    document = {
        "ca": to_secret_data(state),
        "pods": dict(pods_by_token),
        "tunnelCertificate": tunnel_certificate,
    }
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(document))
    os.replace(scratch, path)


def backend_from_state(path: Path) -> LocalBackend:
    document = json.loads(path.read_text())
    state = from_secret_data(document["ca"])
    pods = list(document["pods"].values())
    return LocalBackend(
        ca=state.signing,
        pods=pods,
        tunnel_certificates=[document["tunnelCertificate"]],
        reviews={token: token_review(p) for token, p in document["pods"].items()},
        bundle=state.bundle_pem(),
    )


SECONDS_BOUNDS = terms.LifetimeBounds(
    min_duration=timedelta(seconds=10),
    max_duration=terms.LIFETIME_BOUNDS.max_duration,
    min_renew_before=timedelta(seconds=1),
    min_renewal_interval=timedelta(seconds=5),
)
"""Lifetime bounds of the command-line issuer: seconds, so an end-to-end test sees a
sidecar renew within its run. A cluster's operator keeps the CRD's bounds
(:data:`~kipsec_operator.certificates.terms.LIFETIME_BOUNDS`, an hour at least)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--state", required=True, type=Path)
    parser.add_argument("--listen", default="127.0.0.1:8443")
    args = parser.parse_args()
    terms.LIFETIME_BOUNDS = SECONDS_BOUNDS  # this process is a test's issuer, see above
    host, _, port = args.listen.rpartition(":")
    app = issuer_app(lambda: backend_from_state(args.state))

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, int(port)).start()
        print("issuer listening", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
