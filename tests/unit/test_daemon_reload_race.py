"""Reloads that race a link's handshake.

Two real :class:`Sidecar` objects in one event loop hand each other their IKE datagrams
in memory (:class:`Link`; the datapath is a recorder).

Both ends reload a few milliseconds apart: ``pb`` reloads first and starts an IKE SA
under the new proposals; ``pa`` answers its IKE_SA_INIT under the old ones and reloads
before the IKE_AUTH arrives. That IKE SA completes under ``pa``'s replaced
configuration, which refuses the child. Adopted by ``pa``'s new peer, it used to win
over the IKE SA ``pa``'s reload had started, and the pair stayed on an IKE SA without a
child SA (``tests/e2e/test_sidecar_reload_both.py`` failed about one run in ten). The
daemon now deletes such an SA (:func:`~kipsec_sidecar.daemon.reload.negotiated_under`).

One end reloads while its own IKE_AUTH is in flight: see the second test.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kipsec_sidecar.core.ike.constants import NON_ESP_MARKER, EncrId, ExchangeType
from kipsec_sidecar.core.ikev1.constants import ExchangeType as V1Exchange
from kipsec_sidecar.core.ikev1.constants import Flag as V1Flag
from kipsec_sidecar.daemon.sidecar import Sidecar
from support.recording_datapath import RecordingDatapath, offline_sidecar

PSK = "reload race test pre-shared key 0123456789"
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


def is_init_response(data: bytes) -> bool:
    """An IKE_SA_INIT response (header: exchange type at byte 18, R flag 0x20 at 19)."""
    return data[18] == ExchangeType.IKE_SA_INIT and bool(data[19] & 0x20)


def settled(cars: dict[str, Sidecar], encr: EncrId = EncrId.CHACHA20_POLY1305) -> bool:
    """One IKE SA each, one child each, its SPIs the other side's, under the new terms
    (the cipher ``encr``)."""
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

        def before(me: str, data: bytes) -> None:
            if me == "pa" and armed and is_init_response(data):
                armed.clear()
                reloads.append(loop.create_task(cars["pa"].reload()))  # before delivery

        Link(cars, monkeypatch, before)
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
        await stop(cars)

    caplog.set_level(logging.INFO, logger="kipsec_sidecar.daemon.sidecar")
    asyncio.run(main())
    stale = "IKE SA set up under a replaced configuration deleted"
    assert logged(caplog, stale) == 1  # pa's, the race was hit


def authenticates(data: bytes) -> bool:
    """A message that completes the responder's IKE SA, or its answer: IKE_AUTH (IKEv2),
    an encrypted main mode message (IKEv1: 5 from the initiator, 6 from the responder)."""
    raw = data[4:] if data[:4] == NON_ESP_MARKER else data
    exchange, flags = raw[18], raw[19]
    if raw[17] >> 4 == 1:
        return exchange == V1Exchange.MAIN and bool(flags & V1Flag.ENCRYPTION)
    return exchange == ExchangeType.IKE_AUTH


@pytest.mark.parametrize("version", [2, 1], ids=["ikev2", "ikev1"])
def test_a_reload_while_our_ike_auth_is_in_flight_leaves_the_peer_no_orphan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, version: int
) -> None:
    """``pa`` initiates; a reload replaces its peer the moment its IKE_AUTH (main mode
    message 5) leaves. ``pb`` completes that IKE SA as responder and answers. Closed
    locally by the reload, the SA used to stay on ``pb`` alone, its child carrying
    ``pb``'s traffic into a black hole until dead-peer detection; now ``pa`` lets it
    complete and deletes it with a DELETE, and never installs its child. Under IKEv1
    ``pa``'s engine starts the quick mode right after message 6, and a Delete of the
    ISAKMP SA alone would leave ``pb`` that quick mode's IPsec SAs (which ``pb`` then
    keeps alive through a new main mode): ``pa`` deletes once the quick mode is over."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        paths = {me: tmp_path / f"{me}.json" for me in ADDRESSES}
        old, new = "aes256gcm16", "chacha20poly1305"
        # pa initiates when told (onDemand), pb only answers; pb takes old and new terms.
        write(paths["pa"], "pa", "pb", old, start="onDemand", ikeVersion=version)
        write(paths["pb"], "pb", "pa", [old, new], start="none", ikeVersion=version)
        cars = {me: offline_sidecar(paths[me], monkeypatch) for me in ADDRESSES}
        reloads: list[asyncio.Task[list[str]]] = []
        replaced: list[Any] = []  # pa's IKE SAs when the reload came
        answered: list[bytes] = []

        def before(me: str, data: bytes) -> None:
            if me == "pa" and authenticates(data) and not reloads:
                write(paths["pa"], "pa", "pb", new, start="onDemand", ikeVersion=version)
                replaced.extend(cars["pa"].peers["pb"].ike_sas)
                reloads.append(loop.create_task(cars["pa"].reload()))  # before delivery
            elif me == "pb" and authenticates(data) and reloads:
                answered.append(data)

        link = Link(cars, monkeypatch, before)
        for car in cars.values():
            await car.start()
        await cars["pa"].initiate("pb")
        await until(
            lambda: bool(answered) and not link.in_flight and all(sa.closed for sa in replaced),
            "pb's answer to the replaced IKE SA, and that SA gone on pa",
        )
        assert await asyncio.gather(*reloads) == [["replaced peer pb (configuration changed)"]]
        assert len(replaced) == 1 and replaced[0].is_initiator
        held = [sa for sa in cars["pb"]._owners if not sa.closed]
        assert held == [], "pb keeps an IKE SA that pa's reload replaced"
        assert recorder(cars["pb"]).inbound["pa"] == set(), "pb keeps the orphan's child"
        assert recorder(cars["pb"]).outbound["pa"] is None
        assert recorder(cars["pa"]).installed == [], "a child under the old terms was installed"

        await cars["pa"].initiate("pb", wait=SETTLE)  # the new terms still bring the link up
        await until(lambda: settled(cars, EncrId.CHACHA20_POLY1305), "one new child each")
        await stop(cars)

    caplog.set_level(logging.INFO, logger="kipsec_sidecar.daemon.sidecar")
    asyncio.run(main())
    assert logged(caplog, "IKE SA of a removed peer completed: deleted") == 1  # race hit


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
