"""Packet captures inside test namespaces, summarized for "what was on the wire" assertions.

The e2e tests' central claim is that between nodes only IPsec is seen (ESP, AH, ESP in
UDP 4500, IKE) and never the plaintext they sent. A capture makes that checkable::

    with Capture(topo, WIRE, WIRE_BRIDGE, tmp_path / "wire.pcap") as cap:
        udp_roundtrip(topo, "pa", "pb", MARKER)
    summary = cap.summary
    assert not summary.contains(MARKER), summary.describe()
    assert not summary.unexpected(), summary.describe()   # only ESP/AH/IKE (+ ARP, IGMP)

``tcpdump --immediate-mode -U -w`` does the capturing (it is in the e2e package list;
immediate mode hands every packet to tcpdump at once, so the SIGINT that stops it loses
nothing still sitting in the kernel's ring buffer); :mod:`kipsec_lab.capture` (shared
with the lab's ``kipsec lab traffic``) reads the file back and classifies the frames.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from types import TracebackType

from kipsec_lab.capture import (
    ALLOWED_ON_WIRE,
    ENCRYPTED_KINDS,
    HOUSEKEEPING_KINDS,
    CapturedPacket,
    CaptureSummary,
    classify,
    summarize,
)
from support.netns import Topology, stop_process, wait_for_output

__all__ = [
    "ALLOWED_ON_WIRE",
    "ENCRYPTED_KINDS",
    "HOUSEKEEPING_KINDS",
    "Capture",
    "CaptureSummary",
    "CapturedPacket",
    "classify",
    "summarize",
]


class Capture:
    """``tcpdump`` on ``interface`` inside namespace ``name``, writing ``path``.

    :meth:`start` returns once tcpdump is listening (so no packet sent afterwards is
    missed); :meth:`stop` interrupts it, waits for the file to be flushed, and returns
    the :class:`CaptureSummary` (also kept as :attr:`summary`). The process is also
    registered with the topology, so it is stopped if the test never reaches :meth:`stop`.
    ``bpf`` is an optional tcpdump filter expression.
    """

    def __init__(
        self,
        topology: Topology,
        name: str,
        interface: str,
        path: Path,
        *,
        bpf: str = "",
        start_timeout: float = 5.0,
    ) -> None:
        self.topology = topology
        self.name = name
        self.interface = interface
        self.path = Path(path)
        self.bpf = bpf
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._summary: CaptureSummary | None = None

    def start(self) -> Capture:
        if self._proc is not None:
            raise RuntimeError("capture already started")
        argv = [
            *("tcpdump", "-n", "-U", "--immediate-mode", "-s", "0", "-Z", "root"),
            *("-i", self.interface, "-w", str(self.path)),
            *self.bpf.split(),
        ]
        self._proc = self.topology.popen(self.name, argv, stderr=subprocess.PIPE)
        assert self._proc.stderr is not None
        try:
            wait_for_output(self._proc.stderr, b"listening on", self.start_timeout)
        except TimeoutError as exc:
            stop_process(self._proc)
            raise RuntimeError(
                f"tcpdump on {self.name}/{self.interface} did not start: {exc}"
            ) from None
        return self

    def stop(self) -> CaptureSummary:
        """Stop tcpdump (SIGINT flushes its buffer) and summarize the file. Idempotent."""
        if self._summary is not None:
            return self._summary
        if self._proc is None:
            raise RuntimeError("capture was never started")
        stop_process(self._proc, sig=signal.SIGINT)
        self._summary = summarize(self.path)
        return self._summary

    @property
    def summary(self) -> CaptureSummary:
        """The summary after :meth:`stop` (or the end of the ``with`` block)."""
        if self._summary is None:
            raise RuntimeError("capture still running: call stop() first")
        return self._summary

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.stop()
        elif self._proc is not None:
            stop_process(self._proc, sig=signal.SIGINT)
