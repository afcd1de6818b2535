"""The YAML side of :func:`kipsec_sidecar.config.load.parse_text`: PyYAML's pure-Python
safe loader, made strict (duplicate keys, merge keys and deep nesting refused).

Imported only for documents that are not plain JSON (:func:`.load.plain_json`), so a
sidecar reading the operator's JSON never loads PyYAML. The pure-Python parser, not the
C one, because only it lets the nesting limit be enforced before the recursion it
guards against happens.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

from .errors import ConfigError, FieldError
from .load import MAX_NESTING

_MERGE_TAG = "tag:yaml.org,2002:merge"


def parse_yaml(text: str, *, source: str) -> Any:
    """The data of a YAML (or JSON) document; ConfigError naming the line of a syntax
    error, a duplicate key, a merge key or nesting deeper than MAX_NESTING."""
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
