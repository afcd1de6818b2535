"""IKEv1 phase 1 re-authentication and INITIAL-CONTACT, two endpoints in memory with a
fake clock: a new main mode replaces the ISAKMP SA and takes its IPsec SAs over (no
pair is deleted or re-made), the old ISAKMP SA is deleted, a quick mode rekey then runs
under the new one; a peer that restarted (INITIAL-CONTACT) leaves one ISAKMP SA and one
pair. A failed re-authentication is retried with back-off until the hard lifetime; one
towards a peer behind a NAT starts on port 4500; IPsec SAs outlive an expired or
deleted ISAKMP SA (detached) until a new main mode takes them over or they expire."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from kipsec_sidecar.core.errors import LocalProtocolError
from kipsec_sidecar.core.ike.config import Address, IkeConfig, Lifetime
from kipsec_sidecar.core.ike.constants import NON_ESP_MARKER
from kipsec_sidecar.core.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    Event,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
    PeerDead,
)
from kipsec_sidecar.core.ikev1 import informational
from kipsec_sidecar.core.ikev1.constants import ExchangeType
from kipsec_sidecar.core.ikev1.endpoint import IsakmpEndpoint
from kipsec_sidecar.core.ikev1.engine import PEER_REAUTH_GRACE, IsakmpSa, Phase1State
from kipsec_sidecar.daemon.reload import RETIRED_KEY_GRACE, retire_key
from support.ike_pair import INITIATOR_ADDR, NAT_ADDR, RESPONDER_ADDR, SeededRng, pair_configs
from support.ikev1_public_key import RSA_A, RSA_A_NEW, RSA_B, encrypting

Tap = Callable[[str, bytes], list[bytes]]
INFORMATIONAL = ExchangeType.INFORMATIONAL


@dataclass
class Node:
    """One side: its endpoint, its address and the events it reported."""

    name: str
    addr: Address
    config: IkeConfig
    endpoint: IsakmpEndpoint
    events: list[tuple[IsakmpSa, Event]] = field(default_factory=list)

    def of(self, cls: type) -> list:  # type: ignore[type-arg]
        return [e for _sa, e in self.events if isinstance(e, cls)]

    def established(self) -> list[IsakmpSa]:
        return [sa for sa in dict.fromkeys(self.endpoint.sas.values()) if sa.established]

    def live(self) -> list[IsakmpSa]:
        return [sa for sa in dict.fromkeys(self.endpoint.sas.values()) if not sa.closed]

    def child_spis(self) -> set[bytes]:
        return {spi for sa in self.live() for spi in sa.children}


def with_child_lifetime(config: IkeConfig, lifetime: Lifetime) -> IkeConfig:
    children = tuple(dataclasses.replace(c, lifetime=lifetime) for c in config.children)
    return dataclasses.replace(config, children=children)


class Link:
    """Two IKEv1 endpoints joined by an in-memory wire; ``tap`` sees each datagram.

    ``nat``: A sits behind a NAT that maps its ports 500 and 4500 to ``NAT_ADDR``'s
    port and the one above it; B reaches A only through those two mappings (anything
    B sends elsewhere is lost, as at a real NAT). ``child_lifetime``: both sides'."""

    def __init__(
        self,
        *,
        seed: int = 1,
        nat: bool = False,
        child_lifetime: Lifetime | None = None,
        **overrides: object,
    ) -> None:
        a_cfg, self.b_config = pair_configs(version=1, **overrides)  # type: ignore[arg-type]
        if child_lifetime is not None:
            a_cfg = with_child_lifetime(a_cfg, child_lifetime)
            self.b_config = with_child_lifetime(self.b_config, child_lifetime)
        self.now = 0.0
        self.nat = nat
        self.unmapped = 0  #: datagrams B sent to a port the NAT has no mapping for
        self.tap: Tap | None = None
        self.a = Node("a", INITIATOR_ADDR, a_cfg, IsakmpEndpoint(a_cfg, rng=SeededRng(seed)))
        self.b = self.fresh_b(seed + 1000)

    def fresh_b(self, seed: int) -> Node:
        """B with no state at all (a restarted peer)."""
        cfg = self.b_config
        return Node("b", RESPONDER_ADDR, cfg, IsakmpEndpoint(cfg, rng=SeededRng(seed)))

    def _source(self, src: Node, data: bytes) -> Address:
        natt = data[:4] == NON_ESP_MARKER
        if self.nat and src is self.a:
            return (NAT_ADDR[0], NAT_ADDR[1] + (1 if natt else 0))
        return (src.addr[0], 4500 if natt else 500)

    def _pump(self) -> bool:
        moved = False
        mapped = {NAT_ADDR, (NAT_ADDR[0], NAT_ADDR[1] + 1)}
        for src, dst in ((self.a, self.b), (self.b, self.a)):
            for data, to in src.endpoint.datagrams_to_send(self.now):
                if self.nat and src is self.b and to not in mapped:
                    self.unmapped += 1
                    continue
                for d in self.tap(src.name, data) if self.tap else [data]:
                    moved = True
                    dst.endpoint.receive_datagram(d, self._source(src, d), self.now)
            while (item := src.endpoint.next_event()) is not None:
                src.events.append(item)
        return moved

    def run(self, duration: float) -> None:
        """Deliver everything and follow timers for ``duration`` seconds of fake time."""
        end = self.now + duration
        while True:
            while self._pump():
                pass
            timers = [t for n in (self.a, self.b) if (t := n.endpoint.get_timer()) is not None]
            nxt = min(timers, default=None)
            if nxt is None or nxt > end:
                self.now = end
                return
            self.now = max(self.now, nxt)
            self.a.endpoint.handle_timer(self.now)
            self.b.endpoint.handle_timer(self.now)

    def up(self) -> IsakmpSa:
        """A initiates; returns A's ISAKMP SA once it and one pair each side are up."""
        sa = self.a.endpoint.initiate(self.a.config, RESPONDER_ADDR, self.now)
        self.run(10)
        assert sa.established and len(self.a.child_spis()) == 1 and len(self.b.child_spis()) == 1
        return sa


