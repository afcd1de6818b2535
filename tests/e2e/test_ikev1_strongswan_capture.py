"""A real strongSwan IKEv1 exchange, captured on the wire and decoded by kipsec's codec.

Two charons (strongSwan 5.9.8, ``version = 1``, PSK, main mode with NAT-T as the
kernel-libipsec setup needs) set up a tunnel while tcpdump records the wire. Every IKE
datagram is decoded by :mod:`kipsec_sidecar.core.ikev1`: the messages sent in clear
(main mode 1-4) re-encode byte for byte and carry what RFC 2409 and 3947 say they
carry; the encrypted ones (main mode 5-6, quick mode) have headers and whole AES blocks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether

from kipsec_sidecar.core.ike.constants import DhGroup, EncrId, PrfId
from kipsec_sidecar.core.ike.payloads import VendorIdPayload
from kipsec_sidecar.core.ikev1.constants import AuthMethod, ExchangeType, Flag, HashAlgorithm
from kipsec_sidecar.core.ikev1.message import (
    HEADER_LEN,
    Message,
    decode_header,
    decode_message,
    encode_message,
)
from kipsec_sidecar.core.ikev1.payloads import KePayload, NatDPayload, NoncePayload, SaPayload
from kipsec_sidecar.core.ikev1.policy import phase1_suite
from support.capture import Capture
from support.netns import WIRE, WIRE_BRIDGE, Topology
from support.sidecars import wait_until
from support.strongswan import CharonFactory, Psk, gateway_pair

pytestmark = pytest.mark.netns

NON_ESP_MARKER = bytes(4)
RFC3947_VID = bytes.fromhex("4a131c81070358455c5728f20e95452f")


def ike_datagrams(path: Path) -> list[bytes]:
    """The IKE messages of a capture (UDP 500, and UDP 4500 behind the non-ESP marker)."""
    from scapy.utils import rdpcap

    out = []
    for frame in rdpcap(str(path)):
        udp = Ether(bytes(frame)).getlayer(UDP)
        if udp is None:
            continue
        payload = bytes(udp.payload)
        if 500 in (udp.sport, udp.dport):
            out.append(payload)
        elif 4500 in (udp.sport, udp.dport) and payload[:4] == NON_ESP_MARKER:
            out.append(payload[4:])
    return out


def test_a_strongswan_main_and_quick_mode_decode_with_kipsec(
    gateway_topology: Topology, strongswan_factory: CharonFactory, tmp_path: Path
) -> None:
    topo = gateway_topology
    topo.add_node("a")
    topo.add_node("b")
    topo.add_pod("pa", "a")  # the gateway needs an address in the subnet it protects
    topo.add_pod("pb", "b")
    left, right = strongswan_factory(topo, "a"), strongswan_factory(topo, "b")
    conn_left, conn_right = gateway_pair(
        topo, "a", "b",
        auth=(Psk("kipsec-ikev1-capture-0123456789"), Psk("kipsec-ikev1-capture-0123456789")),
        version=1, encap=True, proposals=("aes256-sha256-modp2048",),
        extra={"aggressive": "no"},
    )  # fmt: skip
    left.configure(conn_left)
    right.configure(conn_right)
    left.load()
    right.load()
    pcap = tmp_path / "ikev1.pcap"
    with Capture(topo, WIRE, WIRE_BRIDGE, pcap, bpf="udp"):
        left.initiate("net")
        right.wait_established(timeout=20, child="net")
        # tcpdump may lag behind: wait until main mode (6) and quick mode (3) are on file
        wait_until("9 IKE messages in the capture", lambda: len(ike_datagrams(pcap)) >= 9)
    datagrams = ike_datagrams(pcap)

    clear: list[Message] = []
    encrypted: list[int] = []
    for data in datagrams:
        header = decode_header(data)
        if header.flags & Flag.ENCRYPTION:
            assert (len(data) - HEADER_LEN) % 16 == 0
            encrypted.append(header.exchange)
            continue
        msg = decode_message(data)
        assert encode_message(msg) == data  # byte for byte
        clear.append(msg)

    main = [m for m in clear if m.exchange == ExchangeType.MAIN]
    assert len(main) >= 4, [m.exchange for m in clear]
    sa_i, sa_r = main[0].get(SaPayload), main[1].get(SaPayload)
    assert sa_i is not None and sa_r is not None
    assert len(sa_r.proposals) == 1 and len(sa_r.proposals[0].transforms) == 1
    chosen = phase1_suite(sa_r.proposals[0].transforms[0])
    assert (chosen.encr_id, chosen.key_bits, chosen.hash_alg, chosen.prf_id) == (
        EncrId.AES_CBC,
        256,
        HashAlgorithm.SHA2_256,
        PrfId.HMAC_SHA2_256,
    )
    assert (chosen.auth_method, chosen.dh_group) == (AuthMethod.PRE_SHARED_KEY, DhGroup.MODP_2048)
    assert any(v.data == RFC3947_VID for v in main[0].all(VendorIdPayload))
    for ke_message in main[2:4]:
        ke = ke_message.get(KePayload)
        assert ke is not None and len(ke.data) == 256
        assert ke_message.get(NoncePayload) is not None
        assert len(ke_message.all(NatDPayload)) == 2
    assert encrypted.count(ExchangeType.MAIN) >= 2
    assert encrypted.count(ExchangeType.QUICK) >= 3
