"""The JSON Schema of the sidecar configuration document, generated from the model.

``python -m kipsec_sidecar.config.schema > docs/sidecar-config.schema.json`` regenerates
the committed copy; a unit test fails when the two differ. Editors (VS Code YAML,
IntelliJ) and ``kubectl``-side tooling can validate documents against it, but the
schema cannot express the cross-field checks of :mod:`.checks`, the proposal
refusals or the files' contents: :func:`kipsec_sidecar.config.load.load_config` remains
the authority.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
import textwrap
from itertools import pairwise
from typing import Any

from . import model
from .fields import Model
from .model import API_VERSION, SidecarConfig

SCHEMA_ID = "https://kipsec.io/schemas/sidecar-config/v1alpha1.json"
REGENERATE = "python -m kipsec_sidecar.config.schema > docs/sidecar-config.schema.json"


def attribute_docstrings(model: type[Model]) -> dict[str, str]:
    """Field name → the string literal written right under its annotation in ``model``
    and its bases (the nearest class wins), cleaned like a docstring.

    Read here, from model.py's source, not when the models are built: parsing the source
    at every sidecar start would cost time for descriptions only this export shows.
    """
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, Model)) or cls is Model:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, following in pairwise(body):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _describe(definition: dict[str, Any], model: type[Model]) -> None:
    """Each property of ``model``'s schema gets its field's attribute docstring (over the
    one its type may carry, as for a duration or a size)."""
    properties = definition.get("properties", {})
    docs = attribute_docstrings(model)
    for name, field in model.model_fields.items():
        doc = docs.get(name)
        if doc is not None and field.alias in properties:
            properties[field.alias]["description"] = doc


def json_schema() -> dict[str, Any]:
    """The document's JSON Schema (draft 2020-12) as a dict."""
    schema = SidecarConfig.model_json_schema()
    models = {
        name: value
        for name, value in vars(model).items()
        if isinstance(value, type) and issubclass(value, Model) and value is not Model
    }
    _describe(schema, SidecarConfig)
    for name, definition in schema.get("$defs", {}).items():
        _describe(definition, models[name])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": f"kipsec sidecar configuration ({API_VERSION})",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def render() -> str:
    """The schema as the committed file holds it: sorted keys, 2-space indent, final newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()


__all__ = ["REGENERATE", "SCHEMA_ID", "json_schema", "main", "render"]
