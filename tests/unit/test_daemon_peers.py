"""Make-before-break decisions, re-initiation backoff and duplicate IKE SA resolution."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import pytest

from kipsec_sidecar.config.load import load_config_data
from kipsec_sidecar.config.to_core import PeerPlan, to_core
from kipsec_sidecar.core.backoff import Backoff
from kipsec_sidecar.core.ike.constants import EncrId, ProtocolId
from kipsec_sidecar.core.ike.engine import IkeSa
from kipsec_sidecar.core.ike.events import ChildSaEstablished
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode
from kipsec_sidecar.core.traffic_selectors import TrafficSelector
from kipsec_sidecar.daemon.peers import (
    ChildTable,
    ClearOutbound,
    InstalledChild,
    InstallInbound,
    Peer,
    RemoveInbound,
    SetOutbound,
    address_order,
    deletes_redundant,
    redundant_ike_sa,
    without_keys,
)
from support.ike_pair import IkePair, pair_configs, psk_config

LOCAL, REMOTE = "10.10.1.2", "10.10.2.2"


def _plan() -> PeerPlan:
    document = {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {"addresses": [LOCAL], "auth": {"psk": {"value": "a test secret"}}},
        "peers": [{"name": "b", "address": REMOTE}],
    }
    (plan,) = to_core(load_config_data(document))
    return plan


def _sa(spi: int, src: str, dst: str) -> IpsecSa:
    return IpsecSa(
        spi=spi,
        src=src,
        dst=dst,
        protocol=ProtocolId.ESP,
        mode=Mode.TUNNEL,
        encr_id=EncrId.AES_GCM_16,
        encr_key=bytes(36),
    )


def child(
    spi_in: int,
    spi_out: int,
    *,
    initiator: bool = True,
    replaces: int | None = None,
    defer_outbound: bool = False,
) -> InstalledChild:
    event = ChildSaEstablished(
        name="pb",
        protocol=ProtocolId.ESP,
        mode="tunnel",
        spi_in=spi_in.to_bytes(4, "big"),
        spi_out=spi_out.to_bytes(4, "big"),
        encr_id=EncrId.AES_GCM_16,
        encr_key_bits=256,
        integ_id=None,
        esn=False,
        local_ts=(TrafficSelector.host(LOCAL),),
        remote_ts=(TrafficSelector.host(REMOTE),),
        rekey_at=None,
        expire_at=None,
        initiator=initiator,
        remote_addr=(REMOTE, 500),
        nat_detected=False,
        replaces=None if replaces is None else replaces.to_bytes(4, "big"),
        defer_outbound=defer_outbound,
        encr_key_in=b"k" * 36,
        encr_key_out=b"K" * 36,
    )
    return InstalledChild(
        event=without_keys(event),
        inbound=_sa(spi_in, REMOTE, LOCAL),
        outbound=_sa(spi_out, LOCAL, REMOTE),
        encapsulation="udp",
        installed_at=time.time(),
        rekey_at=None,
        expire_at=None,
    )


def spi(value: int) -> bytes:
    return value.to_bytes(4, "big")


def kinds(ops: Sequence[object]) -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    for op in ops:
        match op:
            case InstallInbound(sa=sa):
                out.append(("install_inbound", sa.spi))
            case SetOutbound(sa=sa):
                out.append(("set_outbound", sa.spi))
            case RemoveInbound(spi=number):
                out.append(("remove_inbound", number))
            case ClearOutbound():
                out.append(("clear_outbound", None))
    return out


def test_a_first_child_is_installed_inbound_then_used_outbound() -> None:
    table = ChildTable()
    assert kinds(table.established(child(0x100, 0x200, initiator=False))) == [
        ("install_inbound", 0x100),
        ("set_outbound", 0x200),
    ]
    assert table.outbound == spi(0x100)


def test_the_rekey_initiator_switches_outbound_at_once_and_drops_the_old_inbound_last() -> None:
    table = ChildTable()
    table.established(child(0x100, 0x200))
    assert kinds(table.established(child(0x101, 0x201, initiator=True, replaces=0x100))) == [
        ("install_inbound", 0x101),
        ("set_outbound", 0x201),
    ]
    assert table.children[spi(0x100)].state == "rekeyed"
    assert kinds(table.deleted(spi(0x100))) == [("remove_inbound", 0x100)]


@pytest.mark.parametrize(
    ("initiator", "defer"),
    [(False, False), (True, True)],
    ids=["rekey-responder", "ikev1-quick-mode-initiator"],
)
def test_the_old_outbound_is_kept_until_the_old_child_is_deleted(
    initiator: bool, defer: bool
) -> None:
    """The responder of a rekey, and an IKEv1 initiator (no commit bit: it cannot know
    when the peer installed the new pair), keep sending on the old child."""
    table = ChildTable()
    table.established(child(0x100, 0x200))
    new = child(0x101, 0x201, initiator=initiator, replaces=0x100, defer_outbound=defer)
    assert kinds(table.established(new)) == [("install_inbound", 0x101)]
    assert table.outbound == spi(0x100)
    assert kinds(table.deleted(spi(0x100))) == [
        ("set_outbound", 0x201),
        ("remove_inbound", 0x100),
    ]
    assert table.outbound == spi(0x101)


def test_deleting_the_last_child_fails_closed() -> None:
    table = ChildTable()
    table.established(child(0x100, 0x200))
    assert kinds(table.deleted(spi(0x100))) == [("clear_outbound", None), ("remove_inbound", 0x100)]
    assert table.outbound is None and not table.children


def test_deleting_the_outbound_child_moves_outbound_to_the_remaining_one() -> None:
    table = ChildTable()
    table.established(child(0x100, 0x200))
    table.established(child(0x101, 0x201))  # e.g. the winner of a rekey collision
    assert kinds(table.deleted(spi(0x101))) == [
        ("set_outbound", 0x200),
        ("remove_inbound", 0x101),
    ]


def test_a_successor_deleted_before_its_predecessor_is_not_switched_to() -> None:
    table = ChildTable()
    table.established(child(0x100, 0x200))
    table.established(child(0x101, 0x201, initiator=False, replaces=0x100))
    table.deleted(spi(0x101))  # the redundant side of a collision
    assert kinds(table.deleted(spi(0x100))) == [("clear_outbound", None), ("remove_inbound", 0x100)]


def test_unknown_children_produce_no_operation() -> None:
    assert ChildTable().deleted(spi(0x999)) == []


def test_clear_removes_every_inbound_sa_and_fails_closed() -> None:
    table = ChildTable()
    table.established(child(0x100, 0x200))
    table.established(child(0x101, 0x201, replaces=0x100))
    assert kinds(table.clear()) == [
        ("clear_outbound", None),
        ("remove_inbound", 0x100),
        ("remove_inbound", 0x101),
    ]


def test_the_kept_event_has_no_keys() -> None:
    kept = child(0x100, 0x200).event
    assert kept.encr_key_in == kept.encr_key_out == kept.integ_key_in == kept.integ_key_out == b""


def test_backoff_doubles_from_one_second_up_to_thirty() -> None:
    backoff = Backoff(rng=lambda: 0.5)  # factor exactly 1: no jitter
    assert [backoff.next_delay() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 1


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.999])
def test_backoff_jitter_stays_within_twenty_percent_and_the_cap(draw: float) -> None:
    backoff = Backoff(rng=lambda: draw)
    delays = [backoff.next_delay() for _ in range(8)]
    bases = [1, 2, 4, 8, 16, 30, 30, 30]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.8 <= delay <= min(30, base * 1.2)


def _initiator() -> IkeSa:
    return IkeSa.initiator(psk_config("a", "b"), (REMOTE, 500))


def _responder() -> IkeSa:
    return IkeSa.responder(psk_config("a", "b"), (REMOTE, 500), b"\x01" * 8)


def test_crossed_duplicates_keep_the_sa_initiated_by_the_lower_address() -> None:
    ours, theirs = _initiator(), _responder()
    # We are the lower address: the peer's SA goes, and the peer (its initiator) deletes it.
    loser = redundant_ike_sa(LOCAL, REMOTE, ours, theirs, newer=ours)
    assert loser is theirs and not deletes_redundant(loser, ours, theirs)
    # Seen from the peer (higher address): its own SA goes, and it deletes it.
    loser = redundant_ike_sa(REMOTE, LOCAL, ours, theirs, newer=theirs)
    assert loser is ours and deletes_redundant(loser, ours, theirs)


def test_an_outlived_duplicate_is_not_the_sa_acted_on_while_the_survivor_is_established() -> None:
    # Both sides initiated; we are the lower address, so the peer deletes its SA. Until
    # its DELETE arrives both are established here, and the peer's is the newer: a
    # rekey asked now must go to ours, or it dies with the peer's SA.
    ours, theirs = IkePair(*pair_configs()), IkePair(*pair_configs(), seed=2)
    for pair in (ours, theirs):
        pair.run(5)
    survivor: IkeSa = ours.initiator
    doomed: IkeSa = theirs.responder
    peer = Peer(plan=_plan())
    peer.ike_sas = [survivor, doomed]
    assert survivor.established and doomed.established
    assert peer.preferred_sa() is doomed  # the newest, when nothing is known

    peer.outlived.add(doomed)

    assert peer.preferred_sa() is survivor
    peer.ike_sas.remove(survivor)  # no survivor established: still something to show
    assert peer.preferred_sa() is doomed


def test_same_side_duplicates_drop_the_older_whoever_sees_them() -> None:
    old, new = _responder(), _responder()  # e.g. the peer restarted and initiated again
    loser = redundant_ike_sa(LOCAL, REMOTE, old, new, newer=new)
    assert loser is old and deletes_redundant(loser, old, new)


def test_addresses_order_by_version_then_value() -> None:
    assert address_order("10.0.0.2") < address_order("10.0.0.10") < address_order("::1")


def test_behind_a_nat_both_directions_carry_the_peers_mapped_port() -> None:
    # The kernel keeps the peer's port in the inbound state's encapsulation as well
    # (RFC 3948), so the first install must already know it, not only the switch.
    natted = dataclasses.replace(child(0x100, 0x200), remote_port=40007)
    ops = ChildTable().established(natted)
    assert [op.remote_port for op in ops if isinstance(op, InstallInbound | SetOutbound)] == [
        40007,
        40007,
    ]
