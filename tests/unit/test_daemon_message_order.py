"""The daemon installs an SA before any IKE message leaves that lets the peer use it.

Two real :class:`Sidecar` objects in one event loop, their IKE datagrams handed to each
other in memory and their datapath a recorder. Every send checks the invariant: each
child SA the sending engine has agreed on (installed, or replaced but not yet deleted)
already has its inbound SA in the datapath. With the kernel datapath the peer's first
ESP packets are processed in softirq context, not behind the daemon's event loop, so a
CREATE_CHILD_SA response or the DELETE of a replaced child sent a moment before the
install loses packets (a VM check saw one ping in ~300 lost during a child rekey).
The same pair shows the byte limit an IKEv1 quick mode agrees reaching the SAs the
datapath installs, and the `last_error` of an IKEv1 authentication failure.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest

from kipsec_sidecar.config.load import load_config_data
from kipsec_sidecar.config.model import SidecarConfig
from kipsec_sidecar.config.to_core import PeerPlan
from kipsec_sidecar.core.ike.child_sa import ChildState
from kipsec_sidecar.core.ipsec_sa import IpsecSa
from kipsec_sidecar.daemon.datapath_choice import DatapathChoice
from kipsec_sidecar.daemon.sidecar import Sidecar
from support.recording_datapath import RecordingDatapath, offline

PSK = "message order test pre-shared key 0123456789"
ADDRESSES = {"pa": "10.77.0.1", "pb": "10.77.0.2"}


def document(
    me: str, peer: str, ike_version: int = 2, psk: str = PSK, **fields: Any
) -> SidecarConfig:
    """`fields`: more top-level fields of the document (`lifetimes`)."""
    return load_config_data(
        {
            "apiVersion": "kipsec.io/v1alpha1",
            "kind": "SidecarConfig",
            "local": {"addresses": [ADDRESSES[me]], "auth": {"psk": {"value": psk}}},
            "peers": [{"name": peer, "address": ADDRESSES[peer], "ikeVersion": ike_version}],
            **fields,
        }
    )


def agreed_inbound_spis(car: Sidecar) -> set[int]:
    """Inbound SPIs of every child the engine holds that the peer may send on."""
    usable = (ChildState.INSTALLED, ChildState.REKEYING, ChildState.REKEYED)
    return {
        int.from_bytes(child.spi_in, "big")
        for peer in car.peers.values()
        for sa in peer.ike_sas
        for child in sa.children.values()
        if child.state in usable
    }


async def pair(
    monkeypatch: pytest.MonkeyPatch,
    violations: list[str],
    ike_version: int = 2,
    dropped: set[str] | None = None,
    documents: dict[str, dict[str, Any]] | None = None,
    copies: int = 1,
) -> tuple[dict[str, Sidecar], dict[str, RecordingDatapath]]:
    """Two sidecars wired to each other; the next datagram of a side named in `dropped`
    is lost (and the name removed); `documents` holds the arguments of a side's
    :func:`document`; every datagram is delivered `copies` times."""
    lost = dropped if dropped is not None else set()
    cars: dict[str, Sidecar] = {}
    datapaths: dict[str, RecordingDatapath] = {}
    loop = asyncio.get_running_loop()
    for me, peer in (("pa", "pb"), ("pb", "pa")):
        datapath = RecordingDatapath()

        def factory(
            config: SidecarConfig,
            plans: tuple[PeerPlan, ...],
            esp: Callable[[bytes, Any], None],
            acquire: Callable[[str], None],
            datapath: RecordingDatapath = datapath,
        ) -> RecordingDatapath:
            return datapath

        car = Sidecar(
            "/nonexistent/config.yaml",
            document(me, peer, ike_version, **(documents or {}).get(me, {})),
            datapath_factory=factory,
            datapath_choice=DatapathChoice("kernel", "test"),
            mark=0,
            config_poll_interval=0,
            inbound_grace=0.05,
        )
        cars[me], datapaths[me] = car, datapath
        offline(monkeypatch, car)

    def sender(me: str, peer: str) -> Callable[..., None]:
        def send(data: bytes, addr: Any, *, natt: bool, local: str | None) -> None:
            missing = agreed_inbound_spis(cars[me]) - datapaths[me].inbound[peer]
            if missing:
                violations.append(f"{me} sent before installing {sorted(map(hex, missing))}")
            port = 4500 if natt else 500
            if me in lost:
                lost.discard(me)
                return
            for _ in range(copies):
                loop.call_soon(cars[peer]._ike_datagram, data, (ADDRESSES[me], port))

        return send

    monkeypatch.setattr(cars["pa"].sockets, "send", sender("pa", "pb"))
    monkeypatch.setattr(cars["pb"].sockets, "send", sender("pb", "pa"))
    return cars, datapaths


def one_ike_sa_each(cars: dict[str, Sidecar]) -> bool:
    """Both sides initiate at start: until the duplicate is deleted, a rekey may be asked
    of an SA that is about to go (what this file checks is ordering, not that race)."""
    return len(cars["pa"].peers["pb"].live_sas()) == len(cars["pb"].peers["pa"].live_sas()) == 1


async def settle(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait for ``check``; generous, as each exchange costs Diffie-Hellman in Python on a
    machine whose other cores may be busy (5 s was not enough under load)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def test_no_message_leaves_before_the_sa_it_announces_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    violations: list[str] = []

    async def main() -> None:
        cars, datapaths = await pair(monkeypatch, violations)
        await cars["pb"].start()
        await cars["pa"].start()
        await settle(lambda: datapaths["pb"].outbound["pa"] is not None, "the first child")
        await settle(lambda: one_ike_sa_each(cars), "the duplicate IKE SA's deletion")
        first_a, first_b = datapaths["pa"].outbound["pb"], datapaths["pb"].outbound["pa"]
        for initiator in ("pa", "pb", "pa"):
            peer = "pb" if initiator == "pa" else "pa"
            before = datapaths["pa"].outbound["pb"]

            def rekeyed(before: int | None = before) -> bool:
                return (
                    datapaths["pa"].outbound["pb"] != before
                    and len(datapaths["pa"].inbound["pb"]) == 1
                    and len(datapaths["pb"].inbound["pa"]) == 1
                )

            await cars[initiator].rekey(peer, "child")
            await settle(rekeyed, f"the rekey by {initiator}")
        # Each side sends on what the other accepts, and the SAs are new ones.
        out_a, out_b = datapaths["pa"].outbound["pb"], datapaths["pb"].outbound["pa"]
        assert out_a in datapaths["pb"].inbound["pa"] and out_a != first_a
        assert out_b in datapaths["pa"].inbound["pb"] and out_b != first_b
        for car in cars.values():
            car.hurry()
            await car.stop()

    asyncio.run(main())
    assert violations == []


def test_the_outbound_sa_always_has_its_inbound_twin_on_the_peer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen from the datapaths alone: whenever a side moves its outbound traffic to a
    rekeyed SA, the peer has already installed it as inbound (make-before-break). The
    first child is exempt: IKEv2's responder may send once its IKE_AUTH response left,
    before the initiator read it; nothing flowed before, so nothing is interrupted."""

    async def main() -> list[str]:
        cars, datapaths = await pair(monkeypatch, [])
        broken: list[str] = []
        armed = False
        for me, peer in (("pa", "pb"), ("pb", "pa")):
            original = datapaths[me].set_outbound

            def checked(
                name: str,
                sa: IpsecSa,
                *,
                remote_port: int | None = None,
                me: str = me,
                peer: str = peer,
                original: Callable[..., None] = original,
            ) -> None:
                if armed and sa.spi not in datapaths[peer].inbound[me]:
                    broken.append(f"{me} moved to {sa.spi:#x} before {peer} installed it")
                original(name, sa, remote_port=remote_port)

            monkeypatch.setattr(datapaths[me], "set_outbound", checked)
        await cars["pb"].start()
        await cars["pa"].start()
        await settle(lambda: datapaths["pb"].outbound["pa"] is not None, "the first child")
        await settle(lambda: one_ike_sa_each(cars), "the duplicate IKE SA's deletion")
        armed = True
        for initiator in ("pb", "pa"):
            peer = "pb" if initiator == "pa" else "pa"
            count = len(datapaths["pa"].log)

            def old_removed(count: int = count) -> bool:
                log = datapaths["pa"].log[count:]
                return sum(op == "remove_inbound" for op, _, _ in log) == 1

            await cars[initiator].rekey(peer, "child")
            await settle(old_removed, f"the old child's removal after the rekey by {initiator}")
        for car in cars.values():
            car.hurry()
            await car.stop()
        return broken

    assert asyncio.run(main()) == []


