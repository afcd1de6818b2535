"""The small declarative layer the configuration model is written in: typed, frozen
records whose fields are validated from the document's data.

The sidecar used pydantic for this. Importing it and building the model's two dozen
classes was a third of the daemon's imports and ~13 MiB at every start (pydantic,
pydantic-core's schemas, typing_extensions, importlib.metadata); without it a start
went from 0.59 to 0.31 s of CPU and from 51 to 38 MiB idle (``bench/sidecar_startup.py``,
bench/README.md). This module does the part the model uses, in plain Python, and
validates a document about as fast. It keeps pydantic's *lax* behaviour, which the
document's users and tests rely on, and its messages as
:mod:`kipsec_operator.reconcile.messages` rephrases them for the operator's models
(checked side by side on tens of thousands of mutated documents when it replaced it):

* an ``int`` field takes an integral float (``2.0``), a numeric string (``" 1_000 "``,
  ``"12.0"``) and a bool; a ``float`` field a numeric string; a ``bool`` field ``0``/``1``
  and ``yes``/``no``/``on``/``off``/``true``/``false``/``t``/``f``/``y``/``n`` in any
  case; a ``str`` field refuses numbers; ``nan`` and ``inf`` are refused everywhere;
* unknown keys are errors (with a "did you mean" hint), keys are the camelCase aliases
  (or the snake_case names), instances are frozen, every error of a document is
  collected, and messages never show the input;
* a regex ``pattern`` is searched and its ``$`` means the end of the text, as in the
  Rust engine pydantic used (Python's own ``$`` also matches before a final newline).

A model declares its fields with type annotations; ``Annotated`` metadata adds the
checks: :class:`Field` (bounds, lengths, pattern, alias), :class:`Before` and
:class:`After` (functions run before and after the type's own check; a ``ValueError``
they raise is the field's error), :class:`Serializer` and :class:`JsonSchema`. A method
decorated with :func:`model_check` checks the whole record once its fields are valid.
Records keep the names of pydantic's API that the code uses (``model_validate``,
``model_dump``, ``model_copy``, ``model_fields_set``, ``model_fields``), raising
:class:`ModelError` with the field errors already worded for the document.
``tests/unit/test_sidecar_config_fields.py`` pins the behaviour the document's own tests
do not reach.
"""

from __future__ import annotations

import hmac
import inspect
import json
import math
import re
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    ClassVar,
    Literal,
    Self,
    Union,
    dataclass_transform,
    get_args,
    get_origin,
    get_type_hints,
)

from .errors import FieldError, join_path

Loc = tuple[str | int, ...]
Errors = list[FieldError]


class _Invalid:
    """The result of a value that failed (its errors are in the error list)."""

    __slots__ = ()


INVALID: Any = _Invalid()

#: pydantic refuses integral floats from 2**63 on (they do not fit an i64).
_INT_FROM_FLOAT_LIMIT = 2.0**63
_INT_TOO_LARGE = "Unable to parse input string as an integer, exceeded maximum size"
_INT_TEXT = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?")
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


class ModelError(ValueError):
    """Validation failed; ``errors`` lists every bad field with its document path
    (relative to the data given to :meth:`Model.model_validate`)."""

    def __init__(self, errors: Iterable[FieldError]) -> None:
        self.errors: tuple[FieldError, ...] = tuple(dict.fromkeys(errors))  # once each
        super().__init__("\n".join(str(e) for e in self.errors))


class SecretStr:
    """A string never shown by ``repr``, ``str`` or a JSON dump (``**********``)."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def get_secret_value(self) -> str:
        return self._secret

    def __repr__(self) -> str:
        return f"SecretStr({str(self)!r})"

    def __str__(self) -> str:
        return "**********" if self._secret else ""

    def __eq__(self, other: object) -> bool:
        # Constant-time, as every comparison of key material in the project.
        return isinstance(other, SecretStr) and hmac.compare_digest(
            other._secret.encode("utf-8", "surrogatepass"),
            self._secret.encode("utf-8", "surrogatepass"),
        )

    def __hash__(self) -> int:
        return hash(self._secret)

    def __len__(self) -> int:
        return len(self._secret)


# --- metadata written in Annotated[...] ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """Bounds of a number (``ge``, ``gt``, ``le``, ``lt``), lengths of a string or list,
    a string's ``pattern``, and the document key when it is not the camelCase name."""

    ge: int | float | None = None
    gt: int | float | None = None
    le: int | float | None = None
    lt: int | float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class Before:
    """A function from the raw value to what the type then checks."""

    function: Callable[[Any], Any]
    #: What the JSON Schema says the document may hold, when the function widens it.
    json_input: Any = None


