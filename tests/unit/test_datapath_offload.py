"""TUN offload helpers: TCP segmentation, checksum completion, GRO-style merging, UDP GSO/GRO.

Packets are built by scapy (an independent implementation of IP and TCP); checksums
are checked with a plain 16-bit word loop, not with the module's own arithmetic. The
UDP GSO/GRO tests send real datagrams over loopback.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from kipsec_sidecar.core.errors import ParseError
from kipsec_sidecar.datapath import offload
from kipsec_sidecar.datapath.offload import (
    F_NEEDS_CSUM,
    GSO_TCPV4,
    GSO_TCPV6,
    PLAIN_HDR,
    VNET_HDR_LEN,
    VnetHdr,
    coalesce,
    segment_tcp,
    split,
)
from kipsec_sidecar.datapath.sockets import GsoSender, enable_gro, receive_batch

MSS = 1000
A4, B4 = "10.1.0.1", "10.2.0.2"
A6, B6 = "2001:db8::1", "2001:db8::2"


def word_sum(data: bytes) -> int:
    """The RFC 1071 sum, folded, computed the slow obvious way."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def transport_ok(packet: bytes) -> bool:
    """Does the TCP/UDP checksum of an unfragmented IP packet verify (word loop)?"""
    if packet[0] >> 4 == 4:
        offset = (packet[0] & 0x0F) * 4
        pseudo = packet[12:20] + struct.pack("!BBH", 0, packet[9], len(packet) - offset)
        header_ok = word_sum(packet[:offset]) == 0xFFFF
    else:
        offset = 40
        pseudo = packet[8:40] + struct.pack("!IxxxB", len(packet) - 40, packet[6])
        header_ok = True
    return header_ok and word_sum(pseudo + packet[offset:]) == 0xFFFF


def tcp4(payload: bytes, *, seq: int = 1000, flags: str = "A", **tcp: Any) -> bytes:
    fields: dict[str, Any] = {"sport": 40000, "dport": 5201, "ack": 99, "window": 512}
    pkt = IP(src=A4, dst=B4, flags="DF", id=7) / TCP(seq=seq, flags=flags, **{**fields, **tcp})
    return bytes(pkt / payload)


def tcp6(payload: bytes, *, seq: int = 1000, flags: str = "A") -> bytes:
    pkt = IPv6(src=A6, dst=B6) / TCP(sport=40000, dport=5201, seq=seq, ack=99, flags=flags)
    return bytes(pkt / payload)


def partial(packet: bytes, version: int) -> bytes:
    """``packet`` as a TSO/NEEDS_CSUM stack hands it over: transport checksum field =
    the pseudo-header sum only (what Linux puts there for CHECKSUM_PARTIAL)."""
    offset = (packet[0] & 0x0F) * 4 if version == 4 else 40
    proto = packet[9] if version == 4 else packet[6]
    field = offset + (16 if proto == 6 else 6)
    addrs = packet[12:20] if version == 4 else packet[8:40]
    pseudo = word_sum(addrs + struct.pack("!HH", proto, len(packet) - offset))
    return packet[:field] + struct.pack("!H", pseudo) + packet[field + 2 :]


def tso_read(packet: bytes, mss: int, version: int) -> bytes:
    gso = GSO_TCPV4 if version == 4 else GSO_TCPV6
    offset = 20 if version == 4 else 40
    hdr = VnetHdr(F_NEEDS_CSUM, gso, offset + 20, mss, offset, 16)
    return hdr.pack() + partial(packet, version)


# -- virtio_net_hdr ------------------------------------------------------------------------


def test_a_vnet_header_round_trips_through_pack_and_unpack() -> None:
    hdr = VnetHdr(F_NEEDS_CSUM, GSO_TCPV6, 60, 1400, 40, 16)
    assert len(hdr.pack()) == VNET_HDR_LEN
    assert VnetHdr.unpack(hdr.pack()) == hdr


def test_a_read_shorter_than_the_vnet_header_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        split(b"\0" * 9)


def test_a_read_without_offload_work_is_the_packet_unchanged() -> None:
    packet = tcp4(b"x" * 50)
    assert split(PLAIN_HDR + packet) == [packet]


# -- reads: checksum completion and segmentation ---------------------------------------------


@pytest.mark.parametrize("version", [4, 6])
def test_a_needs_csum_udp_packet_gets_its_checksum_completed(version: int) -> None:
    ip = IP(src=A4, dst=B4) if version == 4 else IPv6(src=A6, dst=B6)
    packet = bytes(ip / UDP(sport=5000, dport=53) / (b"odd-length payload!" * 3))
    offset = 20 if version == 4 else 40
    read = VnetHdr(F_NEEDS_CSUM, 0, 0, 0, offset, 6).pack() + partial(packet, version)
    (out,) = split(read)
    assert transport_ok(out)
    assert out == packet or out[offset + 8 :] == packet[offset + 8 :]


def test_a_checksum_position_outside_the_packet_is_a_parse_error() -> None:
    packet = tcp4(b"abc")
    with pytest.raises(ParseError):
        split(VnetHdr(F_NEEDS_CSUM, 0, 0, 0, len(packet), 16).pack() + packet)


