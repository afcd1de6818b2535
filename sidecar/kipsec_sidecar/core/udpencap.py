"""UDP encapsulation of ESP for NAT traversal (RFC 3948), port 4500.

Three kinds of datagram share UDP port 4500 and are told apart by their first bytes
(RFC 3948 section 2):

- a NAT-keepalive: exactly one byte, 0xFF (section 2.3);
- an IKE message: the non-ESP marker (four zero bytes) then the IKE header (section 2.2);
- an ESP packet: the ESP header as is; its SPI is never zero (section 2.1).

Anything else (empty, too short, a lone byte that is not 0xFF) raises ParseError.
Only ESP is carried: AH cannot be UDP-encapsulated (it authenticates the addresses a
NAT rewrites), which :class:`~kipsec_sidecar.core.ipsec_sa.IpsecSa` refuses.
"""

from __future__ import annotations

from enum import Enum

from .errors import ParseError
from .ike.constants import NON_ESP_MARKER

NAT_KEEPALIVE = b"\xff"
ESP_MIN_LEN = 8  # SPI + sequence number


class UdpEncapKind(Enum):
    """What a UDP/4500 payload carries."""

    KEEPALIVE = "keepalive"
    IKE = "ike"
    ESP = "esp"


def classify(payload: bytes) -> UdpEncapKind:
    """Tell a NAT-keepalive, an IKE message and an ESP packet apart (RFC 3948 section 2)."""
    if payload == NAT_KEEPALIVE:
        return UdpEncapKind.KEEPALIVE
    if len(payload) < len(NON_ESP_MARKER):
        raise ParseError(
            f"{len(payload)}-byte datagram is neither a keepalive, IKE nor ESP",
            field="udpencap",
        )
    if payload[:4] == NON_ESP_MARKER:
        return UdpEncapKind.IKE
    if len(payload) < ESP_MIN_LEN:
        raise ParseError(f"{len(payload)} bytes is shorter than an ESP header", field="udpencap")
    return UdpEncapKind.ESP


def build_keepalive() -> bytes:
    """The one-byte NAT-keepalive a peer behind a NAT sends to keep the mapping open."""
    return NAT_KEEPALIVE


def wrap_ike(message: bytes) -> bytes:
    """Prefix an IKE message with the non-ESP marker for sending on port 4500."""
    return NON_ESP_MARKER + message


def unwrap_ike(payload: bytes) -> bytes:
    """The IKE message inside a port-4500 datagram; ParseError unless it has the marker."""
    if classify(payload) is not UdpEncapKind.IKE:
        raise ParseError("no non-ESP marker: not an IKE message", field="udpencap.marker")
    return payload[len(NON_ESP_MARKER) :]


def esp_spi(payload: bytes) -> int:
    """The SPI of a UDP-encapsulated ESP packet (for the SAD lookup); ParseError otherwise."""
    if classify(payload) is not UdpEncapKind.ESP:
        raise ParseError("not an ESP packet", field="udpencap.spi")
    return int.from_bytes(payload[:4], "big")