def assert_one_matching_sa_and_pair(link: Link) -> tuple[IsakmpSa, IsakmpSa]:
    (sa_a,) = link.a.live()
    (sa_b,) = link.b.live()
    assert sa_a.established and sa_b.established
    assert (sa_a.cookie_i, sa_a.cookie_r) == (sa_b.cookie_i, sa_b.cookie_r)
    (ca,) = sa_a.children.values()
    (cb,) = sa_b.children.values()
    assert (ca.spi_in, ca.spi_out) == (cb.spi_out, cb.spi_in)
    return sa_a, sa_b


def assert_the_pair_moved_over(link: Link, spis: set[bytes]) -> None:
    """One ISAKMP SA each side, holding the very pair A had (inbound ``spis``): none
    was deleted."""
    assert_one_matching_sa_and_pair(link)
    assert link.a.child_spis() == spis
    assert not link.a.of(ChildSaDeleted) and not link.b.of(ChildSaDeleted)


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_reauthentication_keeps_the_ipsec_sas_and_deletes_the_old_isakmp_sa(who: str) -> None:
    link = Link()
    old_a = link.up()
    (old_b,) = link.b.live()
    pair_a, pair_b = link.a.child_spis(), link.b.child_spis()
    installed = len(link.a.of(ChildSaEstablished)), len(link.b.of(ChildSaEstablished))
    (old_a if who == "initiator" else old_b).rekey_ike(link.now)
    link.run(20)
    new_a, new_b = assert_one_matching_sa_and_pair(link)
    assert new_a is not old_a and new_b is not old_b
    assert (new_a.cookie_i, new_a.cookie_r) != (old_a.cookie_i, old_a.cookie_r)
    assert new_a.is_initiator == (who == "initiator")
    # The pair was neither deleted nor negotiated again: it moved to the new ISAKMP SA.
    assert link.a.child_spis() == pair_a and link.b.child_spis() == pair_b
    assert not link.a.of(ChildSaDeleted) and not link.b.of(ChildSaDeleted)
    assert (len(link.a.of(ChildSaEstablished)), len(link.b.of(ChildSaEstablished))) == installed
    assert not new_a.initial_contact and not new_b.initial_contact
    assert old_a.closed and old_b.closed
    reasons = {e.reason for e in link.a.of(IkeSaDeleted)} | {
        e.reason for e in link.b.of(IkeSaDeleted)
    }
    assert reasons == {"reauthenticated", "deleted-by-peer"}
    (rekeyed,) = link.a.of(IkeSaRekeyed)
    assert (rekeyed.old_spi_i, rekeyed.new_spi_i) == (old_a.cookie_i, new_a.cookie_i)
    assert len(link.b.of(IkeSaRekeyed)) == 1
    # A quick mode rekey afterwards runs under the new ISAKMP SA, from each side.
    for node, sa in ((link.a, new_a), (link.b, new_b)):
        (spi,) = sa.children
        sa.rekey_child(spi, link.now)
        link.run(20)
        assert_one_matching_sa_and_pair(link)
        assert node.of(ChildSaEstablished)[-1].replaces == spi
        assert spi not in node.child_spis()
        assert node.of(ChildSaDeleted)[-1].reason == "rekeyed"


