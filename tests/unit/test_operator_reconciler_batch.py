"""A batch of changes may touch exactly the pods its changes may touch one by one."""

from __future__ import annotations

import copy

import pytest

from kipsec_operator import reconciler as reconciler_module
from kipsec_operator.reconcile.affected import Change, candidates
from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.peers import TunnelIndex, selected, selects_any
from kipsec_operator.reconcile.render import plan
from kipsec_operator.reconcile.validation import parse_spec
from kipsec_operator.reconciler import batch_candidates, pod_batch
from support.operator_objects import (
    namespace,
    pod,
    psk_mesh_spec,
    psk_secret,
    tunnel,
    two_sided_spec,
)

BEFORE = [
    namespace("default"),
    psk_secret(),
    tunnel("red", psk_mesh_spec(app="red")),
    tunnel("blue", psk_mesh_spec(app="blue")),
    tunnel("green", psk_mesh_spec(app="green")),
    *(pod(f"r{i}", f"10.0.1.{i}", labels={"app": "red"}) for i in (1, 2)),
    *(pod(f"b{i}", f"10.0.2.{i}", labels={"app": "blue"}) for i in (1, 2)),
    *(pod(f"g{i}", f"10.0.3.{i}", labels={"app": "green"}) for i in (1, 2)),
]


def test_a_batch_is_the_union_of_its_changes() -> None:
    after_objects = copy.deepcopy(BEFORE)
    red = next(o for o in after_objects if o["metadata"]["name"] == "red")
    red["spec"]["selector"]["from"]["podSelector"]["matchLabels"] = {"app": "green"}
    b1 = next(o for o in after_objects if o["metadata"]["name"] == "b1")
    b1["status"]["podIP"] = b1["status"]["podIPs"][0]["ip"] = "10.0.2.9"
    before, after = Cluster.of(BEFORE), Cluster.of(after_objects)
    changes = [Change("Tunnel", "default", "red"), Change("Pod", "default", "b1")]

    one_by_one = set().union(*(candidates(before, c) | candidates(after, c) for c in changes))
    assert batch_candidates(before, after, changes) == one_by_one
    assert {name for _, name in one_by_one} == {"r1", "r2", "g1", "g2", "b1", "b2"}


def test_a_deleted_tunnel_still_touches_its_former_pods() -> None:
    after = Cluster.of([o for o in BEFORE if o["metadata"]["name"] != "blue"])
    keys = batch_candidates(Cluster.of(BEFORE), after, [Change("Tunnel", "default", "blue")])
    assert keys == {("default", "b1"), ("default", "b2")}


def test_a_pod_batch_may_take_the_memberships_the_last_pass_found() -> None:
    after_objects = copy.deepcopy(BEFORE)
    b1 = next(o for o in after_objects if o["metadata"]["name"] == "b1")
    b1["metadata"]["labels"] = {"app": "green"}  # moves from blue to green
    before, after = Cluster.of(BEFORE), Cluster.of(after_objects)
    found = pod_batch(before, after, {("default", "b1")}, plan(before).selected)
    assert found == pod_batch(before, after, {("default", "b1")})
    assert found[1] == {("default", "blue"), ("default", "green")}


def test_selects_any_agrees_with_selected_pod_by_pod() -> None:
    across = two_sided_spec("client", "server")
    across["selector"]["to"]["namespaceSelector"] = {"matchLabels": {"team": "b"}}
    objects = [
        namespace("default"),
        namespace("open", allow_tunnels_from="default", team="b"),
        namespace("closed", team="b"),
        psk_secret(),
        tunnel("mesh", psk_mesh_spec(app="mesh")),
        tunnel("across", across),
        pod("m1", "10.0.0.1", labels={"app": "mesh"}),
        pod("c1", "10.0.0.2", labels={"app": "client"}),
        pod("s1", "10.0.1.1", namespace="open", labels={"app": "server"}),
        pod("s2", "10.0.2.1", namespace="closed", labels={"app": "server"}),
        pod("s3", "10.0.0.3", labels={"app": "server"}),
        pod("x1", "10.0.0.4", labels={"app": "other"}),
    ]
    cluster = Cluster.of(objects)
    for tunnel_key, obj in cluster.tunnels.items():
        spec = parse_spec(obj)
        assert not isinstance(spec, list)
        members = set().union(*selected(obj, spec, cluster))
        for key in cluster.pods:
            assert selects_any(obj, spec, cluster, [key]) == (key in members), (tunnel_key, key)
    assert members == {("default", "c1"), ("open", "s1")}  # "across": no consent, no label


