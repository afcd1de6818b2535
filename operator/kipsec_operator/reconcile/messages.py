"""Pydantic's validation errors of the operator's resources (its CRD models) rephrased
as field errors.

Pydantic reports `loc` tuples and developer-facing messages ("Input should be a valid
dictionary or instance of Peer"); a person editing YAML wants the path they wrote and
what to change. Input values are never included, so a secret that failed validation is
not echoed into a log. The sidecar's own configuration model does not use pydantic
(:mod:`kipsec_sidecar.config.fields`) but words its errors the same way, so a Tunnel's
status and a sidecar's log read alike.
"""

from __future__ import annotations

import difflib
import types
import typing

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from kipsec_sidecar.config.errors import FieldError, join_path

_MESSAGES: dict[str, str] = {
    "missing": "required",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
}


def pydantic_errors(exc: ValidationError, root: type[BaseModel]) -> list[FieldError]:
    """Each pydantic error of validating `root` as a FieldError with the document path.

    Paths use the document's keys (camelCase, `[i]` for list items); messages are
    rephrased for a human ("required", "must be a list", "unknown field 'x'; did you
    mean 'y'?") and never include the input value.
    """
    out: list[FieldError] = []
    for error in exc.errors(include_input=False, include_url=False):
        path = join_path(*error["loc"])
        message = _message(error, root)
        if FieldError(path, message) not in out:
            out.append(FieldError(path, message))
    return out


def _message(error: ErrorDetails, root: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return _unknown_field(error["loc"], root)
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = message.replace("Input should be", "must be")
    message = message.replace("String should", "must")
    message = message.replace("List should", "must")
    return message


def _unknown_field(loc: tuple[int | str, ...], root: type[BaseModel]) -> str:
    name = str(loc[-1]) if loc else ""
    known = _aliases_at(loc[:-1], root)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if known and not close:
        hint = f"; known fields here: {', '.join(known)}"
    return f"unknown field {name[:60]!r}{hint}"


def _aliases_at(loc: tuple[int | str, ...], root: type[BaseModel]) -> list[str]:
    """The document keys of the model at `loc` (empty when it cannot be followed)."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = next(
            (f for n, f in model.model_fields.items() if (f.alias or n) == part),
            None,
        )
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _model_in(annotation: object) -> type[BaseModel] | None:
    """The pydantic model inside `X`, `X | None`, `list[X]`, `Annotated[X, ...]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is None and not isinstance(annotation, types.UnionType):
        return None
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


__all__ = ["pydantic_errors"]
