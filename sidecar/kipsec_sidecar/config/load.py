"""Reading the sidecar configuration document from a file, a string or parsed data.

The order is fixed so that future versions can migrate old documents: first the
document must be a mapping, then `apiVersion` is checked (and an older version
migrated, through :data:`MIGRATIONS`) and `kind`; only then is the rest validated
against the current model, and finally the cross-field checks of :mod:`.checks` run.
Every failure is one :class:`~kipsec_sidecar.config.errors.ConfigError` listing every
bad field as `path: message`; nothing else escapes these functions for any input.
YAML and JSON are both accepted (JSON is read by the YAML parser); duplicate keys are
errors, not "last one wins".

Limits, each a clear error rather than a stall or a crash: a document is at most
:data:`MAX_DOCUMENT_BYTES` (1 MiB, what a Kubernetes Secret holds), checked before
parsing, since PyYAML's pure-Python parser needs seconds per MiB (a dense 1 MiB document
of 8,500 peers: 5.5 s of CPU on the development machine); and read only from a regular file
(:mod:`kipsec_sidecar.regular_files`); nesting is at most :data:`MAX_NESTING` levels (a
real document has fewer than ten; deeper input would exhaust the parser's recursion).
YAML merge keys (``<<: *anchor``) are refused: they exist only in YAML 1.1 (not in YAML
1.2 nor JSON), the operator never writes them, and their rule — a key written beside a
merge silently overrides the merged one — is the "last one wins" that duplicate keys are
refused for. Anchors and aliases of whole values work.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import Any

import yaml
from pydantic import ValidationError

from ..regular_files import (
    MAX_FILE_BYTES,
    FileRefused,
    read_regular_file,
    too_large,
    why_unreadable,
)
from .checks import check
from .errors import ConfigError, FieldError
from .messages import pydantic_errors
from .model import API_VERSION, KIND, SidecarConfig

Migration = Callable[[dict[str, Any]], dict[str, Any]]

#: apiVersion of an older document → function returning the document one version newer.
#: Empty while v1alpha1 is the only version; a v1alpha2 adds `"kipsec.io/v1alpha1": ...`.
MIGRATIONS: dict[str, Migration] = {}

#: Largest document read or parsed: what a Kubernetes Secret holds (1 MiB).
MAX_DOCUMENT_BYTES = MAX_FILE_BYTES
#: Deepest nesting of mappings and lists accepted.
MAX_NESTING = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_config(path: str | os.PathLike[str]) -> SidecarConfig:
    """Read, version-check and validate the document at `path` (YAML or JSON).

    Relative file paths inside the document (`secretFile`, `certFile`, ...) are
    later resolved against the directory holding `path`
    (:meth:`SidecarConfig.resolve_path`). Raises ConfigError, also when the file
    cannot be read.
    """
    source = os.fspath(path)
    try:
        raw = read_regular_file(source, limit=MAX_DOCUMENT_BYTES)
    except FileRefused as exc:
        raise ConfigError([FieldError("", str(exc))], source=source) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            [FieldError("", f"cannot read the file: {why_unreadable(exc)}")], source=source
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [FieldError("", f"not UTF-8 text (byte {exc.start})")], source=source
        ) from None
    base_dir = os.path.dirname(os.path.abspath(source))
    return load_config_string(text, source=source, base_dir=base_dir)


def load_config_string(
    text: str, *, source: str = "<string>", base_dir: str | None = None
) -> SidecarConfig:
    """Parse YAML/JSON `text` and validate it; ConfigError on any problem."""
    return load_config_data(parse_text(text, source=source), source=source, base_dir=base_dir)


def parse_text(text: str, *, source: str = "<string>") -> Any:
    """The data of a YAML or JSON document; ConfigError for a syntax error, a duplicate
    key, a merge key, nesting deeper than :data:`MAX_NESTING` or more than
    :data:`MAX_DOCUMENT_BYTES` (checked before parsing)."""
    if len(text) > MAX_DOCUMENT_BYTES or len(text.encode("utf-8", "replace")) > MAX_DOCUMENT_BYTES:
        raise ConfigError([FieldError("", too_large(MAX_DOCUMENT_BYTES))], source=source)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as exc:
        raise ConfigError([FieldError("", str(exc))], source=source) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(
            [FieldError("", f"{where}not valid YAML/JSON: {exc.problem}")], source=source
        ) from None
    except RecursionError:
        raise ConfigError(
            [FieldError("", "not valid YAML/JSON: nested too deeply")], source=source
        ) from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        raise ConfigError(
            [FieldError("", f"not valid YAML/JSON: {type(exc).__name__}")], source=source
        ) from None


def load_config_data(
    data: object, *, source: str = "", base_dir: str | None = None
) -> SidecarConfig:
    """Version-check, migrate and validate already parsed `data` (e.g. from the API).

    Raises ConfigError listing every bad field.
    """
    document = _current_version(data, source)
    try:
        config = SidecarConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(pydantic_errors(exc), source=source) from None
    problems = check(config)
    if problems:
        raise ConfigError(problems, source=source)
    config._base_dir = base_dir
    return config


def _current_version(data: object, source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(
            [FieldError("", f"the document must be a mapping with apiVersion: {API_VERSION}")],
            source=source,
        )
    document: dict[str, Any] = data
    version = document.get("apiVersion")
    seen: set[str] = set()
    while isinstance(version, str) and version in MIGRATIONS and version not in seen:
        seen.add(version)
        document = MIGRATIONS[version](document)
        version = document.get("apiVersion")
    if version != API_VERSION:
        shown = f"{version[:60]!r}" if isinstance(version, str) else "missing or not a string"
        raise ConfigError(
            [
                FieldError(
                    "apiVersion",
                    f"unsupported version ({shown}); this sidecar reads {API_VERSION}",
                )
            ],
            source=source,
        )
    if document.get("kind") != KIND:
        raise ConfigError([FieldError("kind", f"must be {KIND}")], source=source)
    return document


class _Refused(ValueError):
    """Input the loader refuses on purpose; the message names the line."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (instead of keeping the last one),
    merge keys, and nesting deeper than :data:`MAX_NESTING`."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                line = event.start_mark.line + 1
                raise _Refused(f"line {line}: nested more than {MAX_NESTING} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, token_class: type) -> None:
        # The scanner's cost grows with the square of the flow depth (``[[[...``), so
        # deep flow nesting is refused here, before the composer would see it.
        if self.flow_level >= MAX_NESTING:
            raise _Refused(f"line {self.line + 1}: nested more than {MAX_NESTING} levels deep")
        super().fetch_flow_collection_start(token_class)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                line = key_node.start_mark.line + 1
                raise _Refused(
                    f"line {line}: YAML merge keys (<<) are not supported; write the fields "
                    "out (anchors and aliases of whole values work)"
                )
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise _Refused(f"line {line}: duplicate key {str(key)[:60]!r}")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_NESTING",
    "MIGRATIONS",
    "Migration",
    "load_config",
    "load_config_data",
    "load_config_string",
    "parse_text",
]
