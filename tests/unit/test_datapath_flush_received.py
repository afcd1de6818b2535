"""What the userspace datapath decrypted in one socket read is written when the reader
says its batch is done (``flush_received``), and nothing is left for a later event-loop
pass: a ping's reply can only be generated once its request is in the pod's stack, so
a pass on the way in is latency on every packet (bench/README.md, "Latency, issue 14
second part")."""

from __future__ import annotations

import asyncio
import ipaddress
import os

from kipsec_sidecar.core import esp
from kipsec_sidecar.core.ike.constants import EncrId, ProtocolId
from kipsec_sidecar.core.ip import IpProto, build_ipv4
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode
from kipsec_sidecar.core.traffic_selectors import TrafficSelector
from kipsec_sidecar.datapath import offload
from kipsec_sidecar.datapath.base import PeerPolicy
from kipsec_sidecar.datapath.tun import TunDevice
from kipsec_sidecar.datapath.userspace import UserspaceDatapath, _Peer

PACKET = build_ipv4(
    ipaddress.IPv4Address("10.10.2.2"), ipaddress.IPv4Address("10.10.1.2"), IpProto.UDP, 8
) + bytes(8)
KEY = bytes(range(36))


def _sa() -> IpsecSa:
    return IpsecSa(
        spi=0x1001,
        src="192.0.2.2",
        dst="192.0.2.1",
        protocol=ProtocolId.ESP,
        mode=Mode.TUNNEL,
        encr_id=EncrId.AES_GCM_16,
        encr_key=KEY,
    )


def _datapath(tun_fd: int) -> UserspaceDatapath:
    """A datapath with one peer and its inbound SA, writing to ``tun_fd`` with offload."""
    datapath = UserspaceDatapath(udp_sender=lambda data, dest: None, on_acquire=lambda p: None)
    datapath._tun = TunDevice("test0", [tun_fd], vnet_hdr=True)
    datapath.offload = True
    policy = PeerPolicy(
        peer="pb",
        remote_addr=ipaddress.IPv4Address("192.0.2.2"),
        local_ts=(TrafficSelector.host("10.10.1.2"),),
        remote_ts=(TrafficSelector.host("10.10.2.2"),),
        mode="tunnel",
        protocol=ProtocolId.ESP,
    )
    datapath._peers["pb"] = _Peer(policy)
    datapath.install_inbound("pb", _sa())
    return datapath


def test_a_read_s_packets_are_written_by_flush_received_and_no_loop_pass_is_scheduled() -> None:
    async def main() -> tuple[bytes, int, bytes]:
        read, write = os.pipe()
        os.set_blocking(read, False)
        datapath = _datapath(write)
        sender = _sa()
        loop = asyncio.get_running_loop()
        try:
            for _ in range(2):  # the ESP datagrams of one socket read
                sealed = esp.seal(sender, IpProto.IPIP, PACKET, os.urandom)
                datapath.receive_encapsulated(sealed, ("192.0.2.2", 4500))
            scheduled = len(loop._ready)  # type: ignore[attr-defined]
            datapath.flush_received()
            written = os.read(read, 4096)
            await asyncio.sleep(0)
            try:
                later = os.read(read, 4096)
            except BlockingIOError:
                later = b""
            return written, scheduled, later
        finally:
            os.close(read)
            os.close(write)

    written, scheduled, later = asyncio.run(main())
    assert written == 2 * (bytes(offload.VNET_HDR_LEN) + PACKET)
    assert scheduled == 0  # no call_soon per read: the reader's flush is the only one
    assert later == b""


def test_the_packets_of_a_flush_are_counted_once_per_peer() -> None:
    read, write = os.pipe()
    try:
        datapath = _datapath(write)
        sender = _sa()
        for _ in range(3):
            datapath.receive_encapsulated(
                esp.seal(sender, IpProto.IPIP, PACKET, os.urandom), ("192.0.2.2", 4500)
            )
        assert datapath.stats.packets_in == {}  # counted when written, not before
        datapath.flush_received()
        datapath.flush_received()  # nothing pending: nothing written or counted twice
        assert datapath.stats.packets_in == {"pb": 3}
        assert datapath.stats.bytes_in == {"pb": 3 * len(PACKET)}
    finally:
        os.close(read)
        os.close(write)
