"""The one error a bad sidecar configuration produces: every bad field, each with its path.

A configuration is written once and read by a human when it fails, so the error lists
all problems at once (not the first one), each as `path: message` where `path` is
the field as written in the document (camelCase keys, `[i]` for list items), e.g.
`peers[1].trafficSelectors.remote[0]: not a CIDR`. Messages never contain secret
values (PSKs, keys): only the field that holds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from ..core.errors import KipsecError


class FieldError(NamedTuple):
    """One problem: the document path of the field (`""` = the whole document) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def join_path(*parts: str | int) -> str:
    """`("peers", 1, "name")` → `peers[1].name`; empty parts are skipped."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part:
            out += f".{part}" if out else part
    return out


class ConfigError(KipsecError):
    """The sidecar configuration document is invalid; `errors` lists every bad field.

    `source` names where the document came from (a path, or `<string>`) and is only
    used in the message. `str()` is one line per bad field, ready for a log or a
    terminal.
    """

    def __init__(self, errors: Sequence[FieldError], *, source: str = "") -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.errors)
        head = f"invalid sidecar configuration{where}: {count} error{'s' if count != 1 else ''}"
        super().__init__("\n".join([head, *(f"  {e}" for e in self.errors)]))

    @property
    def paths(self) -> tuple[str, ...]:
        """The paths of the bad fields, in document order (handy for tests and status)."""
        return tuple(e.path for e in self.errors)

    def with_source(self, source: str) -> ConfigError:
        """The same errors, naming `source` in the message."""
        return ConfigError(self.errors, source=source)

    @classmethod
    def collect(cls, errors: Iterable[FieldError], *, source: str = "") -> ConfigError | None:
        """A ConfigError when `errors` is not empty, else None (for `raise` sites)."""
        found = list(errors)
        return cls(found, source=source) if found else None


__all__ = ["ConfigError", "FieldError", "join_path"]
