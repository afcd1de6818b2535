"""ESP (RFC 4303): the bare ESP payload, and tunnel and transport mode on top of it.

Two layers:

- :func:`seal` / :func:`open_` work on the ESP bytes alone (SPI .. ICV). They are all a
  UDP-encapsulated path (RFC 3948, where the kernel owns the outer IP and UDP headers)
  needs, and the base of both modes.
- :func:`encapsulate` / :func:`decapsulate` take and return whole IP packets: in tunnel
  mode the inner packet (IPv4 or IPv6) gets a new outer header from the SA's addresses
  (either family: v4-in-v6 and v6-in-v4 work); in transport mode ESP is inserted after
  the original header, whose protocol/next-header, length and (IPv4) checksum are fixed.

Inbound order (RFC 4303 section 3.4): replay check on the 32 wire bits (cheap, no state
change), integrity check (constant time; AEAD tag or HMAC), only then the replay
window moves, then the trailer is validated (padding must be 1, 2, 3, ...; next header
must suit the mode). A packet whose next header is 59 ("no next header") is a dummy
packet (traffic flow confidentiality, RFC 4303 section 2.6): decapsulation returns
``b""`` for it and the caller drops it silently.

What raises: ParseError for malformed bytes, ReplayError, IntegrityError,
SequenceExhausted and LifetimeExpired (see :mod:`.ipsec_sa`) — all KipsecErrors. SA
selectors (is the inner packet one this SA may carry?) are the SPD's business, not
checked here. Transport mode with UDP encapsulation needs the TCP/UDP checksum fix-up
of RFC 3948 section 3.1.2, which is not done here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from .errors import LocalProtocolError, ParseError
from .esp_ciphers import EspTransform
from .ip import (
    FRAGMENT_BITS,
    IPV6_HEADER_LEN,
    IpProto,
    build_outer,
    ipv6_ipsec_insertion_point,
    l3_info,
    locate_ipsec_header,
    parse_ipv6,
    rewrite_ipv4,
)
from .ipsec_sa import IpsecSa, Mode

Rng = Callable[[int], bytes]

ESP_HEADER_LEN = 8
_HEADER = struct.Struct("!II")
_PADDING = bytes(range(1, 256))
_TUNNEL_NEXT_HEADER = {4: IpProto.IPIP, 6: IpProto.IPV6}
_INNER_VERSION: dict[int, int] = {IpProto.IPIP: 4, IpProto.IPV6: 6}


def _transform(sa: IpsecSa) -> EspTransform:
    if sa.transform is None:
        raise LocalProtocolError(f"SA {sa.spi:#010x} is not an ESP SA")
    return sa.transform


def seal(sa: IpsecSa, next_header: int, payload: bytes, rng: Rng) -> bytes:
    """Protect ``payload`` (an inner packet or a transport payload) as ESP bytes.

    Returns SPI | sequence number | IV | ciphertext | ICV. Takes the next sequence
    number (raising SequenceExhausted before the counter wraps), pads with 1, 2, 3, ...
    to the cipher's block size and 4-byte alignment, and counts ``payload`` against the
    SA's lifetime. ``rng`` supplies CBC IVs (AEAD IVs are the sequence number).
    """
    transform = _transform(sa)
    seq = sa.next_sequence()
    spi_seq = _HEADER.pack(sa.spi, seq & 0xFFFFFFFF)
    seq_high = (seq >> 32).to_bytes(4, "big") if sa.esn else b""
    pad_len = -(len(payload) + 2) % transform.block_size
    plaintext = b"".join((payload, _PADDING[:pad_len], bytes((pad_len, next_header))))
    body = transform.encrypt(spi_seq, seq_high, transform.make_iv(seq, rng), plaintext)
    sa.count(len(payload))
    return spi_seq + body


def open_(sa: IpsecSa, data: bytes) -> tuple[int, bytes]:
    """Verify and decrypt ESP bytes (SPI .. ICV); return (next header, payload).

    ``data`` must belong to ``sa`` (the caller found the SA by SPI): a different SPI
    raises ParseError. The replay window advances only once the ICV verified.
    """
    transform = _transform(sa)
    sa.ensure_usable()
    if len(data) < ESP_HEADER_LEN:
        raise ParseError(f"{len(data)} bytes is shorter than the ESP header", field="esp")
    spi, seq_low = _HEADER.unpack_from(data)
    if spi != sa.spi:
        raise ParseError(f"SPI {spi:#010x} is not this SA's {sa.spi:#010x}", field="esp.spi")
    seq = sa.replay.check(seq_low)
    seq_high = (seq >> 32).to_bytes(4, "big") if sa.esn else b""
    plaintext = transform.decrypt(data[:ESP_HEADER_LEN], seq_high, data[ESP_HEADER_LEN:])
    sa.replay.accept(seq)
    if len(plaintext) < 2:
        raise ParseError("no room for the ESP trailer", field="esp.trailer")
    pad_len = plaintext[-2]
    end = len(plaintext) - 2 - pad_len
    if end < 0:
        raise ParseError(f"pad length {pad_len} exceeds the payload", field="esp.pad_length")
    if plaintext[end:-2] != _PADDING[:pad_len]:
        raise ParseError("padding is not 1, 2, 3, ...", field="esp.padding")
    payload = plaintext[:end]
    sa.count(len(payload))
    return plaintext[-1], payload


def encapsulate(sa: IpsecSa, packet: bytes, rng: Rng) -> bytes:
    """Protect one IP packet with ESP in the SA's mode; returns the packet to send."""
    if sa.mode is Mode.TUNNEL:
        return _tunnel_encapsulate(sa, packet, rng)
    return _transport_encapsulate(sa, packet, rng)


