"""Reloads that race a link's handshake.

Two real :class:`Sidecar` objects in one event loop hand each other their IKE datagrams
in memory (:class:`support.sidecar_link.Link`; the datapath is a recorder).

Both ends reload a few milliseconds apart: ``pb`` reloads first and starts an IKE SA
under the new proposals; ``pa`` answers its IKE_SA_INIT under the old ones and reloads
before the IKE_AUTH arrives. That IKE SA completes under ``pa``'s replaced
configuration, which refuses the child. Adopted by ``pa``'s new peer, it used to win
over the IKE SA ``pa``'s reload had started, and the pair stayed on an IKE SA without a
child SA (``tests/e2e/test_sidecar_reload_both.py`` failed about one run in ten). The
daemon now deletes such an SA (:func:`~kipsec_sidecar.daemon.reload.negotiated_under`).

One end reloads while its own IKE_AUTH is in flight: see the second test
(``test_daemon_stop_race.py``: the same for ``terminate`` and a stop).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from kipsec_sidecar.core.ike.constants import EncrId, ExchangeType
from kipsec_sidecar.daemon.sidecar import Sidecar
from support.recording_datapath import offline_sidecar
from support.sidecar_link import (
    ADDRESSES,
    SETTLE,
    Link,
    authenticates,
    logged,
    recorder,
    settled,
    stop,
    until,
    write,
)


def is_init_response(data: bytes) -> bool:
    """An IKE_SA_INIT response (header: exchange type at byte 18, R flag 0x20 at 19)."""
    return data[18] == ExchangeType.IKE_SA_INIT and bool(data[19] & 0x20)


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
    assert logged(caplog, "IKE SA in flight completed: deleted") == 1  # race hit


def one_child_each(cars: dict[str, Sidecar]) -> bool:
    return all(
        sum(len(sa.children) for sa in car.peers[peer].live_sas()) == 1
        for car, peer in ((cars["pa"], "pb"), (cars["pb"], "pa"))
    )
