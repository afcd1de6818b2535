"""TUN offloads in pure functions: virtio-net headers, TCP segmentation and coalescing.

A TUN device opened with ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` (TUN_F_CSUM, TSO4,
TSO6) stops making the kernel do per-packet work for us:

- **Reads** carry a 10-byte ``virtio_net_hdr`` and may be TCP *super-segments* of up to
  64 KiB (the pod's TCP stack wrote one large segment; nobody split it yet), or
  packets whose TCP/UDP checksum is only *partial* (``NEEDS_CSUM``: the field holds the
  pseudo-header sum, the rest is left to "the hardware", i.e. us). :func:`split`
  turns one read into the MSS-sized, fully checksummed IP packets a peer expects on
  the wire — each then ESP-protected on its own, as RFC 4303 requires.
- **Writes** may carry a super-segment with a ``virtio_net_hdr`` asking the kernel to
  segment it (``GSO_TCPV4``/``GSO_TCPV6``): :func:`coalesce` merges consecutive
  decrypted TCP segments of one flow, the way the kernel's GRO does on a NIC, so a
  burst of 40 segments costs one ``write`` instead of 40.

The merge rules follow the kernel's GRO (and wireguard-go's ``tun/offload_linux.go``
design): only pure data segments (flags ACK, and PSH which ends a merge) of the same
addresses, ports, IP header fields, acknowledgement number, window and TCP options;
sequence numbers contiguous; every segment but the last exactly ``gso_size`` long; at
most 64 KiB. Segment checksums are not verified before a merge: every packet given to
:func:`coalesce` came out of ESP, whose ICV already authenticated it byte for byte, so
(as WireGuard marks its decrypted packets ``CHECKSUM_UNNECESSARY``) summing each
segment again in Python would buy nothing. A super-segment goes to the kernel with
``NEEDS_CSUM`` (the field holds the pseudo-header sum); a lone packet goes as it came,
and the kernel verifies its checksum as usual.

Checksums use the identity "a big-endian number mod 0xFFFF is the one's-complement sum
of its 16-bit words" (65536 ≡ 1 mod 65535): one C-speed ``int.from_bytes`` per packet,
no Python loop over words. The result may be 0xFFFF where a word loop gives 0x0000;
both are the same one's-complement zero and both verify.

Every function takes and returns ``bytes``; malformed input raises ParseError (a
KipsecError) and never anything else.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.errors import ParseError

VNET_HDR_LEN = 10
#: virtio_net_hdr in the host's byte order (TUN's default, legacy virtio).
VNET_HDR = struct.Struct("=BBHHHH")
F_NEEDS_CSUM = 0x01
F_DATA_VALID = 0x02
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3
GSO_TCPV6 = 4
GSO_ECN = 0x80
#: A VNET header for a packet that needs nothing (what most writes carry).
PLAIN_HDR = bytes(VNET_HDR_LEN)

TCP = 6
UDP = 17
_FIN = 0x01
_SYN = 0x02
_RST = 0x04
_PSH = 0x08
_ACK = 0x10
_CWR = 0x80
MAX_SUPER = 65535
#: The kernel's limit on segments in one GSO packet.
MAX_SEGMENTS = 64
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
#: ``gso_size`` and ``csum_start``/``csum_offset`` of a :data:`VNET_HDR`, read in place.
_GSO_SIZE = struct.Struct("=H")
_CSUM_FIELDS = struct.Struct("=HH")


@dataclass(frozen=True, slots=True)
class VnetHdr:
    """One ``virtio_net_hdr`` (see include/uapi/linux/virtio_net.h)."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0

    def pack(self) -> bytes:
        return VNET_HDR.pack(
            self.flags,
            self.gso_type,
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        )

    @classmethod
    def unpack(cls, data: bytes) -> VnetHdr:
        if len(data) < VNET_HDR_LEN:
            raise ParseError(f"{len(data)} bytes is shorter than a virtio_net_hdr", field="vnet")
        return cls(*VNET_HDR.unpack_from(data))


# -- checksums ---------------------------------------------------------------------------


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The one's-complement sum of ``data`` as 16-bit big-endian words, in 0..0xFFFE."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % 0xFFFF


def finish(total: int) -> int:
    """The checksum field for a one's-complement ``total`` (complemented, 16 bits)."""
    return 0xFFFF - total % 0xFFFF