@pytest.mark.parametrize("ike_version", [2, 1])
def test_an_own_initiation_still_at_its_first_message_gives_way_to_the_peers_sa(
    monkeypatch: pytest.MonkeyPatch, ike_version: int
) -> None:
    """pa's first message is lost (pb was not ready for it: with the operator, pb did
    not know pa's certificate yet); pb then initiates and its SA is established. pa's
    own initiation, still waiting for an answer, is abandoned at once: left to its
    retransmission it would make a second IKE SA, whose duplicate resolution cost a
    packet in the lab (IKEv1's main mode message 1 was not recognised as such)."""

    async def main() -> None:
        cars, datapaths = await pair(monkeypatch, [], ike_version, dropped={"pa"})
        await cars["pa"].start()
        await settle(lambda: bool(cars["pa"].peers["pb"].live_sas()), "pa's initiation")
        await cars["pb"].start()
        await settle(lambda: datapaths["pa"].outbound["pb"] is not None, "pb's child")
        live = cars["pa"].peers["pb"].live_sas()
        assert [sa.is_initiator for sa in live] == [False], live
        for car in cars.values():
            car.hurry()
            await car.stop()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("byte_limits", "agreed"),
    [
        # pa proposes 1 GiB (1,048,576 KB); pb, with no limit, takes it
        ({"pa": 2**30}, 2**30),
        # pb's shorter limit reaches pa in RESPONDER-LIFETIME (976 whole kilobytes)
        ({"pa": 2**30, "pb": 1_000_000}, 976 * 1024),
    ],
)
def test_the_byte_limit_agreed_in_ikev1_quick_mode_is_the_installed_sas_limit(
    monkeypatch: pytest.MonkeyPatch, byte_limits: dict[str, int], agreed: int
) -> None:
    """The document's `lifetimes.bytes` is offered in kilobytes; the limit quick mode
    agrees, not either document's, is what both datapaths get (soft at 90 %), so the
    byte soft-limit rekey and the hard limit apply to the pair on both sides."""

    async def main() -> None:
        documents = {me: {"lifetimes": {"bytes": n}} for me, n in byte_limits.items()}
        cars, datapaths = await pair(monkeypatch, [], 1, documents=documents)
        await cars["pb"].start()
        await cars["pa"].start()
        await settle(
            lambda: all(
                d.outbound[p] is not None
                for d, p in ((datapaths["pa"], "pb"), (datapaths["pb"], "pa"))
            ),
            "the first child on both sides",
        )
        for datapath in datapaths.values():
            assert datapath.installed
            for sa in datapath.installed:
                assert sa.lifetime.hard_bytes == agreed
                assert sa.lifetime.soft_bytes == int(agreed * 0.9)
        for car in cars.values():
            car.hurry()
            await car.stop()

    asyncio.run(main())


def test_an_ikev1_authentication_failure_is_named_so_in_last_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another pre-shared key at pb, every datagram twice (so each side sees the
    undecryptable message 5 or the notification answering it a second time and ends
    main mode at once): both peers read AUTHENTICATION_FAILED with the engine's reason,
    as an IKEv2 authentication failure does, not NEGOTIATION_FAILED."""

    async def main() -> None:
        documents = {"pb": {"psk": "another pre-shared key entirely"}}
        cars, _ = await pair(monkeypatch, [], 1, documents=documents, copies=2)
        await cars["pb"].start()
        await cars["pa"].start()
        peers = {"pa": cars["pa"].peers["pb"], "pb": cars["pb"].peers["pa"]}
        await settle(lambda: all(p.last_failure for p in peers.values()), "both sides to fail")
        for peer in peers.values():  # both initiate: each is initiator and responder
            assert peer.last_failure == "authentication_failed"
            assert re.fullmatch(
                r"AUTHENTICATION_FAILED \(HASH_[IR] mismatch or undecryptable [a-z 0-9]+: "
                r"probably a wrong pre-shared key\)",
                peer.last_error or "",
            ), peer.last_error
        for car in cars.values():
            car.hurry()
            await car.stop()

    asyncio.run(main())
