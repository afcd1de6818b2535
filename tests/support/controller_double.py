"""A stand-in for the daemon's ``Controller`` interface, for the observability unit tests.

It serves a hand-built :class:`SidecarSnapshot` and records the actions asked of it, so
metrics, probes, the control socket and the CLI are tested against the interface they
rely on (``kipsec_sidecar.state``); the e2e tests drive the real daemon.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from kipsec_sidecar.control import ACTION_TIMEOUT, ControlServer
from kipsec_sidecar.state import (
    ChildSaView,
    ControlError,
    ControlTimeout,
    IkeSaView,
    PeerView,
    RekeyKind,
    SidecarSnapshot,
)

NOW = 1_800_000_000.0  #: the wall clock the example snapshot is built around

SPI_IN_B = "c0ffee01"
SPI_OUT_B = "0badf00d"
SPI_IN_C = "7e57ab1e"
SPI_OUT_C = "5ca1ab1e"
IKE_SPI_I = "1122334455667788"
IKE_SPI_R = "99aabbccddeeff00"
ADDR_A = "10.20.0.1"
ADDR_B = "10.20.0.2"
ADDR_C = "10.20.0.3"


def child_b(**changes: object) -> ChildSaView:
    """Peer b's installed ESP tunnel child SA (AES-GCM over UDP)."""
    child = ChildSaView(
        name="pods",
        state="installed",
        mode="tunnel",
        protocol="esp",
        spi_in=SPI_IN_B,
        spi_out=SPI_OUT_B,
        encryption="aes-gcm-16-256",
        integrity=None,
        esn=True,
        encapsulation="udp",
        local_ts=("10.1.0.5/32",),
        remote_ts=("10.2.0.7/32",),
        bytes_in=1500,
        bytes_out=3000,
        packets_in=10,
        packets_out=20,
        installed_at=NOW - 10,
        rekey_at=NOW + 3000,
        expire_at=NOW + 3590,
    )
    return replace(child, **changes)  # type: ignore[arg-type]


def example_snapshot(**changes: object) -> SidecarSnapshot:
    """Two peers: b established with one ESP tunnel child; c manual AH transport, rekeyed
    child present next to an installed one; counters set to distinct values."""
    b = PeerView(
        name="b",
        address=ADDR_B,
        keying="ike",
        start="onStart",
        state="established",
        ike_sa=IkeSaView(
            state="established",
            initiator=True,
            local_addr=f"{ADDR_A}:4500",
            remote_addr=f"{ADDR_B}:4500",
            local_id="a.pods.example",
            remote_id="b.pods.example",
            spi_i=IKE_SPI_I,
            spi_r=IKE_SPI_R,
            encryption="aes-gcm-16-256",
            prf="prf-hmac-sha2-256",
            dh_group="ecp256",
            nat_detected=False,
            established_at=NOW - 125,
        ),
        children=(child_b(),),
    )
    c = PeerView(
        name="c",
        address=ADDR_C,
        keying="manual",
        start="onStart",
        state="established",
        children=(
            ChildSaView(
                name="pods",
                state="installed",
                mode="transport",
                protocol="ah",
                spi_in=SPI_IN_C,
                spi_out=SPI_OUT_C,
                encryption=None,
                integrity="hmac-sha2-256-128",
                esn=False,
                encapsulation="raw",
                local_ts=(f"{ADDR_A}/32",),
                remote_ts=(f"{ADDR_C}/32",),
                bytes_in=7,
                bytes_out=11,
                packets_in=1,
                packets_out=2,
                installed_at=NOW - 60,
            ),
            ChildSaView(
                name="pods",
                state="rekeyed",
                mode="transport",
                protocol="ah",
                spi_in="00001111",
                spi_out="00002222",
                encryption=None,
                integrity="hmac-sha2-256-128",
                esn=False,
                encapsulation="raw",
                local_ts=(f"{ADDR_A}/32",),
                remote_ts=(f"{ADDR_C}/32",),
                bytes_in=100,
                bytes_out=200,
                packets_in=3,
                packets_out=4,
                installed_at=NOW - 4000,
            ),
        ),
    )
    snapshot = SidecarSnapshot(
        version="0.1.0",
        datapath="userspace",
        datapath_reason="kernel has no ESP SA type",
        started_at=NOW - 3725,
        peers=(b, c),
        handshakes={"success": 3, "failure": 1},
        handshake_failures={"no_proposal_chosen": 1},
        rekeys={"child": 5, "ike": 2},
        auth_failures=1,
        drops={"replay": 4, "integrity": 6},
        datapath_errors={"tun_write": 2},
    )
    return replace(snapshot, **changes)  # type: ignore[arg-type]


def not_ready_snapshot() -> SidecarSnapshot:
    """b established; d connecting with nothing installed yet."""
    base = example_snapshot()
    d = PeerView(name="d", address="10.20.0.4", keying="ike", start="onDemand", state="connecting")
    return replace(base, peers=(base.peers[0], d))


@dataclass
class ControllerDouble:
    """Implements ``state.Controller``: knows the peers of its snapshot, records actions."""

    current: SidecarSnapshot = field(default_factory=example_snapshot)
    actions: list[tuple[str, ...]] = field(default_factory=list)
    reload_lines: list[str] = field(default_factory=lambda: ["+ d (added)", "- c (removed)"])
    action_delay: float = 0.0
    wait_failure: str | None = None
    """With ``wait``: None succeeds, ``"timeout"`` times out, anything else fails with it."""

    def snapshot(self) -> SidecarSnapshot:
        return self.current

    def _known(self, peer: str) -> None:
        if peer not in {p.name for p in self.current.peers}:
            raise ControlError(f"unknown peer {peer!r}")

    async def _waited(self, wait: float | None) -> None:
        """What ``wait_failure`` says: a failure, a timeout after ``wait`` s, or success."""
        if wait is None or self.wait_failure is None:
            return
        if self.wait_failure == "timeout":
            await asyncio.sleep(wait)
            raise ControlTimeout(f"timeout: no outcome within {wait:g} s")
        raise ControlError(self.wait_failure)

    async def initiate(self, peer: str, wait: float | None = None) -> None:
        self._known(peer)
        await asyncio.sleep(self.action_delay)
        self.actions.append(("initiate", peer) + (() if wait is None else (str(wait),)))
        await self._waited(wait)

    async def rekey(self, peer: str, kind: RekeyKind, wait: float | None = None) -> None:
        self._known(peer)
        await asyncio.sleep(self.action_delay)
        self.actions.append(("rekey", peer, kind) + (() if wait is None else (str(wait),)))
        await self._waited(wait)

    async def terminate(self, peer: str, wait: float | None = None) -> None:
        self._known(peer)
        self.actions.append(("terminate", peer) + (() if wait is None else (str(wait),)))
        await self._waited(wait)

    async def reload(self) -> list[str]:
        self.actions.append(("reload",))
        return list(self.reload_lines)


@contextmanager
def short_dir() -> Iterator[Path]:
    """A private directory with a short path (sun_path holds 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def running(
    controller: ControllerDouble | None = None, *, action_timeout: float = ACTION_TIMEOUT
) -> Iterator[tuple[ControlServer, ControllerDouble]]:
    """A ControlServer on its own event loop thread, so synchronous clients can call it."""
    controller = controller or ControllerDouble()
    with short_dir() as directory:
        path = str(directory / "run" / "control.sock")
        server = ControlServer(controller, path, action_timeout=action_timeout)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=5)
            yield server, controller
        finally:
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()