def test_the_soft_lifetime_reauthenticates_before_the_hard_one_and_no_pair_is_lost() -> None:
    lifetime = Lifetime(rekey_after=100, expire_after=150)
    link = Link(i_lifetime=lifetime, r_lifetime=lifetime)
    link.up()
    spis = link.a.child_spis()
    link.run(1000)  # several lifetimes
    assert_the_pair_moved_over(link, spis)
    assert len(link.a.of(IkeSaRekeyed)) >= 6
    assert not {e.reason for e in link.a.of(IkeSaDeleted)} & {"expired", "peer-dead"}


def test_both_sides_reauthenticating_at_once_keep_the_pair() -> None:
    link = Link()
    old_a = link.up()
    (old_b,) = link.b.live()
    spis = link.a.child_spis()
    old_a.rekey_ike(link.now)
    old_b.rekey_ike(link.now)
    link.run(60)
    assert_the_pair_moved_over(link, spis)


def test_reauthentication_survives_lost_messages() -> None:
    link = Link()
    old_a = link.up()
    spis = link.a.child_spis()
    dropped = {0, 3, 5}
    seen = {"a": 0, "b": 0}

    def lossy(src: str, data: bytes) -> list[bytes]:
        seen[src] += 1
        return [] if seen[src] - 1 in dropped else [data]

    link.tap = lossy
    old_a.rekey_ike(link.now)
    link.run(60)
    assert_the_pair_moved_over(link, spis)


def test_a_peer_that_keeps_the_old_isakmp_sa_after_its_reauthentication_gets_a_delete() -> None:
    """strongSwan, re-authenticating as initiator, leaves the old ISAKMP SA to us: if
    its Delete does not come, we delete the old one ourselves ``PEER_REAUTH_GRACE``
    seconds later."""
    link = Link()
    old_a = link.up()
    (old_b,) = link.b.live()
    link.tap = lambda src, data: [] if src == "a" and data[18] == INFORMATIONAL else [data]
    old_a.rekey_ike(link.now)
    start = link.now
    link.run(PEER_REAUTH_GRACE - 1)
    assert old_b.state is Phase1State.REPLACED and not old_b.children
    link.run(2)
    assert old_b.closed
    assert [e.reason for e in link.b.of(IkeSaDeleted)] == ["reauthenticated"]
    assert link.now - start <= PEER_REAUTH_GRACE + 1
    assert_the_pair_moved_over(link, link.a.child_spis())


def test_a_child_rekey_queued_on_the_replaced_isakmp_sa_runs_on_its_successor() -> None:
    """A rekey asked for while another exchange of the old ISAKMP SA was pending (an
    unanswered R-U-THERE) had not started when the re-authentication took over: the new
    ISAKMP SA runs it."""
    link = Link()
    old_a = link.up()
    (spi,) = old_a.children
    acks_lost = {"on": True}
    link.tap = lambda src, data: (
        [] if acks_lost["on"] and src == "b" and data[18] == INFORMATIONAL else [data]
    )
    old_a.send_liveness(link.now)
    link.run(0.1)  # the R-U-THERE went out; its acknowledgement is lost
    old_a.rekey_child(spi, link.now)  # queued behind the R-U-THERE
    assert spi in old_a.children and old_a.pending_kind() is not None
    old_a.rekey_ike(link.now)
    link.run(1)
    acks_lost["on"] = False
    link.run(20)
    new = [e for e in link.a.of(ChildSaEstablished) if e.replaces == spi]
    assert new, "the queued rekey never ran"
    assert_one_matching_sa_and_pair(link)


def test_rekey_ike_before_main_mode_is_done_is_refused() -> None:
    link = Link()
    sa = link.a.endpoint.initiate(link.a.config, RESPONDER_ADDR, 0.0)
    with pytest.raises(LocalProtocolError):
        sa.rekey_ike(0.0)