def decapsulate(sa: IpsecSa, data: bytes) -> bytes:
    """Verify, decrypt and unwrap one received ESP packet; ``b""`` for a dummy packet."""
    if sa.mode is Mode.TUNNEL:
        return _tunnel_decapsulate(sa, data)
    return _transport_decapsulate(sa, data)


def _tunnel_encapsulate(sa: IpsecSa, packet: bytes, rng: Rng) -> bytes:
    version, _, total, _, tos, _ = l3_info(packet)
    packet = packet[:total]
    esp = seal(sa, _TUNNEL_NEXT_HEADER[version], packet, rng)
    outer = build_outer(
        sa.src_packed,
        sa.dst_packed,
        IpProto.ESP,
        len(esp),
        tos=tos,
        identification=sa.next_seq - 1,  # the sequence number just used, low 16 bits
    )
    return outer + esp


def _tunnel_decapsulate(sa: IpsecSa, data: bytes) -> bytes:
    start, _, end = locate_ipsec_header(data, IpProto.ESP)
    next_header, inner = open_(sa, data[start:end])
    if next_header == IpProto.NONE:
        return b""
    version = _INNER_VERSION.get(next_header)
    if version is None:
        raise ParseError(
            f"next header {next_header} is not an IP packet in tunnel mode",
            field="esp.next_header",
        )
    inner_version, _, total, _, _, _ = l3_info(inner)
    if inner_version != version:
        raise ParseError(
            f"next header says IPv{version}, inner packet is IPv{inner_version}",
            field="esp.next_header",
        )
    # Anything after the inner packet's own length is TFC padding (RFC 4303 section 2.7).
    return inner[:total]


def _transport_encapsulate(sa: IpsecSa, packet: bytes, rng: Rng) -> bytes:
    version, hlen, total, protocol, _, frag = l3_info(packet)
    if version == 4:
        if frag & FRAGMENT_BITS:
            raise ParseError("fragmented packet: reassemble first", field="ipv4.fragment")
        esp = seal(sa, protocol, packet[hlen:total], rng)
        return rewrite_ipv4(packet[:hlen], protocol=IpProto.ESP, total_length=hlen + len(esp)) + esp
    offset, nh_offset, next_header = ipv6_ipsec_insertion_point(packet, parse_ipv6(packet))
    esp = seal(sa, next_header, packet[offset:total], rng)
    return _ipv6_with(packet[:offset], nh_offset, IpProto.ESP, len(esp)) + esp


def _transport_decapsulate(sa: IpsecSa, data: bytes) -> bytes:
    start, nh_offset, end = locate_ipsec_header(data, IpProto.ESP)
    next_header, payload = open_(sa, data[start:end])
    if next_header == IpProto.NONE:
        return b""
    if data[0] >> 4 == 4:
        header = rewrite_ipv4(data[:start], protocol=next_header, total_length=start + len(payload))
        return header + payload
    return _ipv6_with(data[:start], nh_offset, next_header, len(payload)) + payload


def _ipv6_with(headers: bytes, nh_offset: int, next_header: int, after_len: int) -> bytes:
    """IPv6 headers with one Next Header byte replaced and the payload length fixed."""
    payload_len = len(headers) - IPV6_HEADER_LEN + after_len
    if payload_len > 0xFFFF:
        raise ParseError(f"payload of {payload_len} bytes exceeds 65535", field="ipv6.payload")
    out = bytearray(headers)
    out[nh_offset] = next_header
    out[4:6] = payload_len.to_bytes(2, "big")
    return bytes(out)
