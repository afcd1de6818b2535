"""A change touches exactly the pods whose configuration changes, and no other.

Each case builds a cluster with two unrelated Tunnels, applies one change, and checks
the affected set both against the expected pods and against a brute-force comparison
of two full renderings (so "nobody else" is checked, not assumed).
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from kipsec_operator.reconcile.affected import Change, affected_pods, changed_configs
from kipsec_operator.reconcile.cluster import Cluster
from kipsec_operator.reconcile.render import plan
from support.operator_objects import (
    external_peer,
    external_spec,
    namespace,
    pod,
    psk_mesh_spec,
    psk_secret,
    secret,
    tunnel,
    two_sided_spec,
)

Objects = list[dict[str, Any]]


def _world() -> Objects:
    return [
        namespace("default"),
        namespace("pay", allow_tunnels_from="default", team="pay"),
        namespace("shop", team="pay"),  # selected by "cross", but does not consent
        psk_secret(),
        psk_secret("other-psk", value="another secret key, 32 bytes...."),
        secret("unrelated", {"x": "y"}),
        tunnel("mesh", psk_mesh_spec()),
        tunnel("web", two_sided_spec()),
        tunnel(
            "cross",
            {
                **psk_mesh_spec("pay", "other-psk"),
                "selector": {
                    "from": {
                        "podSelector": {"matchLabels": {"app": "pay"}},
                        "namespaceSelector": {"matchLabels": {"team": "pay"}},
                    }
                },
            },
        ),
        pod("m1", "10.0.0.1", labels={"app": "mesh"}),
        pod("m2", "10.0.0.2", labels={"app": "mesh"}),
        pod("m3", "10.0.0.3", labels={"app": "mesh"}),
        pod("c1", "10.0.1.1", labels={"app": "client"}),
        pod("s1", "10.0.1.2", labels={"app": "server"}),
        pod("p1", "10.0.2.1", namespace="pay", labels={"app": "pay"}),
        pod("p2", "10.0.2.2", namespace="pay", labels={"app": "pay"}),
        pod("q1", "10.0.3.1", namespace="shop", labels={"app": "pay"}),
    ]


def _find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def _without(kind: str, name: str) -> Callable[[Objects], None]:
    def edit(objects: Objects) -> None:
        objects.remove(_find(objects, kind, name))

    return edit


def _edit(
    kind: str, name: str, change: Callable[[dict[str, Any]], None]
) -> Callable[[Objects], None]:
    def edit(objects: Objects) -> None:
        change(_find(objects, kind, name))

    return edit


def _set_ip(ip: str) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        obj["status"].update(podIP=ip, podIPs=[{"ip": ip}])

    return change


def _consent(value: str) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        obj["metadata"]["annotations"] = {"kipsec.io/allow-tunnels-from": value}

    return change


CASES: list[tuple[str, Change, Callable[[Objects], None], set[str]]] = [
    (
        "pod deleted",
        Change("Pod", "default", "m3"),
        _without("Pod", "m3"),
        {"default/m1", "default/m2", "default/m3"},
    ),
    (
        "pod added",
        Change("Pod", "default", "m4"),
        lambda o: o.append(pod("m4", "10.0.0.4", labels={"app": "mesh"})),
        {"default/m1", "default/m2", "default/m3", "default/m4"},
    ),
    (
        "pod added without IP",
        Change("Pod", "default", "m4"),
        lambda o: o.append(pod("m4", None, labels={"app": "mesh"})),
        {"default/m4"},  # a bootstrap Secret only: its peers learn of it once it has an IP
    ),
    (
        "pod re-IPed",
        Change("Pod", "default", "s1"),
        _edit("Pod", "s1", _set_ip("10.0.1.9")),
        {"default/c1", "default/s1"},
    ),
    (
        "pod relabelled out",
        Change("Pod", "default", "m1"),
        _edit("Pod", "m1", lambda p: p["metadata"]["labels"].update(app="none")),
        {"default/m1", "default/m2", "default/m3"},
    ),
    (
        "pod label nobody selects",
        Change("Pod", "default", "m1"),
        _edit("Pod", "m1", lambda p: p["metadata"]["labels"].update(color="blue")),
        set(),
    ),
    (
        "tunnel edited",
        Change("Tunnel", "default", "web"),
        _edit("Tunnel", "web", lambda t: t["spec"].update(mode="tunnel")),
        {"default/c1", "default/s1"},
    ),
    (
        "tunnel deleted",
        Change("Tunnel", "default", "mesh"),
        _without("Tunnel", "mesh"),
        {"default/m1", "default/m2", "default/m3"},
    ),
    (
        "referenced secret rotated",
        Change("Secret", "default", "other-psk"),
        _edit(
            "Secret",
            "other-psk",
            lambda s: s["data"].update(psk="bmV3IHNlY3JldCBrZXkgdmFsdWUhIQ=="),
        ),
        {"pay/p1", "pay/p2"},
    ),
    (
        "mesh psk rotated",
        Change("Secret", "default", "mesh-psk"),
        _edit(
            "Secret", "mesh-psk", lambda s: s["data"].update(psk="bmV3IHNlY3JldCBrZXkgdmFsdWUhIQ==")
        ),
        {"default/m1", "default/m2", "default/m3", "default/c1", "default/s1"},
    ),
    (
        "unrelated secret",
        Change("Secret", "default", "unrelated"),
        _edit("Secret", "unrelated", lambda s: s["data"].update(x="eg==")),
        set(),
    ),
    (
        "namespace relabelled",
        Change("Namespace", "pay"),
        _edit("Namespace", "pay", lambda n: n["metadata"]["labels"].update(team="web")),
        {"pay/p1", "pay/p2"},
    ),
    (
        "namespace withdraws its consent",
        Change("Namespace", "pay"),
        _edit("Namespace", "pay", lambda n: n["metadata"]["annotations"].clear()),
        {"pay/p1", "pay/p2"},
    ),
    (
        "namespace gives its consent",
        Change("Namespace", "shop"),
        _edit("Namespace", "shop", _consent("other, default")),
        {"pay/p1", "pay/p2", "shop/q1"},
    ),
    (
        "namespace consents to another namespace only",
        Change("Namespace", "shop"),
        _edit("Namespace", "shop", _consent("other")),
        set(),
    ),
    (
        "namespace consent rewritten with the same meaning",
        Change("Namespace", "pay"),
        _edit("Namespace", "pay", _consent(" default, other ")),
        set(),
    ),
]


@pytest.mark.parametrize(
    ("change", "edit", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_change_touches_exactly_the_pods_whose_configuration_changes(
    change: Change, edit: Callable[[Objects], None], expected: set[str]
) -> None:
    before_objects = _world()
    after_objects = copy.deepcopy(before_objects)
    edit(after_objects)
    before, after = Cluster.of(before_objects), Cluster.of(after_objects)
    affected = affected_pods(before, after, change)
    assert {f"{k[0]}/{k[1]}" for k in affected} == expected
    brute = changed_configs(plan(before).secrets(), plan(after).secrets())
    assert set(affected) == brute


def test_a_deleted_pod_is_reported_with_no_configuration() -> None:
    before_objects = _world()
    after_objects = copy.deepcopy(before_objects)
    _without("Pod", "m3")(after_objects)
    affected = affected_pods(
        Cluster.of(before_objects), Cluster.of(after_objects), Change("Pod", "default", "m3")
    )
    assert affected[("default", "m3")] is None
    remaining = affected[("default", "m1")]
    assert remaining is not None
    document = yaml.safe_load(base64.b64decode(remaining["data"]["config.yaml"]))
    assert [p["name"] for p in document["peers"]] == ["default/m2"]


def test_a_pod_getting_its_ip_gets_its_configuration_and_its_peers_learn_of_it() -> None:
    before_objects = [*_world(), pod("m4", None, labels={"app": "mesh"})]
    after_objects = copy.deepcopy(before_objects)
    _edit("Pod", "m4", _set_ip("10.0.0.4"))(after_objects)
    before, after = Cluster.of(before_objects), Cluster.of(after_objects)
    assert "config.yaml" not in plan(before).secrets()[("default", "m4")]["data"]
    affected = affected_pods(before, after, Change("Pod", "default", "m4"))
    assert {k[1] for k in affected} == {"m1", "m2", "m3", "m4"}
    configured = affected[("default", "m4")]
    assert configured is not None and "config.yaml" in configured["data"]


@pytest.mark.parametrize(
    ("change", "edit"),
    [
        (Change("ExternalPeer", "default", "a-site"), "delete the first of two overlapping"),
        (Change("Pod", "default", "in-subnet"), "a pod gets an address in the peer's subnet"),
    ],
)
def test_a_change_of_another_object_that_flips_an_external_peers_validity_reaches_its_pods(
    change: Change, edit: str
) -> None:
    """An ExternalPeer's validity depends on other ExternalPeers' subnets and on pod
    addresses: a change of those reaches the pods of the Tunnels naming it."""
    base = [
        namespace("default"),
        psk_secret("site-psk"),
        pod("c1", "10.0.0.1", labels={"app": "client"}),
        external_peer("b-site", address="192.0.2.20"),
        tunnel("t", external_spec("client", "b-site")),
    ]
    if change.kind == "ExternalPeer":
        before_objects, after_objects = [*base, external_peer("a-site")], base
    else:
        before_objects, after_objects = base, [*base, pod("in-subnet", "172.20.0.9")]
    before, after = Cluster.of(before_objects), Cluster.of(after_objects)
    affected = affected_pods(before, after, change)
    assert set(affected) == {("default", "c1")}
    assert set(affected) == changed_configs(plan(before).secrets(), plan(after).secrets())
