"""The benchmarks' ``--variant NAME=VAR=VALUE[,VAR=VALUE...]`` option: the same
measurement again with kipsec processes run under other environment variables (another
code tree on ``PYTHONPATH``, an allocator setting), in the same interleaved rounds."""

from __future__ import annotations

from collections.abc import Iterable


def parse_variants(given: Iterable[str]) -> dict[str, dict[str, str]]:
    """Variant name → its environment variables, from each ``NAME=VAR=VALUE,...``."""
    variants: dict[str, dict[str, str]] = {}
    for variant in given:
        name, _, settings = variant.partition("=")
        variants[name] = dict(item.split("=", 1) for item in settings.split(","))
    return variants


__all__ = ["parse_variants"]
