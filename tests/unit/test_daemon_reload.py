"""Reload diffing: which peers a new configuration adds, removes or replaces."""

from __future__ import annotations

import copy
from typing import Any

from kipsec_sidecar.config.load import load_config_data
from kipsec_sidecar.config.to_core import PeerPlan, to_core
from kipsec_sidecar.daemon.manual import manual_child, rotation_kind
from kipsec_sidecar.daemon.reload import (
    ReloadPlan,
    diff,
    fingerprint,
    fingerprints,
    negotiated_under,
    restart_needed,
)

PSK = "reload test pre-shared key 0123456789"
KEY_A = "11" * 36
KEY_B = "22" * 36


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {"addresses": ["10.10.1.2"], "auth": {"psk": {"value": PSK}}},
        "peers": [
            {"name": "pb", "address": "10.10.2.2"},
            {"name": "pc", "address": "10.10.3.2", "start": "onDemand"},
            {
                "name": "legacy",
                "address": "10.10.4.2",
                "keying": "manual",
                "manual": {
                    "spiIn": "0x1001",
                    "spiOut": "0x2001",
                    "encryption": "aes256gcm16",
                    "keys": {"encryptionIn": KEY_A, "encryptionOut": KEY_B},
                },
            },
        ],
    }
    doc.update(changes)
    return doc


def plans(doc: dict[str, Any], epoch: float = 0.0) -> tuple[PeerPlan, ...]:
    return to_core(load_config_data(copy.deepcopy(doc)), wall_clock_epoch=epoch)


def by_name(doc: dict[str, Any]) -> dict[str, PeerPlan]:
    return {plan.name: plan for plan in plans(doc)}


def test_the_same_document_loaded_twice_changes_nothing() -> None:
    # Two loads read the files again and may use different clock offsets.
    old, new = fingerprints(plans(document(), 1000.0)), fingerprints(plans(document(), 2000.5))
    result = diff(old, new)
    assert result.empty and result.unchanged == ("pb", "pc", "legacy")
    assert result.lines() == []


def test_a_new_peer_is_added_and_the_others_are_untouched() -> None:
    doc = document()
    doc["peers"].append({"name": "pd", "address": "10.10.5.2"})
    result = diff(fingerprints(plans(document())), fingerprints(plans(doc)))
    assert result == ReloadPlan(add=("pd",), unchanged=("pb", "pc", "legacy"))
    assert result.lines() == ["added peer pd"]


def test_a_missing_peer_is_removed() -> None:
    doc = document()
    del doc["peers"][1]
    result = diff(fingerprints(plans(document())), fingerprints(plans(doc)))
    assert result.remove == ("pc",) and result.add == () and result.replace == ()
    assert result.lines() == ["removed peer pc"]


def test_a_changed_peer_setting_replaces_only_that_peer() -> None:
    doc = document()
    doc["peers"][0]["mode"] = "transport"
    result = diff(fingerprints(plans(document())), fingerprints(plans(doc)))
    assert result.replace == ("pb",) and result.unchanged == ("pc", "legacy")


def test_a_document_wide_setting_replaces_the_peers_it_applies_to() -> None:
    doc = document(liveness={"interval": "5s"})
    result = diff(fingerprints(plans(document())), fingerprints(plans(doc)))
    assert result.replace == ("pb", "pc")  # the manual peer has no IKE, no liveness
    assert result.unchanged == ("legacy",)


def test_a_new_psk_keeps_the_ike_peers_and_their_sas() -> None:
    doc = document()
    doc["local"]["auth"]["psk"]["value"] = "another pre-shared key 9876543210"
    result = diff(fingerprints(plans(document())), fingerprints(plans(doc)))
    assert result.replace == ("pb", "pc")  # the fingerprints differ ...
    refreshed = result.refreshing(by_name(document()), by_name(doc))
    assert (refreshed.refresh, refreshed.replace) == (("pb", "pc"), ())  # ... SAs kept
    assert refreshed.lines() == [
        "renewed credentials of peer pb (SAs kept)",
        "renewed credentials of peer pc (SAs kept)",
    ]


def test_a_new_psk_with_another_change_replaces_the_peer() -> None:
    doc = document()
    doc["local"]["auth"]["psk"]["value"] = "another pre-shared key 9876543210"
    doc["peers"][0]["mode"] = "transport"
    result = diff(fingerprints(plans(document())), fingerprints(plans(doc)))
    refreshed = result.refreshing(by_name(document()), by_name(doc))
    assert (refreshed.refresh, refreshed.replace) == (("pc",), ("pb",))


