"""Links between the pods a Tunnel selects, and the traffic selectors of each link."""

from __future__ import annotations

from typing import Any

import pytest

from kipsec_operator.crds.models import TunnelSpec
from kipsec_operator.reconcile.cluster import Cluster, ObjectKey
from kipsec_operator.reconcile.peers import (
    Link,
    Links,
    all_links,
    refusals,
    traffic_selectors,
    tunnel_links,
)
from support.operator_objects import (
    namespace,
    pod,
    psk_mesh_spec,
    psk_secret,
    tunnel,
    two_sided_spec,
)


def _links(objects: list[dict[str, Any]]) -> Links:
    cluster = Cluster.of(objects)
    specs = {k: TunnelSpec.model_validate(t["spec"]) for k, t in cluster.tunnels.items()}
    return all_links(cluster, specs)


def _peers(links: Links) -> dict[str, list[str]]:
    return {
        f"{k[0]}/{k[1]}": sorted(link.remote.peer_name for link in v)
        for k, v in sorted(links.by_pod.items())
    }


def _mesh(count: int, **pod_args: Any) -> list[dict[str, Any]]:
    return [
        pod(f"m{i}", f"10.0.0.{i}", labels={"app": "mesh"}, **pod_args) for i in range(1, count + 1)
    ]


BASE = [namespace("default"), psk_secret()]


def test_a_mesh_of_three_links_every_pod_with_the_two_others() -> None:
    links = _links([*BASE, tunnel("t", psk_mesh_spec()), *_mesh(3)])
    assert _peers(links) == {
        "default/m1": ["default/m2", "default/m3"],
        "default/m2": ["default/m1", "default/m3"],
        "default/m3": ["default/m1", "default/m2"],
    }


def test_a_two_sided_tunnel_links_each_side_only_with_the_other() -> None:
    objects = [
        *BASE,
        tunnel("t", two_sided_spec()),
        pod("c1", "10.0.0.1", labels={"app": "client"}),
        pod("c2", "10.0.0.2", labels={"app": "client"}),
        pod("s1", "10.0.0.3", labels={"app": "server"}),
        pod("other", "10.0.0.4", labels={"app": "other"}),
    ]
    assert _peers(_links(objects)) == {
        "default/c1": ["default/s1"],
        "default/c2": ["default/s1"],
        "default/s1": ["default/c1", "default/c2"],
    }


def test_a_pod_without_an_ip_has_no_links_yet() -> None:
    objects = [
        *BASE,
        tunnel("t", psk_mesh_spec()),
        *_mesh(2),
        pod("m9", None, labels={"app": "mesh"}),
    ]
    assert _peers(_links(objects)) == {"default/m1": ["default/m2"], "default/m2": ["default/m1"]}


def test_without_a_namespace_selector_only_the_tunnels_namespace_is_selected() -> None:
    objects = [
        *BASE,
        namespace("other"),
        tunnel("t", psk_mesh_spec()),
        *_mesh(2),
        pod("x", "10.0.1.1", namespace="other", labels={"app": "mesh"}),
    ]
    assert "other/x" not in _peers(_links(objects))


def test_a_namespace_selector_selects_pods_in_labelled_namespaces() -> None:
    spec = two_sided_spec()
    spec["selector"]["from"]["namespaceSelector"] = {"matchLabels": {"team": "pay"}}
    objects = [
        *BASE,
        namespace("pay-a", allow_tunnels_from="default", team="pay"),
        namespace("web", allow_tunnels_from="default", team="web"),
        tunnel("t", spec),
        pod("s1", "10.0.0.3", labels={"app": "server"}),
        pod("c1", "10.0.1.1", namespace="pay-a", labels={"app": "client"}),
        pod("c2", "10.0.2.1", namespace="web", labels={"app": "client"}),
        pod("c3", "10.0.0.9", labels={"app": "client"}),  # Tunnel's namespace, not labelled
    ]
    assert _peers(_links(objects)) == {
        "default/s1": ["pay-a/c1"],
        "pay-a/c1": ["default/s1"],
    }