def pseudo_sum(packet: bytes, version: int, protocol: int, length: int) -> int:
    """One's-complement sum of the TCP/UDP pseudo-header of ``packet`` (RFC 793/8200)."""
    addresses = packet[12:20] if version == 4 else packet[8:40]
    return (int.from_bytes(addresses, "big") + protocol + length) % 0xFFFF


def ipv4_header_checksum(header: bytes | bytearray) -> int:
    """The IPv4 header checksum of ``header`` (its own checksum field is ignored)."""
    return finish(ones_sum(bytes(header[:10])) + ones_sum(bytes(header[12:])))


def _l4(packet: bytes) -> tuple[int, int, int]:
    """(version, transport offset, transport protocol); ParseError for what is unsupported."""
    if not packet:
        raise ParseError("empty packet", field="ip")
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or len(packet) < ihl:
            raise ParseError("truncated IPv4 header", field="ipv4.ihl")
        return 4, ihl, packet[9]
    if version == 6:
        if len(packet) < 40:
            raise ParseError("truncated IPv6 header", field="ipv6")
        return 6, 40, packet[6]
    raise ParseError(f"IP version {version}", field="ip.version")


def transport_valid(packet: bytes) -> bool:
    """Does the TCP/UDP checksum of a whole, unfragmented IP packet verify?"""
    version, offset, protocol = _l4(packet)
    length = len(packet) - offset
    return (pseudo_sum(packet, version, protocol, length) + ones_sum(packet[offset:])) % (
        0xFFFF
    ) == 0


def complete_checksum(packet: bytes, csum_start: int, csum_offset: int) -> bytes:
    """Finish a ``NEEDS_CSUM`` checksum: the field holds the pseudo-header sum, add the
    rest from ``csum_start`` on and store the complement (what a NIC does on transmit)."""
    field = csum_start + csum_offset
    if csum_start >= len(packet) or field + 2 > len(packet):
        raise ParseError(
            f"checksum at {csum_start}+{csum_offset} is outside a {len(packet)}-byte packet",
            field="vnet.csum_start",
        )
    value = finish(ones_sum(packet[csum_start:]))
    return packet[:field] + _U16.pack(value) + packet[field + 2 :]


# -- reads: one TUN read to wire packets --------------------------------------------------


def split(data: bytes) -> list[bytes]:
    """One read of an ``IFF_VNET_HDR`` TUN device as the IP packets to protect.

    ``data`` is the virtio_net_hdr followed by a packet. A TCP super-segment
    (``GSO_TCPV4``/``GSO_TCPV6``) becomes ``ceil(payload / gso_size)`` segments with
    their own IP length/identification/checksum and TCP sequence number, flags (FIN and
    PSH on the last only, CWR on the first only) and full checksum. A ``NEEDS_CSUM``
    packet gets its checksum completed. Anything else comes back unchanged.
    """
    if len(data) < VNET_HDR_LEN:
        raise ParseError(f"{len(data)} bytes is shorter than a virtio_net_hdr", field="vnet")
    # The header's fields read in place, not through VnetHdr: this runs for every read,
    # and a lone small packet (a ping) is mostly this and its copy.
    flags, gso_type = data[0], data[1]
    packet = data[VNET_HDR_LEN:]
    gso = gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        if flags & F_NEEDS_CSUM:
            csum_start, csum_offset = _CSUM_FIELDS.unpack_from(data, 6)
            return [complete_checksum(packet, csum_start, csum_offset)]
        return [packet]
    if gso in (GSO_TCPV4, GSO_TCPV6):
        return segment_tcp(packet, _GSO_SIZE.unpack_from(data, 4)[0])
    raise ParseError(f"GSO type {gso_type} is not TCP", field="vnet.gso_type")