# --- INITIAL-CONTACT (RFC 2407 section 4.6.3.3) -----------------------------------------


def test_initial_contact_from_a_restarted_peer_deletes_what_it_forgot() -> None:
    link = Link()
    old_a = link.up()
    old_spis = link.a.child_spis()
    link.run(50)
    link.b = link.fresh_b(seed=77)  # B restarts: it remembers nothing
    sa_b = link.b.endpoint.initiate(link.b.config, INITIATOR_ADDR, link.now)
    link.run(20)
    assert sa_b.established
    new_a, _ = assert_one_matching_sa_and_pair(link)
    assert new_a.initial_contact and not new_a.is_initiator
    assert old_a.closed
    assert [e.reason for e in link.a.of(IkeSaDeleted)] == ["initial-contact"]
    assert {e.spi_in for e in link.a.of(ChildSaDeleted)} == old_spis
    assert not link.a.child_spis() & old_spis


def test_initial_contact_spares_an_sa_established_during_its_main_mode() -> None:
    """Both sides initiating at once both send INITIAL-CONTACT: neither main mode
    deletes the other's SA (each was established after the other began)."""
    link = Link()
    a_cfg, b_cfg = link.a.config, link.b.config
    sa_a = link.a.endpoint.initiate(a_cfg, RESPONDER_ADDR, 0.0)
    sa_b = link.b.endpoint.initiate(b_cfg, INITIATOR_ADDR, 0.0)
    link.run(20)
    assert sa_a.established and sa_b.established
    assert not [e for e in link.a.of(IkeSaDeleted) if e.reason == "initial-contact"]
    assert not [e for e in link.b.of(IkeSaDeleted) if e.reason == "initial-contact"]
    assert len(link.a.of(IkeSaEstablished)) == 2 and len(link.b.of(IkeSaEstablished)) == 2


def test_a_deleted_isakmp_sa_hands_its_ipsec_sas_to_another_with_the_peer() -> None:
    """IPsec SAs outlive the ISAKMP SA that made them: B deletes only one of two ISAKMP
    SAs (as a peer finishing a re-authentication does); A's pair under it moves to the
    other instead of being deleted."""
    link = Link()
    link.a.endpoint.initiate(link.a.config, RESPONDER_ADDR, 0.0)
    sa_b = link.b.endpoint.initiate(link.b.config, INITIATOR_ADDR, 0.0)
    link.run(20)
    assert len(link.a.established()) == 2
    spis = link.a.child_spis()
    informational.send_delete_isakmp(sa_b, link.now)  # the ISAKMP SA alone
    sa_b.discard()
    link.run(5)
    (kept,) = link.a.established()
    assert set(kept.children) == spis and not link.a.of(ChildSaDeleted)


# --- re-authentication behind a NAT (RFC 3947 section 4) ---------------------------------

MAIN = ExchangeType.MAIN


def header_of(data: bytes) -> tuple[bytes, bytes, int]:
    """(CKY-I, CKY-R, exchange type) of an ISAKMP datagram, non-ESP marker or not."""
    body = data[4:] if data[:4] == NON_ESP_MARKER else data
    return body[0:8], body[8:16], body[18]


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_reauthentication_behind_a_nat_starts_on_port_4500(who: str) -> None:
    """A sits behind a NAT, so NAT-T moved the ISAKMP SA to port 4500: the new main
    mode starts there, with the non-ESP marker (the NAT has no mapping for A's port 500
    that B could use), and its NAT-D hashes cover port 4500, so each side still sees
    the NAT on A's side only."""
    link = Link(nat=True)
    old_a = link.up()
    (old_b,) = link.b.live()
    assert old_a.natt and old_b.natt and old_b.peer_addr == (NAT_ADDR[0], NAT_ADDR[1] + 1)
    spis = link.a.child_spis()
    first: list[bytes] = []

    def record(src: str, data: bytes) -> list[bytes]:
        _, cky_r, exchange = header_of(data)
        if exchange == MAIN and cky_r == bytes(8):
            first.append(data)
        return [data]

    link.tap = record
    (old_a if who == "initiator" else old_b).rekey_ike(link.now)
    link.run(20)
    assert first and all(d[:4] == NON_ESP_MARKER for d in first)
    assert link.unmapped == 0
    assert_the_pair_moved_over(link, spis)
    new_a, new_b = assert_one_matching_sa_and_pair(link)
    assert new_a is not old_a and new_a.natt and new_b.natt
    assert (new_a.nat_local, new_a.nat_remote) == (True, False)
    assert (new_b.nat_local, new_b.nat_remote) == (False, True)


