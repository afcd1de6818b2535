"""Reading the sidecar configuration document from a file, a string or parsed data.

The order is fixed so that future versions can migrate old documents: first the
document must be a mapping, then `apiVersion` is checked (and an older version
migrated, through :data:`MIGRATIONS`) and `kind`; only then is the rest validated
against the current model, and finally the cross-field checks of :mod:`.checks` run.
Every failure is one :class:`~kipsec_sidecar.config.errors.ConfigError` listing every
bad field as `path: message`; nothing else escapes these functions for any input.
YAML and JSON are both accepted; duplicate keys are errors, not "last one wins".
The YAML parser reads everything, with one shortcut: plain-ASCII JSON without escapes,
exponents or tabs (what the operator writes) is read by :func:`json.loads`, which gives
the very data the YAML parser would at a fraction of its cost — the pure-Python YAML
parser took most of a 100-peer sidecar's start (``bench/sidecar_startup.py``) — and
leaves PyYAML unimported. Anything else, including every document the shortcut would
refuse, goes through the YAML parser, so errors and their messages are the YAML ones
(``tests/fuzz/test_fuzz_sidecar_config.py`` checks both paths give the same data).

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

import json
import os
import re
from collections.abc import Callable
from typing import Any

from ..regular_files import (
    MAX_FILE_BYTES,
    FileRefused,
    read_regular_file,
    too_large,
    why_unreadable,
)
from .checks import check
from .errors import ConfigError, FieldError
from .fields import ModelError
from .model import API_VERSION, KIND, SidecarConfig

Migration = Callable[[dict[str, Any]], dict[str, Any]]

#: apiVersion of an older document → function returning the document one version newer.
#: Empty while v1alpha1 is the only version; a v1alpha2 adds `"kipsec.io/v1alpha1": ...`.
MIGRATIONS: dict[str, Migration] = {}

#: Largest document read or parsed: what a Kubernetes Secret holds (1 MiB).
MAX_DOCUMENT_BYTES = MAX_FILE_BYTES
#: Deepest nesting of mappings and lists accepted.
MAX_NESTING = 64
#: A JSON number the YAML (1.1) resolver reads as the same float: a dot, and an
#: exponent only with a sign (``1e3`` and ``1.5e3`` are strings to YAML).
_SPACE_COLON = re.compile(r"\s:")
#: Longest key taken by the JSON shortcut (YAML's simple keys end within 1,024 characters).
_MAX_KEY = 1000
_YAML_FLOAT = re.compile(r"-?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?")


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
    data = plain_json(text)
    if data is not None:
        return data
    from .strict_yaml import parse_yaml  # PyYAML: only for documents that need it

    return parse_yaml(text, source=source)


class _NotPlain(ValueError):
    """JSON the YAML parser might read differently: left to the YAML parser."""


def plain_json(text: str) -> dict[str, Any] | None:
    """The mapping a JSON ``text`` holds when the YAML parser would read exactly the same
    data from it and accept it; None for anything else (the YAML parser decides).

    Same data: ASCII only (PyYAML refuses some characters JSON allows), no backslash (no
    escapes, whose surrogate pairs the two read differently), no tab and no DEL, no
    space before a colon and keys under :data:`_MAX_KEY` characters (YAML's simple-key
    limits), floats in the YAML float form, no NaN/Infinity, no duplicate keys, at most
    :data:`MAX_NESTING` levels (counted as the YAML composer counts nodes).
    """
    if not text.startswith("{") or not text.isascii() or any(c in text for c in "\\\t\x7f"):
        return None
    if _SPACE_COLON.search(text):
        return None
    try:
        data = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_float=_yaml_float,
            parse_constant=_refuse_constant,
        )
    except (ValueError, RecursionError):  # _NotPlain and JSONDecodeError are ValueErrors
        return None
    if not isinstance(data, dict) or _depth(data) > MAX_NESTING:
        return None
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping = dict(pairs)
    if len(mapping) != len(pairs) or any(len(key) >= _MAX_KEY for key in mapping):
        raise _NotPlain("duplicate or long key")
    return mapping


def _yaml_float(literal: str) -> float:
    if not _YAML_FLOAT.fullmatch(literal):
        raise _NotPlain(f"{literal} is not a float to YAML")
    return float(literal)


def _refuse_constant(literal: str) -> Any:
    raise _NotPlain(f"{literal} is not JSON")


def _depth(data: object) -> int:
    """Levels of nodes in ``data``: a scalar is one, a collection one more than its
    deepest item (the YAML composer's count)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(value, dict):
            stack.extend((item, level + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, level + 1) for item in value)
    return deepest


def load_config_data(
    data: object, *, source: str = "", base_dir: str | None = None
) -> SidecarConfig:
    """Version-check, migrate and validate already parsed `data` (e.g. from the API).

    Raises ConfigError listing every bad field.
    """
    document = _current_version(data, source)
    try:
        config = SidecarConfig.model_validate(document)
    except ModelError as exc:
        raise ConfigError(exc.errors, source=source) from None
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


__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_NESTING",
    "MIGRATIONS",
    "Migration",
    "load_config",
    "load_config_data",
    "load_config_string",
    "parse_text",
    "plain_json",
]
