"""The interface between the daemon and a datapath.

The daemon owns IKE, the sockets and the decisions (which SA is current, when to switch
outbound traffic during a rekey); a datapath owns the packet path: the device and routes
that pull the protected traffic in, the SAs that encrypt and decrypt it, and the
fail-closed state that keeps protected traffic from leaving in the clear when no SA is
installed, while one is being negotiated, or after the sidecar died.

Make-before-break is expressed by the call order, not by the datapath guessing: the
daemon installs a new inbound SA (``install_inbound``) before the peer can use it, moves
outbound traffic with ``set_outbound`` when the peer is known to have the new inbound SA,
and removes the old inbound SA (``remove_inbound``) last.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ..core.ike.constants import ProtocolId
from ..core.ipsec_sa import IpsecSa
from ..core.traffic_selectors import TrafficSelector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
UdpAddress = tuple[str, int]
Encapsulation = Literal["udp", "raw"]

#: Called by the datapath with a peer name when protected traffic for that peer arrives
#: and it has no outbound SA (on-demand initiation, like the kernel's XFRM ACQUIRE). The
#: datapath queues a bounded number of such packets and sends them once ``set_outbound``
#: gives the peer an SA; it calls this at most once per peer until then.
AcquireCallback = Callable[[str], None]

#: Sends one UDP datagram from the daemon's port-4500 socket (which bypasses the tunnel).
#: A sender may also have a ``many(datagrams, dest)`` method that sends several
#: datagrams to one address at once (UDP GSO; raises OSError when the send fails); the
#: userspace datapath uses it when present (see ``daemon.sockets.EspSender``).
UdpSender = Callable[[bytes, UdpAddress], None]


class DatapathError(Exception):
    """The datapath could not be set up or changed; the message says what and why."""


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """What must be protected for one peer, known before any SA exists.

    ``add_peer`` makes traffic matching ``remote_ts`` (from ``local_ts``) go through the
    datapath and nowhere else from then on: without an outbound SA it is queued or
    dropped, never sent in the clear.
    """

    peer: str  #: the peer's name in the configuration (unique)
    remote_addr: IPAddress  #: the peer's IPsec endpoint (outer destination)
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    mode: Literal["tunnel", "transport"]
    protocol: ProtocolId  #: ESP or AH
    encapsulation: Encapsulation = "udp"  #: ESP in UDP 4500 (RFC 3948) or raw IP 50/51
    #: the peer's NAT-T port when ``encapsulation`` is udp, until ``install_inbound`` and
    #: ``set_outbound`` name the port a NAT mapped it to
    remote_port: int = 4500
    #: this side's IPsec endpoint for the peer (the outer source); None: the datapath's
    #: default (a sidecar with IPv4 and IPv6 peers has one endpoint per family)
    local_addr: IPAddress | None = None
    #: seconds a child SA of this peer may live (the IKE engine deletes it then); None
    #: for no time limit (manual keys). The kernel datapath installs a slightly longer
    #: hard limit as a safety net, so the SAs of a crashed sidecar expire on their own.
    child_lifetime: float | None = None


@dataclass(slots=True)
class DatapathStats:
    """Counters the daemon exports as metrics (per peer where labelled so)."""

    packets_out: dict[str, int] = field(default_factory=dict)
    bytes_out: dict[str, int] = field(default_factory=dict)
    packets_in: dict[str, int] = field(default_factory=dict)
    bytes_in: dict[str, int] = field(default_factory=dict)
    replay_drops: dict[str, int] = field(default_factory=dict)
    integrity_drops: dict[str, int] = field(default_factory=dict)
    no_sa_drops: dict[str, int] = field(default_factory=dict)  #: protected traffic, no SA
    unknown_spi: int = 0
    """Inbound ESP/AH whose SPI is no SA's (no peer to charge it to): with ``no_sa_drops``,
    the ``no_sa`` drop reason, like replay and integrity drops a packet from outside."""
    queued: dict[str, int] = field(default_factory=dict)  #: held for on-demand setup
    errors: dict[str, int] = field(default_factory=dict)  #: by error kind


class Datapath(Protocol):
    """A packet path for protected traffic. All methods are called from the event loop."""

    name: str  #: "userspace" or "kernel"
    stats: DatapathStats

    async def start(self) -> None:
        """Create the device, rules and fail-closed routes; remove the SAs an earlier
        run of this sidecar left (never anything it does not own). What blocks traffic
        (policies, blackhole routes, rules) stays until :meth:`drop_stale`, so a run
        that exited with ``fail_closed`` hands over without a moment in clear."""

    def drop_stale(self) -> None:
        """Every peer of the configuration is added: remove what an earlier run left that
        none of them took over."""

    async def close(self, *, fail_closed: bool = False) -> None:
        """Remove every device, route, rule and SA this datapath created; with
        ``fail_closed``, remove the SAs (keys) but leave what blocks the peers' traffic
        for the next run to take over."""

    def add_peer(self, policy: PeerPolicy) -> None:
        """Route the peer's protected traffic into the datapath (fail closed at once)."""

    def remove_peer(self, peer: str) -> None:
        """Remove the peer's routes and SAs; its traffic is no longer protected."""

    def install_inbound(self, peer: str, sa: IpsecSa, *, remote_port: int | None = None) -> None:
        """Accept packets on ``sa`` (keyed by SPI, destination, protocol) from now on.

        ``remote_port`` is the peer's NAT-mapped UDP port, as for :meth:`set_outbound`
        (the kernel keeps it in the inbound state's encapsulation: RFC 3948 source port).
        """

    def set_outbound(self, peer: str, sa: IpsecSa, *, remote_port: int | None = None) -> None:
        """Send the peer's traffic on ``sa`` from now on; flush packets queued for it.

        ``remote_port`` is the peer's UDP port for ESP in UDP on this SA: behind a NAT
        the port its IKE datagrams come from (a masquerading NAT may have remapped 4500
        to anything), which the daemon learns from the IKE SA (RFC 3948 section 2.1,
        RFC 7296 section 2.23). None keeps the policy's ``remote_port``. Callers that
        never see a NAT may leave it out; implementations must accept it.
        """

    def remove_inbound(self, peer: str, spi: int) -> None:
        """Stop accepting packets on the inbound SA ``spi`` (after a rekey or a delete)."""

    def clear_outbound(self, peer: str) -> None:
        """The peer has no usable outbound SA any more: queue or drop (fail closed)."""

    def discard_queued(self, peer: str) -> None:
        """The daemon will not set up an SA for the traffic that asked for one (a peer
        with `start: none`, or held down by `terminate`): drop what is queued for it,
        counted as no-SA drops, and ask again on its next packet."""

    def receive_encapsulated(self, data: bytes, source: UdpAddress) -> None:
        """An ESP-in-UDP datagram (non-ESP marker already classified) from the 4500 socket.

        A datapath may hold what it decrypted until :meth:`flush_received`: callers call
        that after the datagrams of each socket read."""

    def flush_received(self) -> None:
        """The 4500 socket's reader has handed over its batch: deliver what it held now,
        not on a later event-loop pass (one pass less per packet: latency). Required
        after :meth:`receive_encapsulated`: nothing else delivers what it held."""

    def outbound_sa(self, peer: str) -> IpsecSa | None:
        """The SA the peer's traffic is sent on now, if any (for the control interface)."""

    def inbound_sas(self, peer: str) -> list[IpsecSa]:
        """The inbound SAs accepted for the peer now (two during a rekey)."""
