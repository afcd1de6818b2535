"""Which datapath the daemon runs and the reason it reports."""

from __future__ import annotations

import pytest

from kipsec_sidecar.config.load import load_config_data
from kipsec_sidecar.config.to_core import to_core
from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.daemon.datapath_choice import (
    choose_datapath,
    factory_for,
    kernel_factory,
    suites,
    userspace_factory,
)
from kipsec_sidecar.datapath.base import DatapathError
from kipsec_sidecar.datapath.probe import ProbeResult

NO_ESP = ProbeResult(False, "kernel refused ESP SA (cbc(aes)): EPROTONOSUPPORT (test)")
ESP = ProbeResult(True, "kernel accepted ESP SAs (test)")


def never() -> ProbeResult:
    raise AssertionError("the probe must not run")


def test_kernel_on_a_kernel_without_esp_is_an_error_naming_the_probe_reason() -> None:
    with pytest.raises(
        DatapathError, match=r"datapath: kernel is unavailable here: .*EPROTONOSUPPORT"
    ):
        choose_datapath("kernel", probe=lambda: NO_ESP)


def test_kernel_on_a_kernel_with_esp_is_taken() -> None:
    choice = choose_datapath("kernel", probe=lambda: ESP)
    assert choice.name == "kernel" and choice.reason.startswith("configured: datapath kernel")


def test_auto_without_kernel_esp_runs_userspace_with_the_probe_reason() -> None:
    choice = choose_datapath("auto", probe=lambda: NO_ESP)
    assert choice == type(choice)("userspace", f"auto: {NO_ESP.reason}")


def test_auto_with_kernel_esp_runs_the_kernel_datapath() -> None:
    choice = choose_datapath("auto", probe=lambda: ESP)
    assert choice.name == "kernel" and choice.reason == f"auto: {ESP.reason}"


def test_userspace_is_taken_as_configured_without_probing() -> None:
    assert choose_datapath("userspace", probe=never).reason == "configured: datapath userspace"


def test_the_default_probe_asks_this_kernel() -> None:
    # This machine's kernel has no ESP SA type; a kernel with one would pick "kernel".
    choice = choose_datapath("auto")
    assert choice.reason.startswith("auto: kernel ")


def test_each_choice_builds_its_own_datapath() -> None:
    assert factory_for(choose_datapath("auto", probe=lambda: ESP)) is kernel_factory
    assert factory_for(choose_datapath("auto", probe=lambda: NO_ESP)) is userspace_factory


def test_suites_cover_every_proposed_algorithm_of_every_peer() -> None:
    config = load_config_data(
        {
            "apiVersion": "kipsec.io/v1alpha1",
            "kind": "SidecarConfig",
            "local": {"addresses": ["10.10.1.2"], "auth": {"psk": {"value": "x" * 32}}},
            "peers": [
                {"name": "b", "address": "10.10.2.2"},
                {
                    "name": "c",
                    "address": "10.10.3.2",
                    "protocol": "ah",
                    "encapsulation": "raw",
                    "mode": "transport",
                },
            ],
            "proposals": {"esp": ["aes256gcm16", "aes128-sha256"]},
        }
    )
    found = {
        (s.protocol, s.encr_id, s.integ_id, s.mode, s.encapsulation)
        for s in suites(to_core(config))
    }
    assert found == {
        (ProtocolId.ESP, EncrId.AES_GCM_16, None, "tunnel", "udp"),
        (ProtocolId.ESP, EncrId.AES_CBC, IntegId.HMAC_SHA2_256_128, "tunnel", "udp"),
        (ProtocolId.AH, None, IntegId.HMAC_SHA2_256_128, "transport", "raw"),
    }


def test_the_kernel_factory_builds_the_kernel_datapath_without_touching_the_kernel() -> None:
    config = load_config_data(
        {
            "apiVersion": "kipsec.io/v1alpha1",
            "kind": "SidecarConfig",
            "local": {"addresses": ["10.10.1.2"], "auth": {"psk": {"value": "x" * 32}}},
            "peers": [{"name": "b", "address": "10.10.2.2"}],
        }
    )
    datapath = kernel_factory(config, to_core(config), lambda data, addr: None, lambda peer: None)
    assert datapath.name == "kernel"
