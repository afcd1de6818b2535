"""The daemon's 4500 socket as the ESP fast path: batch hand-over and the sending socket.

Real sockets on loopback, in a real event loop. A read of the 4500 socket hands its ESP
datagrams to ``on_esp`` and then calls ``on_esp_batch`` once, in the same event-loop
callback, so the userspace datapath writes the batch without waiting for another loop
pass (latency: bench/sidecar_throughput.py's RTT). ``send_esp_many`` sends from the
4500 socket of the destination's IP version, chosen without parsing the address.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from kipsec_sidecar.core.ike.config import Address
from kipsec_sidecar.daemon.sockets import IkeSockets

ESP = [bytes([0, 0, 1, n]) + bytes(60) for n in range(1, 4)]
"""ESP-in-UDP datagrams as the classifier sees them: a non-zero SPI, then any payload."""


def sockets_on(addresses: list[str], **receivers: Any) -> IkeSockets:
    """IkeSockets on ephemeral ports of ``addresses``, ignoring what arrives by default."""
    options: dict[str, Any] = {
        "on_ike": lambda data, source: None,
        "on_esp": lambda data, source: None,
        **receivers,
    }
    return IkeSockets(addresses, 0, ike_port=0, natt_port=0, **options)


def bound(address: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    sock.settimeout(5)
    return sock


def test_a_read_of_the_4500_socket_ends_with_one_batch_call_after_its_esp() -> None:
    events: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_esp(data: bytes, source: Address) -> None:
            events.append(f"esp {data[3]}")

        def on_batch() -> None:
            events.append("batch")
            if not done.done():
                done.set_result(None)

        sockets = sockets_on(["127.0.0.1"], on_esp=on_esp, on_esp_batch=on_batch)
        await sockets.open()
        try:
            natt = sockets._natt["127.0.0.1"][0]
            with bound("127.0.0.1") as peer:
                for datagram in ESP:
                    peer.sendto(datagram, natt.getsockname())
                peer.sendto(b"\xff", natt.getsockname())  # a keepalive: no ESP, no batch
                await asyncio.wait_for(done, 5)
                await asyncio.sleep(0.05)
        finally:
            sockets.close()

    asyncio.run(main())
    assert events == ["esp 1", "esp 2", "esp 3", "batch"]


@pytest.mark.parametrize("family", ["127.0.0.1", "::1"])
def test_esp_goes_out_of_the_4500_socket_of_the_destinations_version(family: str) -> None:
    async def main() -> tuple[list[bytes], tuple[str, int], tuple[str, int]]:
        sockets = sockets_on(["127.0.0.1", "::1"])
        await sockets.open()
        try:
            with bound(family) as peer:
                dest = peer.getsockname()[:2]
                sockets.esp_sender.many(ESP[:2], (dest[0], dest[1]))
                received = [peer.recvfrom(2048) for _ in ESP[:2]]
            own = sockets._natt[family][0].getsockname()[:2]
            return [data for data, _ in received], received[0][1][:2], own
        finally:
            sockets.close()

    data, source, own = asyncio.run(main())
    assert data == ESP[:2]
    assert source == own


def test_esp_to_a_version_without_a_4500_socket_is_a_counted_send_error() -> None:
    async def main() -> int:
        sockets = sockets_on(["127.0.0.1"])
        await sockets.open()
        try:
            with pytest.raises(OSError, match="no UDP 0 socket for ::1"):
                sockets.send_esp_many(ESP[:1], ("::1", 4500))
            return sockets.counters.send_errors
        finally:
            sockets.close()

    assert asyncio.run(main()) == 1
