"""A small asyncio Kubernetes client: the few calls the operator makes besides kopf's.

kopf watches and posts Events with its own client; the operator's writes (per-pod
Secrets, Tunnel and TunnelCertificate status, the CA Secret, TokenReviews) go through
this one, which speaks plain JSON over aiohttp with the same credentials. Writes are
JSON merge patches (`application/merge-patch+json`): they work on every API server
and on the test emulator, and a removed Secret key is sent as `null`.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


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


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate (`token` is never logged)."""

    server: str
    token: str | None = None
    ca_path: str | None = None
    insecure: bool = False

    @classmethod
    def in_cluster(cls) -> Connection:
        """The pod's ServiceAccount credentials (raises KeyError or FileNotFoundError
        outside a pod)."""
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        token = (SERVICE_ACCOUNT_DIR / "token").read_text().strip()
        return cls(f"https://{host}:{port}", token, str(SERVICE_ACCOUNT_DIR / "ca.crt"))

    def __repr__(self) -> str:
        return f"Connection(server={self.server!r})"


class Kube:
    """JSON calls against one API server; use as an async context manager."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Kube:
        headers = {"Accept": "application/json"}
        if self.connection.token:
            headers["Authorization"] = f"Bearer {self.connection.token}"
        ssl_context: ssl.SSLContext | bool = True
        if self.connection.insecure:
            ssl_context = False
        elif self.connection.ca_path:
            ssl_context = ssl.create_default_context(cafile=self.connection.ca_path)
        self._session = aiohttp.ClientSession(
            self.connection.server,
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=ssl_context, limit=32),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        content_type: str = "",
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        assert self._session is not None, "use Kube as an async context manager"
        headers = {"Content-Type": content_type or "application/json"} if body is not None else {}
        data = json.dumps(body) if body is not None else None
        query = dict(params) if params is not None else None
        async with self._session.request(
            method, path, data=data, headers=headers, params=query
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise ApiError.from_answer(response.status, response.reason, text)
            result: dict[str, Any] = json.loads(text) if text else {}
            return result

    async def list(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        """The collection at `path` (a List object) with query `params`."""
        return await self._call("GET", path, params=params)

    async def watch(
        self, path: str, params: Mapping[str, str], *, idle: float = 330.0
    ) -> AsyncIterator[dict[str, Any]]:
        """The watch events (``{"type", "object"}``) of the collection at `path`, one per
        line, until the server ends the stream (``timeoutSeconds``) or nothing arrives for
        `idle` seconds (a silently dropped connection, or a server that ignores
        ``timeoutSeconds``): both end the iteration, and the caller watches again from
        the last resourceVersion. ERROR events are raised as ApiError (410 Gone: the
        resourceVersion is too old, list again)."""
        assert self._session is not None, "use Kube as an async context manager"
        timeout = aiohttp.ClientTimeout(total=None, sock_read=idle)
        query = {**params, "watch": "true"}
        async with self._session.get(path, params=query, timeout=timeout) as response:
            if response.status >= 400:
                text = await response.text()
                raise ApiError.from_answer(response.status, response.reason, text)
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
            return await self._call("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("POST", path, body)

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", path, patch, "application/merge-patch+json")

    async def delete(self, path: str) -> None:
        try:
            await self._call("DELETE", path)
        except ApiError as exc:
            if exc.status != 404:
                raise


def object_path(api_version: str, plural: str, namespace: str | None, name: str = "") -> str:
    """The URL path of a collection (no `name`) or of one object."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        prefix += f"/namespaces/{namespace}"
    path = f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path


__all__ = ["SERVICE_ACCOUNT_DIR", "ApiError", "Connection", "Kube", "object_path"]
