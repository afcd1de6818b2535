"""NAT traversal for IKEv1 (RFC 3947): the NAT-D hashes and the UDP encapsulation modes.

Each side sends NAT-D payloads in main mode messages 3 and 4: first the hash of the
peer's address and port as it sees them, then one of its own. A mismatch on receipt
means a NAT in between: both move to port 4500 and quick mode asks for the
UDP-encapsulated modes (:func:`udp_mode`), the ESP packets then going through the same
:mod:`kipsec_sidecar.core.udpencap` as IKEv2's.
"""

from __future__ import annotations

import hashlib
import ipaddress

from .. import algorithms
from ..errors import LocalProtocolError
from .constants import COOKIE_LEN, EncapsulationMode

_UDP_MODE: dict[int, EncapsulationMode] = {
    EncapsulationMode.TUNNEL: EncapsulationMode.UDP_TUNNEL,
    EncapsulationMode.TRANSPORT: EncapsulationMode.UDP_TRANSPORT,
}
_PLAIN_MODE: dict[int, EncapsulationMode] = {
    EncapsulationMode.UDP_TUNNEL: EncapsulationMode.TUNNEL,
    EncapsulationMode.UDP_TRANSPORT: EncapsulationMode.TRANSPORT,
    EncapsulationMode.UDP_TUNNEL_DRAFT: EncapsulationMode.TUNNEL,
    EncapsulationMode.UDP_TRANSPORT_DRAFT: EncapsulationMode.TRANSPORT,
}


def nat_d_hash(
    prf_id: int,
    cky_i: bytes,
    cky_r: bytes,
    address: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    port: int,
    *,
    legacy_sha1: bool = False,
) -> bytes:
    """HASH(CKY-I | CKY-R | IP | Port) with the negotiated hash (RFC 3947 section 3.2)."""
    if len(cky_i) != COOKIE_LEN or len(cky_r) != COOKIE_LEN:
        raise LocalProtocolError("ISAKMP cookies are 8 bytes")
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port {port} is not a uint16")
    name = algorithms.prf(prf_id, legacy_sha1=legacy_sha1).hash_name
    packed = ipaddress.ip_address(address).packed
    return hashlib.new(name, cky_i + cky_r + packed + port.to_bytes(2, "big")).digest()


def udp_mode(mode: int) -> int:
    """The UDP-encapsulated encapsulation mode for tunnel or transport (behind a NAT)."""
    return _UDP_MODE.get(mode, mode)


def plain_mode(mode: int) -> int:
    """Tunnel or transport for any encapsulation mode (RFC 3947 and draft values)."""
    return _PLAIN_MODE.get(mode, mode)


def is_udp_encapsulated(mode: int) -> bool:
    return mode in _PLAIN_MODE
