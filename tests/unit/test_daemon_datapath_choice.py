"""Which datapath the daemon runs and the reason it reports."""

from __future__ import annotations

import pytest

from kipsec_sidecar.config.load import load_config_data
from kipsec_sidecar.config.to_core import to_core
from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.daemon.datapath_choice import choose_datapath, suites
from kipsec_sidecar.datapath.base import DatapathError


def test_kernel_is_refused_with_a_clear_error_in_this_version() -> None:
    with pytest.raises(DatapathError, match="datapath: kernel is not available"):
        choose_datapath("kernel")


def test_auto_without_kernel_esp_runs_userspace_and_says_why() -> None:
    choice = choose_datapath("auto", kernel_esp=False)
    assert choice.name == "userspace" and choice.reason.startswith("auto: no kernel ESP")


def test_auto_with_kernel_esp_still_runs_userspace_in_this_version() -> None:
    choice = choose_datapath("auto", kernel_esp=True)
    assert choice.name == "userspace" and "no kernel datapath yet" in choice.reason


def test_userspace_is_taken_as_configured() -> None:
    assert choose_datapath("userspace").reason == "configured: datapath userspace"


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
