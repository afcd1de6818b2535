"""Service translation in the pod: the `services` section of the sidecar document, its
validation, the exact nftables script it becomes, and that a reload of it touches no peer."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kipsec_sidecar.config import ConfigError, SidecarConfig, load_config_data
from kipsec_sidecar.config.to_core import to_core
from kipsec_sidecar.daemon.reload import diff, fingerprints, restart_needed
from kipsec_sidecar.daemon.service_nat import ruleset

PSK = "service test pre-shared key 0123456789"
DROP = "table inet kipsec_svc\ndelete table inet kipsec_svc\n"
HEAD = (
    "table inet kipsec_svc {\n"
    "  chain output {\n"
    "    type nat hook output priority -100; policy accept;\n"
)
TAIL = "  }\n}\n"


def endpoint(address: str, target_port: int = 8443) -> dict[str, Any]:
    return {"address": address, "targetPort": target_port}


def service(
    cluster_ips: list[str], ports: list[dict[str, Any]], name: str = "shop/api"
) -> dict[str, Any]:
    return {"name": name, "clusterIPs": cluster_ips, "ports": ports}


def document(*services: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {"addresses": ["10.0.0.1", "fd00::1"], "auth": {"psk": {"value": PSK}}},
        "peers": [
            {"name": "shop/api-0", "address": "10.0.1.5"},
            {"name": "shop/api-1", "address": "10.0.2.7"},
        ],
        "services": list(services),
    }


def load(*services: dict[str, Any]) -> SidecarConfig:
    return load_config_data(copy.deepcopy(document(*services)))


def errors(*services: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load(*services)
    return [(e.path, e.message) for e in caught.value.errors]


# --- the document -------------------------------------------------------------------------


def test_a_document_without_services_translates_nothing() -> None:
    config = load()
    assert config.services == []
    assert ruleset(config.services) == DROP


def test_protocol_is_accepted_in_kubernetes_case_and_stored_lower_case() -> None:
    config = load(service(["10.96.0.10"], [{"port": 53, "protocol": "UDP"}]))
    assert config.services[0].ports[0].protocol == "udp"


def test_the_document_keys_follow_kubernetes_spelling() -> None:
    written = service(["10.96.0.10"], [{"port": 443, "endpoints": [endpoint("10.0.1.5")]}])
    assert load(written).to_document()["services"] == [
        {
            "name": "shop/api",
            "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 443, "endpoints": [{"address": "10.0.1.5", "targetPort": 8443}]}],
        }
    ]


@pytest.mark.parametrize(
    ("changed", "path"),
    [
        ({"clusterIPs": ["10.96.0.300"]}, "services[0].clusterIPs[0]"),
        ({"clusterIPs": []}, "services[0].clusterIPs"),
        ({"ports": [{"port": 0}]}, "services[0].ports[0].port"),
        ({"ports": [{"port": 80, "protocol": "icmp"}]}, "services[0].ports[0].protocol"),
        (
            {"ports": [{"port": 80, "endpoints": [{"address": "10.0.1.5"}]}]},
            "services[0].ports[0].endpoints[0].targetPort",
        ),
        ({"name": "shop api"}, "services[0].name"),
        ({"clusterIP": "10.96.0.10"}, "services[0].clusterIP"),
    ],
)
def test_a_bad_service_field_is_named(changed: dict[str, Any], path: str) -> None:
    bad = service(["10.96.0.10"], [{"port": 443}]) | changed
    assert path in [p for p, _ in errors(bad)]


def test_an_endpoint_of_an_ip_version_without_cluster_ip_is_refused() -> None:
    ports = [{"port": 443, "endpoints": [endpoint("10.0.1.5"), endpoint("fd00::5")]}]
    assert errors(service(["10.96.0.10"], ports)) == [
        (
            "services[0].ports[0].endpoints[1].address",
            "an IPv6 endpoint, but the service has no IPv6 ClusterIP",
        )
    ]


def test_two_cluster_ips_of_one_ip_version_are_refused() -> None:
    assert errors(service(["10.96.0.10", "10.96.0.11"], [{"port": 443}])) == [
        (
            "services[0].clusterIPs[1]",
            "a second IPv4 ClusterIP: give at most one per IP version",
        )
    ]


def test_the_same_cluster_ip_port_and_protocol_twice_is_refused() -> None:
    first = service(["10.96.0.10"], [{"port": 443}], name="shop/api")
    second = service(["10.96.0.10"], [{"port": 80}, {"port": 443}], name="shop/api-v2")
    assert errors(first, second) == [
        ("services[1].ports[1].port", "10.96.0.10 tcp/443 is also services[0].ports[0]")
    ]


def test_the_same_port_number_over_tcp_and_udp_is_two_ports() -> None:
    load(
        service(["10.96.0.10"], [{"port": 53, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}])
    )


def test_duplicate_service_names_and_endpoints_are_refused() -> None:
    ports = [{"port": 443, "endpoints": [endpoint("10.0.1.5"), endpoint("10.0.1.5", 9443)]}]
    assert errors(service(["10.96.0.10"], ports), service(["10.96.0.11"], [{"port": 1}])) == [
        ("services[0].ports[0].endpoints[1].address", "10.0.1.5 is listed twice for this port"),
        ("services[1].name", "duplicate service name 'shop/api' (also services[0])"),
    ]


# --- the nftables script -------------------------------------------------------------------


def test_one_ipv4_endpoint_is_a_plain_dnat() -> None:
    config = load(service(["10.96.0.10"], [{"port": 443, "endpoints": [endpoint("10.0.1.5")]}]))
    assert (
        ruleset(config.services)
        == DROP
        + HEAD
        + ('    ip daddr 10.96.0.10 tcp dport 443 dnat ip to 10.0.1.5:8443 comment "shop/api"\n')
        + TAIL
    )


def test_one_ipv6_endpoint_is_bracketed() -> None:
    config = load(service(["fd00:96::10"], [{"port": 443, "endpoints": [endpoint("fd00::5")]}]))
    assert (
        ruleset(config.services)
        == DROP
        + HEAD
        + (
            "    ip6 daddr fd00:96::10 tcp dport 443 dnat ip6 to [fd00::5]:8443 "
            'comment "shop/api"\n'
        )
        + TAIL
    )


def test_several_endpoints_are_picked_at_random_per_connection() -> None:
    ports = [{"port": 443, "endpoints": [endpoint("10.0.1.5"), endpoint("10.0.2.7", 9443)]}]
    config = load(service(["10.96.0.10"], ports))
    assert (
        ruleset(config.services)
        == DROP
        + HEAD
        + (
            "    ip daddr 10.96.0.10 tcp dport 443 dnat ip to numgen random mod 2 map "
            '{ 0 : 10.0.1.5 . 8443, 1 : 10.0.2.7 . 9443 } comment "shop/api"\n'
        )
        + TAIL
    )


def test_dual_stack_several_ports_each_ip_version_to_its_own_endpoints() -> None:
    ports = [
        {"port": 443, "endpoints": [endpoint("10.0.1.5"), endpoint("fd00::5")]},
        {"port": 53, "protocol": "UDP", "endpoints": [endpoint("10.0.1.5", 5353)]},
    ]
    config = load(service(["10.96.0.10", "fd00:96::10"], ports))
    assert (
        ruleset(config.services)
        == DROP
        + HEAD
        + (
            '    ip daddr 10.96.0.10 tcp dport 443 dnat ip to 10.0.1.5:8443 comment "shop/api"\n'
            "    ip6 daddr fd00:96::10 tcp dport 443 dnat ip6 to [fd00::5]:8443 "
            'comment "shop/api"\n'
            '    ip daddr 10.96.0.10 udp dport 53 dnat ip to 10.0.1.5:5353 comment "shop/api"\n'
            '    ip6 daddr fd00:96::10 udp dport 53 reject comment "shop/api"\n'
        )
        + TAIL
    )


def test_a_port_without_endpoints_rejects_new_connections() -> None:
    config = load(service(["10.96.0.10"], [{"port": 443, "protocol": "SCTP"}]))
    assert (
        ruleset(config.services)
        == DROP
        + HEAD
        + ('    ip daddr 10.96.0.10 sctp dport 443 reject comment "shop/api"\n')
        + TAIL
    )


def test_the_table_name_can_be_chosen() -> None:
    config = load(service(["10.96.0.10"], [{"port": 443}]))
    assert ruleset(config.services, "t1").startswith(
        "table inet t1\ndelete table inet t1\ntable inet t1 {\n"
    )


# --- reload ----------------------------------------------------------------------------------


def test_a_services_change_replaces_no_peer_and_needs_no_restart() -> None:
    old = load(service(["10.96.0.10"], [{"port": 443, "endpoints": [endpoint("10.0.1.5")]}]))
    new = load(service(["10.96.0.10"], [{"port": 443, "endpoints": [endpoint("10.0.2.7")]}]))
    changes = diff(fingerprints(to_core(old)), fingerprints(to_core(new)))
    assert changes.empty and changes.unchanged == ("shop/api-0", "shop/api-1")
    assert restart_needed(old, new) == []
