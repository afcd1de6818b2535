"""What the userspace datapath decrypted in one socket read is written when the reader
says its batch is done (``flush_received``), not one event-loop pass later: a ping's
reply can only be generated once its request is in the pod's stack, so the pass saved
is latency on every packet's way in (bench/sidecar_throughput.py's RTT)."""

from __future__ import annotations

import asyncio
import ipaddress
import os

from kipsec_sidecar.core.ip import IpProto, build_ipv4
from kipsec_sidecar.datapath import offload
from kipsec_sidecar.datapath.tun import TunDevice
from kipsec_sidecar.datapath.userspace import UserspaceDatapath

PACKET = build_ipv4(
    ipaddress.IPv4Address("10.10.2.2"), ipaddress.IPv4Address("10.10.1.2"), IpProto.UDP, 8
) + bytes(8)


def test_a_delivered_batch_is_written_by_flush_received_before_the_next_loop_pass() -> None:
    async def main() -> tuple[bytes, bytes]:
        read, write = os.pipe()
        os.set_blocking(read, False)
        datapath = UserspaceDatapath(udp_sender=lambda data, dest: None, on_acquire=lambda p: None)
        datapath._loop = asyncio.get_running_loop()
        datapath._tun = TunDevice("test0", [write], vnet_hdr=True)
        datapath.offload = True
        try:
            for _ in range(2):  # what _deliver does for each packet of a socket read
                datapath._rx_pending.append(PACKET)
                if not datapath._rx_scheduled:
                    datapath._rx_scheduled = True
                    datapath._loop.call_soon(datapath._flush_inbound)
            datapath.flush_received()
            written_at_once = os.read(read, 4096)
            await asyncio.sleep(0)  # the pass _deliver scheduled: nothing left to write
            try:
                later = os.read(read, 4096)
            except BlockingIOError:
                later = b""
            return written_at_once, later
        finally:
            os.close(read)
            os.close(write)

    at_once, later = asyncio.run(main())
    assert at_once == 2 * (bytes(offload.VNET_HDR_LEN) + PACKET)
    assert later == b""
