"""Consent: which namespaces a Namespace lets Tunnels come from."""

from __future__ import annotations

from typing import Any

import pytest

from kipsec_operator.reconcile.consent import allowed_from, consents
from support.operator_objects import namespace


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", {"a"}),
        ("a,b", {"a", "b"}),
        (" a , b ,, ", {"a", "b"}),
        ("*", {"*"}),
        ("", set()),
    ],
)
def test_the_annotation_is_a_comma_separated_list(value: str, expected: set[str]) -> None:
    assert allowed_from(namespace("b", allow_tunnels_from=value)) == expected


@pytest.mark.parametrize(
    "obj",
    [
        None,
        namespace("b"),
        {"metadata": {"name": "b", "annotations": {"kipsec.io/allow-tunnels-from": ["a"]}}},
        {"metadata": {"name": "b", "annotations": None}},
        {"metadata": None},
    ],
    ids=["unknown namespace", "no annotation", "not a string", "null annotations", "null metadata"],
)
def test_a_missing_or_malformed_annotation_allows_nothing(obj: dict[str, Any] | None) -> None:
    assert allowed_from(obj) == frozenset()
    assert not consents("b", obj, "a")


def test_the_tunnels_own_namespace_always_consents() -> None:
    assert consents("a", namespace("a"), "a")
    assert consents("a", None, "a")


def test_a_star_consents_to_every_namespace() -> None:
    assert consents("b", namespace("b", allow_tunnels_from="*"), "anything")


def test_a_listed_namespace_must_match_exactly() -> None:
    obj = namespace("b", allow_tunnels_from="team-a, a-team")
    assert not consents("b", obj, "a")
    assert consents("b", obj, "team-a")
