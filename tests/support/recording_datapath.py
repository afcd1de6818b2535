"""A datapath that records what the daemon installs, and a daemon kept off the network:
for tests that run real :class:`~kipsec_sidecar.daemon.sidecar.Sidecar` objects in one
event loop, handing their IKE datagrams around in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kipsec_sidecar.config.load import load_config
from kipsec_sidecar.core.ipsec_sa import IpsecSa
from kipsec_sidecar.daemon.datapath_choice import DatapathChoice
from kipsec_sidecar.daemon.sidecar import Sidecar
from kipsec_sidecar.datapath.base import DatapathStats, PeerPolicy


class RecordingDatapath:
    """Keeps which inbound SPIs and which outbound SA each peer has; touches nothing."""

    name = "kernel"

    def __init__(self) -> None:
        self.stats = DatapathStats()
        self.inbound: dict[str, set[int]] = {}
        self.outbound: dict[str, int | None] = {}
        self.log: list[tuple[str, str, int]] = []
        self.installed: list[IpsecSa] = []  #: every SA given, in or out

    async def start(self) -> None:
        return None

    def drop_stale(self) -> None:
        return None

    async def close(self, *, fail_closed: bool = False) -> None:
        return None

    def add_peer(self, policy: PeerPolicy) -> None:
        self.inbound.setdefault(policy.peer, set())
        self.outbound.setdefault(policy.peer, None)

    def remove_peer(self, peer: str) -> None:
        self.inbound.pop(peer, None)
        self.outbound.pop(peer, None)

    def install_inbound(self, peer: str, sa: IpsecSa, *, remote_port: int | None = None) -> None:
        self.inbound[peer].add(sa.spi)
        self.installed.append(sa)
        self.log.append(("install_inbound", peer, sa.spi))

    def set_outbound(self, peer: str, sa: IpsecSa, *, remote_port: int | None = None) -> None:
        self.outbound[peer] = sa.spi
        self.installed.append(sa)
        self.log.append(("set_outbound", peer, sa.spi))

    def remove_inbound(self, peer: str, spi: int) -> None:
        self.inbound[peer].discard(spi)
        self.log.append(("remove_inbound", peer, spi))

    def clear_outbound(self, peer: str) -> None:
        self.outbound[peer] = None

    def discard_queued(self, peer: str) -> None:
        return None

    def receive_encapsulated(self, data: bytes, source: tuple[str, int]) -> None:
        return None

    def flush_received(self) -> None:
        return None

    def outbound_sa(self, peer: str) -> IpsecSa | None:
        return None

    def inbound_sas(self, peer: str) -> list[IpsecSa]:
        return []


def offline(monkeypatch: pytest.MonkeyPatch, car: Sidecar) -> None:
    """``car`` opens no socket and touches no nftables table (its sends are the test's)."""

    async def no_sockets() -> None:
        return None

    monkeypatch.setattr(car.sockets, "open", no_sockets)
    monkeypatch.setattr(car.sockets, "close", lambda: None)
    monkeypatch.setattr(car.service_nat, "apply", lambda services: False)
    monkeypatch.setattr(car.service_nat, "remove", lambda: None)


def offline_sidecar(path: Path, monkeypatch: pytest.MonkeyPatch) -> Sidecar:
    """A :class:`Sidecar` (not started) for the document at ``path``, :func:`offline`, on
    a :class:`RecordingDatapath`, reloading only when asked."""
    datapath = RecordingDatapath()

    def factory(*_: Any) -> RecordingDatapath:
        return datapath

    car = Sidecar(
        str(path),
        load_config(str(path)),
        datapath_factory=factory,
        datapath_choice=DatapathChoice("kernel", "test"),
        mark=0,
        config_poll_interval=0,
    )
    offline(monkeypatch, car)
    return car