@dataclass(frozen=True, slots=True)
class After:
    """A function from the checked value to the stored one (raise ValueError to refuse)."""

    function: Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Serializer:
    """How the value is written back into a document (``json_only``: only for JSON)."""

    function: Callable[[Any], Any]
    json_only: bool = False


@dataclass(frozen=True, slots=True, eq=False)  # hashed by identity: it holds a dict
class JsonSchema:
    """The JSON Schema of the field, replacing the one made from its type."""

    schema: dict[str, Any]


class _Private:
    __slots__ = ("default",)

    def __init__(self, default: Any) -> None:
        self.default = default


def Private(default: Any = None) -> Any:
    """A per-instance attribute that is not a field: not validated, not dumped, and
    assignable although the record is frozen (e.g. the directory a document came from)."""
    return _Private(default)


def model_check(method: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Mark a method that checks the whole record after its fields validated; a
    ValueError it raises is an error at the record's path."""
    method.__model_check__ = True  # type: ignore[attr-defined]
    return method


def to_camel(name: str) -> str:
    """``ike_sa`` → ``ikeSa``: the document key of a field."""
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


# --- the checks of each kind of value -----------------------------------------------------


class Node(ABC):
    """Validates, dumps and describes one kind of value."""

    @abstractmethod
    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        """``value`` checked (and coerced), or INVALID with its errors appended."""

    def dump(self, value: Any, json_mode: bool, exclude_unset: bool) -> Any:
        return value

    @abstractmethod
    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        """The JSON Schema of the value's document form (shared records into ``defs``)."""


def _error(errors: Errors, loc: Loc, message: str) -> Any:
    errors.append(FieldError(join_path(*loc), message))
    return INVALID


def _given(schema: dict[str, Any], **keywords: Any) -> dict[str, Any]:
    """``schema`` with the ``keywords`` that are not None."""
    schema.update((key, value) for key, value in keywords.items() if value is not None)
    return schema


def _bound_errors(node: _Number, value: float) -> str | None:
    if node.le is not None and not value <= node.le:
        return f"must be less than or equal to {node.le}"
    if node.lt is not None and not value < node.lt:
        return f"must be less than {node.lt}"
    if node.ge is not None and not value >= node.ge:
        return f"must be greater than or equal to {node.ge}"
    if node.gt is not None and not value > node.gt:
        return f"must be greater than {node.gt}"
    return None


_UNDECODABLE = "must be a valid string, unable to parse raw data as a unicode string"


def _text(
    value: Any, loc: Loc, errors: Errors, kind: str = "must be a string", bad_utf8: str = ""
) -> Any:
    """A str, or bytes decoded as UTF-8 (pydantic's lax str); else INVALID and the error
    ``kind`` (``bad_utf8`` for bytes that are not UTF-8, ``kind`` when empty)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return _error(errors, loc, bad_utf8 or kind)
    return _error(errors, loc, kind)


class _Str(Node):
    def __init__(self, field: Field) -> None:
        self.min_length = field.min_length
        self.max_length = field.max_length
        self.pattern = field.pattern
        # The Rust engine's `$` is the end of the text; Python's also matches before "\n".
        pattern = field.pattern
        self._regex = None if pattern is None else re.compile(pattern.replace("$", r"\Z"))

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        text = _text(value, loc, errors, bad_utf8=_UNDECODABLE)
        if text is INVALID:
            return INVALID
        if self.min_length is not None and len(text) < self.min_length:
            s = "" if self.min_length == 1 else "s"
            return _error(errors, loc, f"must have at least {self.min_length} character{s}")
        if self.max_length is not None and len(text) > self.max_length:
            s = "" if self.max_length == 1 else "s"
            return _error(errors, loc, f"must have at most {self.max_length} character{s}")
        if self._regex is not None and not self._regex.search(text):
            return _error(errors, loc, f"must match pattern '{self.pattern}'")
        return text

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return _given(
            {"type": "string"},
            minLength=self.min_length,
            maxLength=self.max_length,
            pattern=self.pattern,
        )


class _Secret(Node):
    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        if isinstance(value, SecretStr):
            return value
        text = _text(value, loc, errors)
        return INVALID if text is INVALID else SecretStr(text)

    def dump(self, value: Any, json_mode: bool, exclude_unset: bool) -> Any:
        return str(value) if json_mode else value

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "string", "format": "password", "writeOnly": True}


class _Number(Node):
    def __init__(self, field: Field) -> None:
        self.ge, self.gt, self.le, self.lt = field.ge, field.gt, field.le, field.lt

    def _bounded(self, number: Any, loc: Loc, errors: Errors) -> Any:
        problem = _bound_errors(self, number)
        return number if problem is None else _error(errors, loc, problem)

    def _bounds_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return _given(
            schema,
            minimum=self.ge,
            exclusiveMinimum=self.gt,
            maximum=self.le,
            exclusiveMaximum=self.lt,
        )


class _Int(_Number):
    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        if isinstance(value, int):  # bool too: True is 1
            return self._bounded(int(value), loc, errors)
        if isinstance(value, float):
            if not math.isfinite(value):
                return _error(errors, loc, "must be a finite number")
            if not value.is_integer():
                return _error(errors, loc, "must be an integer")
            if abs(value) >= _INT_FROM_FLOAT_LIMIT:
                return _error(errors, loc, _INT_TOO_LARGE)
            return self._bounded(int(value), loc, errors)
        if isinstance(value, str | bytes | bytearray):
            text = _text(value, loc, errors, "must be an integer")
            if text is INVALID:
                return INVALID
            text = text.strip()
            if not _INT_TEXT.fullmatch(text):
                return _error(errors, loc, "must be an integer")
            try:
                number = int(text.partition(".")[0])
            except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
                return _error(errors, loc, _INT_TOO_LARGE)
            return self._bounded(number, loc, errors)
        return _error(errors, loc, "must be an integer")

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return self._bounds_schema({"type": "integer"})


class _Float(_Number):
    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str | bytes | bytearray):
            text = _text(value, loc, errors, "must be a number")
            if text is INVALID:
                return INVALID
            try:
                number = float(text.strip())
            except ValueError:
                return _error(errors, loc, "must be a number")
        else:
            return _error(errors, loc, "must be a number")
        if not math.isfinite(number):
            return _error(errors, loc, "must be a finite number")
        return self._bounded(number, loc, errors)

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return self._bounds_schema({"type": "number"})


class _Bool(Node):
    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        if isinstance(value, str | bytes | bytearray):
            text = _text(value, loc, errors, "must be true or false")
            if text is INVALID:
                return INVALID
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
        return _error(errors, loc, "must be true or false")

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "boolean"}


class _Literal(Node):
    def __init__(self, values: tuple[Any, ...]) -> None:
        self.values = values
        shown = [repr(v) for v in values]
        expected = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"
        self._message = f"must be {expected}"

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        # A str matches a str; an int, a bool or an integral float matches an int.
        for v in self.values:
            if isinstance(value, str) == isinstance(v, str) and v == value:
                return v
        if (  # pydantic compares ints as i64 and says so for larger ones
            isinstance(value, int)
            and not -(2**63) <= value < 2**63
            and any(isinstance(v, int) for v in self.values)
        ):
            return _error(errors, loc, _INT_TOO_LARGE)
        return _error(errors, loc, self._message)

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        if len(self.values) == 1:
            schema: dict[str, Any] = {"const": self.values[0]}
        else:
            schema = {"enum": list(self.values)}
        kinds = {type(v) for v in self.values}
        if kinds == {str}:
            schema["type"] = "string"
        elif kinds == {int}:
            schema["type"] = "integer"
        return schema


class _List(Node):
    def __init__(self, item: Node, field: Field) -> None:
        self.item = item
        self.min_length = field.min_length
        self.max_length = field.max_length

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        if not isinstance(value, list | tuple | set | frozenset):
            return _error(errors, loc, "must be a list")
        if self.max_length is not None and len(value) > self.max_length:
            s = "" if self.max_length == 1 else "s"
            return _error(
                errors,
                loc,
                f"must have at most {self.max_length} item{s} after validation, not {len(value)}",
            )
        before = len(errors)
        out = [self.item.validate(v, (*loc, i), errors) for i, v in enumerate(value)]
        if len(errors) > before:
            return INVALID
        if self.min_length is not None and len(out) < self.min_length:
            s = "" if self.min_length == 1 else "s"
            return _error(
                errors,
                loc,
                f"must have at least {self.min_length} item{s} after validation, not {len(out)}",
            )
        return out

    def dump(self, value: Any, json_mode: bool, exclude_unset: bool) -> Any:
        return [self.item.dump(v, json_mode, exclude_unset) for v in value]

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        schema = {"type": "array", "items": self.item.json_schema(defs)}
        return _given(schema, minItems=self.min_length, maxItems=self.max_length)


class _Tuple(Node):
    def __init__(self, items: tuple[Node, ...]) -> None:
        self.items = items

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        if not isinstance(value, list | tuple):
            return _error(errors, loc, "must be a valid tuple")
        if len(value) > len(self.items):
            return _error(
                errors,
                loc,
                f"Tuple should have at most {len(self.items)} items after validation, "
                f"not {len(value)}",
            )
        before = len(errors)
        out = []
        for i, node in enumerate(self.items):
            if i < len(value):
                out.append(node.validate(value[i], (*loc, i), errors))
            else:
                _error(errors, (*loc, i), "required")
        return INVALID if len(errors) > before else tuple(out)

    def dump(self, value: Any, json_mode: bool, exclude_unset: bool) -> Any:
        pairs = zip(self.items, value, strict=True)
        items = [node.dump(v, json_mode, exclude_unset) for node, v in pairs]
        return items if json_mode else tuple(items)

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        n = len(self.items)
        prefix = [node.json_schema(defs) for node in self.items]
        return {"type": "array", "prefixItems": prefix, "minItems": n, "maxItems": n}


class _Optional(Node):
    def __init__(self, inner: Node) -> None:
        self.inner = inner

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        return None if value is None else self.inner.validate(value, loc, errors)

    def dump(self, value: Any, json_mode: bool, exclude_unset: bool) -> Any:
        return None if value is None else self.inner.dump(value, json_mode, exclude_unset)

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        inner = self.inner.json_schema(defs)
        options = inner["anyOf"] if list(inner) == ["anyOf"] else [inner]
        return {"anyOf": [*options, {"type": "null"}]}


class _ModelNode(Node):
    def __init__(self, model: type[Model]) -> None:
        self.model = model

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        if isinstance(value, self.model):
            return value
        if not isinstance(value, dict):
            return _error(errors, loc, "must be a mapping")
        return self.model._from_mapping(value, loc, errors)

    def dump(self, value: Any, json_mode: bool, exclude_unset: bool) -> Any:
        return value._dump(json_mode, exclude_unset, by_alias=True)

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        name = self.model.__name__
        if name not in defs:
            defs[name] = {}  # placeholder: a model that refers to itself stops here
            defs[name] = self.model._json_schema(defs)
        return {"$ref": f"#/$defs/{name}"}


class _Wrapped(Node):
    """A type with functions before and after its check, a serializer or a schema."""

    def __init__(
        self,
        inner: Node,
        befores: list[Before],
        afters: list[After],
        serializer: Serializer | None,
        schema: JsonSchema | None,
    ) -> None:
        self.inner = inner
        # pydantic runs the last Before first: each wraps everything written before it.
        self.befores = [b.function for b in reversed(befores)]
        self.before_inputs = [b.json_input for b in befores if b.json_input is not None]
        self.afters = [a.function for a in afters]
        self.serializer = serializer
        self.schema = schema

    def validate(self, value: Any, loc: Loc, errors: Errors) -> Any:
        try:
            for function in self.befores:
                value = function(value)
        except ValueError as exc:
            return _error(errors, loc, str(exc))
        value = self.inner.validate(value, loc, errors)
        if value is INVALID:
            return INVALID
        try:
            for function in self.afters:
                value = function(value)
        except ValueError as exc:
            return _error(errors, loc, str(exc))
        return value

    def dump(self, value: Any, json_mode: bool, exclude_unset: bool) -> Any:
        if self.serializer is not None and (json_mode or not self.serializer.json_only):
            return self.serializer.function(value)
        return self.inner.dump(value, json_mode, exclude_unset)

    def json_schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        if self.schema is not None:
            return dict(self.schema.schema)
        if self.before_inputs:
            return _input_schema(self.before_inputs[-1], defs)
        return self.inner.json_schema(defs)


def _input_schema(annotation: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a :class:`Before`'s ``json_input``: a type, or a union of types
    the document may hold before the function turns it into the field's type."""
    if get_origin(annotation) in (Union, types.UnionType):
        return {"anyOf": [_node(a).json_schema(defs) for a in get_args(annotation)]}
    return _node(annotation).json_schema(defs)


def _node(annotation: Any, constraints: Field | None = None) -> Node:
    """The node that checks values of the type ``annotation``."""
    field = constraints or Field()
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *metadata = get_args(annotation)
        merged = field
        befores: list[Before] = []
        afters: list[After] = []
        serializer: Serializer | None = None
        schema: JsonSchema | None = None
        for item in metadata:
            if isinstance(item, Field):
                merged = _merge_fields(merged, item)
            elif isinstance(item, Before):
                befores.append(item)
            elif isinstance(item, After):
                afters.append(item)
            elif isinstance(item, Serializer):
                serializer = item
            elif isinstance(item, JsonSchema):
                schema = item
        inner = _node(base, merged)
        if not (befores or afters or serializer or schema):
            return inner
        return _Wrapped(inner, befores, afters, serializer, schema)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(args) < len(get_args(annotation)):
            return _Optional(_node(args[0], constraints))
        raise TypeError(f"unions other than X | None are not supported: {annotation}")
    if origin is Literal:
        return _Literal(get_args(annotation))
    if origin is list:
        (item,) = get_args(annotation)
        return _List(_node(item), field)
    if origin is tuple:
        return _Tuple(tuple(_node(a) for a in get_args(annotation)))
    if annotation is str:
        return _Str(field)
    if annotation is bool:
        return _Bool()
    if annotation is int:
        return _Int(field)
    if annotation is float:
        return _Float(field)
    if annotation is SecretStr:
        return _Secret()
    if isinstance(annotation, type) and issubclass(annotation, Model):
        return _ModelNode(annotation)
    raise TypeError(f"unsupported field type {annotation!r}")


def _merge_fields(a: Field, b: Field) -> Field:
    values = {name: getattr(b, name) for name in Field.__slots__ if getattr(b, name) is not None}
    return Field(**{**{n: getattr(a, n) for n in Field.__slots__}, **values})


# --- records ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldInfo:
    """One field of a model: its document key, whether it must be given, its default."""

    name: str
    alias: str
    annotation: Any
    required: bool
    default: Any
    node: Node

    def default_value(self) -> Any:
        return list(self.default) if isinstance(self.default, list) else self.default


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Model:
    """A frozen record validated from a mapping (see the module docstring)."""

    model_fields: ClassVar[dict[str, FieldInfo]] = {}
    _fields: ClassVar[tuple[FieldInfo, ...]] = ()
    _checks: ClassVar[tuple[Callable[[Any], Any], ...]] = ()
    _private: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = inspect.get_annotations(cls)
        hints = get_type_hints(cls, include_extras=True)
        fields = dict(cls.model_fields)
        for name in own:
            hint = hints[name]
            if get_origin(hint) is ClassVar or name.startswith("_"):
                continue
            alias = to_camel(name)
            if get_origin(hint) is Annotated:
                for item in get_args(hint)[1:]:
                    if isinstance(item, Field) and item.alias is not None:
                        alias = item.alias
            required = name not in cls.__dict__
            default = None if required else cls.__dict__[name]
            fields[name] = FieldInfo(name, alias, hint, required, default, _node(hint))
            if not required:
                delattr(cls, name)  # the instance's __dict__ holds every field
        cls.model_fields = fields
        cls._fields = tuple(fields.values())
        cls._checks = tuple(
            value for value in cls.__dict__.values() if getattr(value, "__model_check__", False)
        )
        private = dict(cls._private)
        for name, value in list(cls.__dict__.items()):
            if isinstance(value, _Private):
                private[name] = value.default
                setattr(cls, name, value.default)
        cls._private = private

    def __init__(self, **data: Any) -> None:
        errors: Errors = []
        built = type(self)._from_mapping(data, (), errors)
        if built is INVALID:
            raise ModelError(errors)
        object.__setattr__(self, "__dict__", built.__dict__)

    # --- validation -----------------------------------------------------------------

    @classmethod
    def model_validate(cls, data: object) -> Self:
        """The record for ``data`` (a mapping, or already a record); ModelError lists
        every problem otherwise."""
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ModelError([FieldError("", "must be a mapping")])
        errors: Errors = []
        built = cls._from_mapping(data, (), errors)
        if built is INVALID:
            raise ModelError(errors)
        return built  # type: ignore[no-any-return]

    @classmethod
    def _from_mapping(cls, data: dict[Any, Any], loc: Loc, errors: Errors) -> Any:
        before = len(errors)
        values: dict[str, Any] = {}
        given: set[str] = set()
        used: set[str] = set()
        for field in cls._fields:
            if field.alias in data:
                key = field.alias
            elif field.name in data:
                key = field.name
            else:
                if field.required:
                    _error(errors, (*loc, field.alias), "required")
                else:
                    values[field.name] = field.default_value()
                continue
            used.add(key)
            value = field.node.validate(data[key], (*loc, key), errors)
            values[field.name] = value
            given.add(field.name)
        for key in data:
            if not isinstance(key, str):
                part = key if isinstance(key, int) else str(key)
                _error(errors, (*loc, part), "Keys should be strings")
            elif key not in used:
                _error(errors, (*loc, key), cls._unknown_field(key))
        if len(errors) > before:
            return INVALID
        record = cls._build(values, given)
        for check in cls._checks:
            try:
                check(record)
            except ValueError as exc:
                return _error(errors, loc, str(exc))
        return record

    @classmethod
    def _unknown_field(cls, name: str) -> str:
        import difflib  # only when a document has a typo

        known = [f.alias for f in cls._fields]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if known and not close:
            hint = f"; known fields here: {', '.join(known)}"
        return f"unknown field {name[:60]!r}{hint}"

    @classmethod
    def _build(cls, values: dict[str, Any], given: set[str]) -> Self:
        record = object.__new__(cls)
        state = record.__dict__
        state.update(values)
        state["__fields_set__"] = given
        return record

    # --- the record's API -------------------------------------------------------------

    @property
    def model_fields_set(self) -> set[str]:
        """Names of the fields the data gave (a default is not 'set')."""
        given: set[str] = self.__dict__["__fields_set__"]
        return set(given)

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Self:
        """A copy with ``update`` (field name → value, not validated) applied."""
        changes = update or {}
        values = {f.name: self.__dict__[f.name] for f in self._fields}
        values.update(changes)
        copy = self._build(values, self.model_fields_set | set(changes))
        for name in self._private:
            if name in self.__dict__:
                copy.__dict__[name] = self.__dict__[name]
        return copy

    def model_dump(
        self,
        *,
        mode: Literal["python", "json"] = "python",
        by_alias: bool = True,
        exclude_unset: bool = False,
    ) -> dict[str, Any]:
        """The record as a mapping (document keys by default); ``mode="json"`` gives JSON
        types (durations as strings, secrets masked)."""
        return self._dump(mode == "json", exclude_unset, by_alias=by_alias)

    def model_dump_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), separators=(",", ":"))

    def _dump(self, json_mode: bool, exclude_unset: bool, *, by_alias: bool) -> dict[str, Any]:
        given = self.__dict__["__fields_set__"]
        return {
            (f.alias if by_alias else f.name): f.node.dump(
                self.__dict__[f.name], json_mode, exclude_unset
            )
            for f in self._fields
            if not exclude_unset or f.name in given
        }

    @classmethod
    def _json_schema(cls, defs: dict[str, Any]) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        for field in cls._fields:
            schema = field.node.json_schema(defs)
            if not field.required:
                # As pydantic wrote it: a field's own serializer is not applied to its
                # default (durations stay seconds, mtu null), a record's are.
                node = field.node
                while isinstance(node, _Wrapped):
                    node = node.inner
                schema["default"] = node.dump(field.default, True, False)
            properties[field.alias] = schema
        out: dict[str, Any] = {
            "additionalProperties": False,
            "properties": properties,
            "title": cls.__name__,
            "type": "object",
        }
        if cls.__doc__:
            out["description"] = inspect.cleandoc(cls.__doc__)
        required = [f.alias for f in cls._fields if f.required]
        if required:
            out["required"] = required
        return out

    @classmethod
    def model_json_schema(cls) -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of the record's document form, shared
        records under ``$defs``."""
        defs: dict[str, Any] = {}
        schema = cls._json_schema(defs)
        if defs:
            schema["$defs"] = defs
        return schema

    # --- frozen, compared by value, shown without secrets -----------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._private:
            object.__setattr__(self, name, value)
            return
        raise AttributeError(f"{type(self).__name__} is frozen; use model_copy(update=...)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def _values(self) -> tuple[Any, ...]:
        return tuple(self.__dict__[f.name] for f in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Model)
        return self._values() == other._values() and all(
            getattr(self, n) == getattr(other, n) for n in self._private
        )

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def _shown(self) -> list[str]:
        # Secrets are SecretStr, whose repr is masked.
        return [f"{f.name}={self.__dict__[f.name]!r}" for f in self._fields]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(self._shown())})"

    def __str__(self) -> str:
        return " ".join(self._shown())


__all__ = [
    "After",
    "Before",
    "Field",
    "FieldInfo",
    "JsonSchema",
    "Model",
    "ModelError",
    "Private",
    "SecretStr",
    "Serializer",
    "model_check",
    "to_camel",
]
