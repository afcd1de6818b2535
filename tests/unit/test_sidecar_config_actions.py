"""`start: none`, `closeAction` and `dpdAction` in the sidecar document: defaults that keep
the earlier behaviour, the values strongSwan users expect, and errors naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from kipsec_sidecar.config import ConfigError, load_config_data, to_core
from kipsec_sidecar.config.model import implied_action


def document(**peer: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {"addresses": ["10.0.0.1"], "auth": {"psk": {"value": "a" * 32}}},
        "peers": [{"name": "b", "address": "10.0.0.2", **peer}],
    }


@pytest.mark.parametrize(
    ("start", "implied"),
    [("onStart", "restart"), ("onDemand", "onDemand"), ("none", "none"), ("auto", "restart")],
)
def test_unset_actions_follow_start_as_before(start: str, implied: str) -> None:
    config = load_config_data(document(start=start))
    peer = config.peers[0]
    assert (peer.close_action, peer.dpd_action) == (None, None)
    assert config.close_action_for(peer) == config.dpd_action_for(peer) == implied
    (plan,) = to_core(config)
    assert (plan.close_action, plan.dpd_action) == (implied, implied)


def test_auto_above_16_peers_implies_on_demand() -> None:
    doc = document()
    doc["peers"] = [{"name": f"p{i}", "address": f"10.0.1.{i}"} for i in range(17)]
    config = load_config_data(doc)
    assert {config.close_action_for(p) for p in config.peers} == {"onDemand"}


def test_written_actions_replace_what_start_implies() -> None:
    config = load_config_data(document(start="none", closeAction="restart", dpdAction="onDemand"))
    peer = config.peers[0]
    assert config.start_for(peer) == "none"
    assert (config.close_action_for(peer), config.dpd_action_for(peer)) == ("restart", "onDemand")
    assert config.to_document()["peers"][0]["closeAction"] == "restart"


def test_implied_action_is_the_strongswan_default_pairing() -> None:
    assert [implied_action(s) for s in ("onStart", "onDemand", "none")] == [
        "restart",
        "onDemand",
        "none",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [("start", "trap"), ("closeAction", "start"), ("dpdAction", "clear"), ("dpdAction", 1)],
)
def test_strongswan_spellings_and_other_values_are_refused_naming_the_field(
    field: str, value: object
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_data(document(**{field: value}))
    (error,) = info.value.errors
    assert error.path == f"peers[0].{field}", error


@pytest.mark.parametrize("field", ["closeAction", "dpdAction"])
def test_actions_on_a_manual_peer_are_refused_naming_the_field(field: str) -> None:
    doc = document(keying="manual", **{field: "restart"})
    doc["peers"][0]["manual"] = {
        "spiIn": "0x1000",
        "spiOut": "0x1001",
        "keys": {"encryptionIn": "00" * 36, "encryptionOut": "11" * 36},
    }
    with pytest.raises(ConfigError) as info:
        load_config_data(doc)
    paths = [e.path for e in info.value.errors]
    assert f"peers[0].{field}" in paths, info.value.errors