# --- a failed re-authentication is retried with back-off ---------------------------------


def main_mode_starts(link: Link, starts: list[float]) -> Callable[[bytes], None]:
    """A note taker for one side's datagrams: when each new main mode sent its first
    message 1 (a new CKY-I with CKY-R zero)."""
    seen: set[bytes] = set()

    def note(data: bytes) -> None:
        cky_i, cky_r, exchange = header_of(data)
        if exchange == MAIN and cky_r == bytes(8) and cky_i not in seen:
            seen.add(cky_i)
            starts.append(link.now)

    return note


def silence_b_in_main_mode(link: Link, until: float = float("inf")) -> list[float]:
    """B's main mode messages are lost until ``until``; returns the list in which the
    start of each of A's main modes is noted."""
    starts: list[float] = []
    note = main_mode_starts(link, starts)

    def tap(src: str, data: bytes) -> list[bytes]:
        if src == "a":
            note(data)
        elif header_of(data)[2] == MAIN and link.now < until:
            return []
        return [data]

    link.tap = tap
    return starts


def test_a_failed_reauthentication_is_retried_with_back_off_until_it_succeeds() -> None:
    """B does not answer main mode until t=250: each re-authentication of A's (soft
    lifetime 100 s) goes unanswered and is tried again after a growing delay, and the
    one after t=250 takes the pair over before the hard lifetime (400 s)."""
    link = Link(
        i_lifetime=Lifetime(rekey_after=100, expire_after=400, jitter=0),
        r_lifetime=Lifetime(rekey_after=0, expire_after=4000),
    )
    old_a = link.up()
    spis = link.a.child_spis()
    starts = silence_b_in_main_mode(link, until=250)
    link.run(400)
    assert starts[0] == pytest.approx(100)
    assert len(starts) >= 5 and starts[-1] >= 250
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] < gaps[1] < gaps[2] < gaps[3]  # delays of ~1, 2, 4, 8 s ±20 %
    assert old_a.closed and [e.reason for e in link.a.of(IkeSaDeleted)][-1] == "reauthenticated"
    assert_the_pair_moved_over(link, spis)
    assert link.a.of(IkeSaRekeyed)


def test_reauthentication_retries_stop_at_the_hard_lifetime() -> None:
    """B never answers main mode: A retries until its ISAKMP SA's hard lifetime, then
    the SA expires (its IPsec pair lives on, detached) and no retry follows it."""
    link = Link(i_lifetime=Lifetime(rekey_after=100, expire_after=200, jitter=0))
    old_a = link.up()
    spis = link.a.child_spis()
    starts = silence_b_in_main_mode(link)
    link.run(400)
    assert len(starts) > 3 and all(100 <= t < 200 for t in starts)
    assert old_a.detached and link.a.child_spis() == spis


# --- IPsec SAs outlive their ISAKMP SA ----------------------------------------------------

SHORT_ISAKMP = Lifetime(rekey_after=0, expire_after=60)  # expires, never re-authenticates
CHILD = Lifetime(rekey_after=300, expire_after=400)


def test_ipsec_sas_outlive_an_expired_isakmp_sa_and_a_new_main_mode_rekeys_them() -> None:
    """Both ISAKMP SAs expire at 60 s; the pair carries on, detached, nothing is sent
    until its soft lifetime (270-300 s): then a new main mode takes it over and a quick
    mode rekeys it. The detached SAs go as ``reauthenticated``, no pair expired."""
    link = Link(i_lifetime=SHORT_ISAKMP, r_lifetime=SHORT_ISAKMP, child_lifetime=CHILD)
    old_a = link.up()
    (old_b,) = link.b.live()
    spis_a = link.a.child_spis()
    sent: list[float] = []

    def record(src: str, data: bytes) -> list[bytes]:
        sent.append(link.now)
        return [data]

    link.tap = record
    link.run(200)
    assert old_a.detached and old_b.detached
    assert old_a.state.value == "detached"
    assert link.a.child_spis() == spis_a and len(link.b.child_spis()) == 1
    assert not link.a.of(IkeSaDeleted) and not link.b.of(IkeSaDeleted)
    assert not link.a.of(ChildSaDeleted) and not link.b.of(ChildSaDeleted)
    assert sent and max(sent) <= 60  # the Deletes at expiry; then silence
    link.run(110)  # t=310: past the pair's soft lifetime, before its hard one
    assert old_a.closed and old_b.closed
    assert [e.reason for e in link.a.of(IkeSaDeleted)] == ["reauthenticated"]
    assert [e.reason for e in link.b.of(IkeSaDeleted)] == ["reauthenticated"]
    assert [e.replaces for e in link.a.of(ChildSaEstablished)][-1] in spis_a
    assert {e.reason for e in link.a.of(ChildSaDeleted)} == {"rekeyed"}
    assert {e.reason for e in link.b.of(ChildSaDeleted)} == {"rekeyed"}
    assert link.a.child_spis() and not link.a.child_spis() & spis_a
    assert_one_matching_sa_and_pair(link)


