"""Pydantic models → structural OpenAPI v3 schemas for apiextensions.k8s.io/v1.

Kubernetes accepts only *structural* schemas: every node has a `type`, no `$ref`, no
`anyOf` with types inside, no `additionalProperties: false` (unknown fields are pruned
instead), no `title`. Pydantic's JSON Schema has all of these, so this module inlines
the `$defs`, turns `X | None` into an optional `X`, drops what the API server refuses
and keeps what it understands: descriptions, defaults, enums, bounds, patterns and the
CEL rules the models declare (`x-kubernetes-validations`).

Defaults of object-valued fields become `{}`: the API server then applies the nested
defaults, which yield the same values and keep each default written in one place.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

JsonObject = dict[str, Any]

#: Keys of a JSON Schema node the API server's structural schemas accept and we keep.
_KEPT = (
    "type",
    "description",
    "default",
    "enum",
    "format",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "x-kubernetes-validations",
)


def structural_schema(model: type[BaseModel]) -> JsonObject:
    """The structural OpenAPI v3 schema of `model` (document keys, i.e. camelCase)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions: JsonObject = raw.get("$defs", {})
    return _convert(raw, definitions)


def _resolve(node: JsonObject, definitions: JsonObject) -> JsonObject:
    """`node` with `$ref`, single-item `allOf` and the `null` branch of `anyOf` removed.

    Keys written beside the reference (description, default) win over the target's.
    """
    merged = dict(node)
    if "anyOf" in merged:
        branches = [b for b in merged.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {branches}")
        merged = {**branches[0], **merged}
        if merged.get("default", ...) is None:
            del merged["default"]
    if "allOf" in merged:
        (only,) = merged.pop("allOf")
        merged = {**only, **merged}
    if "$ref" in merged:
        target = definitions[merged.pop("$ref").rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in merged.items() if k != "title"}}
        if "description" in node:
            merged["description"] = node["description"]
        return _resolve(merged, definitions)
    if "anyOf" in merged or "allOf" in merged:
        return _resolve(merged, definitions)
    return merged


def _convert(node: JsonObject, definitions: JsonObject) -> JsonObject:
    node = _resolve(node, definitions)
    if "const" in node:
        node = {**node, "enum": [node.pop("const")]}
        node.setdefault("type", "string")
    out: JsonObject = {k: copy.deepcopy(node[k]) for k in _KEPT if k in node}
    if "description" in out:
        out["description"] = " ".join(out["description"].split())
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties", {})
        if properties:
            out["properties"] = {
                name: _convert(child, definitions) for name, child in properties.items()
            }
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = _convert(extra, definitions)
        required = node.get("required")
        if required:
            out["required"] = list(required)
        if isinstance(out.get("default"), dict) and out.get("properties"):
            out["default"] = {}
    elif kind == "array":
        out["items"] = _convert(node["items"], definitions)
    elif kind is None:
        raise ValueError(f"schema node without a type: {sorted(node)}")
    return out


__all__ = ["JsonObject", "structural_schema"]