def test_an_ike_sa_set_up_under_replaced_terms_is_not_the_new_peers() -> None:
    """A responder's IKE SA keeps the configuration of its IKE_SA_INIT; after a reload it
    belongs to the peer only if the reload would have kept the SAs (see
    test_daemon_reload_race.py for the pair that settled without a child)."""
    old = by_name(document())["pb"]
    assert old.ike is not None
    assert negotiated_under(old, old.ike)
    assert negotiated_under(by_name(document())["pb"], old.ike)  # the same terms, reloaded
    doc = document()
    doc["local"]["auth"]["psk"]["value"] = "another pre-shared key 9876543210"
    assert negotiated_under(by_name(doc)["pb"], old.ike)  # credentials only: kept
    doc["peers"][0]["proposals"] = {"esp": ["chacha20poly1305"]}
    assert not negotiated_under(by_name(doc)["pb"], old.ike)
    assert not negotiated_under(by_name(document())["legacy"], old.ike)  # manual: no IKE


def test_fingerprints_do_not_reveal_secrets() -> None:
    digest = fingerprint(by_name(document())["pb"])
    assert len(digest) == 64 and PSK.encode().hex() not in digest and KEY_A not in digest


def test_global_settings_are_reported_as_needing_a_restart() -> None:
    old = load_config_data(document())
    new = load_config_data(document(datapath="userspace", metrics={"listen": "0.0.0.0:9999"}))
    assert restart_needed(old, new) == ["datapath", "metrics"]
    assert restart_needed(old, load_config_data(document())) == []


def test_local_identity_and_auth_apply_through_the_peers_and_need_no_restart() -> None:
    # They are every peer's defaults: the peers' plans change, the reload applies them.
    # Only the addresses (the sockets bound at start) wait for a restart.
    doc = document()
    doc["local"]["auth"]["psk"]["value"] = "another pre-shared key 9876543210"
    doc["local"]["identity"] = {"fqdn": "a.example"}
    old, new = load_config_data(document()), load_config_data(doc)
    assert restart_needed(old, new) == []
    assert diff(fingerprints(plans(document())), fingerprints(plans(doc))).replace
    doc["local"]["addresses"] = ["10.9.9.9"]
    assert restart_needed(old, load_config_data(doc)) == ["local.addresses"]


def _rotated(spi_in: str, spi_out: str, key: str) -> dict[str, Any]:
    doc = copy.deepcopy(document())
    manual = doc["peers"][2]["manual"]
    manual.update({"spiIn": spi_in, "spiOut": spi_out})
    manual["keys"] = {"encryptionIn": key, "encryptionOut": key}
    return doc


def test_new_manual_spis_and_keys_are_a_rotation() -> None:
    old, new = (
        by_name(document())["legacy"],
        by_name(_rotated("0x1002", "0x2002", "33" * 36))["legacy"],
    )
    assert rotation_kind(old, new, fingerprint(old), fingerprint(new)) == "rotate"


def test_new_manual_keys_under_the_same_inbound_spi_need_a_replace() -> None:
    old, new = (
        by_name(document())["legacy"],
        by_name(_rotated("0x1001", "0x2002", "33" * 36))["legacy"],
    )
    assert rotation_kind(old, new, fingerprint(old), fingerprint(new)) == "replace"


def test_a_manual_peer_with_new_selectors_is_replaced_not_rotated() -> None:
    doc = _rotated("0x1002", "0x2002", "33" * 36)
    doc["peers"][2]["trafficSelectors"] = {"local": ["10.10.1.2/32"], "remote": ["10.20.0.0/16"]}
    old, new = by_name(document())["legacy"], by_name(doc)["legacy"]
    assert rotation_kind(old, new, fingerprint(old), fingerprint(new)) == "replace"


def test_a_manual_peer_becomes_a_child_with_its_spis_and_no_keys_in_the_event() -> None:
    installed = manual_child(by_name(document())["legacy"])
    assert (installed.inbound.spi, installed.outbound.spi) == (0x1001, 0x2001)
    assert installed.event.spi_in == (0x1001).to_bytes(4, "big")
    assert installed.event.encr_key_in == b"" and installed.encapsulation == "udp"
