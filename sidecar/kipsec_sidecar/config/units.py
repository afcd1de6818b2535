"""Durations ("4h", "30m", "1h30m", "90s" or plain seconds) and sizes ("1Gi", "500M").

Kubernetes users write durations the way Go and kubectl print them and sizes the way
resource quantities are written (`k`/`M`/`G`/`T` decimal, `Ki`/`Mi`/`Gi`/
`Ti` binary), so the document accepts both forms and the model stores plain numbers:
seconds as `float`, sizes as `int`. The parsers raise `ValueError` with a message
meant for a human; the model turns it into a field error.
"""

from __future__ import annotations

import math
import re

DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$|^[0-9]+(\.[0-9]+)?$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_DURATION_RE = re.compile(DURATION_PATTERN)

SIZE_UNITS: dict[str, int] = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
SIZE_PATTERN = r"^[0-9]+(k|M|G|T|Ki|Mi|Gi|Ti)?$"
_SIZE_RE = re.compile(r"^([0-9]+)(k|M|G|T|Ki|Mi|Gi|Ti)?$")

#: Longest duration accepted (ten years): anything longer is a typo, and it keeps floats exact.
MAX_SECONDS = 10 * 365 * 86400.0
#: Largest size accepted: 2**63 - 1, what a kernel SA byte counter holds.
MAX_SIZE = 2**63 - 1


def parse_duration(value: object) -> float:
    """Seconds from a number or a duration string; `ValueError` when it is neither.

    `"1h30m"` is 5400.0, `"90s"` and `90` are 90.0. Negative values, `.nan` and
    `.inf` (each with its own message) are refused, and so are booleans (YAML turns
    `yes` into True).
    """
    if isinstance(value, bool):
        raise ValueError("must be a duration such as '30s', '5m', '4h' or a number of seconds")
    if isinstance(value, float) and not math.isfinite(value):
        # YAML's .nan / .inf / -.inf: no comparison below would describe them.
        raise ValueError("must be a finite number of seconds (not .nan or .inf)")
    if isinstance(value, int | float):
        if value > MAX_SECONDS:
            raise ValueError("longer than ten years: check the unit")
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if not _DURATION_RE.match(text):
            raise ValueError(
                f"not a duration: {value[:40]!r}; write e.g. '90s', '30m', '4h', '1h30m' "
                "or a number of seconds"
            )
        if _DURATION_PART.match(text):
            seconds = sum(float(n) * DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
        else:
            seconds = float(text)
    else:
        raise ValueError("must be a duration such as '30s', '5m', '4h' or a number of seconds")
    if seconds < 0:
        raise ValueError("must not be negative")
    if seconds > MAX_SECONDS:
        raise ValueError("longer than ten years: check the unit")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact duration string for `seconds` (`5400.0` → `"1h30m"`)."""
    if seconds == 0:
        return "0s"
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            out += f"{count}{unit}"
    return out


def parse_size(value: object) -> int:
    """A byte or packet count from an integer or a quantity string (`"1Gi"`, `"500M"`).

    Raises `ValueError` for anything else, for zero or negative numbers and for values
    above :data:`MAX_SIZE`.
    """
    if isinstance(value, bool):
        raise ValueError("must be a positive integer or a quantity such as '500M' or '4Gi'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) and value.is_integer():
        size = int(value)
    elif isinstance(value, str) and (match := _SIZE_RE.match(value.strip())):
        size = int(match.group(1)) * SIZE_UNITS[match.group(2) or ""]
    else:
        raise ValueError(
            "must be a positive integer or a quantity such as '500M' or '4Gi' "
            "(k, M, G, T decimal; Ki, Mi, Gi, Ti binary)"
        )
    if size <= 0:
        raise ValueError("must be positive")
    if size > MAX_SIZE:
        raise ValueError(f"must be at most {MAX_SIZE}")
    return size


__all__ = [
    "DURATION_PATTERN",
    "MAX_SECONDS",
    "MAX_SIZE",
    "SIZE_PATTERN",
    "format_duration",
    "parse_duration",
    "parse_size",
]
