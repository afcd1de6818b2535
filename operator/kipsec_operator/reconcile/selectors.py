"""Kubernetes label selectors, evaluated the way the API server evaluates them.

`matchLabels` pairs and `matchExpressions` (In, NotIn, Exists, DoesNotExist) must all
hold; an empty selector matches everything. NotIn and DoesNotExist also match objects
without the label, as in Kubernetes. Selectors arrive as the camelCase dicts of a
resource's spec (already validated by :mod:`kipsec_operator.crds.models`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    """Whether `labels` satisfy `selector`; a None selector matches nothing."""
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(
        _requirement(expression, labels) for expression in selector.get("matchExpressions") or []
    )


def _requirement(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = expression["key"]
    operator = expression["operator"]
    values = expression.get("values") or []
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise ValueError(f"unknown selector operator {operator!r}")


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    """The labels of a Kubernetes object dict (empty when it has none)."""
    return dict((obj.get("metadata") or {}).get("labels") or {})


__all__ = ["labels_of", "matches"]