@pytest.mark.parametrize("version", [4, 6])
def test_a_super_segment_is_cut_into_mss_segments_with_valid_headers(version: int) -> None:
    payload = os.urandom(2 * MSS + 333)
    build = tcp4 if version == 4 else tcp6
    segments = split(tso_read(build(payload, flags="PA"), MSS, version))

    assert len(segments) == 3
    layer = IP if version == 4 else IPv6
    parsed = [layer(seg) for seg in segments]
    assert [bytes(p[TCP].payload) for p in parsed] == [
        payload[:MSS],
        payload[MSS : 2 * MSS],
        payload[2 * MSS :],
    ]
    assert [p[TCP].seq for p in parsed] == [1000, 1000 + MSS, 1000 + 2 * MSS]
    assert [str(p[TCP].flags) for p in parsed] == ["A", "A", "PA"]
    assert all(transport_ok(seg) for seg in segments)
    if version == 4:
        assert [p.id for p in parsed] == [7, 8, 9]
        assert [p.len for p in parsed] == [len(s) for s in segments]
    else:
        assert [p.plen for p in parsed] == [len(s) - 40 for s in segments]


def test_fin_goes_on_the_last_segment_and_cwr_on_the_first_only() -> None:
    segments = segment_tcp(partial(tcp4(os.urandom(2 * MSS), flags="FAC"), 4), MSS)
    assert [str(TCP(s[20:]).flags) for s in segments] == ["AC", "FA"]


def test_sequence_numbers_wrap_at_two_to_the_32() -> None:
    segments = segment_tcp(partial(tcp4(os.urandom(2 * MSS), seq=2**32 - 10), 4), MSS)
    assert [TCP(s[20:]).seq for s in segments] == [2**32 - 10, MSS - 10]
    assert all(transport_ok(s) for s in segments)


def test_tcp_options_are_copied_into_every_segment() -> None:
    packet = tcp4(os.urandom(3 * MSS), options=[("Timestamp", (123, 456))])
    segments = segment_tcp(partial(packet, 4), MSS)
    assert all(dict(TCP(s[20:]).options)["Timestamp"] == (123, 456) for s in segments)
    assert all(transport_ok(s) for s in segments)


def test_a_tso_read_that_is_not_tcp_is_a_parse_error() -> None:
    udp = bytes(IP(src=A4, dst=B4) / UDP() / b"x")
    with pytest.raises(ParseError):
        split(VnetHdr(F_NEEDS_CSUM, GSO_TCPV4, 28, 1000, 20, 6).pack() + udp)


# -- writes: merging -----------------------------------------------------------------------


def test_consecutive_segments_of_a_flow_become_one_gso_write_that_splits_back() -> None:
    packet = tcp4(os.urandom(5 * MSS + 17), flags="PA")
    segments = segment_tcp(partial(packet, 4), MSS)

    (write,) = coalesce(segments)

    hdr = VnetHdr.unpack(write)
    assert (hdr.flags, hdr.gso_type, hdr.gso_size) == (F_NEEDS_CSUM, GSO_TCPV4, MSS)
    assert (hdr.csum_start, hdr.csum_offset, hdr.hdr_len) == (20, 16, 40)
    assert split(write) == segments  # the kernel's segmentation gives the originals back


def test_ipv6_segments_merge_too() -> None:
    segments = segment_tcp(partial(tcp6(os.urandom(3 * MSS)), 6), MSS)
    (write,) = coalesce(segments)
    assert VnetHdr.unpack(write).gso_type == GSO_TCPV6
    assert split(write) == segments


def test_a_single_packet_is_written_with_an_empty_vnet_header() -> None:
    packet = tcp4(b"hello")
    assert coalesce([packet]) == [PLAIN_HDR + packet]


def test_interleaved_flows_merge_separately_each_in_order() -> None:
    one = segment_tcp(partial(tcp4(os.urandom(2 * MSS)), 4), MSS)
    other = segment_tcp(partial(tcp4(os.urandom(2 * MSS), sport=41000), 4), MSS)
    writes = coalesce([one[0], other[0], one[1], other[1]])
    assert [split(w) for w in writes] == [one, other]


def test_a_sequence_gap_starts_a_new_write() -> None:
    first = segment_tcp(partial(tcp4(os.urandom(2 * MSS)), 4), MSS)
    later = segment_tcp(partial(tcp4(os.urandom(2 * MSS), seq=1000 + 5 * MSS), 4), MSS)
    writes = coalesce(first + later)
    assert [split(w) for w in writes] == [first, later]


def test_segment_checksums_are_not_read_the_merge_carries_the_pseudo_header_sum() -> None:
    # coalesce() only ever sees packets ESP authenticated: it trusts them and leaves the
    # checksum to the kernel (NEEDS_CSUM), whatever the segments' own checksum fields say.
    good = segment_tcp(partial(tcp4(os.urandom(3 * MSS)), 4), MSS)
    stale = [bytearray(p) for p in good]
    for packet in stale:
        packet[36:38] = b"\x12\x34"  # the TCP checksum field
    merged = coalesce([bytes(p) for p in stale])
    assert merged == coalesce(good)
    assert len(merged) == 1
    assert all(transport_ok(p) for p in split(merged[0]))


