"""UDP encapsulation on port 4500 (RFC 3948): keepalive, IKE and ESP told apart."""

from __future__ import annotations

import pytest

from kipsec_sidecar.core import udpencap
from kipsec_sidecar.core.errors import ParseError
from kipsec_sidecar.core.udpencap import UdpEncapKind

IKE_HEADER = bytes(8) + bytes(8) + bytes((33, 0x20, 34, 0x08)) + bytes(4) + (28).to_bytes(4, "big")


def test_single_ff_byte_is_a_keepalive() -> None:
    assert udpencap.classify(b"\xff") is UdpEncapKind.KEEPALIVE
    assert udpencap.build_keepalive() == b"\xff"


def test_non_esp_marker_means_ike() -> None:
    assert udpencap.classify(b"\x00\x00\x00\x00" + IKE_HEADER) is UdpEncapKind.IKE


def test_non_zero_spi_means_esp() -> None:
    assert udpencap.classify(bytes.fromhex("0000123400000001") + bytes(24)) is UdpEncapKind.ESP
    assert udpencap.esp_spi(bytes.fromhex("0000123400000001")) == 0x1234


def test_wrap_and_unwrap_ike_round_trip() -> None:
    wrapped = udpencap.wrap_ike(IKE_HEADER)
    assert wrapped[:4] == bytes(4)
    assert udpencap.unwrap_ike(wrapped) == IKE_HEADER


@pytest.mark.parametrize(
    "payload", [b"", b"\x00", b"\xfe", b"\x00\x00\x00", b"\x01\x02\x03\x04\x05"]
)
def test_too_short_or_unknown_datagrams_are_parse_errors(payload: bytes) -> None:
    with pytest.raises(ParseError):
        udpencap.classify(payload)


def test_unwrap_refuses_esp() -> None:
    with pytest.raises(ParseError, match="marker"):
        udpencap.unwrap_ike(bytes.fromhex("0000123400000001"))


def test_esp_spi_refuses_ike() -> None:
    with pytest.raises(ParseError):
        udpencap.esp_spi(udpencap.wrap_ike(IKE_HEADER))
