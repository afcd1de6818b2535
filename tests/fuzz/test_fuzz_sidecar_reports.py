"""Random `/status` bodies: the operator's parser answers a report or a StatusError.

Three sources: arbitrary bytes, arbitrary JSON values, and the sidecar's own status JSON
(with a peer that is down and says why) with one value replaced anywhere by junk.
Whatever a pod's health port answers, the operator neither crashes nor reports an SA, or
a failure, for a peer the pod's document does not list, nor a reason outside the closed set.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kipsec_operator.sidecar_reports import MAX_STATUS_BYTES, StatusError, parse_status
from kipsec_sidecar.handshake_failures import REASONS
from kipsec_sidecar.state import PeerView
from support.controller_double import example_snapshot

EXPECTED = frozenset({"b", "d"})
DOWN = PeerView("d", "10.20.0.4", "ike", "onStart", "down", None, (), "PEER_DEAD", "peer_dead")
SNAPSHOT = replace(example_snapshot(), peers=(*example_snapshot().peers, DOWN))
VALID: dict[str, Any] = json.loads(json.dumps({"phase": "running", **SNAPSHOT.to_json()}))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _parse(body: bytes) -> None:
    try:
        report = parse_status(body, EXPECTED)
    except StatusError:
        return
    assert report.established <= EXPECTED
    assert report.last_error is None or len(report.last_error) < 600
    assert all(peer in EXPECTED and reason in REASONS for peer, reason in report.failures)


@given(st.binary(max_size=512))
def test_any_bytes(body: bytes) -> None:
    _parse(body)


@given(json_values)
def test_any_json_value(value: object) -> None:
    _parse(json.dumps(value).encode())


def _paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


PATHS = _paths(VALID)[1:]


@given(st.sampled_from(PATHS), json_values)
def test_the_sidecars_status_with_one_value_replaced(path: tuple[Any, ...], junk: object) -> None:
    document = json.loads(json.dumps(VALID))
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = junk
    _parse(json.dumps(document).encode())


def test_a_body_beyond_the_bound_is_refused_before_parsing() -> None:
    with pytest.raises(StatusError, match="larger than"):
        parse_status(b" " * (MAX_STATUS_BYTES + 1), EXPECTED)