def test_a_small_pod_batch_finds_what_selecting_every_tunnel_finds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    after_objects = copy.deepcopy(BEFORE)
    b1 = next(o for o in after_objects if o["metadata"]["name"] == "b1")
    b1["metadata"]["labels"] = {"app": "green"}
    g2 = next(o for o in after_objects if o["metadata"]["name"] == "g2")
    g2["status"]["podIP"] = g2["status"]["podIPs"][0]["ip"] = "10.0.3.9"
    after_objects.append(pod("r3", "10.0.1.3", labels={"app": "red"}))
    before, after = Cluster.of(BEFORE), Cluster.of(after_objects)
    changed = {("default", "b1"), ("default", "g2"), ("default", "r3"), ("default", "r1")}
    few = pod_batch(before, after, changed)
    monkeypatch.setattr(reconciler_module, "FEW_PODS", 0)
    assert few == pod_batch(before, after, changed)
    assert few[1] == {("default", "red"), ("default", "blue"), ("default", "green")}


@pytest.mark.parametrize("few", [16, 0])
def test_the_tunnel_index_narrows_a_pod_batch_without_changing_it(
    few: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Tunnels the index leaves out select none of the changed pods, whatever their
    selectors: matchLabels, expressions only, an empty podSelector, another namespace."""
    anything = psk_mesh_spec(app="unused")
    anything["selector"]["from"]["podSelector"] = {}
    expressions = psk_mesh_spec(app="unused")
    expressions["selector"]["from"]["podSelector"] = {
        "matchExpressions": [{"key": "app", "operator": "In", "values": ["red"]}]
    }
    invalid = psk_mesh_spec(app="red")
    invalid["selector"]["from"]["podSelector"]["matchLabels"] = {"app": 7}
    objects = [
        *copy.deepcopy(BEFORE),
        namespace("other", allow_tunnels_from="default"),
        tunnel("anything", anything, namespace="other"),
        tunnel("expressions", expressions),
        tunnel("across", two_sided_spec("blue", "green")),
        tunnel("invalid", invalid),
    ]
    before = Cluster.of(objects)
    b1 = next(o for o in objects if o["metadata"]["name"] == "b1")
    b1["metadata"]["labels"] = {"app": "green"}
    objects.append(pod("r3", "10.0.1.3", labels={"app": "red"}))
    objects.append(pod("o1", "10.0.9.1", namespace="other", labels={"app": "blue"}))
    after = Cluster.of(objects)
    specs = {}
    for key, obj in after.tunnels.items():
        parsed = parse_spec(obj)
        if not isinstance(parsed, list):
            specs[key] = parsed
    index = TunnelIndex.of(after.tunnels, specs)
    monkeypatch.setattr(reconciler_module, "FEW_PODS", few)
    for changed in (
        {("default", "b1")},
        {("default", "r3")},
        {("other", "o1")},
        {("default", "g1")},
    ):
        assert pod_batch(before, after, changed, index=index) == pod_batch(before, after, changed)
    assert index.may_select({"app": "blue"}) == {
        ("default", "blue"),
        ("default", "across"),
        ("other", "anything"),
        ("default", "expressions"),
    }
    replaced = {
        **after.tunnels,
        ("default", "red"): copy.deepcopy(after.tunnels[("default", "red")]),
    }
    assert index.current(after.tunnels) and not index.current(replaced)
    red = replaced[("default", "red")]
    assert index.spec_of(("default", "red"), red) is specs[("default", "red")]
    red["spec"]["selector"]["from"]["podSelector"]["matchLabels"] = {"app": "blue"}
    assert index.spec_of(("default", "red"), red) is None
