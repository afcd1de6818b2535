"""Replacing a set of files at once, the way the kubelet updates a Secret volume.

A reader that follows ``<dir>/<name>`` must never see half of an update: a new
certificate with the old key, a new document with the old PSK. So the files go into a
fresh hidden directory, one symlink ``..data`` is swapped to it with a single
``rename``, and each ``<name>`` is a symlink through ``..data``. Links of names that
left the set and the previous directory are removed afterwards. Used for the pod's
identity (:func:`~kipsec_sidecar.identity.store_identity`) and for the configuration
the sidecar gets from the operator (:mod:`~kipsec_sidecar.daemon.delivery`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

DATA_LINK = "..data"


def publish_files(
    directory: Path, files: Mapping[str, bytes], *, modes: Mapping[str, int] | None = None
) -> None:
    """Make ``directory`` hold exactly ``files`` (name → contents) in one swap.

    Files are mode 0600 unless ``modes`` names another; names must be plain file names
    (the caller checks names it did not choose). A missing ``directory`` is created
    mode 0700. Raises OSError.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    data_link = directory / DATA_LINK
    previous = data_link.resolve() if data_link.is_symlink() else None
    generation = Path(tempfile.mkdtemp(dir=directory, prefix="..gen."))
    for name, data in files.items():
        fd = os.open(generation / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(generation / name, (modes or {}).get(name, 0o600))
    staging = directory / "..data_tmp"
    staging.unlink(missing_ok=True)
    staging.symlink_to(generation.name)
    os.replace(staging, data_link)
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.unlink(missing_ok=True)
            link.symlink_to(Path(DATA_LINK) / name)
    for entry in directory.iterdir():
        if not entry.name.startswith("..") and entry.name not in files and entry.is_symlink():
            entry.unlink()
    if previous is not None and previous != generation.resolve():
        shutil.rmtree(previous, ignore_errors=True)


__all__ = ["DATA_LINK", "publish_files"]