@pytest.mark.parametrize("flags", ["S", "SA", "FA", "RA", "UA", "EA"])
def test_control_segments_are_never_merged(flags: str) -> None:
    data = tcp4(os.urandom(MSS))
    control = tcp4(os.urandom(MSS), seq=1000 + MSS, flags=flags)
    assert len(coalesce([data, control])) == 2


def test_a_pure_ack_is_not_merged_and_closes_the_flow_so_order_is_kept() -> None:
    first = tcp4(os.urandom(MSS))
    ack = tcp4(b"", seq=1000 + MSS)
    second = tcp4(os.urandom(MSS), seq=1000 + MSS)
    assert coalesce([first, ack, second]) == [PLAIN_HDR + p for p in (first, ack, second)]


def test_psh_ends_a_merge() -> None:
    first = tcp4(os.urandom(MSS), flags="PA")
    second = tcp4(os.urandom(MSS), seq=1000 + MSS)
    assert len(coalesce([first, second])) == 2


def test_segments_with_different_acknowledgements_are_not_merged() -> None:
    first = tcp4(os.urandom(MSS))
    second = bytes(IP(tcp4(os.urandom(MSS), seq=1000 + MSS)))
    changed = IP(second)
    changed[TCP].ack = 100
    del changed[TCP].chksum
    assert len(coalesce([first, bytes(changed)])) == 2


def test_a_segment_longer_than_the_first_is_not_merged() -> None:
    first = tcp4(os.urandom(MSS))
    second = tcp4(os.urandom(MSS + 1), seq=1000 + MSS)
    assert len(coalesce([first, second])) == 2


def test_a_merge_stops_below_64_kib() -> None:
    segments = [tcp4(os.urandom(1400), seq=1000 + i * 1400) for i in range(50)]
    writes = coalesce(segments)
    assert len(writes) == 2
    assert all(len(w) - VNET_HDR_LEN <= 65535 for w in writes)
    # Same TCP segments back (the IP identification is the kernel's choice, not kept).
    assert [s[20:] for w in writes for s in split(w)] == [s[20:] for s in segments]


def test_non_ip_bytes_are_written_as_they_are() -> None:
    assert coalesce([b"\x00garbage"]) == [PLAIN_HDR + b"\x00garbage"]


def test_ones_sum_agrees_with_the_word_loop() -> None:
    for size in (0, 1, 2, 3, 1399, 1400):
        data = os.urandom(size)
        expected = word_sum(data) % 0xFFFF
        assert offload.ones_sum(data) == expected


# -- UDP GSO and GRO over loopback -------------------------------------------------------


def _pair() -> tuple[socket.socket, socket.socket]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return sender, receiver


def _drain(receiver: socket.socket, want: int) -> list[bytes]:
    """What arrives within 2 s (stops as soon as ``want`` datagrams did)."""
    got: list[bytes] = []
    deadline = time.monotonic() + 2.0
    while len(got) < want and time.monotonic() < deadline:
        select.select([receiver], [], [], 0.1)
        got += [data for data, _ in receive_batch(receiver, 64)]
    return got


def _datagrams() -> list[bytes]:
    return [os.urandom(1200) for _ in range(10)] + [os.urandom(300)]


def test_gso_sends_a_run_of_datagrams_that_arrive_as_separate_datagrams() -> None:
    sender, receiver = _pair()
    with sender, receiver:
        datagrams = _datagrams()
        gso = GsoSender(sender)
        gso(datagrams, receiver.getsockname())
        assert gso.gso and gso.sent == len(datagrams)
        assert _drain(receiver, len(datagrams)) == datagrams


def test_gro_reads_are_split_back_into_the_datagrams_that_were_sent() -> None:
    sender, receiver = _pair()
    with sender, receiver:
        assert enable_gro(receiver)
        datagrams = _datagrams()
        GsoSender(sender)(datagrams, receiver.getsockname())
        assert _drain(receiver, len(datagrams)) == datagrams


def test_gso_runs_break_where_sizes_grow() -> None:
    sender, receiver = _pair()
    with sender, receiver:
        datagrams = [os.urandom(n) for n in (500, 500, 200, 900, 900, 900, 10)]
        GsoSender(sender)(datagrams, receiver.getsockname())
        assert _drain(receiver, len(datagrams)) == datagrams


def test_a_lone_datagram_is_sent_as_it_is_and_counted() -> None:
    """The one-datagram shortcut (a ping, an ACK) sends what a run of one sent."""
    sender, receiver = _pair()
    with sender, receiver:
        gso = GsoSender(sender)
        for datagram in (os.urandom(84), os.urandom(1400)):
            gso([datagram], receiver.getsockname())
            assert gso.sent == 1 and gso.gso
            assert _drain(receiver, 1) == [datagram]
