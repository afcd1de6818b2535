"""Hostile bytes into the datapath parsers: only the project's typed errors come out.

IP header parsing and 5-tuple extraction, ESP and AH decapsulation (random bytes and
mutations of valid packets, every mode and family), UDP-encapsulation classification
and the SAD packet lookup must raise nothing but KipsecError subclasses.
"""

from __future__ import annotations

import contextlib
import ipaddress
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipsec_sidecar.core import ah, esp, ip, udpencap
from kipsec_sidecar.core.errors import KipsecError
from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode
from kipsec_sidecar.core.sad import SecurityAssociationDatabase

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ADDRS = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}


def udp_packet(version: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 1000, 2000, 8 + len(payload), 0) + payload
    src, dst = (ipaddress.ip_address(a) for a in ADDRS[version])
    if isinstance(src, ipaddress.IPv4Address) and isinstance(dst, ipaddress.IPv4Address):
        return ip.build_ipv4(src, dst, ip.IpProto.UDP, len(udp)) + udp
    assert isinstance(src, ipaddress.IPv6Address) and isinstance(dst, ipaddress.IPv6Address)
    return ip.build_ipv6(src, dst, ip.IpProto.UDP, len(udp)) + udp


def esp_sa(mode: Mode, version: int, cbc: bool, esn: bool) -> IpsecSa:
    return IpsecSa(
        spi=0x4242,
        src=ADDRS[version][0],
        dst=ADDRS[version][1],
        protocol=ProtocolId.ESP,
        mode=mode,
        encr_id=EncrId.AES_CBC if cbc else EncrId.AES_GCM_16,
        encr_key=bytes(16) if cbc else bytes(20),
        integ_id=IntegId.HMAC_SHA2_256_128 if cbc else None,
        integ_key=bytes(32) if cbc else b"",
        esn=esn,
    )


def ah_sa(mode: Mode, version: int, esn: bool) -> IpsecSa:
    return IpsecSa(
        spi=0x4243,
        src=ADDRS[version][0],
        dst=ADDRS[version][1],
        protocol=ProtocolId.AH,
        mode=mode,
        integ_id=IntegId.HMAC_SHA2_256_128,
        integ_key=bytes(32),
        esn=esn,
    )


def zero_rng(n: int) -> bytes:
    return bytes(n)


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes replaced, then maybe truncated or extended."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        if out:
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(out)))
    tail = draw(st.binary(max_size=16))
    return bytes(out[:cut]) + tail if draw(st.booleans()) else bytes(out)


def ip_like() -> st.SearchStrategy[bytes]:
    """Random bytes that start like an IPv4 or IPv6 header, so the parsers go deep."""
    v4 = st.builds(
        lambda rest, ihl: bytes((0x40 | ihl,)) + rest, st.binary(max_size=120), st.integers(0, 15)
    )
    v6 = st.builds(lambda rest: b"\x60" + rest, st.binary(max_size=160))
    return st.one_of(st.binary(max_size=100), v4, v6)


@FUZZ
@given(ip_like())
def test_ip_parsing_raises_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(KipsecError):
        ip.five_tuple(data)


@FUZZ
@given(
    st.sampled_from([(Mode.TUNNEL, 4), (Mode.TUNNEL, 6), (Mode.TRANSPORT, 4), (Mode.TRANSPORT, 6)]),
    st.booleans(),
    ip_like(),
)
def test_esp_decapsulate_random_bytes(layout: tuple[Mode, int], cbc: bool, data: bytes) -> None:
    sa = esp_sa(*layout, cbc=cbc, esn=False)
    with contextlib.suppress(KipsecError):
        esp.decapsulate(sa, data)


@FUZZ
@given(
    st.sampled_from([(Mode.TUNNEL, 4), (Mode.TUNNEL, 6), (Mode.TRANSPORT, 4), (Mode.TRANSPORT, 6)]),
    st.booleans(),
    st.booleans(),
    st.binary(max_size=64),
    st.data(),
)
def test_esp_decapsulate_mutated_packets(
    layout: tuple[Mode, int], cbc: bool, esn: bool, payload: bytes, data: st.DataObject
) -> None:
    mode, version = layout
    tx, rx = esp_sa(mode, version, cbc, esn), esp_sa(mode, version, cbc, esn)
    wire = esp.encapsulate(tx, udp_packet(version, payload), zero_rng)
    with contextlib.suppress(KipsecError):
        esp.decapsulate(rx, data.draw(mutations(wire)))


@FUZZ
@given(st.booleans(), st.binary(max_size=80))
def test_esp_open_random_bytes(cbc: bool, data: bytes) -> None:
    with contextlib.suppress(KipsecError):
        esp.open_(esp_sa(Mode.TUNNEL, 4, cbc, esn=True), b"\x00\x00\x42\x42" + data)


@FUZZ
@given(
    st.sampled_from([(Mode.TUNNEL, 4), (Mode.TUNNEL, 6), (Mode.TRANSPORT, 4), (Mode.TRANSPORT, 6)]),
    ip_like(),
)
def test_ah_decapsulate_random_bytes(layout: tuple[Mode, int], data: bytes) -> None:
    with contextlib.suppress(KipsecError):
        ah.decapsulate(ah_sa(*layout, esn=False), data)


@FUZZ
@given(
    st.sampled_from([(Mode.TUNNEL, 4), (Mode.TUNNEL, 6), (Mode.TRANSPORT, 4), (Mode.TRANSPORT, 6)]),
    st.booleans(),
    st.binary(max_size=64),
    st.data(),
)
def test_ah_decapsulate_mutated_packets(
    layout: tuple[Mode, int], esn: bool, payload: bytes, data: st.DataObject
) -> None:
    mode, version = layout
    tx, rx = ah_sa(mode, version, esn), ah_sa(mode, version, esn)
    wire = ah.encapsulate(tx, udp_packet(version, payload))
    with contextlib.suppress(KipsecError):
        ah.decapsulate(rx, data.draw(mutations(wire)))


@FUZZ
@given(ip_like())
def test_encapsulating_garbage_raises_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(KipsecError):
        esp.encapsulate(esp_sa(Mode.TRANSPORT, 4, False, False), data, zero_rng)
    with contextlib.suppress(KipsecError):
        esp.encapsulate(esp_sa(Mode.TUNNEL, 6, True, False), data, zero_rng)
    with contextlib.suppress(KipsecError):
        ah.encapsulate(ah_sa(Mode.TRANSPORT, 6, False), data)
    with contextlib.suppress(KipsecError):
        ah.encapsulate(ah_sa(Mode.TUNNEL, 4, False), data)


@FUZZ
@given(st.binary(max_size=40))
def test_udpencap_raises_only_typed_errors(data: bytes) -> None:
    for fn in (udpencap.classify, udpencap.unwrap_ike, udpencap.esp_spi):
        with contextlib.suppress(KipsecError):
            fn(data)


@FUZZ
@given(ip_like())
def test_sad_lookup_raises_only_typed_errors(data: bytes) -> None:
    sad = SecurityAssociationDatabase()
    sad.add(esp_sa(Mode.TUNNEL, 4, False, False))
    with contextlib.suppress(KipsecError):
        sad.lookup_packet(data)
