"""Two real :class:`Sidecar` objects that talk IKE to each other in memory.

The harness of the tests that race a daemon command (a reload, ``terminate``, a stop)
against a link's handshake: :class:`Link` hands each car's datagrams to the other one
loop turn later, :func:`write` writes each car's one-peer document, the datapath is a
:class:`~support.recording_datapath.RecordingDatapath`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kipsec_sidecar.core.ike.constants import NON_ESP_MARKER, EncrId, ExchangeType
from kipsec_sidecar.core.ikev1.constants import ExchangeType as V1Exchange
from kipsec_sidecar.core.ikev1.constants import Flag as V1Flag
from kipsec_sidecar.daemon.sidecar import Sidecar
from support.recording_datapath import RecordingDatapath

PSK = "sidecar link test pre-shared key 0123456789"
ADDRESSES = {"pa": "10.78.0.1", "pb": "10.78.0.2"}
SETTLE = 10.0
"""Seconds of loop time to settle; the pair takes well under one once fixed."""


def write(path: Path, me: str, peer: str, esp: str | list[str], **fields: object) -> None:
    """``me``'s document: one PSK peer with these ESP proposals (and ``fields``)."""
    proposals = {"esp": [esp] if isinstance(esp, str) else esp}
    path.write_text(
        json.dumps(
            {
                "apiVersion": "kipsec.io/v1alpha1",
                "kind": "SidecarConfig",
                "local": {"addresses": [ADDRESSES[me]], "auth": {"psk": {"value": PSK}}},
                "peers": [
                    {"name": peer, "address": ADDRESSES[peer], "proposals": proposals, **fields}
                ],
            }
        )
    )


class Link:
    """Hands each car's IKE datagrams to the other in memory, one loop turn later.

    ``before(me, data)`` sees every datagram as it leaves ``me`` (where a test forces a
    race); ``in_flight`` counts those sent and not yet delivered."""

    def __init__(
        self,
        cars: dict[str, Sidecar],
        monkeypatch: pytest.MonkeyPatch,
        before: Callable[[str, bytes], None] = lambda me, data: None,
    ) -> None:
        self.in_flight = 0
        loop = asyncio.get_running_loop()
        for me, peer in (("pa", "pb"), ("pb", "pa")):

            def send(
                data: bytes,
                addr: Any,
                *,
                natt: bool,
                local: str | None,
                me: str = me,
                peer: str = peer,
            ) -> None:
                before(me, data)
                self.in_flight += 1
                loop.call_soon(
                    self._deliver, cars[peer], data, (ADDRESSES[me], 4500 if natt else 500)
                )

            monkeypatch.setattr(cars[me].sockets, "send", send)

    def _deliver(self, car: Sidecar, data: bytes, source: tuple[str, int]) -> None:
        self.in_flight -= 1
        car._ike_datagram(data, source)


def authenticates(data: bytes) -> bool:
    """A message that completes the responder's IKE SA, or its answer: IKE_AUTH (IKEv2),
    an encrypted main mode message (IKEv1: 5 from the initiator, 6 from the responder)."""
    raw = data[4:] if data[:4] == NON_ESP_MARKER else data
    exchange, flags = raw[18], raw[19]
    if raw[17] >> 4 == 1:
        return exchange == V1Exchange.MAIN and bool(flags & V1Flag.ENCRYPTION)
    return exchange == ExchangeType.IKE_AUTH


def settled(cars: dict[str, Sidecar], encr: EncrId = EncrId.CHACHA20_POLY1305) -> bool:
    """One IKE SA each, one child each, its SPIs the other side's, under the cipher
    ``encr`` (a reload's new terms)."""
    mine, theirs = cars["pa"].peers["pb"], cars["pb"].peers["pa"]
    sas = [*mine.live_sas(), *theirs.live_sas()]
    if len(sas) != 2 or not all(sa.established for sa in sas):
        return False
    children = [child for sa in sas for child in sa.children.values()]
    if len(children) != 2:
        return False
    a, b = children
    return (
        a.spi_in == b.spi_out
        and a.spi_out == b.spi_in
        and all(c.selection.encr_id == encr for c in children)
    )


def recorder(car: Sidecar) -> RecordingDatapath:
    assert isinstance(car.datapath, RecordingDatapath)
    return car.datapath


async def stop(cars: dict[str, Sidecar]) -> None:
    for car in cars.values():
        car.hurry()
        await car.stop()


def logged(caplog: pytest.LogCaptureFixture, message: str) -> int:
    """How many times the daemon logged ``message``."""
    return [r.message for r in caplog.records].count(message)


async def until(check: Callable[[], bool], what: str, timeout: float = SETTLE) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
