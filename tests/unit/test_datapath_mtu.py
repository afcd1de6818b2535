"""The TUN MTU arithmetic: protected packets of the largest allowed size fit the path MTU."""

from __future__ import annotations

import pytest

from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.datapath.base import DatapathError
from kipsec_sidecar.datapath.mtu import (
    WORST_ESP_SUITE,
    Suite,
    max_inner_size,
    mss_clamp_ruleset,
    tun_mtu,
    wire_size,
    worst_case_overhead,
    xfrm_mss_clamp_ruleset,
)

ESP, AH = ProtocolId.ESP, ProtocolId.AH
GCM = Suite(ESP, EncrId.AES_GCM_16, None, "tunnel", "udp")
CHACHA = Suite(ESP, EncrId.CHACHA20_POLY1305, None, "tunnel", "udp")
CBC_SHA256 = Suite(ESP, EncrId.AES_CBC, IntegId.HMAC_SHA2_256_128, "tunnel", "udp")


# Each expected value is worked out by hand in the comment beside it (path MTU 1500).
@pytest.mark.parametrize(
    ("suite", "expected"),
    [
        # outer 20 + UDP 8 + ESP 8 + IV 8 + ICV 16 = 60; ceil4(n + 2) <= 1440 -> n = 1438
        (GCM, 1438),
        (CHACHA, 1438),
        # 20 + 8 + 8 + IV 16 + ICV 16 = 68; ceil16(n + 2) <= 1432 -> 1424 -> n = 1422
        (CBC_SHA256, 1422),
        # transport, raw: header 20 kept + ESP 8 + IV 8 + ICV 16; ceil4(n - 20 + 2) <= 1448
        (Suite(ESP, EncrId.AES_GCM_16, None, "transport", "raw"), 1466),
        # transport over UDP: + 8 -> ceil4(n - 18) <= 1440 -> n = 1458
        (Suite(ESP, EncrId.AES_GCM_16, None, "transport", "udp"), 1458),
        # IPv6 outer 40 + 8 + 8 + 8 + 16 = 80; ceil4(n + 2) <= 1420 -> n = 1418
        (Suite(ESP, EncrId.AES_GCM_16, None, "tunnel", "udp", outer_version=6), 1418),
        # AH tunnel over IPv4: 20 + (12 + 16 = 28) -> 1452
        (Suite(AH, None, IntegId.HMAC_SHA2_256_128, "tunnel", "raw"), 1452),
        # AH transport: the header is reused: 1500 - 28 = 1472
        (Suite(AH, None, IntegId.HMAC_SHA2_256_128, "transport", "raw"), 1472),
        # AH over IPv6: 12 + 16 = 28 padded to 32 (8-byte alignment), outer 40 -> 1428
        (
            Suite(AH, None, IntegId.HMAC_SHA2_256_128, "tunnel", "raw", outer_version=6),
            1428,
        ),
        # AH with HMAC-SHA2-512-256: 12 + 32 = 44, outer 20 -> 1436
        (Suite(AH, None, IntegId.HMAC_SHA2_512_256, "tunnel", "raw"), 1436),
    ],
)
def test_largest_inner_packet_for_a_1500_byte_path(suite: Suite, expected: int) -> None:
    assert max_inner_size(suite, 1500) == expected


@pytest.mark.parametrize("suite", [GCM, CHACHA, CBC_SHA256, WORST_ESP_SUITE])
@pytest.mark.parametrize("path_mtu", [576, 1280, 1400, 1450, 1500, 9000])
def test_the_largest_inner_packet_fits_and_one_byte_more_does_not(
    suite: Suite, path_mtu: int
) -> None:
    inner = max_inner_size(suite, path_mtu)
    assert wire_size(suite, inner) <= path_mtu < wire_size(suite, inner + 1)


def test_worst_case_overhead_counts_the_largest_padding() -> None:
    # GCM pads to 4 bytes: up to 3 bytes of padding + pad length + next header.
    assert worst_case_overhead(GCM) == 60 + 3 + 2
    # CBC pads to 16 bytes: up to 15 bytes + 2.
    assert worst_case_overhead(CBC_SHA256) == 68 + 15 + 2


def test_tun_mtu_is_decided_by_the_suite_with_the_most_overhead() -> None:
    assert tun_mtu(1500, [GCM, CBC_SHA256]) == 1422
    assert tun_mtu(1500, [GCM]) == 1438


def test_tun_mtu_without_suites_plans_for_the_worst_esp_suite() -> None:
    assert tun_mtu(1500, []) == max_inner_size(WORST_ESP_SUITE, 1500)
    assert tun_mtu(1500, []) < tun_mtu(1500, [CBC_SHA256])


def test_a_path_too_small_for_protected_packets_is_refused_naming_the_mtu() -> None:
    with pytest.raises(DatapathError, match="path MTU 600"):
        tun_mtu(600, [WORST_ESP_SUITE])


def test_ah_over_udp_is_refused_because_ah_cannot_cross_nat() -> None:
    with pytest.raises(DatapathError, match="AH cannot be UDP-encapsulated"):
        Suite(AH, None, IntegId.HMAC_SHA2_256_128, "tunnel", "udp")


def test_mss_clamp_rewrites_syns_leaving_through_the_device_to_the_route_mtu() -> None:
    script = mss_clamp_ruleset("kipsec", "kipsec0")
    assert "table inet kipsec {" in script
    assert 'oifname "kipsec0"' in script
    assert "tcp option maxseg size set rt mtu" in script
    # The script first deletes a stale table of the same name, and only that one.
    assert script.splitlines()[:2] == ["table inet kipsec", "delete table inet kipsec"]


def test_the_kernel_datapath_clamps_syns_leaving_through_an_sa_after_routing() -> None:
    assert xfrm_mss_clamp_ruleset("kipsec") == (
        "table inet kipsec\n"
        "delete table inet kipsec\n"
        "table inet kipsec {\n"
        "  chain postrouting { type filter hook postrouting priority mangle; policy accept;\n"
        "    rt ipsec exists tcp flags syn / syn,rst tcp option maxseg size set rt mtu\n"
        "  }\n"
        "}\n"
    )


def test_esp_with_a_block_cipher_and_no_integrity_is_refused() -> None:
    with pytest.raises(DatapathError, match="aes-cbc needs an integrity transform"):
        Suite(ESP, EncrId.AES_CBC, None, "tunnel", "udp")