def test_detached_ipsec_sas_expire_at_their_own_hard_lifetime() -> None:
    """The peer is gone once the ISAKMP SAs expired: the new main modes (from the
    pair's soft lifetime on, retried with back-off) go unanswered, and the pair is
    deleted at its hard lifetime (400 s), not before; then the detached SA closes."""
    link = Link(i_lifetime=SHORT_ISAKMP, r_lifetime=SHORT_ISAKMP, child_lifetime=CHILD)
    old_a = link.up()
    link.run(100)
    starts: list[float] = []
    note = main_mode_starts(link, starts)
    link.tap = lambda src, data: (note(data), [])[1] if src == "a" else []
    link.run(280)  # t=390
    assert old_a.detached and len(link.a.child_spis()) == 1
    assert len(starts) > 3 and starts[0] >= 270
    link.run(20)
    assert old_a.closed and not link.a.child_spis()
    assert [e.reason for e in link.a.of(ChildSaDeleted)] == ["expired"]
    assert [e.reason for e in link.a.of(IkeSaDeleted) if e.spi_i == old_a.cookie_i] == ["expired"]


def test_a_delete_of_the_isakmp_sa_alone_leaves_the_pair_and_liveness_re_establishes() -> None:
    """B deletes its ISAKMP SA alone, keeping its pair (as its own expiry does): A keeps
    the pair too (no ChildSaDeleted). With liveness checks configured A does not wait
    for the pair's rekey: its new main mode starts at once, takes the pair over and
    rekeys it right away (make-before-break: the old one goes as ``rekeyed``)."""
    link = Link(i_liveness_interval=30.0)
    old_a = link.up()
    (old_b,) = link.b.live()
    spis = link.a.child_spis()
    informational.send_delete_isakmp(old_b, link.now)
    old_b.detach(link.now)
    link.tap = lambda src, data: [] if header_of(data)[2] == MAIN else [data]
    link.run(0.1)
    assert old_a.detached and link.a.child_spis() == spis and not link.a.of(ChildSaDeleted)
    link.tap = None
    link.run(10)
    assert old_a.closed and old_b.closed
    assert {e.reason for e in link.a.of(IkeSaDeleted)} == {"reauthenticated"}
    assert_one_matching_sa_and_pair(link)
    assert [e.replaces for e in link.a.of(ChildSaEstablished)][-1] in spis
    assert {e.reason for e in link.a.of(ChildSaDeleted)} == {"rekeyed"}


def test_with_liveness_checks_an_unanswered_main_mode_makes_a_detached_sa_dead() -> None:
    """As above, but B is gone after its Delete: A's new main mode is its dead peer
    detection; unanswered, the peer is dead and the pair is deleted (``dpdAction``)."""
    link = Link(i_liveness_interval=30.0)
    old_a = link.up()
    (old_b,) = link.b.live()
    informational.send_delete_isakmp(old_b, link.now)
    old_b.discard()
    from_b = {"n": 0}

    def b_says_only_its_delete(src: str, data: bytes) -> list[bytes]:
        if src == "a":
            return [data]
        from_b["n"] += 1
        return [data] if from_b["n"] == 1 else []

    link.tap = b_says_only_its_delete
    link.run(1)
    assert old_a.detached and len(old_a.children) == 1
    link.run(30)
    assert old_a.closed and link.a.of(PeerDead)
    assert [e.reason for e in link.a.of(IkeSaDeleted)][-1] == "peer-dead"
    assert [e.reason for e in link.a.of(ChildSaDeleted)] == ["ike-deleted"]


