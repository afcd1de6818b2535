"""The text of a sidecar document: exactly ``json.dumps(document, sort_keys=True,
indent=2)``, written faster.

With `indent`, the standard library encodes in pure Python, a generator per value,
about a millisecond per 9-peer document: the largest single cost of rendering a pod.
Here containers are laid out by one recursive function and every string goes through
the C encoder (``encode_basestring_ascii``), which gives the same bytes
(`tests/unit/test_operator_document_text.py` compares both on generated documents).
Anything but dicts with string keys, lists, tuples, strings, booleans, integers and
None (floats, which have special values, included) is left to ``json.dumps`` itself.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

_STEP = "  "


def document_text(document: Any) -> str:
    """``json.dumps(document, sort_keys=True, indent=2)``, byte for byte."""
    parts: list[str] = []
    try:
        _write(document, "", parts)
    except _Unusual:
        return json.dumps(document, sort_keys=True, indent=2)
    return "".join(parts)


class _Unusual(Exception):
    """A value this module leaves to the standard encoder."""


def _write(value: Any, indent: str, parts: list[str]) -> None:
    if isinstance(value, str):
        parts.append(encode_basestring_ascii(value))
    elif value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif type(value) is int:
        parts.append(int.__repr__(value))
    elif isinstance(value, dict):
        if not value:
            parts.append("{}")
            return
        if not all(type(key) is str for key in value):
            raise _Unusual
        inner = indent + _STEP
        parts.append("{\n")
        for index, key in enumerate(sorted(value)):
            if index:
                parts.append(",\n")
            parts.append(inner)
            parts.append(encode_basestring_ascii(key))
            parts.append(": ")
            _write(value[key], inner, parts)
        parts.append("\n" + indent + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            parts.append("[]")
            return
        inner = indent + _STEP
        parts.append("[\n")
        for index, item in enumerate(value):
            if index:
                parts.append(",\n")
            parts.append(inner)
            _write(item, inner, parts)
        parts.append("\n" + indent + "]")
    else:
        raise _Unusual


__all__ = ["document_text"]
