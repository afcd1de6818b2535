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
from functools import cache
from itertools import pairwise
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue

from .model import API_VERSION, SidecarConfig

SCHEMA_ID = "https://kipsec.io/schemas/sidecar-config/v1alpha1.json"
REGENERATE = "python -m kipsec_sidecar.config.schema > docs/sidecar-config.schema.json"


class _Generator(GenerateJsonSchema):
    """Pydantic's generator without the auto-made titles ("Ikesa") that say nothing, and
    with each field's attribute docstring as its description.

    The docstrings are read here, not by pydantic when the models are built
    (``use_attribute_docstrings``): that parses model.py's source at every sidecar start,
    for descriptions only this export shows (``bench/sidecar_startup.py``).
    """

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def model_schema(self, schema: Any) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        model = schema["cls"]
        properties = json_schema.get("properties", {})
        for name, field in model.model_fields.items():
            doc = attribute_docstrings(model).get(name)
            prop = properties.get(field.alias or name)
            if doc is not None and prop is not None and field.description is None:
                prop["description"] = doc
        return json_schema


@cache
def attribute_docstrings(model: type[BaseModel]) -> dict[str, str]:
    """Field name → the string literal written right under its annotation in ``model``
    and its bases (the nearest class wins), cleaned like a docstring."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
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


def json_schema() -> dict[str, Any]:
    """The document's JSON Schema (draft 2020-12) as a dict."""
    schema = SidecarConfig.model_json_schema(by_alias=True, schema_generator=_Generator)
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
