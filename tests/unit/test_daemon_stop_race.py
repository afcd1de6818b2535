"""``terminate`` and a stop that race our own IKE_AUTH.

``pa`` initiates to ``pb`` (which only answers); the moment ``pa``'s IKE_AUTH (IKEv1:
main mode message 5) leaves, ``pa`` is told to ``terminate`` the peer, or to stop.
``pb`` completes that IKE SA as responder and answers. Closed locally by ``pa`` (no
DELETE: it was not established), the SA used to stay on ``pb`` alone, its child carrying
``pb``'s traffic into a black hole until dead-peer detection. Now ``pa`` lets it complete
and deletes it with a DELETE, its child never installed, as a reload does since
``test_daemon_reload_race.py``'s second test. A stop does so only within its
``shutdown_wait``: once that ends the SA is closed as before, so the sidecar still exits
in time (the last test).

Two real :class:`Sidecar` objects talk in memory (:class:`support.sidecar_link.Link`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from kipsec_sidecar.core.ike.constants import EncrId
from kipsec_sidecar.daemon.sidecar import Sidecar
from support.recording_datapath import offline_sidecar
from support.sidecar_link import (
    ADDRESSES,
    Link,
    authenticates,
    logged,
    recorder,
    settled,
    until,
    write,
)

COMPLETED = "IKE SA in flight completed: deleted"

VERSIONS = pytest.mark.parametrize("version", [2, 1], ids=["ikev2", "ikev1"])


def race(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    version: int,
    command: Callable[[Sidecar], Coroutine[Any, Any, None]],
) -> tuple[dict[str, Sidecar], Link, list[asyncio.Task[None]], list[Any], list[bytes]]:
    """The pair, with ``command(pa)`` run the moment ``pa``'s IKE_AUTH leaves: the cars,
    the link, that command's task, ``pa``'s IKE SAs at that moment, ``pb``'s answers."""
    loop = asyncio.get_running_loop()
    paths = {me: tmp_path / f"{me}.json" for me in ADDRESSES}
    write(paths["pa"], "pa", "pb", "aes256gcm16", start="onDemand", ikeVersion=version)
    write(paths["pb"], "pb", "pa", "aes256gcm16", start="none", ikeVersion=version)
    cars = {me: offline_sidecar(paths[me], monkeypatch) for me in ADDRESSES}
    tasks: list[asyncio.Task[None]] = []
    racing: list[Any] = []
    answered: list[bytes] = []

    def before(me: str, data: bytes) -> None:
        if me == "pa" and authenticates(data) and not tasks:
            racing.extend(cars["pa"].peers["pb"].ike_sas)
            tasks.append(loop.create_task(command(cars["pa"])))  # before delivery
        elif me == "pb" and authenticates(data) and tasks:
            answered.append(data)

    return cars, Link(cars, monkeypatch, before), tasks, racing, answered


def assert_no_orphan(cars: dict[str, Sidecar], racing: list[Any]) -> None:
    """``pb`` holds no IKE SA nor child SA of ``pa``'s, and ``pa`` installed no child."""
    assert len(racing) == 1 and racing[0].is_initiator and racing[0].closed
    held = [sa for sa in cars["pb"]._owners if not sa.closed]
    assert held == [], "pb keeps an IKE SA pa let go of"
    assert recorder(cars["pb"]).inbound["pa"] == set(), "pb keeps the orphan's child"
    assert recorder(cars["pb"]).outbound["pa"] is None
    assert recorder(cars["pa"]).installed == [], "pa installed the child of an SA it let go"


