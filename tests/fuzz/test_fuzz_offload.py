"""Hostile and random input into the TUN offload helpers.

- :func:`split` (a TUN read) raises nothing but ParseError for any bytes;
- :func:`coalesce` (decrypted packets from a peer) never raises, and every input byte
  comes out again: the writes split back into exactly the packets that went in (for
  valid segments) or carry the input unchanged behind an empty header;
- segmentation then merging is the identity on the TCP segments for any payload size,
  MSS, sequence number and flags.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipsec_sidecar.core.errors import ParseError
from kipsec_sidecar.datapath.offload import (
    F_NEEDS_CSUM,
    GSO_TCPV4,
    GSO_TCPV6,
    PLAIN_HDR,
    VNET_HDR_LEN,
    VnetHdr,
    coalesce,
    complete_checksum,
    segment_tcp,
    split,
    transport_valid,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _tcp(version: int, payload: bytes, seq: int, flags: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 7, 5 << 4, flags, 512, 0, 0) + payload
    if version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0,
                         bytes([10, 1, 0, 1]), bytes([10, 2, 0, 2]))  # fmt: skip
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, b"\x20" * 16, b"\x21" * 16)
    return ip + tcp


@FUZZ
@given(st.binary(max_size=200))
def test_any_read_splits_or_raises_parse_error(data: bytes) -> None:
    try:
        packets = split(data)
    except ParseError:
        return
    assert all(isinstance(p, bytes) for p in packets)


@FUZZ
@given(
    st.builds(
        VnetHdr,
        st.integers(0, 3),
        st.sampled_from([0, GSO_TCPV4, GSO_TCPV6, 3, 0x81]),
        st.integers(0, 200),
        st.integers(0, 1500),
        st.integers(0, 200),
        st.integers(0, 40),
    ),
    st.binary(max_size=300),
)
def test_any_header_on_any_packet_splits_or_raises_parse_error(hdr: VnetHdr, body: bytes) -> None:
    with contextlib.suppress(ParseError):
        split(hdr.pack() + body)


@FUZZ
@given(st.lists(st.binary(max_size=120), max_size=8))
def test_coalesce_never_raises_and_passes_non_tcp_bytes_through(packets: list[bytes]) -> None:
    writes = coalesce(packets)
    for write in writes:
        assert len(write) >= VNET_HDR_LEN
    plain = [w[VNET_HDR_LEN:] for w in writes if w.startswith(PLAIN_HDR)]
    assert all(p in packets for p in plain)


@FUZZ
@given(
    version=st.sampled_from([4, 6]),
    size=st.integers(1, 9000),
    mss=st.integers(8, 1500),
    seq=st.integers(0, 2**32 - 1),
    psh=st.booleans(),
)
def test_segmenting_then_merging_gives_back_the_same_segments(
    version: int, size: int, mss: int, seq: int, psh: bool
) -> None:
    payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
    packet = _tcp(version, payload, seq, 0x10 | (0x08 if psh else 0))
    segments = segment_tcp(packet, mss)

    assert all(transport_valid(s) for s in segments)
    offset = 20 if version == 4 else 40
    assert b"".join(s[offset + 20 :] for s in segments) == payload
    writes = coalesce(segments)
    back = [s for w in writes for s in split(w)]
    assert [s[offset:] for s in back] == [s[offset:] for s in segments]


@FUZZ
@given(st.binary(min_size=1, max_size=64), st.integers(0, 63), st.integers(0, 20))
def test_checksum_completion_at_any_offset_is_bytes_or_parse_error(
    body: bytes, start: int, offset: int
) -> None:
    with contextlib.suppress(ParseError):
        split(VnetHdr(F_NEEDS_CSUM, 0, 0, 0, start, offset).pack() + body)


def _split_by_fields(data: bytes) -> list[bytes]:
    """:func:`split` spelled with :class:`VnetHdr` (what it did before it read the header
    in place): the reference the in-place reading must equal."""
    hdr = VnetHdr.unpack(data)
    packet = data[VNET_HDR_LEN:]
    gso = hdr.gso_type & 0x7F
    if gso == 0:
        if hdr.flags & F_NEEDS_CSUM:
            return [complete_checksum(packet, hdr.csum_start, hdr.csum_offset)]
        return [packet]
    if gso in (GSO_TCPV4, GSO_TCPV6):
        return segment_tcp(packet, hdr.gso_size)
    raise ParseError("not TCP", field="vnet.gso_type")


def _outcome(function: Callable[[bytes], list[bytes]], data: bytes) -> list[bytes] | str:
    try:
        return function(data)
    except ParseError as exc:
        return f"ParseError {exc.field}"


@FUZZ
@given(
    st.builds(
        VnetHdr,
        st.integers(0, 255),
        st.sampled_from([0, GSO_TCPV4, GSO_TCPV6, 3, 0x80, 0x81, 0x84]),
        st.integers(0, 200),
        st.integers(0, 1500),
        st.integers(0, 200),
        st.integers(0, 40),
    ),
    st.sampled_from([b"", _tcp(4, bytes(3000), 1, 0x18), _tcp(6, bytes(100), 9, 0x10)]),
    st.binary(max_size=80),
)
def test_split_reads_the_header_in_place_as_its_fields_say(
    hdr: VnetHdr, packet: bytes, tail: bytes
) -> None:
    data = hdr.pack() + packet + tail
    assert _outcome(split, data) == _outcome(_split_by_fields, data)


@FUZZ
@given(st.binary(max_size=200) | st.builds(_tcp, st.sampled_from([4, 6]),
                                           st.binary(max_size=100), st.integers(0, 2**32 - 1),
                                           st.sampled_from([0x10, 0x18, 0x11, 0x02])))  # fmt: skip
def test_a_lone_packet_is_written_as_it_came(packet: bytes) -> None:
    """The one-packet shortcut of :func:`coalesce` writes what a group of one built (a
    TCP segment) and what any other packet got: the packet behind an empty header."""
    assert coalesce([packet]) == [PLAIN_HDR + packet]
    assert coalesce([packet, packet])[0] == PLAIN_HDR + packet  # the general path agrees
