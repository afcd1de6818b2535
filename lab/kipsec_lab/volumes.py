"""What the kubelet puts into a pod: volumes in its atomic-writer layout, and env.

**Atomic writer** (the kubelet's layout for Secret, ConfigMap and projected volumes):
the payload lives in a timestamped directory ``..2026_11_27_09_00_00.123456``; the
symlink ``..data`` points at it, and each key is a symlink ``key -> ..data/key``. An
update writes a new timestamped directory, points a temporary symlink at it and renames
that over ``..data`` (one atomic rename: a reader sees the old or the new set of files,
never a mix), then fixes the per-key links and removes the old directory. Programs that
watch these files (the sidecar's reload) see exactly what they would in a cluster.

**fieldRef** values of a container's env, resolved from the pod as the kubelet does
(``status.podIPs`` is the comma-separated list).
"""

from __future__ import annotations

import base64
import datetime
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DATA_LINK = "..data"


class FieldRefError(ValueError):
    """A fieldRef the lab cannot resolve; names the env variable and the path."""


def write_atomic(directory: Path, files: Mapping[str, bytes], mode: int = 0o644) -> bool:
    """Make ``directory`` hold exactly ``files`` in the atomic-writer layout; returns
    whether anything changed (an identical payload is not rewritten)."""
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / DATA_LINK
    if link.is_symlink() and read_payload(directory) == dict(files):
        return False
    stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    payload = directory / stamp
    payload.mkdir()
    for key, value in files.items():
        target = payload / key
        target.write_bytes(value)
        target.chmod(mode)
    old = os.readlink(link) if link.is_symlink() else None
    temporary = directory / "..data_tmp"
    if temporary.is_symlink():
        temporary.unlink()
    temporary.symlink_to(stamp)
    temporary.rename(link)
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.name not in files:
            entry.unlink()
    for key in files:
        key_link = directory / key
        if not key_link.is_symlink():
            key_link.symlink_to(f"{DATA_LINK}/{key}")
    if old is not None and old != stamp:
        shutil.rmtree(directory / old, ignore_errors=True)
    return True


def read_payload(directory: Path) -> dict[str, bytes]:
    """The files ``..data`` currently points at (empty when the layout is absent)."""
    link = directory / DATA_LINK
    if not link.is_symlink():
        return {}
    return {entry.name: entry.read_bytes() for entry in sorted(link.resolve().iterdir())}


def secret_files(secret: Mapping[str, Any] | None) -> dict[str, bytes]:
    """A Secret's ``data`` decoded (the files a Secret volume holds)."""
    data = (secret or {}).get("data") or {}
    return {str(key): base64.b64decode(value) for key, value in data.items()}


def _pod_ips(pod: Mapping[str, Any]) -> str:
    status = pod.get("status") or {}
    ips = [entry.get("ip") for entry in status.get("podIPs") or [] if entry.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    return ",".join(ips)


_FIELDS: dict[str, Callable[[Mapping[str, Any]], object]] = {
    "metadata.name": lambda pod: (pod.get("metadata") or {}).get("name", ""),
    "metadata.namespace": lambda pod: (pod.get("metadata") or {}).get("namespace", ""),
    "metadata.uid": lambda pod: (pod.get("metadata") or {}).get("uid", ""),
    "spec.nodeName": lambda pod: (pod.get("spec") or {}).get("nodeName", ""),
    "spec.serviceAccountName": lambda pod: (pod.get("spec") or {}).get(
        "serviceAccountName", "default"
    ),
    "status.podIP": lambda pod: (pod.get("status") or {}).get("podIP", ""),
    "status.podIPs": _pod_ips,
    "status.hostIP": lambda pod: (pod.get("status") or {}).get("hostIP", ""),
}


def field_ref(pod: Mapping[str, Any], path: str) -> str:
    """The value of ``fieldRef.fieldPath`` ``path`` for ``pod`` (raises KeyError)."""
    for prefix in ("metadata.labels", "metadata.annotations"):
        if path.startswith(f"{prefix}['") and path.endswith("']"):
            key = path[len(prefix) + 2 : -2]
            values = (pod.get("metadata") or {}).get(prefix.split(".")[1]) or {}
            return str(values.get(key, ""))
    return str(_FIELDS[path](pod))


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment: literal values and resolved fieldRefs, in order
    (``$(VAR)`` references and other ``valueFrom`` sources are not supported: an error
    names the variable)."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        name = str(item.get("name"))
        if "value" in item:
            env[name] = str(item["value"])
            continue
        ref = (item.get("valueFrom") or {}).get("fieldRef")
        if not isinstance(ref, Mapping):
            raise FieldRefError(f"env {name}: only value and valueFrom.fieldRef are supported")
        try:
            env[name] = field_ref(pod, str(ref.get("fieldPath")))
        except KeyError:
            path = ref.get("fieldPath")
            raise FieldRefError(
                f"env {name}: valueFrom.fieldRef.fieldPath {path!r} is not supported"
            ) from None
    return env


__all__ = [
    "DATA_LINK",
    "FieldRefError",
    "container_env",
    "field_ref",
    "read_payload",
    "secret_files",
    "write_atomic",
]
