"""Reading the sidecar configuration document from a file, a string or parsed data.

The order is fixed so that future versions can migrate old documents: first the
document must be a mapping, then `apiVersion` is checked (and an older version
migrated, through :data:`MIGRATIONS`) and `kind`; only then is the rest validated
against the current model, and finally the cross-field checks of :mod:`.checks` run.
Every failure is one :class:`~kipsec_sidecar.config.errors.ConfigError` listing every
bad field as `path: message`; nothing else escapes these functions for any input.
YAML and JSON are both accepted (JSON is read by the YAML parser); duplicate keys are
errors, not "last one wins".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import Any

import yaml
from pydantic import ValidationError

from .checks import check
from .errors import ConfigError, FieldError
from .messages import pydantic_errors
from .model import API_VERSION, KIND, SidecarConfig

Migration = Callable[[dict[str, Any]], dict[str, Any]]

#: apiVersion of an older document → function returning the document one version newer.
#: Empty while v1alpha1 is the only version; a v1alpha2 adds `"kipsec.io/v1alpha1": ...`.
MIGRATIONS: dict[str, Migration] = {}

_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


def load_config(path: str | os.PathLike[str]) -> SidecarConfig:
    """Read, version-check and validate the document at `path` (YAML or JSON).

    Relative file paths inside the document (`secretFile`, `certFile`, ...) are
    later resolved against the directory holding `path`
    (:meth:`SidecarConfig.resolve_path`). Raises ConfigError, also when the file
    cannot be read.
    """
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            raw = handle.read(_MAX_DOCUMENT_BYTES + 1)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [FieldError("", f"cannot read the file: {reason}")], source=source
        ) from None
    if len(raw) > _MAX_DOCUMENT_BYTES:
        raise ConfigError([FieldError("", "larger than 16 MiB")], source=source)
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
    """The data of a YAML or JSON document; ConfigError for a syntax error or duplicate key."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError([FieldError("", str(exc))], source=source) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(
            [FieldError("", f"{where}not valid YAML/JSON: {exc.problem}")], source=source
        ) from None
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as exc:
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


class _DuplicateKey(ValueError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable):
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise _DuplicateKey(f"line {line}: duplicate key {str(key)[:60]!r}")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


__all__ = [
    "MIGRATIONS",
    "Migration",
    "load_config",
    "load_config_data",
    "load_config_string",
    "parse_text",
]
