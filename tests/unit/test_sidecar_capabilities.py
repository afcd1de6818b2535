"""The sidecar's start-up capability check: what a configuration needs, and the message
that names what a pod spec left out (the lab tier runs it in a container without it:
tests/lab/test_lab_containers.py)."""

from __future__ import annotations

from typing import Any

import pytest

from kipsec_sidecar.capabilities import (
    NET_ADMIN,
    NET_BIND_SERVICE,
    NET_RAW,
    MissingCapability,
    effective,
    missing,
    required,
)
from kipsec_sidecar.config.load import load_config_data

STATUS = "Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t0000000000001000\nCapBnd:\t0\n"


def config(**peer: Any) -> Any:
    return load_config_data(
        {
            "apiVersion": "kipsec.io/v1alpha1",
            "kind": "SidecarConfig",
            "local": {
                "addresses": ["10.0.0.1"],
                "auth": {"psk": {"secretFile": "/etc/kipsec/psk/key"}},
            },
            "peers": [{"name": "b", "address": "10.0.0.2", **peer}],
        }
    )


def names(needs: list[Any]) -> list[str]:
    return [need.name for need in needs]


def test_esp_in_udp_on_the_ike_ports_needs_net_admin_and_net_bind_service() -> None:
    needs = required(config(), (500, 4500), 1024)
    assert names(needs) == ["NET_ADMIN", "NET_BIND_SERVICE"]
    assert "UDP port 500," in needs[1].why


def test_ports_the_runtime_lets_anyone_bind_need_no_net_bind_service() -> None:
    assert names(required(config(), (500, 4500), 0)) == ["NET_ADMIN"]


@pytest.mark.parametrize(
    "peer", [{"protocol": "ah", "encapsulation": "raw"}, {"encapsulation": "raw"}]
)
def test_raw_esp_or_ah_needs_net_raw(peer: dict[str, Any]) -> None:
    assert "NET_RAW" in names(required(config(**peer), (500, 4500), 1024))


def test_the_effective_set_is_read_from_the_process_status() -> None:
    assert effective(STATUS) == 1 << NET_ADMIN
    with pytest.raises(ValueError):
        effective("Name:\tx\n")


def test_the_error_names_each_missing_capability_and_the_field_to_fix() -> None:
    needs = required(config(protocol="ah", encapsulation="raw"), (500, 4500), 1024)
    lacking = missing(1 << NET_ADMIN, needs)
    assert [n.capability for n in lacking] == [NET_BIND_SERVICE, NET_RAW]
    message = str(MissingCapability(lacking))
    assert "CAP_NET_BIND_SERVICE" in message and "CAP_NET_RAW" in message
    assert "securityContext.capabilities.add" in message
    assert not missing((1 << NET_ADMIN) | (1 << NET_BIND_SERVICE) | (1 << NET_RAW), needs)
