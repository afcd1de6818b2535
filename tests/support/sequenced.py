"""A sequenced UDP stream through a tunnel, to show that a rekey loses no packet.

:func:`sequenced_stream` starts an echo server in ``dst`` and a sender in ``src`` that
sends ``count`` numbered datagrams (one per ``interval`` seconds) and, at the end,
prints ``received N of count; missing [...]`` from the echoes it got back.

The sender keeps at most ``window`` datagrams without an echo in flight, as a transport
with flow control would. Without it a sender descheduled on a loaded machine catches up
with a burst of hundreds of datagrams that overflows a socket or device queue — a loss
that has nothing to do with the rekey the stream is there to watch (seen at load 10–13
on 2 cores, with no IKE exchange running). A datagram the tunnel really loses never gets
its echo, so it is still counted missing; a stall of more than 5 s sends on regardless.
"""

from __future__ import annotations

import subprocess
import sys

from support.netns import _UDP_ECHO_SERVER, Topology, wait_for_output

_SEQ_STREAM = r"""
import select, socket, sys, time
count, interval, window = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect((sys.argv[1], int(sys.argv[2])))
sock.setblocking(False)
got = set()
start = time.monotonic()
print("started", flush=True)
def drain(wait):
    ready, _, _ = select.select([sock], [], [], wait)
    while ready:
        try:
            got.add(int.from_bytes(sock.recv(2048)[:4], "big"))
        except BlockingIOError:
            return
for seq in range(count):
    stalled = time.monotonic() + 5.0
    while seq - len(got) >= window and time.monotonic() < stalled:
        drain(0.01)
    sock.send(seq.to_bytes(4, "big") + b"x" * 60)
    due = start + (seq + 1) * interval
    while (wait := due - time.monotonic()) > 0:
        drain(wait)
deadline = time.monotonic() + 2.0
while len(got) < count and time.monotonic() < deadline:
    drain(0.05)
missing = sorted(set(range(count)) - got)
print(f"received {len(got)} of {count}; missing {missing[:20]}", flush=True)
"""


def sequenced_stream(
    topology: Topology,
    src: str,
    dst: str,
    count: int,
    *,
    interval: float = 0.001,
    port: int = 7300,
    echo_idle: float = 15.0,
    window: int = 128,
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """(echo server, sender), both started and ready; the sender's stdout ends with the
    ``received N of count`` line once it is done (``stream.communicate()``)."""
    echo = topology.popen(
        dst,
        [sys.executable, "-c", _UDP_ECHO_SERVER, topology.address(dst), str(port), str(echo_idle)],
        stdout=subprocess.PIPE,
    )
    assert echo.stdout is not None
    wait_for_output(echo.stdout, b"ready", 5)
    stream = topology.popen(
        src,
        [
            sys.executable,
            "-c",
            _SEQ_STREAM,
            topology.address(dst),
            str(port),
            str(count),
            str(interval),
            str(window),
        ],
        stdout=subprocess.PIPE,
    )
    assert stream.stdout is not None
    wait_for_output(stream.stdout, b"started", 5)
    return echo, stream
