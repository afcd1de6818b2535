"""Interoperability with scapy's independent ESP/AH implementation (scapy.layers.ipsec).

For every algorithm and mode, and IPv4/IPv6 inner and outer headers: what kipsec
protects scapy verifies and opens, and what scapy protects kipsec verifies and opens.
ESN is cross-checked for the AEAD ciphers only: scapy's ESN handling is not a reference
for HMAC, and scapy has no anti-replay window at all.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from scapy.compat import raw
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import AH, ESP, SecurityAssociation
from scapy.packet import Raw

from kipsec_sidecar.core import ah, esp
from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode

# name: (kipsec encr, key bytes incl. salt, kipsec integ, integ key bytes, scapy crypt, scapy auth)
ESP_SUITES: dict[str, tuple[EncrId, int, IntegId | None, int, str, str | None]] = {
    "aes128gcm16": (EncrId.AES_GCM_16, 20, None, 0, "AES-GCM", None),
    "aes256gcm16": (EncrId.AES_GCM_16, 36, None, 0, "AES-GCM", None),
    "chacha20poly1305": (EncrId.CHACHA20_POLY1305, 36, None, 0, "CHACHA20-POLY1305", None),
    "aes128cbc-sha256": (
        EncrId.AES_CBC,
        16,
        IntegId.HMAC_SHA2_256_128,
        32,
        "AES-CBC",
        "SHA2-256-128",
    ),
    "aes256cbc-sha384": (
        EncrId.AES_CBC,
        32,
        IntegId.HMAC_SHA2_384_192,
        48,
        "AES-CBC",
        "SHA2-384-192",
    ),
    "aes128cbc-sha512": (
        EncrId.AES_CBC,
        16,
        IntegId.HMAC_SHA2_512_256,
        64,
        "AES-CBC",
        "SHA2-512-256",
    ),
}
AEAD_SUITES = [name for name, suite in ESP_SUITES.items() if suite[2] is None]
AH_SUITES: dict[str, tuple[IntegId, int, str]] = {
    "sha256": (IntegId.HMAC_SHA2_256_128, 32, "SHA2-256-128"),
    "sha384": (IntegId.HMAC_SHA2_384_192, 48, "SHA2-384-192"),
    "sha512": (IntegId.HMAC_SHA2_512_256, 64, "SHA2-512-256"),
}
ADDRS = {4: ("192.0.2.1", "192.0.2.2"), 6: ("2001:db8::1", "2001:db8::2")}
INNER = {4: ("10.1.0.5", "10.2.0.7"), 6: ("fd00:1::5", "fd00:2::7")}
LAYOUTS = [
    (Mode.TUNNEL, 4, 4),
    (Mode.TUNNEL, 6, 4),
    (Mode.TUNNEL, 4, 6),
    (Mode.TUNNEL, 6, 6),
    (Mode.TRANSPORT, 4, 4),
    (Mode.TRANSPORT, 6, 6),
]
LAYOUT_IDS = [f"{m.value}-in{i}-out{o}" for m, i, o in LAYOUTS]
SPI = 0x0C0FFEE0
IP_CLASS = {4: IP, 6: IPv6}


def inner_packet(mode: Mode, inner: int, outer: int, size: int = 100) -> bytes:
    src, dst = INNER[inner] if mode is Mode.TUNNEL else ADDRS[outer]
    return raw(IP_CLASS[inner](src=src, dst=dst) / UDP(sport=4000, dport=5000) / Raw(bytes(size)))


def scapy_tunnel(mode: Mode, outer: int) -> Any:
    if mode is Mode.TRANSPORT:
        return None
    return IP_CLASS[outer](src=ADDRS[outer][0], dst=ADDRS[outer][1])


def kipsec_esp(name: str, mode: Mode, outer: int, esn: bool = False) -> IpsecSa:
    encr, keylen, integ, integ_len, _, _ = ESP_SUITES[name]
    return IpsecSa(
        spi=SPI,
        src=ADDRS[outer][0],
        dst=ADDRS[outer][1],
        protocol=ProtocolId.ESP,
        mode=mode,
        encr_id=encr,
        encr_key=bytes(range(7, 7 + keylen)),
        integ_id=integ,
        integ_key=bytes(range(50, 50 + integ_len)),
        esn=esn,
    )


def scapy_esp(name: str, mode: Mode, outer: int, esn_high: int | None = None) -> Any:
    _, keylen, _, integ_len, crypt, auth = ESP_SUITES[name]
    return SecurityAssociation(
        ESP,
        spi=SPI,
        crypt_algo=crypt,
        crypt_key=bytes(range(7, 7 + keylen)),
        auth_algo=auth,
        auth_key=bytes(range(50, 50 + integ_len)) if auth else None,
        tunnel_header=scapy_tunnel(mode, outer),
        esn_en=esn_high is not None,
        esn=esn_high or 0,
    )


@pytest.mark.parametrize(("mode", "inner", "outer"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("name", list(ESP_SUITES))
def test_scapy_opens_what_kipsec_seals(name: str, mode: Mode, inner: int, outer: int) -> None:
    packet = inner_packet(mode, inner, outer)
    tx = kipsec_esp(name, mode, outer)
    peer = scapy_esp(name, mode, outer)
    for size in (0, 13, 200):
        packet = inner_packet(mode, inner, outer, size)
        wire = esp.encapsulate(tx, packet, os.urandom)
        assert raw(peer.decrypt(IP_CLASS[outer](wire))) == packet


@pytest.mark.parametrize(("mode", "inner", "outer"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("name", list(ESP_SUITES))
def test_kipsec_opens_what_scapy_seals(name: str, mode: Mode, inner: int, outer: int) -> None:
    rx = kipsec_esp(name, mode, outer)
    peer = scapy_esp(name, mode, outer)
    for size in (0, 13, 200):
        packet = inner_packet(mode, inner, outer, size)
        wire = raw(peer.encrypt(IP_CLASS[inner](packet)))
        assert esp.decapsulate(rx, wire) == packet


@pytest.mark.parametrize(("mode", "inner", "outer"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("name", AEAD_SUITES)
def test_esn_aead_interoperates_both_ways(name: str, mode: Mode, inner: int, outer: int) -> None:
    high, low = 3, 0x10
    packet = inner_packet(mode, inner, outer)
    tx = kipsec_esp(name, mode, outer, esn=True)
    tx.next_seq = (high << 32) | low
    peer = scapy_esp(name, mode, outer, esn_high=high)
    wire = esp.encapsulate(tx, packet, os.urandom)
    assert raw(peer.decrypt(IP_CLASS[outer](wire))) == packet

    rx = kipsec_esp(name, mode, outer, esn=True)
    rx.replay.accept((high << 32) | 1)
    wire = raw(peer.encrypt(IP_CLASS[inner](packet), seq_num=low + 1))
    assert esp.decapsulate(rx, wire) == packet


def kipsec_ah(name: str, mode: Mode, outer: int) -> IpsecSa:
    integ, key_len, _ = AH_SUITES[name]
    return IpsecSa(
        spi=SPI,
        src=ADDRS[outer][0],
        dst=ADDRS[outer][1],
        protocol=ProtocolId.AH,
        mode=mode,
        integ_id=integ,
        integ_key=bytes(range(90, 90 + key_len)),
    )


def scapy_ah(name: str, mode: Mode, outer: int) -> Any:
    _, key_len, auth = AH_SUITES[name]
    return SecurityAssociation(
        AH,
        spi=SPI,
        auth_algo=auth,
        auth_key=bytes(range(90, 90 + key_len)),
        tunnel_header=scapy_tunnel(mode, outer),
    )


@pytest.mark.parametrize(("mode", "inner", "outer"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("name", list(AH_SUITES))
def test_scapy_verifies_kipsec_ah(name: str, mode: Mode, inner: int, outer: int) -> None:
    """Also the same AH length as scapy's: the ICV padded to 32 bits over IPv4 and 64
    over IPv6 (RFC 4302 section 3.3.3.2.1; a verifier may insist on its own padding, as
    Linux does)."""
    tx = kipsec_ah(name, mode, outer)
    peer = scapy_ah(name, mode, outer)
    sender = scapy_ah(name, mode, outer)
    for size in (0, 13, 200):
        packet = inner_packet(mode, inner, outer, size)
        wire = ah.encapsulate(tx, packet)
        assert raw(peer.decrypt(IP_CLASS[outer](wire))) == packet
        assert len(wire) == len(raw(sender.encrypt(IP_CLASS[inner](packet))))


@pytest.mark.parametrize(("mode", "inner", "outer"), LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("name", list(AH_SUITES))
def test_kipsec_verifies_scapy_ah(name: str, mode: Mode, inner: int, outer: int) -> None:
    rx = kipsec_ah(name, mode, outer)
    peer = scapy_ah(name, mode, outer)
    for size in (0, 13, 200):
        packet = inner_packet(mode, inner, outer, size)
        wire = raw(peer.encrypt(IP_CLASS[inner](packet)))
        assert ah.decapsulate(rx, wire) == packet


def test_scapy_detects_a_kipsec_packet_tampered_in_flight() -> None:
    from scapy.layers.ipsec import IPSecIntegrityError

    tx = kipsec_esp("aes128cbc-sha256", Mode.TUNNEL, 4)
    wire = bytearray(esp.encapsulate(tx, inner_packet(Mode.TUNNEL, 4, 4), os.urandom))
    wire[40] ^= 1
    with pytest.raises(IPSecIntegrityError):
        scapy_esp("aes128cbc-sha256", Mode.TUNNEL, 4).decrypt(IP(bytes(wire)))
