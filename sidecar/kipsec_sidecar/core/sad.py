"""The Security Association Database (RFC 4301 section 4.4.2).

SAs are keyed by (SPI, destination address, protocol), the triple a receiver reads from
an inbound packet. Rekeying is make-before-break: :meth:`SecurityAssociationDatabase.replace`
adds the new SA while the old one stays, so packets still in flight under the old SPI
are accepted; outbound traffic moves to the successor (:meth:`current`); the engine
removes the old SA later (after the Delete exchange or a grace period).
"""

from __future__ import annotations

from collections.abc import Iterator

from .errors import LocalProtocolError, ParseError
from .ike.constants import ProtocolId
from .ip import IpProto, IPv4Header, parse_ip, walk_ipv6_extensions
from .ipsec_sa import IpsecSa
from .traffic_selectors import IPAddress
from .udpencap import esp_spi

SaKey = tuple[int, IPAddress, ProtocolId]

_PROTOCOL_OF_IP: dict[int, ProtocolId] = {IpProto.ESP: ProtocolId.ESP, IpProto.AH: ProtocolId.AH}
# Offset of the SPI inside the ESP header (0) and the AH header (4).
_SPI_OFFSET: dict[ProtocolId, int] = {ProtocolId.ESP: 0, ProtocolId.AH: 4}


class SecurityAssociationDatabase:
    """All SAs of one sidecar, inbound and outbound, by (SPI, destination, protocol)."""

    def __init__(self) -> None:
        self._sas: dict[SaKey, IpsecSa] = {}
        self._successor: dict[SaKey, SaKey] = {}

    def add(self, sa: IpsecSa) -> None:
        """Install an SA; LocalProtocolError when its key is already present."""
        if sa.key in self._sas:
            raise LocalProtocolError(
                f"an SA with SPI {sa.spi:#010x} to {sa.dst} ({sa.protocol.name}) exists"
            )
        self._sas[sa.key] = sa

    def get(self, spi: int, dst: IPAddress, protocol: ProtocolId) -> IpsecSa | None:
        """The SA for (SPI, destination, protocol), or None."""
        return self._sas.get((spi, dst, protocol))

    def lookup_packet(self, data: bytes) -> IpsecSa | None:
        """The inbound SA for a received ESP or AH IP packet, or None when there is none.

        Raises ParseError when the packet is malformed or carries neither ESP nor AH.
        """
        header = parse_ip(data)
        if isinstance(header, IPv4Header):
            proto, offset = header.protocol, header.header_len
        else:
            chain = walk_ipv6_extensions(data, header, stop_at=IpProto.AH)
            proto, offset = chain.protocol, chain.offset
        protocol = _PROTOCOL_OF_IP.get(proto)
        if protocol is None:
            raise ParseError(f"protocol {proto} is neither ESP nor AH", field="sad.protocol")
        start = offset + _SPI_OFFSET[protocol]
        if start + 4 > header.total_length:
            raise ParseError("truncated before the SPI", field="sad.spi")
        spi = int.from_bytes(data[start : start + 4], "big")
        return self.get(spi, header.dst, protocol)

    def lookup_udp_esp(self, payload: bytes, dst: IPAddress) -> IpsecSa | None:
        """The SA for a UDP-encapsulated ESP payload received on ``dst`` (RFC 3948)."""
        return self.get(esp_spi(payload), dst, ProtocolId.ESP)

    def remove(self, key: SaKey | IpsecSa) -> IpsecSa:
        """Delete an SA (by key or object); LocalProtocolError when it is absent."""
        k = key.key if isinstance(key, IpsecSa) else key
        sa = self._sas.pop(k, None)
        if sa is None:
            raise LocalProtocolError(f"no SA with key {k!r}")
        self._successor.pop(k, None)
        for old, new in list(self._successor.items()):
            if new == k:
                del self._successor[old]
        return sa

    def replace(self, old: IpsecSa, new: IpsecSa) -> None:
        """Rekey make-before-break: add ``new``, keep ``old`` until :meth:`remove`.

        Both stay valid for inbound lookups; :meth:`current` of ``old`` becomes ``new``.
        """
        if old.key not in self._sas:
            raise LocalProtocolError(f"SA {old.spi:#010x} to replace is not installed")
        self.add(new)
        self._successor[old.key] = new.key

    def current(self, sa: IpsecSa) -> IpsecSa:
        """The SA outbound traffic should use instead of ``sa``: its newest successor."""
        key = sa.key
        for _ in range(len(self._successor) + 1):
            nxt = self._successor.get(key)
            if nxt is None or nxt not in self._sas:
                break
            key = nxt
        return self._sas.get(key, sa)

    def __iter__(self) -> Iterator[IpsecSa]:
        return iter(list(self._sas.values()))

    def __len__(self) -> int:
        return len(self._sas)

    def __contains__(self, sa: object) -> bool:
        return isinstance(sa, IpsecSa) and self._sas.get(sa.key) is sa