def segment_tcp(packet: bytes, mss: int) -> list[bytes]:
    """Cut a TCP super-segment into segments of at most ``mss`` payload bytes each.

    The checksums are computed incrementally: the header words that do not change are
    summed once, each segment adds its length, identification, sequence number, flags
    and the sum of its payload (the one pass over its bytes).
    """
    version, ip_len, protocol = _l4(packet)
    if protocol != TCP:
        raise ParseError(f"TSO packet carries protocol {protocol}, not TCP", field="vnet.gso")
    if mss <= 0:
        raise ParseError("GSO size 0", field="vnet.gso_size")
    if len(packet) < ip_len + 20:
        raise ParseError("truncated TCP header", field="tcp")
    th_len = (packet[ip_len + 12] >> 4) * 4
    head_len = ip_len + th_len
    if th_len < 20 or len(packet) < head_len:
        raise ParseError("bad TCP data offset", field="tcp.offset")
    head = bytearray(packet[:head_len])
    seq0 = _U32.unpack_from(head, ip_len + 4)[0]
    flags = head[ip_len + 13]
    # Zero what changes per segment; sum the rest once.
    head[ip_len + 4 : ip_len + 8] = bytes(4)
    head[ip_len + 13] = 0
    head[ip_len + 16 : ip_len + 18] = b"\0\0"
    tcp_base = pseudo_sum(packet, version, TCP, 0) + ones_sum(head[ip_len:])
    if version == 4:
        ident = _U16.unpack_from(head, 4)[0]
        head[2:6] = bytes(4)
        head[10:12] = b"\0\0"
        ip_base = ones_sum(head[:ip_len])
    else:
        ident = ip_base = 0
    payload = memoryview(packet)[head_len:]
    count = max(1, -(-len(payload) // mss))
    last = count - 1
    out: list[bytes] = []
    pack_into = _U16.pack_into
    from_bytes = int.from_bytes
    for index in range(count):
        chunk = payload[index * mss : (index + 1) * mss]
        size = len(chunk)
        seq = (seq0 + index * mss) & 0xFFFFFFFF
        seg_flags = flags
        if index:
            seg_flags &= ~_CWR
        if index != last:
            seg_flags &= ~(_FIN | _PSH)
        data_sum = from_bytes(chunk, "big")
        if size & 1:
            data_sum <<= 8
        tcp_sum = tcp_base + th_len + size + (seq >> 16) + (seq & 0xFFFF) + seg_flags + data_sum
        seg = bytearray(head)
        _U32.pack_into(seg, ip_len + 4, seq)
        seg[ip_len + 13] = seg_flags
        pack_into(seg, ip_len + 16, 0xFFFF - tcp_sum % 0xFFFF)
        if version == 4:
            total = head_len + size
            ip_id = (ident + index) & 0xFFFF
            pack_into(seg, 2, total)
            pack_into(seg, 4, ip_id)
            pack_into(seg, 10, 0xFFFF - (ip_base + total + ip_id) % 0xFFFF)
        else:
            pack_into(seg, 4, th_len + size)
        seg += chunk
        out.append(bytes(seg))
    return out


# -- writes: decrypted packets to TUN writes ---------------------------------------------


class _Group:
    """Consecutive segments of one flow being merged into one super-segment."""

    __slots__ = (
        "closed",
        "gso_size",
        "head_len",
        "next_seq",
        "packets",
        "psh",
        "size",
        "version",
    )

    def __init__(self, packet: bytes, head_len: int, version: int, seq: int, psh: bool) -> None:
        self.packets = [packet]
        self.head_len = head_len
        self.version = version
        self.gso_size = len(packet) - head_len
        self.next_seq = (seq + self.gso_size) & 0xFFFFFFFF
        self.size = len(packet)
        self.psh = psh
        self.closed = psh

    def add(self, packet: bytes, seq: int, psh: bool) -> bool:
        length = len(packet) - self.head_len
        if (
            self.closed
            or seq != self.next_seq
            or length > self.gso_size
            or self.size + length > MAX_SUPER
            or len(self.packets) >= MAX_SEGMENTS
        ):
            return False
        self.packets.append(packet)
        self.next_seq = (seq + length) & 0xFFFFFFFF
        self.size += length
        if psh:
            self.psh = True
            self.closed = True
        if length < self.gso_size:
            self.closed = True
        return True

    def build(self) -> list[bytes]:
        """The TUN writes: a super-segment with a GSO header, or a lone packet as it came
        (the kernel checks its checksum)."""
        packets = self.packets
        if len(packets) == 1:
            return [PLAIN_HDR + packets[0]]
        version = self.version
        head_len = self.head_len
        first = packets[0]
        ip_len = (first[0] & 0x0F) * 4 if version == 4 else 40
        seg = bytearray(first[:head_len])
        if self.psh:
            seg[ip_len + 13] |= _PSH
        if version == 4:
            _U16.pack_into(seg, 2, self.size)
            seg[10:12] = b"\0\0"
            _U16.pack_into(seg, 10, ipv4_header_checksum(seg[:ip_len]))
        else:
            _U16.pack_into(seg, 4, self.size - 40)
        tcp_len = self.size - ip_len
        _U16.pack_into(seg, ip_len + 16, pseudo_sum(first, version, TCP, tcp_len))
        hdr = VNET_HDR.pack(
            F_NEEDS_CSUM,
            GSO_TCPV4 if version == 4 else GSO_TCPV6,
            head_len,
            self.gso_size,
            ip_len,
            16,
        )
        return [b"".join((hdr, seg, *[p[head_len:] for p in packets]))]


def _tcp_candidate(packet: bytes) -> tuple[bytes, bytes, int, int, bool, int] | None:
    """(flow key, merge key, header length, sequence, PSH, version) of a
    TCP data segment that may be merged, or None when it must be written on its own.

    The flow key is addresses and ports; the merge key holds every other header field
    that must be equal for a merge (IP: version/IHL, TOS, DF, TTL, options; IPv6: traffic
    class, flow label, hop limit; TCP: ack, data offset, window, urgent pointer, options).
    """
    size = len(packet)
    if size < 40:
        return None
    first = packet[0]
    if first >> 4 == 4:
        ip_len = (first & 0x0F) * 4
        if (
            packet[9] != TCP
            or ip_len < 20
            or (packet[2] << 8 | packet[3]) != size
            or packet[6] & 0xBF
            or packet[7]
            or size < ip_len + 20
        ):
            return None
        flow_key = packet[12 : ip_len + 4]  # addresses, options, ports
        ip_key = packet[0:2] + packet[6:9]
        version = 4
    elif first >> 4 == 6:
        ip_len = 40
        if packet[6] != TCP or (packet[4] << 8 | packet[5]) != size - 40 or size < 60:
            return None
        flow_key = packet[8:44]  # addresses, ports
        ip_key = packet[0:4] + packet[7:8]
        version = 6
    else:
        return None
    offset_flags = packet[ip_len + 12 : ip_len + 14]
    th_len = (offset_flags[0] >> 4) * 4
    head_len = ip_len + th_len
    flags = offset_flags[1]
    if th_len < 20 or size <= head_len or flags & ~(_ACK | _PSH) or not flags & _ACK:
        return None
    merge_key = b"".join(
        (
            ip_key,
            packet[ip_len + 8 : ip_len + 13],
            packet[ip_len + 14 : ip_len + 16],
            packet[ip_len + 18 : head_len],
        )
    )
    seq = int.from_bytes(packet[ip_len + 4 : ip_len + 8], "big")
    return flow_key, merge_key, head_len, seq, bool(flags & _PSH), version


def coalesce(packets: Sequence[bytes]) -> list[bytes]:
    """Decrypted IP packets as TUN writes (each with its virtio_net_hdr), merging
    consecutive TCP data segments of a flow into GSO super-segments.

    Order within a flow is kept: a packet of a flow that cannot join the flow's open
    merge closes it and goes after it. Packets of different flows may be reordered
    relative to each other (as GRO does). Checksums are not verified: the packets were
    authenticated by ESP (see the module docstring). A lone packet is written as it came
    whatever it is (what a group of one builds too), without looking at it.
    """
    if len(packets) == 1:
        return [PLAIN_HDR + packets[0]]
    writes: list[_Group | bytes] = []
    open_groups: dict[bytes, tuple[bytes, _Group]] = {}
    for packet in packets:
        candidate = _tcp_candidate(packet)
        if candidate is None:
            flow = _flow_of(packet)
            if flow is not None:
                open_groups.pop(flow, None)
            writes.append(PLAIN_HDR + packet)
            continue
        flow_key, merge_key, head_len, seq, psh, version = candidate
        current = open_groups.get(flow_key)
        if current is not None and current[0] == merge_key and current[1].add(packet, seq, psh):
            continue
        group = _Group(packet, head_len, version, seq, psh)
        open_groups[flow_key] = (merge_key, group)
        writes.append(group)
    out: list[bytes] = []
    for write in writes:
        if isinstance(write, _Group):
            out.extend(write.build())
        else:
            out.append(write)
    return out


def _flow_of(packet: bytes) -> bytes | None:
    """The flow key of a TCP packet that is not a merge candidate (None otherwise)."""
    try:
        version, offset, protocol = _l4(packet)
    except ParseError:
        return None
    if protocol != TCP or len(packet) < offset + 4:
        return None
    return packet[12 : offset + 4] if version == 4 else packet[8:44]
