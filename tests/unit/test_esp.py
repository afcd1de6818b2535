"""ESP (RFC 4303): round trips, padding, trailer checks, integrity before replay update."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable

import pytest

from kipsec_sidecar.core import esp
from kipsec_sidecar.core.errors import (
    IntegrityError,
    LocalProtocolError,
    ParseError,
    RefusedAlgorithm,
    ReplayError,
    SequenceExhausted,
    UnsupportedAlgorithm,
)
from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.core.ip import (
    IpProto,
    IPv4Header,
    build_ipv4,
    build_ipv6,
    build_outer,
    ipv4_checksum,
    parse_ip,
)
from kipsec_sidecar.core.ipsec_sa import (
    IpsecSa,
    Lifetime,
    LifetimeExpired,
    LifetimeState,
    Mode,
)

SUITES: dict[str, tuple[EncrId, int, IntegId | None, int]] = {
    "aes128gcm16": (EncrId.AES_GCM_16, 16 + 4, None, 0),
    "aes256gcm16": (EncrId.AES_GCM_16, 32 + 4, None, 0),
    "chacha20poly1305": (EncrId.CHACHA20_POLY1305, 32 + 4, None, 0),
    "aes128cbc-sha256": (EncrId.AES_CBC, 16, IntegId.HMAC_SHA2_256_128, 32),
    "aes256cbc-sha384": (EncrId.AES_CBC, 32, IntegId.HMAC_SHA2_384_192, 48),
    "aes192cbc-sha512": (EncrId.AES_CBC, 24, IntegId.HMAC_SHA2_512_256, 64),
}
ADDRS = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
INNER = {4: ("10.1.0.5", "10.2.0.7"), 6: ("fd00:1::5", "fd00:2::7")}
# (mode, inner family, outer family): transport keeps one header, so both are the same.
LAYOUTS = [
    (Mode.TUNNEL, 4, 4),
    (Mode.TUNNEL, 6, 4),
    (Mode.TUNNEL, 4, 6),
    (Mode.TUNNEL, 6, 6),
    (Mode.TRANSPORT, 4, 4),
    (Mode.TRANSPORT, 6, 6),
]


def counting_rng() -> Callable[[int], bytes]:
    state = [0]

    def rng(n: int) -> bytes:
        state[0] += 1
        return (state[0].to_bytes(4, "big") * ((n + 3) // 4))[:n]

    return rng


def udp_packet(src: str, dst: str, payload: bytes, sport: int = 4000, dport: int = 5000) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if isinstance(a, ipaddress.IPv4Address) and isinstance(b, ipaddress.IPv4Address):
        return build_ipv4(a, b, IpProto.UDP, len(udp), tos=0x28) + udp
    assert isinstance(a, ipaddress.IPv6Address) and isinstance(b, ipaddress.IPv6Address)
    return build_ipv6(a, b, IpProto.UDP, len(udp), traffic_class=0x28) + udp


def make_sa(
    suite: str = "aes128gcm16",
    mode: Mode = Mode.TUNNEL,
    family: int = 4,
    *,
    esn: bool = False,
    spi: int = 0x1234,
    lifetime: Lifetime | None = None,
) -> IpsecSa:
    encr, keylen, integ, integ_len = SUITES[suite]
    src, dst = ADDRS[family]
    return IpsecSa(
        spi=spi,
        src=src,
        dst=dst,
        protocol=ProtocolId.ESP,
        mode=mode,
        encr_id=encr,
        encr_key=bytes(range(1, keylen + 1)),
        integ_id=integ,
        integ_key=bytes(range(100, 100 + integ_len)),
        esn=esn,
        lifetime=lifetime,
    )


def pair(
    suite: str = "aes128gcm16",
    mode: Mode = Mode.TUNNEL,
    family: int = 4,
    *,
    esn: bool = False,
    spi: int = 0x1234,
    lifetime: Lifetime | None = None,
) -> tuple[IpsecSa, IpsecSa]:
    """A sending SA and a receiving SA with the same keys."""
    tx = make_sa(suite, mode, family, esn=esn, spi=spi, lifetime=lifetime)
    rx = make_sa(suite, mode, family, esn=esn, spi=spi, lifetime=lifetime)
    return tx, rx


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize(("mode", "inner", "outer"), LAYOUTS, ids=lambda v: str(v))
@pytest.mark.parametrize("suite", list(SUITES))
def test_round_trip_restores_the_packet(
    suite: str, mode: Mode, inner: int, outer: int, esn: bool
) -> None:
    tx, rx = pair(suite, mode, outer, esn=esn)
    src, dst = INNER[inner] if mode is Mode.TUNNEL else ADDRS[outer]
    rng = counting_rng()
    for size in (0, 1, 37, 1400):
        packet = udp_packet(src, dst, bytes(range(256)) * (size // 256) + bytes(size % 256))
        wire = esp.encapsulate(tx, packet, rng)
        header = parse_ip(wire)
        assert header.version == outer
        assert wire.find(packet[-16:]) == -1 or size == 0
        assert esp.decapsulate(rx, wire) == packet


def test_tunnel_outer_header_uses_sa_addresses_and_copies_dscp() -> None:
    tx, _ = pair()
    wire = esp.encapsulate(tx, udp_packet(*INNER[4], b"x"), counting_rng())
    outer = parse_ip(wire)
    assert isinstance(outer, IPv4Header)
    assert (str(outer.src), str(outer.dst)) == ADDRS[4]
    assert outer.version == 4 and outer.protocol == IpProto.ESP and outer.tos == 0x28
    assert outer.total_length == len(wire)


def test_transport_mode_ipv4_fixes_protocol_length_and_checksum() -> None:
    tx, _ = pair(mode=Mode.TRANSPORT)
    packet = udp_packet(*ADDRS[4], b"hello")
    wire = esp.encapsulate(tx, packet, counting_rng())
    header = parse_ip(wire)
    assert isinstance(header, IPv4Header)
    assert header.protocol == IpProto.ESP and header.total_length == len(wire)
    assert ipv4_checksum(wire[:20]) == 0
    assert wire[12:20] == packet[12:20]


def test_transport_mode_ipv6_inserts_esp_after_hop_by_hop() -> None:
    tx, rx = pair(mode=Mode.TRANSPORT, family=6)
    udp = struct.pack("!HHHH", 1, 2, 12, 0) + b"data"
    hbh = bytes((IpProto.UDP, 0, 5, 2, 0, 0, 1, 0))  # Router Alert option, padded to 8
    src, dst = (ipaddress.IPv6Address(a) for a in ADDRS[6])
    packet = build_ipv6(src, dst, IpProto.HOPOPT, len(hbh) + len(udp)) + hbh + udp
    wire = esp.encapsulate(tx, packet, counting_rng())
    assert wire[6] == IpProto.HOPOPT and wire[40] == IpProto.ESP
    assert wire[48:52] == (0x1234).to_bytes(4, "big")
    assert esp.decapsulate(rx, wire) == packet


def test_padding_is_monotonic_and_aligns_to_the_cipher_block() -> None:
    tx, _ = pair("aes128cbc-sha256")
    rx_keys = make_sa("aes128cbc-sha256")
    sealed = esp.seal(tx, IpProto.UDP, b"abc", counting_rng())
    # 8 header + 16 IV + 16 ciphertext + 16 ICV: 3 payload + 11 padding + 2 trailer.
    assert len(sealed) == 8 + 16 + 16 + 16
    assert esp.open_(rx_keys, sealed) == (IpProto.UDP, b"abc")


@pytest.mark.parametrize("suite", list(SUITES))
def test_esp_payload_is_four_byte_aligned(suite: str) -> None:
    tx, _ = pair(suite)
    for n in range(0, 40):
        assert len(esp.seal(tx, IpProto.UDP, bytes(n), counting_rng())) % 4 == 0


def test_aead_iv_is_the_sequence_number_so_it_never_repeats() -> None:
    tx, _ = pair("aes256gcm16")
    first = esp.seal(tx, IpProto.UDP, b"a", counting_rng())
    second = esp.seal(tx, IpProto.UDP, b"a", counting_rng())
    assert first[8:16] == (1).to_bytes(8, "big")
    assert second[8:16] == (2).to_bytes(8, "big")


def test_cbc_iv_comes_from_the_injected_rng() -> None:
    tx, _ = pair("aes128cbc-sha256")
    sealed = esp.seal(tx, IpProto.UDP, b"a", lambda n: b"\xab" * n)
    assert sealed[8:24] == b"\xab" * 16


@pytest.mark.parametrize("suite", list(SUITES))
@pytest.mark.parametrize("where", ["header", "iv", "ciphertext", "icv"])
def test_tampering_raises_integrity_error_and_leaves_the_window(suite: str, where: str) -> None:
    tx, rx = pair(suite)
    wire = bytearray(esp.seal(tx, IpProto.UDP, b"payload" * 5, counting_rng()))
    index = {"header": 7, "iv": 9, "ciphertext": 30, "icv": len(wire) - 1}[where]
    wire[index] ^= 0x01
    with pytest.raises((IntegrityError, ReplayError)):
        esp.open_(rx, bytes(wire))
    assert rx.replay.top == 0 and rx.replay.bitmap == 0


def test_duplicate_packet_is_a_replay() -> None:
    tx, rx = pair()
    wire = esp.encapsulate(tx, udp_packet(*INNER[4], b"x"), counting_rng())
    esp.decapsulate(rx, wire)
    with pytest.raises(ReplayError):
        esp.decapsulate(rx, wire)


def test_forged_packet_with_high_sequence_does_not_move_the_window() -> None:
    tx, rx = pair()
    good = esp.seal(tx, IpProto.UDP, b"x", counting_rng())
    forged = bytearray(good)
    forged[4:8] = (5000).to_bytes(4, "big")
    with pytest.raises(IntegrityError):
        esp.open_(rx, bytes(forged))
    assert esp.open_(rx, good) == (IpProto.UDP, b"x")


def test_wrong_spi_is_a_parse_error() -> None:
    tx, _ = pair(spi=0x1111)
    _, rx = pair(spi=0x2222)
    with pytest.raises(ParseError, match="spi"):
        esp.open_(rx, esp.seal(tx, IpProto.UDP, b"x", counting_rng()))


def _sealed_plaintext(rx: IpsecSa, tx: IpsecSa, plaintext: bytes) -> bytes:
    """ESP bytes around a hand-made plaintext (to exercise the trailer checks)."""
    assert tx.transform is not None
    seq = tx.next_sequence()
    spi_seq = struct.pack("!II", tx.spi, seq)
    return spi_seq + tx.transform.encrypt(spi_seq, b"", seq.to_bytes(8, "big"), plaintext)


def test_bad_padding_bytes_are_rejected() -> None:
    tx, rx = pair()
    data = _sealed_plaintext(rx, tx, b"ab" + b"\x01\x03" + bytes((2, IpProto.UDP)))
    with pytest.raises(ParseError, match="padding"):
        esp.open_(rx, data)


def test_pad_length_beyond_the_payload_is_rejected() -> None:
    tx, rx = pair()
    data = _sealed_plaintext(rx, tx, b"ab" + bytes((9, IpProto.UDP)))
    with pytest.raises(ParseError, match="pad_length"):
        esp.open_(rx, data)


def test_tunnel_mode_refuses_a_next_header_that_is_not_ip() -> None:
    tx, rx = pair()
    esp_bytes = esp.seal(tx, IpProto.TCP, b"not an ip packet", counting_rng())
    outer = build_outer(rx.src_packed, rx.dst_packed, IpProto.ESP, len(esp_bytes))
    with pytest.raises(ParseError, match="next_header"):
        esp.decapsulate(rx, outer + esp_bytes)


def test_dummy_packet_decapsulates_to_nothing() -> None:
    tx, rx = pair()
    esp_bytes = esp.seal(tx, IpProto.NONE, b"\x00" * 8, counting_rng())
    outer = build_outer(rx.src_packed, rx.dst_packed, IpProto.ESP, len(esp_bytes))
    assert esp.decapsulate(rx, outer + esp_bytes) == b""


def test_tfc_padding_after_the_inner_packet_is_dropped() -> None:
    tx, rx = pair()
    inner = udp_packet(*INNER[4], b"x")
    esp_bytes = esp.seal(tx, IpProto.IPIP, inner + bytes(32), counting_rng())
    outer = build_outer(rx.src_packed, rx.dst_packed, IpProto.ESP, len(esp_bytes))
    assert esp.decapsulate(rx, outer + esp_bytes) == inner


def test_fragmented_outer_packet_is_refused() -> None:
    tx, rx = pair()
    wire = bytearray(esp.encapsulate(tx, udp_packet(*INNER[4], b"x"), counting_rng()))
    wire[6] = 0x20  # MF
    with pytest.raises(ParseError, match="fragment"):
        esp.decapsulate(rx, bytes(wire))


def test_sequence_exhaustion_raises_before_the_counter_wraps() -> None:
    tx, _ = pair()
    tx.next_seq = 0xFFFFFFFF
    esp.seal(tx, IpProto.UDP, b"last", counting_rng())
    with pytest.raises(SequenceExhausted):
        esp.seal(tx, IpProto.UDP, b"wrapped", counting_rng())


def test_esn_counter_crosses_two_to_the_32() -> None:
    tx, rx = pair(esn=True)
    tx.next_seq = 0xFFFFFFFE
    rx.replay.accept(0xFFFFFFF0)
    for _ in range(4):
        assert esp.open_(rx, esp.seal(tx, IpProto.UDP, b"x", counting_rng()))[1] == b"x"
    assert rx.replay.top == 0x1_00000001


def test_sequence_soft_limit_signals_well_before_exhaustion() -> None:
    tx, _ = pair()
    before = tx.lifetime_state
    tx.next_seq = 0xFFFFFFFF - 0xFFFFFFFF // 32
    assert (before, tx.lifetime_state) == (LifetimeState.OK, LifetimeState.SOFT)
    assert tx.sequence_soft_limit_reached


def test_packet_lifetimes_go_soft_then_hard() -> None:
    tx, _ = pair(lifetime=Lifetime(soft_packets=2, hard_packets=3))
    states = []
    for payload in (b"1", b"2", b"3"):
        esp.seal(tx, IpProto.UDP, payload, counting_rng())
        states.append(tx.lifetime_state)
    assert states == [LifetimeState.OK, LifetimeState.SOFT, LifetimeState.HARD]
    with pytest.raises(LifetimeExpired):
        esp.seal(tx, IpProto.UDP, b"4", counting_rng())


def test_byte_lifetime_counts_payload_bytes() -> None:
    tx, rx = pair(lifetime=Lifetime(soft_bytes=100, hard_bytes=1000))
    data = esp.seal(tx, IpProto.UDP, bytes(150), counting_rng())
    assert tx.bytes == 150 and tx.soft_limit_reached and not tx.hard_limit_reached
    esp.open_(rx, data)
    assert (rx.bytes, rx.packets) == (150, 1)


@pytest.mark.parametrize(
    ("encr", "integ", "named"),
    [
        (EncrId.DES3, IntegId.HMAC_SHA2_256_128, "3DES"),
        (EncrId.DES, IntegId.HMAC_SHA2_256_128, "DES"),
        (EncrId.NULL, IntegId.HMAC_SHA2_256_128, "NULL"),
        (EncrId.AES_CBC, IntegId.HMAC_MD5_96, "MD5"),
        (EncrId.AES_CBC, None, "without integrity"),
    ],
)
def test_refused_algorithms_name_the_safe_alternative(
    encr: EncrId, integ: IntegId | None, named: str
) -> None:
    with pytest.raises(RefusedAlgorithm, match=named) as info:
        IpsecSa(
            spi=0x1000,
            src="192.0.2.1",
            dst="192.0.2.2",
            protocol=ProtocolId.ESP,
            mode=Mode.TUNNEL,
            encr_id=encr,
            encr_key=bytes(16),
            integ_id=integ,
            integ_key=bytes(32),
        )
    assert "AES-GCM" in info.value.alternative or "SHA2-256" in info.value.alternative


def test_esp_without_encryption_is_refused() -> None:
    with pytest.raises(RefusedAlgorithm):
        IpsecSa(
            spi=0x1000,
            src="192.0.2.1",
            dst="192.0.2.2",
            protocol=ProtocolId.ESP,
            mode=Mode.TUNNEL,
            integ_id=IntegId.HMAC_SHA2_256_128,
            integ_key=bytes(32),
        )


@pytest.mark.parametrize(
    ("encr", "key_len", "integ", "integ_len"),
    [
        (EncrId.AES_GCM_16, 16, None, 0),  # salt missing
        (EncrId.CHACHA20_POLY1305, 20, None, 0),
        (EncrId.AES_CBC, 15, IntegId.HMAC_SHA2_256_128, 32),
        (EncrId.AES_CBC, 16, IntegId.HMAC_SHA2_256_128, 16),
    ],
)
def test_wrong_key_lengths_are_refused(
    encr: EncrId, key_len: int, integ: IntegId | None, integ_len: int
) -> None:
    with pytest.raises(LocalProtocolError):
        IpsecSa(
            spi=0x1000,
            src="192.0.2.1",
            dst="192.0.2.2",
            protocol=ProtocolId.ESP,
            mode=Mode.TUNNEL,
            encr_id=encr,
            encr_key=bytes(key_len),
            integ_id=integ,
            integ_key=bytes(integ_len),
        )


def test_key_bits_must_agree_with_the_key() -> None:
    with pytest.raises(LocalProtocolError, match="256"):
        IpsecSa(
            spi=0x1000,
            src="192.0.2.1",
            dst="192.0.2.2",
            protocol=ProtocolId.ESP,
            mode=Mode.TUNNEL,
            encr_id=EncrId.AES_GCM_16,
            encr_key=bytes(20),
            encr_key_bits=256,
        )


def test_aead_with_a_separate_integrity_transform_is_unsupported() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        IpsecSa(
            spi=0x1000,
            src="192.0.2.1",
            dst="192.0.2.2",
            protocol=ProtocolId.ESP,
            mode=Mode.TUNNEL,
            encr_id=EncrId.AES_GCM_16,
            encr_key=bytes(20),
            integ_id=IntegId.HMAC_SHA2_256_128,
            integ_key=bytes(32),
        )


@pytest.mark.parametrize("spi", [0, 1, 255, 1 << 32])
def test_reserved_spis_are_refused(spi: int) -> None:
    with pytest.raises(LocalProtocolError, match="SPI"):
        make_sa(spi=spi)


def test_repr_never_shows_keys() -> None:
    sa = make_sa("aes128cbc-sha256")
    text = repr(sa) + repr(sa.transform)
    assert bytes(range(1, 17)).hex() not in text and "0102030405" not in text
