"""Reading the files the sidecar is given: regular files only, and at most 1 MiB of them.

Every file the sidecar reads because a document, an environment variable or the operator
named it — the configuration document, PSK files, manual key files, certificates,
private keys, CA bundles, the pod's token — goes through :func:`read_regular_file`.
Such a path is written by a person or a template, so it may name something that is not
a file of data at all:

- a FIFO would block ``open`` (and start-up) forever with no output, so the file is
  opened with ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor (no race
  with a swap between a check and the open) before anything is read;
- ``/dev/zero`` or ``/dev/urandom`` would be read until memory runs out, and a directory
  cannot be read at all: only regular files are accepted (symlinks are followed, as the
  kubelet's ``..data`` links need);
- a huge file would be held in memory whole: at most :data:`MAX_FILE_BYTES` are read.
  That is the most a Kubernetes Secret or ConfigMap holds (1 MiB), where all of these
  files come from; a PSK, a key or a certificate chain is a few KiB, and even a
  system-wide CA bundle is a few hundred KiB.
"""

from __future__ import annotations

import os
import stat

#: The largest file read (1 MiB, the size limit of a Kubernetes Secret or ConfigMap).
MAX_FILE_BYTES = 1024 * 1024

_CHUNK = 64 * 1024
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileRefused(ValueError):
    """The path names something other than a regular file, or one larger than the limit.

    ``str()`` says what it is and why it is refused, without the path (callers name the
    field or path themselves).
    """


def read_regular_file(path: str | os.PathLike[str], *, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file at ``path`` (symlinks followed), at most ``limit``.

    Raises OSError when it cannot be opened or read (``strerror`` says why: missing,
    permission) and :class:`FileRefused` for a directory, FIFO, device or socket, or
    for a file larger than ``limit`` bytes (also one that grows past it while read).
    Never blocks on a FIFO.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
            raise FileRefused(
                f"{kind}, not a regular file (only regular files are read, so that a FIFO "
                "cannot block start-up and a device cannot fill memory)"
            )
        if info.st_size > limit:
            raise FileRefused(too_large(limit))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(too_large(limit))
        return b"".join(chunks)
    finally:
        os.close(fd)


def why_unreadable(exc: OSError | ValueError) -> str:
    """Why a read failed, for a message that names the path itself (no path repeated)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def too_large(limit: int) -> str:
    """Why something over ``limit`` bytes is refused (also for a document given as text)."""
    shown = f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit} bytes"
    return f"larger than {shown} (the most a Kubernetes Secret holds): is it the right file?"


__all__ = ["MAX_FILE_BYTES", "FileRefused", "read_regular_file", "too_large", "why_unreadable"]
