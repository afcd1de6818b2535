"""The operator's own Kubernetes calls, over the maintained asyncio client.

kopf watches and posts Events with its own client; the operator's writes (per-pod
Secrets, Tunnel and TunnelCertificate status, the CA Secret, TokenReviews) and the
Secret mirror's LIST+WATCH go through :class:`Kube`, a thin layer over
``kubernetes_asyncio``'s ``ApiClient``: it keeps the few path-based calls the rest of
the operator makes (get, create, merge_patch, delete, list, watch) and lets the library
do what real clusters need. Where the credentials come from is a :data:`Credentials`:

* :class:`InCluster` -- the pod's projected ServiceAccount token, which the kubelet
  rotates: the library re-reads the file at most a minute after its last read;
* :class:`Kubeconfig` -- a kubeconfig file and context (a developer's laptop): the
  library's loader runs exec credential plugins (again when their token expires),
  OIDC and GCP auth providers, client certificates, ``tokenFile``;
* :class:`Connection` -- an explicit URL and static token (the lab, the emulator).

Each call goes out on the library's connection pool (its TLS settings, its proxy) with
the library's auth settings (so a refreshed token is used), but by a thin path: the body
is serialized once with the C JSON encoder, and the session does not look up proxies and
``~/.netrc`` in a thread per request, as the library's ``trust_env`` session does (two
thread hand-offs per call, most of a call's cost at thousands of Secret writes). The
proxy is the kubeconfig's ``proxy-url``, else the environment's (``HTTPS_PROXY``,
``NO_PROXY``…) for the API server, read once per client. ``~/.netrc`` is not read
(kubectl does not read it either).

A 401 answer means the credentials went stale before the periodic refresh saw it (a
replaced token file, an exec token revoked early): the client loads them again from
their source and retries the request once, as client-go does. kopf's login handler
(:mod:`.login`) reads the same source, so kopf and these calls never disagree.

Writes are JSON merge patches (`application/merge-patch+json`): they work on every API
server and on the test emulator, and a removed Secret key is sent as `null`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import ConfigException, kube_config
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader
from yarl import URL

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
USER_AGENT = "kipsec (kubernetes_asyncio)"
REQUEST_TIMEOUT = 30.0
"""Seconds for one call (a watch has no total timeout, see :meth:`Kube.watch`)."""
CONCURRENCY = 32
"""Connections kept to the API server (a reconcile pass writes Secrets in parallel)."""

# The library logs every response body at DEBUG, Secrets included: never below INFO.
logging.getLogger("kubernetes_asyncio").setLevel(logging.INFO)


class ApiError(Exception):
    """A non-2xx answer; `status` is the HTTP status, `reason` the Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason

    @classmethod
    def from_answer(cls, status: int, http_reason: str | None, text: str) -> ApiError:
        """The error of an answer with HTTP `status` and body `text` (a Status object
        when the API server sent one)."""
        try:
            body = json.loads(text)
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        reason = str(body.get("reason") or http_reason)
        return cls(status, reason, str(body.get("message") or "")[:200])


def _configuration() -> Configuration:
    configuration = Configuration()
    configuration.connection_pool_maxsize = CONCURRENCY
    return configuration


@dataclass(frozen=True)
class Connection:
    """An explicit API server URL and a static bearer token (`token` is never logged):
    the lab's and the tests' emulated API server."""

    server: str
    token: str | None = field(default=None, repr=False)
    ca_path: str | None = None
    insecure: bool = False

    async def configuration(self) -> Configuration:
        configuration = _configuration()
        configuration.host = self.server.rstrip("/")
        configuration.ssl_ca_cert = self.ca_path
        configuration.verify_ssl = not self.insecure
        if self.token:
            configuration.api_key["BearerToken"] = f"Bearer {self.token}"
        return configuration