def _cross(consent: str | None) -> list[dict[str, Any]]:
    """A Tunnel in `default` whose clients are in namespace `pay` (consenting with
    `consent` as its annotation, or not at all when None)."""
    spec = two_sided_spec()
    spec["selector"]["from"]["namespaceSelector"] = {"matchLabels": {"team": "pay"}}
    return [
        *BASE,
        namespace("pay", allow_tunnels_from=consent, team="pay"),
        tunnel("t", spec),
        pod("s1", "10.0.0.3", labels={"app": "server"}),
        pod("c1", "10.0.1.1", namespace="pay", labels={"app": "client"}),
    ]


@pytest.mark.parametrize("consent", [None, "", "other", "other, team-default", " , "])
def test_pods_of_a_namespace_that_does_not_consent_take_no_part(consent: str | None) -> None:
    assert _peers(_links(_cross(consent))) == {}


@pytest.mark.parametrize("consent", ["default", "other, default", " default ", "*"])
def test_pods_of_a_namespace_that_lists_the_tunnels_namespace_take_part(consent: str) -> None:
    assert _peers(_links(_cross(consent))) == {
        "default/s1": ["pay/c1"],
        "pay/c1": ["default/s1"],
    }


def test_a_refusing_namespace_is_named_with_the_side_it_is_selected_by() -> None:
    objects = _cross(None)
    cluster = Cluster.of(objects)
    t = cluster.tunnels[("default", "t")]
    assert refusals(t, TunnelSpec.model_validate(t["spec"]), cluster) == [
        'spec.selector.from.namespaceSelector: namespace "pay" does not allow Tunnels'
        ' from "default" (annotation kipsec.io/allow-tunnels-from)'
    ]


def test_a_refusing_namespace_without_matching_pods_is_not_named() -> None:
    objects = [o for o in _cross(None) if o["metadata"]["name"] != "c1"]
    cluster = Cluster.of(objects)
    t = cluster.tunnels[("default", "t")]
    assert refusals(t, TunnelSpec.model_validate(t["spec"]), cluster) == []


def test_a_pod_pair_claimed_by_two_tunnels_keeps_the_first_and_reports_the_second() -> None:
    objects = [*BASE, tunnel("a", psk_mesh_spec()), tunnel("b", psk_mesh_spec()), *_mesh(2)]
    links = _links(objects)
    assert {link.tunnel for v in links.by_pod.values() for link in v} == {("default", "a")}
    assert {link.tunnel for link in links.conflicts} == {("default", "b")}


def test_tunnels_sharing_some_pods_keep_each_pair_of_the_first_tunnel_in_order() -> None:
    """Merging a Tunnel whose pods no earlier Tunnel linked as a whole gives what merging
    link by link gives (the rule: a pair keeps the first Tunnel's link)."""
    objects = [
        *BASE,
        tunnel("a", psk_mesh_spec(app="x")),
        tunnel("b", two_sided_spec("x", "y")),  # shares x1, x2 with a, no pair
        tunnel("c", psk_mesh_spec(app="z")),  # shares nothing
        tunnel("d", two_sided_spec("y", "x")),  # every pair is b's
        tunnel("e", psk_mesh_spec(app="y")),  # shares y1, y2 with b, new pairs
        *(
            pod(f"{app}{i}", f"10.0.{n}.{i}", labels={"app": app})
            for n, app in enumerate("xyz")
            for i in (1, 2)
        ),
    ]
    cluster = Cluster.of(objects)
    specs = {k: TunnelSpec.model_validate(t["spec"]) for k, t in cluster.tunnels.items()}
    seen: set[tuple[ObjectKey, ObjectKey]] = set()
    expected: dict[ObjectKey, list[Link]] = {}
    conflicts = []
    for key in sorted(specs):
        for link in tunnel_links(cluster.tunnels[key], specs[key], cluster):
            if link.pair in seen:
                conflicts.append(link)
            else:
                seen.add(link.pair)
                expected.setdefault(link.pair[0], []).append(link)
    links = all_links(cluster, specs)
    assert links.by_pod == {k: tuple(v) for k, v in expected.items()}
    assert links.conflicts == tuple(conflicts)
    assert {link.tunnel[1] for link in conflicts} == {"d"}
    assert {link.tunnel[1] for link in links.by_pod[("default", "y1")]} == {"b", "e"}