def test_a_peer_that_dropped_the_pair_with_the_isakmp_sa_gets_a_new_one() -> None:
    """strongSwan drops its IPsec SAs when told its ISAKMP SA is deleted. B does so
    here (it forgets everything just before A's ISAKMP SA expires): A keeps its half,
    detached; re-established at once (liveness checks), A rekeys the pair right away,
    which B answers with a fresh pair, so both ends hold one matching pair again."""
    link = Link(i_lifetime=SHORT_ISAKMP, i_liveness_interval=30.0)
    old_a = link.up()
    (old_b,) = link.b.live()
    spis = link.a.child_spis()
    link.run(49)  # t=59: A's R-U-THERE at 40 was answered
    old_b.close("deleted-by-peer", link.now)  # the peer's view after a bare Delete
    assert old_a.established
    link.run(10)
    assert old_a.closed
    assert_one_matching_sa_and_pair(link)
    assert not link.a.child_spis() & spis
    assert [e.reason for e in link.a.of(ChildSaDeleted)] == ["rekeyed"]


def test_a_pair_rekeyed_just_before_the_isakmp_sa_expires_is_dropped_while_detached() -> None:
    """A rekeys its pair 3 s before its ISAKMP SA expires: the replaced pair's drop,
    due 5 s after the rekey, still happens once the SA is detached (only its Delete
    cannot go out), so A is left with the new pair alone."""
    link = Link(i_lifetime=SHORT_ISAKMP, r_lifetime=SHORT_ISAKMP)
    old_a = link.up()
    (old_spi,) = old_a.children
    link.run(47)  # t=57
    old_a.rekey_child(old_spi, link.now)
    link.run(13)  # t=70
    assert old_a.detached
    (new,) = link.a.of(ChildSaEstablished)[1:]
    assert set(old_a.children) == {new.spi_in}
    assert [(e.spi_in, e.reason) for e in link.a.of(ChildSaDeleted)] == [(old_spi, "rekeyed")]


def test_a_rekey_asked_of_a_detached_sa_re_establishes_first() -> None:
    """``kipsec-sidecar rekey`` (or a byte limit) on a detached SA: a new main mode
    comes first, then the quick mode rekey under it."""
    link = Link(i_lifetime=SHORT_ISAKMP, r_lifetime=SHORT_ISAKMP)
    old_a = link.up()
    link.run(60)
    assert old_a.detached
    (spi,) = old_a.children
    old_a.rekey_child(spi, link.now)
    link.run(5)
    assert old_a.closed
    assert_one_matching_sa_and_pair(link)
    assert link.a.of(ChildSaEstablished)[-1].replaces == spi and spi not in link.a.child_spis()


def test_a_reauthentication_after_a_renewal_authenticates_with_the_renewed_credentials() -> None:
    """Public-key encryption: A's ISAKMP SA, established before A renewed its key,
    re-authenticates once B's configuration encrypts to A's new certificate and A's
    grace for the replaced key is over. With the configuration the daemon's
    credentials-only refresh hands it (``renew_credentials``) its new main mode opens
    B's message 4 with the new key; with the one it was made from, nothing could."""
    i, r = pair_configs(version=1)
    a_old = encrypting(i, "a.example", "b.example", RSA_A, RSA_B.der, 4)
    a_new = encrypting(i, "a.example", "b.example", RSA_A_NEW, RSA_B.der, 4)
    b_configs = [encrypting(r, "b.example", "a.example", RSA_B, RSA_A.der, 4)]
    link = Link()
    link.a = Node("a", INITIATOR_ADDR, a_old, IsakmpEndpoint(a_old, rng=SeededRng(1)))
    b_endpoint = IsakmpEndpoint(lambda _addr: b_configs[-1], rng=SeededRng(2))
    link.b = Node("b", RESPONDER_ADDR, b_configs[0], b_endpoint)
    sa = link.up()
    sa.renew_credentials(retire_key(a_old, a_new, link.now))  # A renewed
    b_configs.append(encrypting(r, "b.example", "a.example", RSA_B, RSA_A_NEW.der, 4))
    link.run(RETIRED_KEY_GRACE + 60)  # B's document caught up long ago
    sa.rekey_ike(link.now)
    link.run(60)
    assert len(link.a.of(IkeSaEstablished)) == 2 and len(link.b.of(IkeSaEstablished)) == 2
    (new,) = link.a.live()
    assert new is not sa and new.established and new.config.auth.private_key is RSA_A_NEW.key
    assert all(s.stats.internal_errors == 0 for s in (sa, new))
