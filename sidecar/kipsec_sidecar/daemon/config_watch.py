"""Following the configuration as Kubernetes delivers it: late, swapped, and in pieces.

The operator writes each pod's configuration Secret, and the kubelet mounts it with its
*atomic writer*: every key is a symlink ``config.yaml -> ..data/config.yaml``, and
``..data`` is itself a symlink to a timestamped directory that is replaced in one
``rename`` when the Secret changes. Two things follow for the sidecar:

- A pod that has no IP yet gets an empty bootstrap Secret, so ``config.yaml`` does not
  exist when the sidecar starts; it appears once the operator has rendered the pod.
  :func:`wait_for_document` waits for it (logging once), with ``/healthz`` answering 503
  "waiting for configuration" so the native sidecar's startupProbe holds the application
  back until the tunnel is configured.
- A swap may leave the file's size and mtime unchanged (same length, and the kubelet
  keeps the timestamp granularity of its own clock), and a change may touch only a file
  the document names (a rotated PSK, CA bundle or manual keys file) and not the
  document. So :class:`ConfigWatch` compares a SHA-256 over the *contents* of the
  document and of every file it names, read through the symlinks, rather than stat
  fields of one path.

A document that cannot be loaded (half written, invalid) is refused by the caller with
the error logged, and the running configuration stays; :class:`ConfigWatch` remembers
the refused contents so the same bad document is not retried (and logged) every poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..config.errors import ConfigError
from ..config.fields import Model
from ..config.load import load_config
from ..config.model import SidecarConfig
from ..regular_files import FileRefused, read_regular_file

log = logging.getLogger(__name__)

#: Document fields (snake_case model names) that hold paths of files the sidecar reads.
FILE_FIELDS = frozenset(
    {"secret_file", "cert_file", "key_file", "ca_files", "intermediate_files", "keys_file"}
)


def referenced_files(config: SidecarConfig) -> tuple[str, ...]:
    """Every file the document names (PSK, certificates, CA bundles, manual keys),
    made absolute against the document's directory, sorted, without duplicates."""
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, Model):
            for name in type(value).model_fields:
                item = getattr(value, name)
                if name in FILE_FIELDS:
                    paths = item if isinstance(item, list) else [item]
                    found.update(config.resolve_path(p) for p in paths if isinstance(p, str))
                else:
                    walk(item)
        elif isinstance(value, list | tuple):
            for element in value:
                walk(element)
        elif isinstance(value, dict):
            for element in value.values():
                walk(element)

    walk(config)
    return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class Digest:
    """What the configuration's files hold now, as digests (never the contents)."""

    document: str | None
    """SHA-256 hex of the document's bytes; None when it cannot be read (missing)."""
    sources: str
    """SHA-256 hex over the document and every referenced file (path and contents)."""


def digest(path: str, files: Iterable[str] = ()) -> Digest:
    """Digest the document at ``path`` and ``files`` as they are now (symlinks followed).

    A missing or unreadable file enters as a marker, so its appearance is a change.
    """
    combined = hashlib.sha256()
    document: str | None = None
    for index, name in enumerate((path, *files)):
        one = _file_digest(name)
        if index == 0:
            document = one
        combined.update(f"{len(name)}:{name}={one or '-'};".encode())
    return Digest(document, combined.hexdigest())


def _file_digest(path: str) -> str | None:
    """The file's digest, read as the loader reads it (:mod:`~kipsec_sidecar.regular_files`:
    never blocking on a FIFO nor reading a device without end). Something the loader
    refuses digests as that refusal, so loading it is tried (and its error logged) once."""
    try:
        data = read_regular_file(path)
    except FileRefused as exc:
        return hashlib.sha256(f"refused: {exc}".encode()).hexdigest()
    except OSError:
        return None
    return hashlib.sha256(data).hexdigest()


class ConfigWatch:
    """Which configuration is applied, and whether the files now hold another one.

    The daemon calls :meth:`changed` every poll, :meth:`begin` before loading and
    :meth:`applied` after a load that it applied (or :meth:`refused` after one that
    failed). ``generation`` counts applied configurations (1 after start).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.files: tuple[str, ...] = ()
        self.current: Digest | None = None
        """The digest of the applied configuration (None before the first)."""
        self.generation = 0
        self._refused: tuple[str, tuple[str, ...]] | None = None
        """The refused contents' digest and the files it covers."""

    def changed(self) -> Digest | None:
        """The files' digest when it differs from the applied and the last refused one."""
        now = digest(self.path, self.files)
        if now.document is None:
            return None  # the file went away: keep running what we have
        if self.current is not None and now.sources == self.current.sources:
            return None
        if self._refused is not None:
            sources, files = self._refused
            again = now if files == self.files else digest(self.path, files)
            if again.sources == sources:
                return None
        return now

    def begin(self) -> Digest:
        """The digest just before a load (with the files the running document names)."""
        return digest(self.path, self.files)

    def applied(self, config: SidecarConfig, before: Digest) -> None:
        """Record ``config`` (loaded after :meth:`begin` returned ``before``) as running.

        If the document or a file it named changed while it was being loaded, the
        recorded digest is ``before``'s, so the next :meth:`changed` loads it again
        rather than taking a configuration that was never read for the running one.
        """
        during = digest(self.path, self.files)
        self.files = referenced_files(config)
        after = digest(self.path, self.files)
        self.current = after if during.sources == before.sources else before
        self.generation += 1
        self._refused = None

    def refused(self, before: Digest, config: SidecarConfig | None = None) -> None:
        """The contents digested as ``before`` did not load: skip them until they change.

        ``config`` is the refused document when it parsed and only a file it names failed
        (missing, unreadable, not yet written by the enrollment): the files *it* names are
        watched from then on, so the document is tried again when one of them appears —
        the running document's files would never show that change.
        """
        if config is not None:
            files = referenced_files(config)
            now = digest(self.path, files)
            if now.document == before.document:  # the document read is the one refused
                self._refused = (now.sources, files)
                return
        self._refused = (before.sources, self.files)


async def wait_for_document(
    paths: Sequence[str], *, interval: float, stopped: asyncio.Event
) -> tuple[SidecarConfig, Digest, str] | None:
    """Wait until a document at one of ``paths`` (the mounted Secret, and the operator's
    copy when configuration delivery is on) exists and loads; None when ``stopped`` is set.

    Returns the configuration, the digest taken just before it was loaded (for
    :meth:`ConfigWatch.applied`) and the path it came from.

    Logs once that it waits, and once per distinct content that does not load (the
    error names the bad fields); keeps waiting after an invalid document because the
    operator, not a person, writes it and will write it again.
    """
    log.info("waiting for configuration", extra={"path": ", ".join(paths)})
    watches = [ConfigWatch(path) for path in paths]
    while not stopped.is_set():
        for watch in watches:
            before = watch.changed()
            if before is None:
                continue
            try:
                return load_config(watch.path), before, watch.path
            except ConfigError as exc:
                watch.refused(before)
                log.error(
                    "configuration not loaded; still waiting",
                    extra={"path": watch.path, "error": str(exc)},
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), max(interval, 0.05))
    return None


__all__ = [
    "FILE_FIELDS",
    "ConfigWatch",
    "Digest",
    "digest",
    "referenced_files",
    "wait_for_document",
]
