"""Inbound ESP whose SPI is no SA's is a dropped packet (``no_sa``), not a datapath error."""

from __future__ import annotations

from kipsec_sidecar.datapath.userspace import UserspaceDatapath


def test_esp_with_an_unknown_spi_is_counted_as_a_no_sa_drop() -> None:
    datapath = UserspaceDatapath(udp_sender=lambda data, dest: None, on_acquire=lambda peer: None)
    for spi in (0x1234, 0xC0FFEE01):
        datapath.receive_encapsulated(spi.to_bytes(4, "big") + bytes(40), ("192.0.2.9", 4500))
    assert datapath.stats.unknown_spi == 2
    assert datapath.stats.errors == {}  # the datapath itself did nothing wrong
