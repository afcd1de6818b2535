"""Quick mode client IDs as traffic selectors (RFC 2409 section 5.5, RFC 2407 4.6.2).

IKEv1 has no TS payloads: the initiator names the traffic of a quick mode SA with two
ID payloads (IDci, IDcr), each one address, subnet or range, one IP protocol and one
port (0 = any). This module converts between those and the project's one
:class:`~kipsec_sidecar.core.traffic_selectors.TrafficSelector`, so the narrowing,
the policy database and the datapaths are the same as for IKEv2 children.

Phase 1 identities need no conversion: the IPsec DOI numbers ID_IPV4_ADDR (1),
ID_FQDN (2), ID_USER_FQDN (3, IKEv2's ID_RFC822_ADDR), ID_IPV6_ADDR (5) and
ID_DER_ASN1_DN (9) as IKEv2 does, so
:func:`kipsec_sidecar.core.ike.certs.identity_matches` checks an IdPayload's
``(id_type, data)`` against a certificate unchanged.
"""

from __future__ import annotations

import ipaddress

from ..errors import LocalProtocolError, ParseError
from ..traffic_selectors import ANY_PROTOCOL, MAX_PORT, TrafficSelector
from .constants import IdType
from .payloads import IdPayload

# version -> (single address, subnet, range) ID types
_TYPES: dict[int, tuple[IdType, IdType, IdType]] = {
    4: (IdType.IPV4_ADDR, IdType.IPV4_ADDR_SUBNET, IdType.IPV4_ADDR_RANGE),
    6: (IdType.IPV6_ADDR, IdType.IPV6_ADDR_SUBNET, IdType.IPV6_ADDR_RANGE),
}
_ADDRESS_LEN: dict[int, int] = {4: 4, 6: 16}
# ID type -> (IP version, kind): kind 0 address, 1 subnet, 2 range
_LAYOUT: dict[int, tuple[int, int]] = {
    id_type: (version, kind)
    for version, types in _TYPES.items()
    for kind, id_type in enumerate(types)
}


def selector_id(ts: TrafficSelector) -> IdPayload:
    """The client ID payload for ``ts``: an address, a CIDR subnet or a range.

    LocalProtocolError for a port range that is neither one port nor all ports: an
    IKEv1 ID carries a single port.
    """
    if ts.start_port == ts.end_port:
        port = ts.start_port
    elif (ts.start_port, ts.end_port) == (0, MAX_PORT):
        port = 0
    else:
        raise LocalProtocolError(f"IKEv1 cannot name the port range {ts.start_port}-{ts.end_port}")
    single, subnet, ranged = _TYPES[ts.version]
    start, end = ts.start_addr, ts.end_addr
    if start == end:
        return IdPayload(single, start.packed, ts.protocol, port)
    span = int(end) - int(start) + 1
    if span & (span - 1) == 0 and int(start) % span == 0:  # a CIDR block
        mask = ((1 << 8 * len(start.packed)) - 1) ^ (span - 1)
        return IdPayload(
            subnet, start.packed + mask.to_bytes(len(start.packed), "big"), ts.protocol, port
        )
    return IdPayload(ranged, start.packed + end.packed, ts.protocol, port)


def id_selector(p: IdPayload) -> TrafficSelector:
    """The traffic selector a client ID payload names; ParseError (naming ``id.*``) for
    a non-address ID type, a wrong length, a non-contiguous mask or an empty range.
    Port 0 means every port, as protocol 0 means every protocol."""
    layout = _LAYOUT.get(p.id_type)
    if layout is None:
        raise ParseError(f"ID type {p.id_type} does not name addresses", field="id.type")
    version, kind = layout
    size = _ADDRESS_LEN[version]
    if len(p.data) != (size if kind == 0 else 2 * size):
        raise ParseError(f"{len(p.data)} bytes for ID type {p.id_type}", field="id.data")
    first = ipaddress.ip_address(p.data[:size])
    ports = (p.port, p.port) if p.port else (0, MAX_PORT)
    if kind == 0:
        return TrafficSelector(first, first, p.protocol or ANY_PROTOCOL, *ports)
    second = ipaddress.ip_address(p.data[size:])
    if kind == 1:
        all_ones = (1 << (8 * size)) - 1
        host_bits = ~int(second) & all_ones
        if host_bits & (host_bits + 1):
            raise ParseError(f"mask {second} is not contiguous", field="id.mask")
        prefix = 8 * size - host_bits.bit_length()
        net = ipaddress.ip_network(f"{first}/{prefix}", strict=False)
        return TrafficSelector(net.network_address, net.broadcast_address, p.protocol, *ports)
    if int(first) > int(second):
        raise ParseError(f"range {first}-{second} is empty", field="id.range")
    return TrafficSelector(first, second, p.protocol, *ports)
