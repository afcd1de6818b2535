"""The CLI's connection to a running lab's API server (the unix socket ``api.sock``).

Plain synchronous JSON over HTTP on a unix socket: the CLI runs in the host's network
namespace, where the API server's TCP port (inside the control namespace) is not
reachable, and a file permission (0600, root) is the lab's authentication.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kipsec_operator.kube import ApiError, object_path

from .manifests import KINDS, Manifest


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("lab", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.path))


class LabClient:
    """JSON calls against the lab API server; errors raise :class:`ApiError`."""

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        connection = _UnixConnection(self.socket_path, self.timeout)
        try:
            headers = {"Content-Type": content_type} if body is not None else {}
            data = json.dumps(body) if body is not None else None
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        if response.status >= 400:
            raise ApiError.from_answer(response.status, response.reason, text)
        result: dict[str, Any] = json.loads(text) if text else {}
        return result

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            return self.call("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        api_version, plural, _ = KINDS[kind]
        listed = self.get(object_path(api_version, plural, namespace)) or {}
        items: list[dict[str, Any]] = listed.get("items") or []
        return items

    def apply(self, manifest: Manifest) -> str:
        """Create the object, or merge-patch it when it exists; ``created``/``configured``."""
        collection = object_path(manifest.api_version, manifest.plural, manifest.namespace)
        path = object_path(manifest.api_version, manifest.plural, manifest.namespace, manifest.name)
        if self.get(path) is None:
            self.call("POST", collection, manifest.body)
            return "created"
        patch = {k: v for k, v in manifest.body.items() if k not in ("apiVersion", "kind")}
        self.call("PATCH", path, patch, "application/merge-patch+json")
        return "configured"

    def delete(self, manifest: Manifest) -> str:
        path = object_path(manifest.api_version, manifest.plural, manifest.namespace, manifest.name)
        try:
            self.call("DELETE", path)
        except ApiError as exc:
            if exc.status == 404:
                return "not found"
            raise
        return "deleted"


__all__ = ["LabClient"]