@dataclass(frozen=True)
class InCluster:
    """The pod's ServiceAccount: the API server from ``KUBERNETES_SERVICE_HOST`` and
    ``_PORT`` in `environ`, the projected token and CA in `directory`."""

    directory: Path = SERVICE_ACCOUNT_DIR
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)

    async def configuration(self) -> Configuration:
        """Raises ``kubernetes_asyncio.config.ConfigException`` outside a pod."""
        configuration = _configuration()
        InClusterConfigLoader(
            token_filename=str(self.directory / "token"),
            cert_filename=str(self.directory / "ca.crt"),
            try_refresh_token=True,  # re-read the rotated token, at most every minute
            environ=dict(self.environ),
        ).load_and_set(configuration)
        return configuration


@dataclass(frozen=True)
class Kubeconfig:
    """A kubeconfig: `path` (``KUBECONFIG`` syntax, several files joined with ``:``;
    default ``$KUBECONFIG`` or ``~/.kube/config``) and `context` (default: its
    current-context)."""

    path: str | None = None
    context: str | None = None

    async def configuration(self) -> Configuration:
        """Raises ``kubernetes_asyncio.config.ConfigException`` on a missing or bad file
        or context."""
        paths = self.path or os.environ.get("KUBECONFIG") or "~/.kube/config"
        if not any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p):
            raise ConfigException(f"no kubeconfig file at {paths}")
        configuration = _configuration()
        loader = await kube_config.load_kube_config(
            config_file=paths,
            context=self.context,
            client_configuration=configuration,
            persist_config=False,  # never write to the user's kubeconfig
        )
        lock = asyncio.Lock()

        async def refresh(target: Configuration) -> None:
            # The loader keeps an exec plugin's token until its expirationTimestamp and
            # runs the plugin again after it; a tokenFile is read again.
            async with lock:
                await loader.load_and_set(target)

        configuration.refresh_api_key_hook = refresh
        return configuration


Credentials = Connection | InCluster | Kubeconfig
"""Where the API server is and how to authenticate; each loads a fresh client
``Configuration`` from its source on every :meth:`configuration` call."""


