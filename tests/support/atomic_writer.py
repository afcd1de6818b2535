"""The kubelet's atomic writer, for tests: a Secret volume as the sidecar really sees it.

The kubelet (``pkg/volume/util/atomic_writer.go``) publishes a Secret's keys like this:
the files go into a fresh hidden directory ``..<timestamp>``; a symlink ``..data``
points at it and is replaced by ``rename(..data_tmp, ..data)``; each key is a symlink
``<key> -> ..data/<key>`` in the volume's root; the old directory and the links of
keys that left the Secret are removed afterwards. A reader never sees half a Secret,
but the path ``/etc/kipsec/config.yaml`` itself never changes: only the directory the
links lead to does. An empty Secret (the operator's bootstrap Secret) publishes no key.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

_SERIAL = itertools.count()


def publish(volume: Path, files: Mapping[str, bytes], *, mtime: float | None = None) -> Path:
    """Make ``volume`` hold exactly ``files`` (key → contents), the way the kubelet does.

    ``mtime`` sets every file's modification time (to build a swap whose size and
    mtime equal the previous one's). Returns the new timestamped directory.
    """
    volume.mkdir(parents=True, exist_ok=True)
    data_link = volume / "..data"
    old = Path(os.readlink(data_link)) if data_link.is_symlink() else None
    target = volume / f"..2026_11_27_09_00_00.{os.getpid()}{next(_SERIAL):06d}"
    target.mkdir()
    for key, contents in files.items():
        (target / key).write_bytes(contents)
        (target / key).chmod(0o400)
        if mtime is not None:
            os.utime(target / key, (mtime, mtime))
    tmp_link = volume / "..data_tmp"
    tmp_link.symlink_to(target.name)
    os.rename(tmp_link, data_link)
    for key in files:
        link = volume / key
        if not link.is_symlink():
            link.symlink_to(f"..data/{key}")
    for entry in volume.iterdir():
        if entry.name.startswith("..") or entry.name in files:
            continue
        if entry.is_symlink():
            entry.unlink()
    if old is not None:
        shutil.rmtree(volume / old, ignore_errors=True)
    return target


__all__ = ["publish"]