@VERSIONS
def test_terminate_while_our_ike_auth_is_in_flight_leaves_the_peer_no_orphan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, version: int
) -> None:
    async def main() -> None:
        async def terminate(car: Sidecar) -> None:
            await car.terminate("pb")

        cars, link, tasks, racing, answered = race(tmp_path, monkeypatch, version, terminate)
        for car in cars.values():
            await car.start()
        await cars["pa"].initiate("pb")
        await until(
            lambda: bool(answered) and not link.in_flight and all(sa.closed for sa in racing),
            "pb's answer, and pa's IKE SA gone",
        )
        await asyncio.gather(*tasks)
        assert_no_orphan(cars, racing)
        peer = cars["pa"].peers["pb"]
        assert peer.operator_stopped, "the peer is no longer terminated"
        assert peer.live_sas() == [] and peer not in cars["pa"]._retries
        for car in cars.values():
            car.hurry()
            await car.stop()

    caplog.set_level(logging.INFO, logger="kipsec_sidecar.daemon.sidecar")
    asyncio.run(main())
    assert logged(caplog, COMPLETED) == 1  # the race was hit


def test_initiate_right_after_that_terminate_brings_the_link_up_on_a_new_ike_sa(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``initiate`` ends the hold at once: it starts a new IKE SA beside the one being
    let go of (which still completes and is deleted), rather than counting that one as
    under way and leaving the peer down once it is gone."""

    async def main() -> None:
        async def terminate_then_initiate(car: Sidecar) -> None:
            await car.terminate("pb")
            await car.initiate("pb")

        cars, _, tasks, racing, _ = race(tmp_path, monkeypatch, 2, terminate_then_initiate)
        for car in cars.values():
            await car.start()
        await cars["pa"].initiate("pb")
        await until(
            lambda: all(sa.closed for sa in racing) and settled(cars, EncrId.AES_GCM_16),
            "the let-go IKE SA gone and one new child each",
        )
        await asyncio.gather(*tasks)
        assert not cars["pa"].peers["pb"].operator_stopped
        for car in cars.values():
            car.hurry()
            await car.stop()

    caplog.set_level(logging.INFO, logger="kipsec_sidecar.daemon.sidecar")
    asyncio.run(main())
    assert logged(caplog, COMPLETED) == 1


@VERSIONS
def test_a_stop_while_our_ike_auth_is_in_flight_leaves_the_peer_no_orphan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, version: int
) -> None:
    async def main() -> None:
        async def stop(car: Sidecar) -> None:
            car.shutdown_wait = 5.0  # generous: the loaded machine; it ends once all are gone
            await car.stop()

        cars, link, tasks, racing, answered = race(tmp_path, monkeypatch, version, stop)
        for car in cars.values():
            await car.start()
        await cars["pa"].initiate("pb")
        await until(lambda: bool(tasks) and tasks[0].done(), "pa's stop")
        await asyncio.gather(*tasks)
        await until(lambda: not link.in_flight, "the last datagrams")
        assert answered, "pb never answered"
        assert_no_orphan(cars, racing)
        cars["pb"].hurry()
        await cars["pb"].stop()

    caplog.set_level(logging.INFO, logger="kipsec_sidecar.daemon.sidecar")
    asyncio.run(main())
    assert logged(caplog, COMPLETED) == 1


def test_a_stop_still_ends_within_its_wait_when_the_ike_auth_is_never_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound holds: ``pb`` never answers, and ``pa`` closes the SA as before once its
    ``shutdown_wait`` ends (nothing it could DELETE: it was never established)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        began: list[float] = []

        async def stop(car: Sidecar) -> None:
            monkeypatch.setattr(cars["pb"], "_ike_datagram", lambda *_: None)  # pb is gone
            car.shutdown_wait = 0.3
            began.append(loop.time())
            await car.stop()

        cars, _, tasks, racing, _ = race(tmp_path, monkeypatch, 2, stop)
        for car in cars.values():
            await car.start()
        await cars["pa"].initiate("pb")
        await until(lambda: bool(tasks) and tasks[0].done(), "pa's stop")
        await asyncio.gather(*tasks)
        took = loop.time() - began[0]
        assert 0.3 <= took < 3.0, took  # the wait, then the datapath's close
        assert len(racing) == 1 and racing[0].closed
        cars["pb"].hurry()
        await cars["pb"].stop()

    asyncio.run(main())