def test_peers_of_another_ip_version_are_not_linked() -> None:
    objects = [
        *BASE,
        tunnel("t", psk_mesh_spec()),
        pod("v4", "10.0.0.1", labels={"app": "mesh"}),
        pod("v6", "fd00::1", labels={"app": "mesh"}),
    ]
    assert _peers(_links(objects)) == {}


def _selectors(spec: dict[str, Any], local: str) -> dict[str, Any]:
    objects = [
        *BASE,
        tunnel("t", spec),
        pod("c1", "10.0.0.1", labels={"app": "client"}),
        pod("s1", "10.0.0.3", labels={"app": "server"}),
    ]
    links = _links(objects)
    (link,) = links.by_pod[("default", local)]
    model = TunnelSpec.model_validate(spec)
    return traffic_selectors(link, model.traffic)


def test_without_traffic_rules_the_pod_addresses_are_protected() -> None:
    assert _selectors(two_sided_spec(), "c1") == {
        "local": ["10.0.0.1/32"],
        "remote": ["10.0.0.3/32"],
    }


def test_a_port_narrows_the_to_side_at_the_client() -> None:
    spec = two_sided_spec(traffic=[{"protocol": "TCP", "port": 8443}])
    assert _selectors(spec, "c1") == {
        "local": [{"cidr": "10.0.0.1/32", "protocol": "tcp"}],
        "remote": [{"cidr": "10.0.0.3/32", "protocol": "tcp", "ports": 8443}],
    }


def test_a_port_narrows_the_to_side_at_the_server() -> None:
    spec = two_sided_spec(traffic=[{"protocol": "UDP", "port": 8000, "endPort": 8100}])
    assert _selectors(spec, "s1") == {
        "local": [{"cidr": "10.0.0.3/32", "protocol": "udp", "ports": "8000-8100"}],
        "remote": [{"cidr": "10.0.0.1/32", "protocol": "udp"}],
    }


def test_icmp_becomes_icmpv6_for_ipv6_pods() -> None:
    spec = psk_mesh_spec()
    spec["traffic"] = [{"protocol": "ICMP"}]
    objects = [
        *BASE,
        tunnel("t", spec),
        pod("a", "fd00::a", labels={"app": "mesh"}),
        pod("b", "fd00::b", labels={"app": "mesh"}),
    ]
    (link,) = _links(objects).by_pod[("default", "a")]
    assert traffic_selectors(link, TunnelSpec.model_validate(spec).traffic) == {
        "local": [{"cidr": "fd00::a/128", "protocol": "ipv6-icmp"}],
        "remote": [{"cidr": "fd00::b/128", "protocol": "ipv6-icmp"}],
    }


def test_a_mesh_narrows_by_protocol_only() -> None:
    spec = psk_mesh_spec()
    spec["traffic"] = [{"protocol": "TCP", "port": 443}]
    objects = [*BASE, tunnel("t", spec), *_mesh(2)]
    key: ObjectKey = ("default", "m1")
    (link,) = _links(objects).by_pod[key]
    assert traffic_selectors(link, TunnelSpec.model_validate(spec).traffic) == {
        "local": [{"cidr": "10.0.0.1/32", "protocol": "tcp"}],
        "remote": [{"cidr": "10.0.0.2/32", "protocol": "tcp"}],
    }
