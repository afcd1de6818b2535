"""The field reference of docs/operator.md, generated from the CRD schemas.

`python -m kipsec_operator.crds` rewrites the text between the markers
`<!-- BEGIN GENERATED: <Kind> fields -->` and `<!-- END GENERATED: <Kind> fields -->`,
so the page and `kubectl explain` always say the same thing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from .openapi import JsonObject
from .render import crds


def _rows(node: JsonObject, path: str) -> Iterator[tuple[str, str, str, str]]:
    for name, child in (node.get("properties") or {}).items():
        here = f"{path}.{name}" if path else name
        kind = child["type"]
        if kind == "array":
            kind = f"list of {child['items']['type']}"
        if "enum" in child:
            kind = " \\| ".join(f"`{v}`" for v in child["enum"])
        default = child.get("default")
        shown = "" if default is None or default in ({}, []) else f"`{json.dumps(default)}`"
        yield here, kind, shown, child.get("description", "")
        target = child.get("items") if child["type"] == "array" else child
        if target is not None and target.get("properties"):
            yield from _rows(target, here + ("[]" if child["type"] == "array" else ""))


def field_table(kind: str, part: str = "spec") -> str:
    """A Markdown table of every field under `part` (`spec` or `status`) of `kind`."""
    manifest = next(m for m in crds().values() if m["spec"]["names"]["kind"] == kind)
    schema = manifest["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    lines = ["| Field | Type | Default | Description |", "|---|---|---|---|"]
    for path, kind_text, default, description in _rows(schema["properties"][part], part):
        escaped = description.replace("|", "\\|")
        lines.append(f"| `{path}` | {kind_text} | {default} | {escaped} |")
    return "\n".join(lines)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN GENERATED: {name} -->", f"<!-- END GENERATED: {name} -->"


#: Section name → (kind, part of the schema).
SECTIONS: dict[str, tuple[str, str]] = {
    "Tunnel spec": ("Tunnel", "spec"),
    "Tunnel status": ("Tunnel", "status"),
    "TunnelCertificate spec": ("TunnelCertificate", "spec"),
    "TunnelCertificate status": ("TunnelCertificate", "status"),
}


def update_document(text: str) -> str:
    """`text` with every generated section replaced by the current tables."""
    for name, (kind, part) in SECTIONS.items():
        begin, end = _markers(name)
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"docs/operator.md has no section {begin} ... {end}")
        replacement = f"{begin}\n{field_table(kind, part)}\n{end}"
        text = text[: match.start()] + replacement + text[match.end() :]
    return text


__all__ = ["SECTIONS", "field_table", "update_document"]