def default_credentials(
    kubeconfig: str | None = None,
    context: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Credentials:
    """In a pod (``KUBERNETES_SERVICE_HOST`` set), its ServiceAccount, unless a
    kubeconfig or context is asked for; elsewhere the kubeconfig (as kubectl)."""
    if kubeconfig is None and context is None and environ.get("KUBERNETES_SERVICE_HOST"):
        return InCluster(environ=environ)
    return Kubeconfig(kubeconfig, context)


class Kube:
    """JSON calls against one API server; use as an async context manager."""

    def __init__(self, connection: Credentials) -> None:
        self.connection = connection
        self._client: ApiClient | None = None
        self._session: aiohttp.ClientSession | None = None
        self._proxy: dict[str, Any] = {}
        self._generation = 0
        self._reloading = asyncio.Lock()

    async def __aenter__(self) -> Kube:
        client = ApiClient(await self.connection.configuration())
        client.user_agent = USER_AGENT
        self._client = client
        rest = client.rest_client
        self._session = aiohttp.ClientSession(
            connector=rest.pool_manager.connector,
            connector_owner=False,
            trust_env=False,
            read_bufsize=2**21,  # as the library's: one watch event may be a large object
        )
        self._proxy = _proxy_arguments(client.configuration, rest.proxy_headers)
        if rest.server_hostname:
            self._proxy["server_hostname"] = rest.server_hostname
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _reload(self, generation: int) -> None:
        """Load the credentials again after a 401 on a request made with `generation`
        (once, however many requests failed with the same credentials)."""
        assert self._client is not None
        async with self._reloading:
            if generation != self._generation:
                return  # another request has reloaded them already
            fresh = await self.connection.configuration()
            live = self._client.configuration
            live.api_key = fresh.api_key
            live.refresh_api_key_hook = fresh.refresh_api_key_hook
            self._generation += 1

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        timeout: float | aiohttp.ClientTimeout = REQUEST_TIMEOUT,
    ) -> aiohttp.ClientResponse:
        """The response (the caller reads and releases it); a 401 reloads the
        credentials and retries once; other non-2xx answers raise ApiError."""
        client, session = self._client, self._session
        assert client is not None and session is not None, "use Kube as an async context manager"
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        if isinstance(timeout, (int, float)):
            timeout = aiohttp.ClientTimeout(total=timeout)
        for attempt in (1, 2):
            generation = self._generation
            headers = {
                **client.default_headers,
                "Accept": "application/json",
                "Content-Type": content_type,
            }
            await client.update_params_for_auth(headers, [], ["BearerToken"])
            response = await session.request(
                method,
                f"{client.configuration.host}{path}",
                params=dict(params) if params else None,
                data=data,
                headers=headers,
                timeout=timeout,
                **self._proxy,
            )
            if response.status < 400:
                return response
            async with response:
                text = await response.text()
            if response.status == 401 and attempt == 1:
                await self._reload(generation)
                continue
            raise ApiError.from_answer(response.status, response.reason, text)
        raise AssertionError("unreachable")

    async def list(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """The collection at `path` (a List object) with query `params`."""
        return await _json(await self._request("GET", path, params=params))

    async def watch(
        self, path: str, params: Mapping[str, str], *, idle: float = 330.0
    ) -> AsyncIterator[dict[str, Any]]:
        """The watch events (``{"type", "object"}``) of the collection at `path`, one per
        line, until the server ends the stream (``timeoutSeconds``) or nothing arrives for
        `idle` seconds (a silently dropped connection, or a server that ignores
        ``timeoutSeconds``): both end the iteration, and the caller watches again from
        the last resourceVersion. ERROR events are raised as ApiError (410 Gone: the
        resourceVersion is too old, list again)."""
        timeout = aiohttp.ClientTimeout(total=None, sock_read=idle)
        query = {**params, "watch": "true"}
        response = await self._request("GET", path, params=query, timeout=timeout)
        async with response:
            lines = aiter(response.content)
            while True:
                try:
                    line = await anext(lines)
                except (StopAsyncIteration, TimeoutError):
                    return  # ended, or silent for `idle` s: the caller watches again
                if not line.strip():
                    continue
                event = json.loads(line)
                if not isinstance(event, dict):
                    continue
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiError(
                        int(status.get("code") or 500),
                        str(status.get("reason") or "WatchError"),
                        str(status.get("message") or "")[:200],
                    )
                yield event

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None when it does not exist (404)."""
        try:
            return await _json(await self._request("GET", path))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await _json(await self._request("POST", path, body=body))

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        content_type = "application/merge-patch+json"
        return await _json(
            await self._request("PATCH", path, body=patch, content_type=content_type)
        )

    async def delete(self, path: str) -> None:
        try:
            await _json(await self._request("DELETE", path))
        except ApiError as exc:
            if exc.status != 404:
                raise


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The JSON object of a 2xx `response`, which it releases."""
    async with response:
        text = await response.text()
    result: dict[str, Any] = json.loads(text) if text else {}
    return result


def _proxy_arguments(
    configuration: Configuration, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    """The proxy of requests to the API server: the configuration's (a kubeconfig's
    ``proxy-url``), else the environment's for its URL (none when ``NO_PROXY`` names it)."""
    if configuration.proxy:
        found: dict[str, Any] = {"proxy": configuration.proxy}
        if headers:
            found["proxy_headers"] = headers
        return found
    try:
        proxy, auth = get_env_proxy_for_url(URL(str(configuration.host)))
    except LookupError:
        return {}
    return {"proxy": proxy, "proxy_auth": auth}


def object_path(api_version: str, plural: str, namespace: str | None, name: str = "") -> str:
    """The URL path of a collection (no `name`) or of one object."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        prefix += f"/namespaces/{namespace}"
    path = f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path


__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "ApiError",
    "ConfigException",
    "Connection",
    "Credentials",
    "InCluster",
    "Kube",
    "Kubeconfig",
    "default_credentials",
    "object_path",
]
