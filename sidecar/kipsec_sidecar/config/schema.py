"""The JSON Schema of the sidecar configuration document, generated from the model.

``python -m kipsec_sidecar.config.schema > docs/sidecar-config.schema.json`` regenerates
the committed copy; a unit test fails when the two differ. Editors (VS Code YAML,
IntelliJ) and ``kubectl``-side tooling can validate documents against it, but the
schema cannot express the cross-field checks of :mod:`.checks`, the proposal
refusals or the files' contents: :func:`kipsec_sidecar.config.load.load_config` remains
the authority.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from .model import API_VERSION, SidecarConfig

SCHEMA_ID = "https://kipsec.io/schemas/sidecar-config/v1alpha1.json"
REGENERATE = "python -m kipsec_sidecar.config.schema > docs/sidecar-config.schema.json"


class _Generator(GenerateJsonSchema):
    """Pydantic's generator without the auto-made titles ("Ikesa") that say nothing."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


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
