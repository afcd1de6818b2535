"""Per-peer state of the daemon: its IKE SAs, its installed child SAs, its retry schedule.

The decisions that keep traffic flowing through a rekey live here as pure code, so unit
tests can walk every ordering of events without sockets:

* :class:`ChildTable` turns ``ChildSaEstablished`` / ``ChildSaDeleted`` into datapath
  operations in make-before-break order. A new inbound SA is installed at once. Outbound
  moves to the new SA at once when this side initiated the exchange (the peer answered,
  so it has the new inbound SA) or when it is not a rekey; the rekey *responder* keeps
  sending on the old SA until the initiator deletes it — the initiator may not have the
  new SA installed before our response reaches it. The old inbound SA is removed last.
* :class:`~kipsec_sidecar.core.backoff.Backoff` (in the core, shared with the IKEv1
  engine) spaces re-initiations to a peer that keeps failing (1 s doubling to 30 s,
  jittered so a fleet of sidecars does not retry in lockstep).
* :func:`redundant_ike_sa` picks which of two IKE SAs with the same peer goes away when
  both sides initiated at the same time, so that both sides agree without talking.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from ..config.model import Action
from ..config.to_core import PeerPlan
from ..core.backoff import Backoff
from ..core.ike.events import ChildSaEstablished, IkeSaEstablished
from ..core.ike_versions import AnySa, detached
from ..core.ipsec_sa import IpsecSa
from ..state import PeerState
from .reload import fingerprint

# --- datapath operations -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstallInbound:
    sa: IpsecSa
    #: the peer's ESP-in-UDP port behind a NAT (None: the policy's, 4500)
    remote_port: int | None = None


@dataclass(frozen=True, slots=True)
class SetOutbound:
    sa: IpsecSa
    #: the peer's ESP-in-UDP port behind a NAT (None: the policy's, 4500)
    remote_port: int | None = None


@dataclass(frozen=True, slots=True)
class RemoveInbound:
    spi: int


@dataclass(frozen=True, slots=True)
class ClearOutbound:
    pass


DatapathOp = InstallInbound | SetOutbound | RemoveInbound | ClearOutbound

ChildViewState = Literal["installed", "rekeyed", "deleting"]


@dataclass(slots=True)
class InstalledChild:
    """A child SA as the daemon installed it. ``event`` has its keys blanked."""

    event: ChildSaEstablished
    inbound: IpsecSa
    outbound: IpsecSa
    encapsulation: Literal["udp", "raw"]
    installed_at: float  #: wall clock
    rekey_at: float | None  #: wall clock
    expire_at: float | None  #: wall clock
    state: ChildViewState = "installed"
    #: where ESP in UDP goes behind a NAT: the port the peer's IKE datagrams came from
    #: when the child was negotiated (None: the policy's port, 4500)
    remote_port: int | None = None

    @property
    def spi_in(self) -> bytes:
        return self.event.spi_in


def without_keys(event: ChildSaEstablished) -> ChildSaEstablished:
    """The event with its key fields emptied: what the daemon keeps for the snapshot."""
    return dataclasses.replace(
        event, encr_key_in=b"", integ_key_in=b"", encr_key_out=b"", integ_key_out=b""
    )


class ChildTable:
    """The child SAs installed for one peer and which one carries outbound traffic.

    Each method returns the datapath operations to apply, in order. Keys of the table
    are inbound SPIs (the engine's child identity).
    """

    def __init__(self) -> None:
        self.children: dict[bytes, InstalledChild] = {}
        self.outbound: bytes | None = None  #: spi_in of the child outbound traffic uses
        self._waiting: dict[bytes, bytes] = {}  #: old spi_in → successor awaiting its delete

    def established(self, child: InstalledChild) -> list[DatapathOp]:
        """A new child SA: install inbound; move outbound now or when the old one goes."""
        event = child.event
        ops: list[DatapathOp] = [InstallInbound(child.inbound, child.remote_port)]
        self.children[event.spi_in] = child
        old = self.children.get(event.replaces) if event.replaces is not None else None
        if old is not None:
            old.state = "rekeyed"
        deferred = not event.initiator or event.defer_outbound
        if old is not None and deferred and self.outbound is not None:
            assert event.replaces is not None
            self._waiting[event.replaces] = event.spi_in
        else:
            ops.append(SetOutbound(child.outbound, child.remote_port))
            self.outbound = event.spi_in
        return ops

    def deleted(self, spi_in: bytes) -> list[DatapathOp]:
        """A child SA is gone: move outbound off it first, then stop accepting it."""
        child = self.children.pop(spi_in, None)
        if child is None:
            return []
        ops: list[DatapathOp] = []
        successor = self._waiting.pop(spi_in, None)
        self._waiting = {k: v for k, v in self._waiting.items() if v != spi_in}
        if successor is not None and successor in self.children:
            heir = self.children[successor]
            ops.append(SetOutbound(heir.outbound, heir.remote_port))
            self.outbound = successor
        elif self.outbound == spi_in:
            newest = self._newest()
            if newest is not None:
                ops.append(SetOutbound(newest.outbound, newest.remote_port))
                self.outbound = newest.spi_in
            else:
                ops.append(ClearOutbound())
                self.outbound = None
        ops.append(RemoveInbound(child.inbound.spi))
        if not self.children and not any(isinstance(op, ClearOutbound) for op in ops):
            ops.insert(0, ClearOutbound())
            self.outbound = None
        return ops

    def mark_deleting(self, spi_in: bytes) -> None:
        child = self.children.get(spi_in)
        if child is not None:
            child.state = "deleting"

    def clear(self) -> list[DatapathOp]:
        """Forget every child (the peer is removed): fail closed, drop all inbound SAs."""
        ops: list[DatapathOp] = [ClearOutbound()]
        ops += [RemoveInbound(c.inbound.spi) for c in self.children.values()]
        self.children.clear()
        self._waiting.clear()
        self.outbound = None
        return ops

    def current(self) -> InstalledChild | None:
        return self.children.get(self.outbound) if self.outbound is not None else None

    def _newest(self) -> InstalledChild | None:
        installed = [c for c in self.children.values() if c.state == "installed"]
        pool = installed or list(self.children.values())
        return pool[-1] if pool else None


# --- re-initiation ---------------------------------------------------------------------------


# --- duplicate IKE SAs -----------------------------------------------------------------------


def redundant_ike_sa(
    local_address: str, remote_address: str, first: AnySa, second: AnySa, newer: AnySa
) -> AnySa:
    """Of two established IKE SAs with one peer, the one to delete.

    If both sides initiated at once, the SA initiated by the lower address survives, so
    both sides name the same loser; the side that initiated it deletes it. If one side
    initiated both (a peer that restarted, a re-initiation racing a slow answer), the
    older one goes. ``newer`` is whichever of the two was established last.
    """
    if first.is_initiator == second.is_initiator:
        return second if newer is first else first
    we_are_lower = address_order(local_address) < address_order(remote_address)
    ours = first if first.is_initiator else second
    theirs = second if ours is first else first
    return theirs if we_are_lower else ours


def address_order(address: str) -> tuple[int, int]:
    """A total order on IPv4 and IPv6 addresses (version first), for tie-breaks."""
    parsed = ipaddress.ip_address(address)
    return (parsed.version, int(parsed))


def deletes_redundant(loser: AnySa, first: AnySa, second: AnySa) -> bool:
    """Whether this side sends the DELETE for ``loser`` (see :func:`redundant_ike_sa`).

    Cross-initiated duplicates are deleted by their initiator only (no DELETE crossing);
    a same-side duplicate is deleted by whoever sees it, since its initiator may be a
    peer that restarted and no longer knows it.
    """
    if first.is_initiator == second.is_initiator:
        return True
    return loser.is_initiator


@dataclass(slots=True)
class ManualRotation:
    """A manual peer's new SA pair waiting for outbound traffic to move onto it.

    Outbound moves when the peer is seen using the new inbound SA (it has reloaded) or
    at ``switch_at`` (loop time), whichever comes first; the old inbound SA stays
    accepted for the grace period after that.
    """

    old_spi_in: bytes
    new: InstalledChild
    switch_at: float


# --- one peer --------------------------------------------------------------------------------


@dataclass(eq=False)
class Peer:
    """What the daemon holds for one configured peer.

    ``retired`` is set when a reload removed or replaced the peer: events of its IKE SAs
    that arrive afterwards (their DELETE answers) are logged and otherwise ignored, but
    for one: an IKE SA whose IKE_AUTH was in flight is deleted once it completes
    (``Sidecar._delete_completed``), its child never installed.
    ``operator_stopped`` is set by ``terminate``: no initiation of ours at all (retry,
    traffic, close or dead-peer action) until ``initiate`` or a reload; the peer may
    still bring the SAs up itself. ``reconnect`` is what the peer does while it has no
    SA (:mod:`.actions`).
    """

    plan: PeerPlan
    known_fingerprint: str | None = None
    """:attr:`fingerprint` once computed or given (see :meth:`use`)."""
    children: ChildTable = field(default_factory=ChildTable)
    ike_sas: list[AnySa] = field(default_factory=list)
    established: dict[AnySa, IkeSaEstablished] = field(default_factory=dict)
    established_at: dict[AnySa, float] = field(default_factory=dict)  #: wall clock
    last_error: str | None = None
    last_failure: str | None = None
    """``last_error`` as one of :data:`~kipsec_sidecar.handshake_failures.REASONS`."""
    backoff: Backoff = field(default_factory=Backoff)
    retry_at: float | None = None  #: loop time of the scheduled re-initiation
    retired: bool = False
    operator_stopped: bool = False
    reconnect: Action = "restart"
    declined: bool = False  #: a declined on-demand initiation was logged (once per stop)
    planned_deletes: set[AnySa] = field(default_factory=set)
    outlived: set[AnySa] = field(default_factory=set)
    """Duplicate IKE SAs the peer deletes (:func:`redundant_ike_sa`), until it does: not
    acted on while another is established (a rekey asked of one would die with it)."""
    rotation: ManualRotation | None = None

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def fingerprint(self) -> str:
        """:func:`~.reload.fingerprint` of :attr:`plan`, computed at its first use.

        Only a reload compares fingerprints, so a start does not pay for them (26 ms of
        CPU for 100 peers); a reload that computed the new plan's already hands it over.
        """
        if self.known_fingerprint is None:
            self.known_fingerprint = fingerprint(self.plan)
        return self.known_fingerprint

    def use(self, plan: PeerPlan, fp: str | None = None) -> None:
        """Run ``plan`` from now on; ``fp`` is its fingerprint when the caller has it
        (the plan and the fingerprint it is compared by never disagree)."""
        self.plan = plan
        self.known_fingerprint = fp

    def live_sas(self) -> list[AnySa]:
        return [sa for sa in self.ike_sas if not sa.closed]

    def ike_sa_count(self) -> int:
        """IKE SAs that exist with the peer (a detached IKEv1 SA's is gone)."""
        return sum(1 for sa in self.live_sas() if not detached(sa))

    def preferred_sa(self) -> AnySa | None:
        """The IKE SA to act on and to show: the newest established that survives a
        duplicate resolution, else the newest established, else the newest live."""
        live = self.live_sas()
        established = [sa for sa in live if sa.established]
        pool = [sa for sa in established if sa not in self.outlived] or established or live
        return pool[-1] if pool else None

    @property
    def state(self) -> PeerState:
        if self.children.children and any(sa.established or detached(sa) for sa in self.live_sas()):
            return "established"  # a detached IKEv1 SA's IPsec SAs still carry traffic
        if self.last_error is not None:
            return "down"  # failing: retries (if any) are in progress
        if self.live_sas() or self.retry_at is not None:
            return "connecting"
        return "idle"


__all__ = [
    "ChildTable",
    "ClearOutbound",
    "DatapathOp",
    "InstallInbound",
    "InstalledChild",
    "ManualRotation",
    "Peer",
    "RemoveInbound",
    "SetOutbound",
    "address_order",
    "deletes_redundant",
    "redundant_ike_sa",
    "without_keys",
]
