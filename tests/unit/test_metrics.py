"""The Prometheus families a sidecar exports, read back from the text exposition."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from kipsec_sidecar.exposition import render
from kipsec_sidecar.handshake_failures import REASONS as FAILURE_REASONS
from kipsec_sidecar.metrics import DROP_REASONS, IKE_STATES, build_registry
from kipsec_sidecar.state import SidecarSnapshot
from support.controller_double import (
    ADDR_A,
    ADDR_B,
    ADDR_C,
    IKE_SPI_I,
    IKE_SPI_R,
    NOW,
    SPI_IN_B,
    SPI_IN_C,
    SPI_OUT_B,
    SPI_OUT_C,
    ControllerDouble,
    child_b,
    example_snapshot,
    not_ready_snapshot,
)

Families = dict[str, list[Sample]]


def scrape(controller: ControllerDouble, *, process_metrics: bool = False) -> Families:
    registry = build_registry(controller, process_metrics=process_metrics)
    text = render(registry).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(families: Families, family: str, sample: str | None = None, **labels: str) -> float:
    """The one sample of ``family`` with exactly these labels."""
    found = [
        s.value
        for s in families[family]
        if s.labels == labels and (sample is None or s.name == sample)
    ]
    assert len(found) == 1, f"{family}{labels}: {found}"
    return found[0]


@pytest.fixture
def families() -> Families:
    return scrape(ControllerDouble())


def test_every_family_is_prefixed_and_described(families: Families) -> None:
    text = render(build_registry(ControllerDouble(), process_metrics=False)).decode()
    helps = {f.name: f.documentation for f in text_string_to_metric_families(text)}
    assert set(families) == {
        "kipsec_ike_sas",
        "kipsec_child_sas",
        "kipsec_peers",
        "kipsec_packets",
        "kipsec_bytes",
        "kipsec_handshakes",
        "kipsec_handshake_failures",
        "kipsec_rekeys",
        "kipsec_auth_failures",
        "kipsec_dropped_packets",
        "kipsec_datapath_errors",
        "kipsec_ike_half_open_sas",
        "kipsec_ike_cookies_sent",
        "kipsec_ike_requests_refused",
        "kipsec_log_lines_suppressed",
        "kipsec_datapath_info",
        "kipsec_ready",
        "kipsec_sidecar_start_time_seconds",
        "kipsec_build_info",
    }
    for name in families:
        assert len(helps[name]) > 30, f"{name} needs a help text that says what it counts"


def test_counters_are_counters_and_gauges_are_gauges() -> None:
    text = render(build_registry(ControllerDouble(), process_metrics=False)).decode()
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    counters = {n for n, t in types.items() if t == "counter"}
    assert counters == {
        "kipsec_packets",
        "kipsec_bytes",
        "kipsec_handshakes",
        "kipsec_handshake_failures",
        "kipsec_rekeys",
        "kipsec_auth_failures",
        "kipsec_dropped_packets",
        "kipsec_datapath_errors",
        "kipsec_ike_cookies_sent",
        "kipsec_ike_requests_refused",
        "kipsec_log_lines_suppressed",
    }
    assert "kipsec_packets_total{" in text
    assert "kipsec_auth_failures_total " in text
    assert all(types[n] == "gauge" for n in set(types) - counters)


def test_ike_sas_are_counted_by_state_with_every_state_present(families: Families) -> None:
    assert value(families, "kipsec_ike_sas", state="established", ike_version="2") == 1
    assert {s.labels["state"] for s in families["kipsec_ike_sas"]} == set(IKE_STATES)
    assert sum(s.value for s in families["kipsec_ike_sas"]) == 1  # c is manual: no IKE SA


def test_child_sas_are_counted_by_state_mode_and_protocol(families: Families) -> None:
    child = "kipsec_child_sas"
    assert value(families, child, state="installed", mode="tunnel", protocol="esp") == 1
    assert value(families, child, state="installed", mode="transport", protocol="ah") == 1
    assert value(families, child, state="rekeyed", mode="transport", protocol="ah") == 1
    assert value(families, child, state="deleting", mode="tunnel", protocol="esp") == 0
    assert len(families[child]) == 12  # every combination, so dashboards see zeros


def test_peers_are_counted_by_state() -> None:
    families = scrape(ControllerDouble(not_ready_snapshot()))
    assert value(families, "kipsec_peers", state="established") == 1
    assert value(families, "kipsec_peers", state="connecting") == 1
    assert value(families, "kipsec_peers", state="idle") == 0
    assert value(families, "kipsec_peers", state="down") == 0


def test_packets_and_bytes_are_summed_over_a_peers_children(families: Families) -> None:
    packets, octets = "kipsec_packets", "kipsec_bytes"
    assert value(families, packets, "kipsec_packets_total", direction="in", peer="b") == 10
    assert value(families, packets, "kipsec_packets_total", direction="out", peer="b") == 20
    assert value(families, packets, "kipsec_packets_total", direction="in", peer="c") == 1 + 3
    assert value(families, octets, "kipsec_bytes_total", direction="in", peer="b") == 1500
    assert value(families, octets, "kipsec_bytes_total", direction="out", peer="c") == 11 + 200


def test_traffic_counters_never_go_backwards_when_a_child_is_replaced() -> None:
    controller = ControllerDouble()
    registry = build_registry(controller, process_metrics=False)

    def out_bytes_b() -> float:
        text = render(registry).decode()
        families = {f.name: f.samples for f in text_string_to_metric_families(text)}
        return value(families, "kipsec_bytes", "kipsec_bytes_total", direction="out", peer="b")

    assert out_bytes_b() == 3000
    rekeyed = child_b(spi_in="aaaa0001", spi_out="aaaa0002", bytes_out=40)
    b = replace(controller.current.peers[0], children=(rekeyed,))
    controller.current = replace(controller.current, peers=(b, controller.current.peers[1]))
    assert out_bytes_b() == 3000 + 40
    controller.current = replace(controller.current, peers=(replace(b, children=()),))
    assert out_bytes_b() == 3000 + 40


def test_a_removed_peer_loses_its_series() -> None:
    controller = ControllerDouble()
    registry = build_registry(controller, process_metrics=False)
    render(registry)
    controller.current = replace(controller.current, peers=controller.current.peers[:1])
    text = render(registry).decode()
    assert 'peer="b"' in text
    assert 'peer="c"' not in text


def test_handshakes_rekeys_and_auth_failures(families: Families) -> None:
    assert value(families, "kipsec_handshakes", "kipsec_handshakes_total", result="success") == 3
    assert value(families, "kipsec_handshakes", "kipsec_handshakes_total", result="failure") == 1
    assert value(families, "kipsec_rekeys", "kipsec_rekeys_total", kind="child") == 5
    assert value(families, "kipsec_rekeys", "kipsec_rekeys_total", kind="ike") == 2
    assert value(families, "kipsec_auth_failures", "kipsec_auth_failures_total") == 1


def test_handshake_failures_have_every_reason_even_when_zero(families: Families) -> None:
    failures = "kipsec_handshake_failures"
    sample = "kipsec_handshake_failures_total"
    assert value(families, failures, sample, reason="no_proposal_chosen") == 1
    assert value(families, failures, sample, reason="peer_dead") == 0
    reasons = {s.labels["reason"] for s in families[failures] if s.name == sample}
    assert reasons == set(FAILURE_REASONS)


def test_drops_have_every_reason_even_when_zero(families: Families) -> None:
    drops = "kipsec_dropped_packets"
    assert value(families, drops, "kipsec_dropped_packets_total", reason="replay") == 4
    assert value(families, drops, "kipsec_dropped_packets_total", reason="integrity") == 6
    assert value(families, drops, "kipsec_dropped_packets_total", reason="no_sa") == 0
    reasons = {s.labels["reason"] for s in families[drops] if s.name.endswith("_total")}
    assert reasons == set(DROP_REASONS)


def test_an_ike_sa_init_flood_shows_as_half_open_sas_cookies_and_refusals() -> None:
    snapshot = example_snapshot(
        ike_half_open=10,
        ike_cookies_sent=4990,
        ike_refused={"unknown_peer": 20000},
        log_suppressed=19990,
    )
    flood = scrape(ControllerDouble(snapshot))
    assert value(flood, "kipsec_ike_half_open_sas") == 10
    assert value(flood, "kipsec_ike_cookies_sent", "kipsec_ike_cookies_sent_total") == 4990
    refused, sample = "kipsec_ike_requests_refused", "kipsec_ike_requests_refused_total"
    assert value(flood, refused, sample, reason="unknown_peer") == 20000
    assert value(flood, refused, sample, reason="malformed") == 0
    suppressed = "kipsec_log_lines_suppressed"
    assert value(flood, suppressed, suppressed + "_total") == 19990


def test_datapath_errors_info_ready_and_start_time(families: Families) -> None:
    errors = "kipsec_datapath_errors"
    assert value(families, errors, "kipsec_datapath_errors_total", kind="tun_write") == 2
    reason = "kernel has no ESP SA type"
    assert value(families, "kipsec_datapath_info", datapath="userspace", reason=reason) == 1
    assert value(families, "kipsec_ready") == 1
    assert value(families, "kipsec_sidecar_start_time_seconds") == NOW - 3725
    [build] = families["kipsec_build_info"]
    assert build.labels["version"] == "0.1.0" and build.value == 1


def test_ready_is_zero_while_a_peer_has_no_installed_child() -> None:
    assert value(scrape(ControllerDouble(not_ready_snapshot())), "kipsec_ready") == 0


def test_no_label_holds_an_spi_an_address_or_an_identity(families: Families) -> None:
    forbidden = {SPI_IN_B, SPI_OUT_B, SPI_IN_C, SPI_OUT_C, IKE_SPI_I, IKE_SPI_R}
    forbidden |= {ADDR_A, ADDR_B, ADDR_C, "a.pods.example", "b.pods.example"}
    labels = {v for samples in families.values() for s in samples for v in s.labels.values()}
    assert labels.isdisjoint(forbidden)
    assert not any(re.fullmatch(r"[0-9a-f]{8}|[0-9a-f]{16}", v) for v in labels)
    assert not any(re.search(r"\d+\.\d+\.\d+\.\d+", v) for v in labels)


def test_series_count_does_not_grow_with_rekeys() -> None:
    controller = ControllerDouble()
    registry = build_registry(controller, process_metrics=False)
    before = render(registry).decode().count("\n")
    for n in range(50):
        child = child_b(spi_in=f"{n:08x}", spi_out=f"{n + 1000:08x}")
        b = replace(controller.current.peers[0], children=(child,))
        controller.current = replace(controller.current, peers=(b, controller.current.peers[1]))
        after = render(registry).decode().count("\n")
    assert after == before


def test_process_metrics_are_included_by_default() -> None:
    families = scrape(ControllerDouble(), process_metrics=True)
    assert value(families, "process_resident_memory_bytes") > 0


def test_an_empty_sidecar_exports_zeros_and_is_ready() -> None:
    empty = SidecarSnapshot(
        version="0.1.0",
        datapath="userspace",
        datapath_reason="configured",
        started_at=NOW,
        peers=(),
    )
    families = scrape(ControllerDouble(empty))
    assert value(families, "kipsec_ready") == 1
    assert families["kipsec_packets"] == []
    assert value(families, "kipsec_auth_failures", "kipsec_auth_failures_total") == 0


def test_example_snapshot_is_what_the_tests_assume() -> None:
    assert example_snapshot().ready
    assert not not_ready_snapshot().ready
