"""kopf builds no diff base for this operator (:class:`NoDiffBase`), which is right only
while no handler reacts to changes: kopf runs timers only (the index has its own watches)."""

from __future__ import annotations

import kopf

from kipsec_operator.handlers import Operator, register
from kipsec_operator.kube import Connection
from kipsec_operator.main import NoDiffBase, settings


def test_no_handler_needs_kopfs_diff_base() -> None:
    registry = kopf.OperatorRegistry()
    register(Operator(Connection("http://127.0.0.1:9")), registry)
    assert registry._changing.get_all_handlers() == []
    assert registry._watching.get_all_handlers() == []
    assert registry._spawning.get_all_handlers() != []


def test_the_diff_base_is_empty() -> None:
    storage = settings(standalone=True).persistence.diffbase_storage
    assert isinstance(storage, NoDiffBase)
    body = kopf.Body({"metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"x": 1}})
    assert storage.build(body=body) == {}


def test_no_diff_base_is_read_back() -> None:
    """kopf would parse this annotation on every watch event; nothing reads it here."""
    storage = settings(standalone=True).persistence.diffbase_storage
    stored = '{"spec": {"x": 1}}'
    body = kopf.Body(
        {
            "metadata": {
                "name": "p",
                "annotations": {"kopf.zalando.org/last-handled-configuration": stored},
            }
        }
    )
    assert kopf.AnnotationsDiffBaseStorage().fetch(body=body) == {"spec": {"x": 1}}
    assert storage.fetch(body=body) is None
