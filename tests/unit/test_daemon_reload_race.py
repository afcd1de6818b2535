"""Both ends of a link reload its changed configuration a few milliseconds apart.

Two real :class:`Sidecar` objects in one event loop hand each other their IKE datagrams
in memory (the datapath is a recorder). ``pb`` reloads first and starts an IKE SA under
the new proposals; ``pa`` answers its IKE_SA_INIT under the old ones and reloads before
the IKE_AUTH arrives. That IKE SA completes under ``pa``'s replaced configuration, which
refuses the child. Adopted by ``pa``'s new peer, it used to win over the IKE SA ``pa``'s
reload had started, and the pair stayed on an IKE SA without a child SA
(``tests/e2e/test_sidecar_reload_both.py`` failed about one run in ten). The daemon now
deletes such an SA (:func:`~kipsec_sidecar.daemon.reload.negotiated_under`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kipsec_sidecar.core.ike.constants import EncrId, ExchangeType
from kipsec_sidecar.daemon.sidecar import Sidecar
from support.recording_datapath import offline_sidecar

PSK = "reload race test pre-shared key 0123456789"
ADDRESSES = {"pa": "10.78.0.1", "pb": "10.78.0.2"}
SETTLE = 10.0
"""Seconds of loop time to settle; the pair takes well under one once fixed."""


def write(path: Path, me: str, peer: str, esp: str) -> None:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "kipsec.io/v1alpha1",
                "kind": "SidecarConfig",
                "local": {"addresses": [ADDRESSES[me]], "auth": {"psk": {"value": PSK}}},
                "peers": [{"name": peer, "address": ADDRESSES[peer], "proposals": {"esp": [esp]}}],
            }
        )
    )


def is_init_response(data: bytes) -> bool:
    """An IKE_SA_INIT response (header: exchange type at byte 18, R flag 0x20 at 19)."""
    return data[18] == ExchangeType.IKE_SA_INIT and bool(data[19] & 0x20)


def settled(cars: dict[str, Sidecar]) -> bool:
    """One IKE SA each, one child each, its SPIs the other side's, under the new terms."""
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
        and all(c.selection.encr_id == EncrId.CHACHA20_POLY1305 for c in children)
    )


def test_a_reload_between_ike_sa_init_and_ike_auth_still_settles_on_one_new_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        paths = {me: tmp_path / f"{me}.json" for me in ADDRESSES}
        for me, peer in (("pa", "pb"), ("pb", "pa")):
            write(paths[me], me, peer, "aes256gcm16")
        cars = {me: offline_sidecar(paths[me], monkeypatch) for me in ADDRESSES}
        armed: list[bool] = []  # pa reloads after its next IKE_SA_INIT answer
        reloads: list[asyncio.Task[list[str]]] = []

        def sender(me: str, peer: str) -> Callable[..., None]:
            def send(data: bytes, addr: Any, *, natt: bool, local: str | None) -> None:
                if me == "pa" and armed and is_init_response(data):
                    armed.clear()
                    reloads.append(loop.create_task(cars["pa"].reload()))  # before delivery
                port = 4500 if natt else 500
                loop.call_soon(cars[peer]._ike_datagram, data, (ADDRESSES[me], port))

            return send

        monkeypatch.setattr(cars["pa"].sockets, "send", sender("pa", "pb"))
        monkeypatch.setattr(cars["pb"].sockets, "send", sender("pb", "pa"))
        for car in cars.values():
            await car.start()
        await until(lambda: one_child_each(cars), "the first child SA")

        for me, peer in (("pa", "pb"), ("pb", "pa")):
            write(paths[me], me, peer, "chacha20poly1305")
        armed.append(True)
        await cars["pb"].reload()
        await until(lambda: settled(cars), "one chacha20 child SA on each side")
        assert not armed, "pa never answered pb's new IKE_SA_INIT under its old terms"
        assert await asyncio.gather(*reloads) == [["replaced peer pb (configuration changed)"]]
        for car in cars.values():
            car.hurry()
            await car.stop()

    caplog.set_level(logging.INFO, logger="kipsec_sidecar.daemon.sidecar")
    asyncio.run(main())
    stale = "IKE SA set up under a replaced configuration deleted"
    assert [r.message for r in caplog.records].count(stale) == 1  # pa's, the race was hit


def one_child_each(cars: dict[str, Sidecar]) -> bool:
    return all(
        sum(len(sa.children) for sa in car.peers[peer].live_sas()) == 1
        for car, peer in ((cars["pa"], "pb"), (cars["pb"], "pa"))
    )


async def until(check: Callable[[], bool], what: str, timeout: float = SETTLE) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)
