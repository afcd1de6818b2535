"""The userspace datapath: a TUN device in the pod's namespace, ESP/AH applied in-process.

Packet path::

    pod's stack --(table <T> routes)--> kipsec0 --read--> [peer lookup] --> SA --+
        ^                                                                         |
        |                        ESP in UDP 4500 (daemon's socket, RFC 3948) <---+
        |                        or raw IP 50/51 (this datapath's raw sockets)
        +--write-- kipsec0 <-- [selector check] <-- SA (by SPI) <-- inbound ESP/AH

- **Outbound**: the TUN reader (``loop.add_reader``) reads packets until the device is
  empty or a batch is done, maps each to a peer by its addresses (the peer whose remote
  selectors hold the destination and whose local selectors hold the source; cached per
  address pair), and protects it with the peer's one outbound SA. With UDP
  encapsulation the ESP bytes go to the daemon's ``UdpSender`` (the kernel adds the
  outer IP and UDP headers); with ``encapsulation: raw`` the datapath builds the whole
  packet (``core.esp.encapsulate`` / ``core.ah.encapsulate``) and sends it from a raw
  socket.
- **No SA yet** (before ``set_outbound``, after ``clear_outbound`` or when the SA hit a
  hard limit): the packet is queued (per peer, at most ``queue_packets`` packets and
  ``queue_bytes`` bytes; the oldest is dropped and counted in ``no_sa_drops`` when full)
  and the ``AcquireCallback`` is called once; ``set_outbound`` flushes the queue in order.
- **Inbound**: ``receive_encapsulated`` (from the daemon's 4500 socket) and the raw
  sockets' readers find the SA by SPI among the inbound SAs (several per peer during a
  make-before-break rekey), verify and decrypt it, check that the inner packet is one
  the SA's negotiated selectors allow (the peer's for an SA without them: manual keys;
  else drop, ``errors["selector"]``) and write it to the TUN device. Replayed and
  tampered packets are dropped and counted (``replay_drops``, ``integrity_drops``);
  nothing a peer sends raises into the event loop.
- **Transport mode over UDP** (RFC 3948 section 3.1.2): the receiver has only the ESP
  payload, so the IP header is rebuilt from the SA's addresses (peer → us). Without a NAT
  they are the outer addresses. With a NAT in the path they are the original ones —
  exactly the pseudo-header the sender's TCP/UDP checksum was computed over — so the
  checksum stays valid and no incremental fix-up is needed (the fix-up RFC 3948
  describes exists for receivers that rebuild from the NAT-rewritten outer addresses).
- **Fail closed**: see :mod:`.routing` — protected prefixes also have blackhole routes
  that outlive the process.
- **Plaintext in is dropped** (the kernel's inbound policies, in nftables): see
  :mod:`.inbound_filter` — from the pass that adds a peer on, a packet from its remote
  selectors to its local ones that did not come out of the device is dropped (IKE,
  NAT-T, ESP and AH excepted). The check after decryption above is the other half:
  what comes out of an SA must be inside its selectors (``core.spd.selectors_allow``).

Batching and offload (what each buys is measured by ``bench/datapath_throughput.py``;
the profile of the per-packet path said the limit is kernel work per packet — a
``sendto`` and a TUN ``write`` per packet — not the cryptography):

- **TUN offload** (``UserspaceOptions.offload``, on by default; off if the kernel refuses):
  the device is opened with ``IFF_VNET_HDR`` and TSO4/TSO6/CSUM, so one ``read`` returns
  a TCP super-segment of up to 64 KiB. :func:`.offload.split` cuts it into MSS-sized
  segments with correct headers and checksums (each is then ESP-protected on its own, so
  the wire and the peer see exactly what they saw before); the segments of one read share
  one peer lookup and one SA. Inbound, decrypted packets are not written one by one: they
  are collected during the burst the socket reader hands over and written when it ends
  (:meth:`UserspaceDatapath.flush_received`, which every reader calls in the same
  callback: the daemon's 4500 reader, this datapath's raw-socket readers),
  consecutive TCP segments of a flow merged into one GSO super-segment
  (:func:`.offload.coalesce`) that the kernel splits again. The merge does not re-sum
  each segment's TCP checksum: ESP's ICV already authenticated every byte (a tampered
  packet never gets this far; ``test_tampered_and_replayed_esp_is_dropped...`` in
  tests/e2e/test_userspace_datapath.py), so the super-segment goes with ``NEEDS_CSUM``
  and a lone packet as it came, for the kernel to verify. ``UserspaceOptions.tso=False``
  keeps the merged writes but reads segments the kernel cut itself (off by default: no
  clear difference measured, see ``bench/README.md``).
- **UDP GSO** (``udp_batch_sender`` or a ``UdpSender`` with ``many``): the ESP datagrams
  sealed during one pass over the device go to each peer in one ``sendmsg`` per run of
  equal-sized datagrams (:class:`.sockets.GsoSender`); the kernel cuts them apart.
- **UDP GRO** on the 4500 socket (its owner's business: :func:`.sockets.enable_gro` and
  :func:`.sockets.receive_batch`; the daemon does it): one ``recvmsg`` returns a run of
  datagrams.
- **Socket buffers**: 4 MiB, forced past ``net.core.*mem_max`` with CAP_NET_ADMIN.
- **Two processes** (``datapathWorkers: 2``): :mod:`.split` moves the outbound half into
  a worker process (:meth:`serve_outbound`, :meth:`add_outbound_peer`); its module
  docstring says why by direction and not a multi-queue device with a worker per queue.
  Not taken: threads (AES-GCM on 1.4 KB packets is ~2 µs of the ~30 µs a segment costs;
  releasing the GIL around it buys nothing when the rest of the path holds it).

Measured (iperf3 TCP, AES-GCM-256 tunnel, ESP in UDP, two pods on two nodes, 2 cores
shared with other workloads so single runs vary by ±30 %; medians of three runs)::

    variant        Mbit/s  vs plain  us/pkt sender  us/pkt receiver
    plain veth      11405     1.000
    baseline          207     0.018           21.7             19.4
    tun-offload       225     0.020           21.7             18.2
    +gso              328     0.029           12.2             15.1
    +gro              304     0.027           10.3             12.8

    (a quieter run of the same machine: baseline 237-332, +gso 567-645, +gro 571-667
    Mbit/s, i.e. 4-5 % of plain veth.)

``us/pkt`` is datapath CPU time per data packet: it is the robust number when the
machine is loaded, and it is what the batching removed.

Counters (``stats``): ``packets_out``/``bytes_out`` and ``packets_in``/``bytes_in`` count
inner packets and their bytes per peer; ``queued`` counts packets ever queued for a
missing SA; ``unknown_spi`` inbound packets whose SPI is no SA's (exported as the
``no_sa`` drop reason); ``errors`` is by kind: ``no_policy`` (a packet in the TUN device
that no peer's selectors cover), ``selector``, ``malformed``, ``send``,
``sa_expired``, ``tun_write``, ``inbound_filter`` (the nftables table could not be
written; it keeps what it held and the write is retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..core import ah, esp
from ..core.errors import (
    IntegrityError,
    KipsecError,
    ParseError,
    ReplayError,
    SequenceExhausted,
)
from ..core.ike.constants import ProtocolId
from ..core.ip import IpProto, build_ipv4, build_ipv6, five_tuple, l3_info
from ..core.ipsec_sa import IpsecSa, LifetimeExpired, Mode
from ..core.spd import Direction, selectors_allow
from ..core.traffic_selectors import ANY_PROTOCOL, MAX_PORT, TrafficSelector
from ..logs import LIMITER
from . import inbound_filter
from . import offload as tso
from .base import (
    AcquireCallback,
    DatapathError,
    DatapathStats,
    PeerPolicy,
    UdpAddress,
    UdpSender,
)
from .mtu import DEFAULT_NFT_TABLE, Suite, install_mss_clamp, remove_mss_clamp, tun_mtu
from .routing import IPNetwork, PolicyRouting, RoutingIds, selector_networks
from .sockets import IPPROTO_AH, IPPROTO_ESP, raw_send_socket, raw_socket
from .tun import TunDevice, open_tun

log = logging.getLogger(__name__)

Rng = Callable[[int], bytes]
#: Sends several ESP-in-UDP datagrams to one address (e.g. :class:`.sockets.GsoSender`).
UdpBatchSender = Callable[[Sequence[bytes], UdpAddress], None]

DEFAULT_DEVICE = "kipsec0"
MAX_PACKET = 65535
_CACHE_LIMIT = 4096
_TUNNEL_NEXT_HEADER = {4: IpProto.IPIP, 6: IpProto.IPV6}
_IP_PROTOCOL = {ProtocolId.ESP: IPPROTO_ESP, ProtocolId.AH: IPPROTO_AH}
_IPV6_EXTENSIONS = frozenset(
    {IpProto.HOPOPT, IpProto.ROUTING, IpProto.FRAGMENT, IpProto.DSTOPTS, IpProto.AH}
)
_PKTINFO6 = struct.Struct("16sI")


@dataclass(frozen=True, slots=True)
class UserspaceOptions:
    """Settings of the userspace datapath (the daemon fills them from the configuration).

    ``path_mtu``: the MTU to plan for; None reads it from the namespace's default route
    device. ``suites``: every protocol/algorithm/mode/encapsulation the sidecar may use;
    the TUN MTU leaves room for the largest overhead among them (empty: the worst
    supported ESP suite). ``queues`` > 1 opens a multi-queue TUN device. ``offload``
    opens the device with TCP segmentation/checksum offload (:mod:`.offload`); when the
    kernel refuses, the datapath runs without it. ``tso=False`` (with ``offload``) lets
    the kernel cut outbound TCP into segments while inbound segments are still merged
    (measured by ``bench/datapath_throughput.py``, variant ``gro-only-offload``).
    """

    device: str = DEFAULT_DEVICE
    ids: RoutingIds = field(default_factory=RoutingIds)
    path_mtu: int | None = None
    suites: tuple[Suite, ...] = ()
    queue_packets: int = 64
    queue_bytes: int = 256 * 1024
    batch: int = 64
    queues: int = 1
    offload: bool = True
    tso: bool = True
    nft_table: str = DEFAULT_NFT_TABLE
    inbound_table: str = inbound_filter.TABLE
    ike_ports: tuple[int, ...] = inbound_filter.IKE_PORTS
    rng: Rng = os.urandom


@dataclass(frozen=True, slots=True)
class _Range:
    """A traffic selector compiled to integers for the per-packet check."""

    version: int
    lo: int
    hi: int
    selector: TrafficSelector

    @property
    def address_only(self) -> bool:
        ts = self.selector
        return ts.protocol == ANY_PROTOCOL and ts.start_port == 0 and ts.end_port == MAX_PORT


def _compile(selectors: tuple[TrafficSelector, ...]) -> tuple[_Range, ...]:
    return tuple(_Range(ts.version, int(ts.start_addr), int(ts.end_addr), ts) for ts in selectors)


def _addresses(packet: bytes) -> tuple[int, int, int]:
    """(version, source, destination) as integers; ParseError when too short."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        return 4, int.from_bytes(packet[12:16], "big"), int.from_bytes(packet[16:20], "big")
    if version == 6 and len(packet) >= 40:
        return 6, int.from_bytes(packet[8:24], "big"), int.from_bytes(packet[24:40], "big")
    raise ParseError("not an IP packet", field="ip")


def _transport_header(sa: IpsecSa, next_header: int, payload_len: int) -> bytes:
    """The IP header of a transport-mode packet received over UDP, from the SA's addresses."""
    src, dst = sa.src, sa.dst
    if isinstance(src, ipaddress.IPv4Address) and isinstance(dst, ipaddress.IPv4Address):
        return build_ipv4(src, dst, next_header, payload_len)
    assert isinstance(src, ipaddress.IPv6Address) and isinstance(dst, ipaddress.IPv6Address)
    return build_ipv6(src, dst, next_header, payload_len)


def _address_key(packet: bytes) -> bytes:
    return packet[12:20] if packet[0] >> 4 == 4 else packet[8:40]


class _Selectors:
    """A peer's or one SA's traffic selectors, compiled for the per-packet check.

    ``inbound_ok`` caches the address pairs already allowed inbound; it is only filled
    when no selector restricts protocol or ports (the addresses then decide alone).
    """

    __slots__ = ("address_only", "inbound_ok", "local", "local_ts", "remote", "remote_ts")

    def __init__(
        self, local_ts: tuple[TrafficSelector, ...], remote_ts: tuple[TrafficSelector, ...]
    ) -> None:
        self.local_ts = local_ts
        self.remote_ts = remote_ts
        self.local = _compile(local_ts)
        self.remote = _compile(remote_ts)
        self.address_only = all(r.address_only for r in self.local + self.remote)
        self.inbound_ok: set[bytes] = set()

    def allows(self, packet: bytes, outbound: bool) -> bool:
        """Do the selectors allow ``packet`` (outbound: local→remote; inbound: reverse)?"""
        version, src, dst = _addresses(packet)
        local_addr, remote_addr = (src, dst) if outbound else (dst, src)
        if self.address_only:
            return any(
                r.version == version and r.lo <= remote_addr <= r.hi for r in self.remote
            ) and any(r.version == version and r.lo <= local_addr <= r.hi for r in self.local)
        direction = Direction.OUT if outbound else Direction.IN
        return selectors_allow(five_tuple(packet), self.local_ts, self.remote_ts, direction)


class _Peer:
    """Everything the datapath keeps for one peer."""

    __slots__ = (
        "dest",
        "inbound",
        "networks",
        "outbound",
        "pending_acquire",
        "policy",
        "queue",
        "queue_bytes",
        "selectors",
    )

    def __init__(self, policy: PeerPolicy) -> None:
        self.policy = policy
        self.selectors = _Selectors(policy.local_ts, policy.remote_ts)
        self.networks: list[IPNetwork] = selector_networks(policy.remote_ts)
        self.dest: UdpAddress = (str(policy.remote_addr), policy.remote_port)
        self.outbound: IpsecSa | None = None
        self.inbound: dict[int, IpsecSa] = {}
        self.queue: deque[bytes] = deque()
        self.queue_bytes = 0
        self.pending_acquire = False

    def inbound_selectors(self, sa: IpsecSa) -> _Selectors:
        """What may come out of ``sa``: the selectors negotiated for it when it carries
        them (a responder may have narrowed the peer's), else the peer's."""
        if not sa.local_ts or not sa.remote_ts:
            return self.selectors
        return _Selectors(sa.local_ts, sa.remote_ts)


class _Batch:
    """ESP datagrams sealed for one peer during one pass over the device."""

    __slots__ = ("datagrams", "inner_bytes")

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.inner_bytes = 0


_BATCH_LIMIT = 128
#: Seconds before a failed write of the inbound filter table is tried again.
FILTER_RETRY = 5.0


def _bump(counter: dict[str, int], key: str, amount: int = 1) -> None:
    counter[key] = counter.get(key, 0) + amount


class UserspaceDatapath:
    """:class:`~kipsec_sidecar.datapath.base.Datapath` on a TUN device (see module docstring).

    Runs in the network namespace it must protect (the pod's), on the running event loop.
    ``udp_sender`` sends ESP-in-UDP from the daemon's marked 4500 socket; ``on_acquire``
    is told when a peer without an outbound SA has traffic.
    """

    name = "userspace"

    def __init__(
        self,
        *,
        udp_sender: UdpSender,
        on_acquire: AcquireCallback,
        options: UserspaceOptions | None = None,
        udp_batch_sender: UdpBatchSender | None = None,
    ) -> None:
        self.options = options or UserspaceOptions()
        self.stats = DatapathStats()
        self._udp_sender = udp_sender
        self._udp_batch_sender: UdpBatchSender | None = udp_batch_sender or getattr(
            udp_sender, "many", None
        )
        self._rx_pending: list[bytes] = []
        self._rx_counts: dict[str, list[int]] = {}
        self.offload = False
        self._on_acquire = on_acquire
        self._peers: dict[str, _Peer] = {}
        self._inbound: dict[tuple[int, ProtocolId], tuple[_Peer, IpsecSa, _Selectors]] = {}
        self._route_cache: dict[bytes, _Peer] = {}
        self._tun: TunDevice | None = None
        self._tun_index = 0
        self._routing: PolicyRouting | None = None
        self._filter = inbound_filter.InboundFilter(
            self.options.device, ike_ports=self.options.ike_ports, table=self.options.inbound_table
        )
        self._filter_scheduled = False
        self._raw: dict[tuple[int, int], socket.socket] = {}  # (family, ip proto) -> socket
        self._raw_send6: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.mtu = 0
        self.path_mtu = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Create the device, rules and MSS clamp; start reading.

        An earlier run's rules and blackhole routes stay: they keep its peers' traffic
        dropped until this run's peers take them over; :meth:`drop_stale` removes the
        rest.
        """
        opts = self.options
        self._loop = asyncio.get_running_loop()
        routing = PolicyRouting(opts.ids)
        self._routing = routing
        try:
            # A crashed run's MSS clamping table stays until install_mss_clamp below
            # replaces it in one transaction (its script deletes the table first).
            # A crashed run's inbound table keeps dropping until this pass's write
            # replaces it atomically (with the peers the daemon adds meanwhile).
            self._schedule_filter_sync()
            self.path_mtu = opts.path_mtu or routing.path_mtu(exclude=opts.device)
            self.mtu = tun_mtu(self.path_mtu, list(opts.suites))
            self._tun = self._open_device()
            self._tun_index = routing.set_link(opts.device, mtu=self.mtu)
            routing.install_rules()
            if not install_mss_clamp(opts.nft_table, opts.device):
                log.warning(
                    "nft not found: TCP MSS is not clamped for forwarded traffic",
                    extra={"event": "datapath.no_mss_clamp"},
                )
        except BaseException:
            await self.close()
            raise
        for fd in self._tun.fds:
            self._loop.add_reader(fd, self._on_tun_readable, fd)
        log.info(
            "userspace datapath started",
            extra={
                "event": "datapath.started",
                "device": opts.device,
                "mtu": self.mtu,
                "path_mtu": self.path_mtu,
                "table": opts.ids.table,
                "offload": self.offload,
            },
        )

    def _open_device(self) -> TunDevice:
        opts = self.options
        if opts.offload:
            try:
                device = open_tun(opts.device, queues=opts.queues, offload=True, tso=opts.tso)
            except DatapathError as exc:
                log.warning(
                    "TUN offload refused; running without it",
                    extra={"event": "datapath.no_offload", "reason": str(exc)},
                )
            else:
                self.offload = True
                return device
        self.offload = False
        return open_tun(opts.device, queues=opts.queues)

    def serve_outbound(self, tun: TunDevice, *, offload: bool) -> None:
        """Carry only the outbound half, on a device another process opened and routes.

        The outbound worker of :mod:`.split` runs this: it reads ``tun`` and seals, and
        nothing else (no routes, rules or inbound SAs: the daemon keeps those).
        """
        self._loop = asyncio.get_running_loop()
        self._tun = tun
        self.offload = offload
        for fd in tun.fds:
            self._loop.add_reader(fd, self._on_tun_readable, fd)

    def add_outbound_peer(self, policy: PeerPolicy) -> None:
        """Know a peer for outbound classification only (see :meth:`serve_outbound`)."""
        self._peers[policy.peer] = _Peer(policy)
        self._route_cache.clear()

    def drop_stale(self) -> None:
        """Remove the blackhole routes of an earlier run that no added peer claims."""
        if self._routing is None:
            return
        stale = self._routing.drop_unclaimed()
        if stale:
            log.info(
                "removed stale routing state",
                extra={"event": "datapath.stale_removed", "count": stale},
            )

    async def close(self, *, fail_closed: bool = False) -> None:
        """Remove the device, routes, rules, nft table and raw sockets; forget every SA.

        With ``fail_closed`` the rules, blackhole routes and inbound filter stay (the
        device's routes go with it): the peers' traffic is dropped until the next run."""
        loop = self._loop
        for sock in self._raw.values():
            if loop is not None:
                with contextlib.suppress(Exception):
                    loop.remove_reader(sock.fileno())
            sock.close()
        self._raw.clear()
        if self._raw_send6 is not None:
            self._raw_send6.close()
            self._raw_send6 = None
        if self._tun is not None:
            for fd in self._tun.fds:
                if loop is not None:
                    with contextlib.suppress(Exception):
                        loop.remove_reader(fd)
            self._tun.close()
            self._tun = None
        if self._routing is not None:
            self._routing.close(keep=fail_closed)
            self._routing = None
        remove_mss_clamp(self.options.nft_table)
        if not fail_closed:
            self._filter.remove()
        self._peers.clear()
        self._inbound.clear()
        self._route_cache.clear()

    # -- peers ---------------------------------------------------------------------------

    def add_peer(self, policy: PeerPolicy) -> None:
        """Route the peer's remote selectors into the device (and the blackhole under it).

        Raises DatapathError for AH with UDP encapsulation, for a name already added,
        when raw sockets are needed but CAP_NET_RAW is missing, and when the ``nft``
        command is missing (the peer's clear text could not be dropped inbound). The
        peer's inbound filter rules are written at the end of this event-loop pass,
        together with those of every other peer added or removed in it.
        """
        if policy.protocol == ProtocolId.AH and policy.encapsulation == "udp":
            raise DatapathError(
                f"peer {policy.peer}: AH cannot be UDP-encapsulated (AH authenticates the "
                "addresses a NAT rewrites); use encapsulation: raw, or ESP"
            )
        if policy.protocol not in (ProtocolId.ESP, ProtocolId.AH):
            raise DatapathError(f"peer {policy.peer}: protocol {policy.protocol!r} is not ESP/AH")
        if not policy.remote_ts or not policy.local_ts:
            raise DatapathError(f"peer {policy.peer}: traffic selectors must not be empty")
        if self._routing is None:
            raise DatapathError(f"peer {policy.peer}: the datapath is not started")
        if policy.peer in self._peers:
            raise DatapathError(f"peer {policy.peer} is already in the datapath")
        self._filter.require()
        peer = _Peer(policy)
        if policy.encapsulation == "raw":
            self._open_raw(policy.protocol, policy.remote_addr.version)
        done: list[IPNetwork] = []
        try:
            for net in peer.networks:
                self._routing.protect(net, self._tun_index)
                done.append(net)
        except DatapathError:
            for net in done:
                self._routing.unprotect(net)
            raise
        self._peers[policy.peer] = peer
        self._route_cache.clear()
        self._schedule_filter_sync()

    def remove_peer(self, peer: str) -> None:
        state = self._peers.pop(peer, None)
        if state is None:
            return
        if self._routing is not None:
            for net in state.networks:
                self._routing.unprotect(net)
        for sa in state.inbound.values():
            self._inbound.pop((sa.spi, sa.protocol), None)
        state.queue.clear()
        self._route_cache.clear()
        self._schedule_filter_sync()

    def _schedule_filter_sync(self) -> None:
        if self._loop is not None and not self._filter_scheduled:
            self._filter_scheduled = True
            self._loop.call_soon(self._sync_filter)

    def _sync_filter(self) -> None:
        """Write the inbound filter for the peers of now, once per event-loop pass.

        Once per pass because the daemon adds every peer in one pass at start (one
        ``nft -f`` for all of them, not one per peer: 500 peers take one write of ~0.2 s
        instead of ~20 s of rewrites), and because a reload replaces a changed peer by
        ``remove_peer`` then ``add_peer`` in one pass: the selectors are then unchanged,
        nothing is written, and the peer's clear text is never let in between. A failed
        write leaves the table as it was, is counted and logged, and is tried again
        :data:`FILTER_RETRY` seconds later.
        """
        self._filter_scheduled = False
        if self._routing is None:
            return  # closed meanwhile; close removed the table
        try:
            self._filter.sync(p.policy for p in self._peers.values())
        except DatapathError as exc:
            _bump(self.stats.errors, "inbound_filter")
            log.error(
                "inbound filter not updated",
                extra={"event": "datapath.inbound_filter_error", "reason": str(exc)},
            )
            assert self._loop is not None
            self._loop.call_later(FILTER_RETRY, self._schedule_filter_sync)

    def _peer(self, peer: str) -> _Peer:
        state = self._peers.get(peer)
        if state is None:
            raise DatapathError(f"peer {peer} is not in the datapath (add_peer first)")
        return state

    # -- SAs -----------------------------------------------------------------------------

    def install_inbound(self, peer: str, sa: IpsecSa, *, remote_port: int | None = None) -> None:
        # remote_port is unused: inbound ESP in UDP is accepted from any source port.
        state = self._peer(peer)
        key = (sa.spi, sa.protocol)
        owner = self._inbound.get(key)
        if owner is not None and owner[1] is not sa:
            raise DatapathError(
                f"peer {peer}: inbound SPI {sa.spi:#010x} ({sa.protocol.name}) is already in use"
            )
        state.inbound[sa.spi] = sa
        self._inbound[key] = (state, sa, state.inbound_selectors(sa))

    def remove_inbound(self, peer: str, spi: int) -> None:
        state = self._peers.get(peer)
        if state is None:
            return
        sa = state.inbound.pop(spi, None)
        if sa is not None:
            self._inbound.pop((sa.spi, sa.protocol), None)

    def set_outbound(self, peer: str, sa: IpsecSa, *, remote_port: int | None = None) -> None:
        state = self._peer(peer)
        if sa.protocol != state.policy.protocol:
            raise DatapathError(
                f"peer {peer}: outbound SA is {sa.protocol.name}, the policy says "
                f"{state.policy.protocol.name}"
            )
        port = state.policy.remote_port if remote_port is None else remote_port
        state.dest = (str(state.policy.remote_addr), port)
        state.outbound = sa
        state.pending_acquire = False
        queue = state.queue
        while queue and state.outbound is not None:
            packet = queue.popleft()
            state.queue_bytes -= len(packet)
            self._protect(state, state.outbound, packet)
        if not queue:
            state.queue_bytes = 0

    def clear_outbound(self, peer: str) -> None:
        state = self._peers.get(peer)
        if state is not None:
            state.outbound = None
            state.pending_acquire = False

    def discard_queued(self, peer: str) -> None:
        state = self._peers.get(peer)
        if state is None:
            return
        if state.queue:
            _bump(self.stats.no_sa_drops, peer, len(state.queue))
        state.queue.clear()
        state.queue_bytes = 0
        state.pending_acquire = False

    def outbound_sa(self, peer: str) -> IpsecSa | None:
        state = self._peers.get(peer)
        return None if state is None else state.outbound

    def inbound_sas(self, peer: str) -> list[IpsecSa]:
        state = self._peers.get(peer)
        return [] if state is None else list(state.inbound.values())

    # -- outbound ------------------------------------------------------------------------

    def _on_tun_readable(self, fd: int) -> None:
        read = os.read
        offload = self.offload
        size = MAX_PACKET + tso.VNET_HDR_LEN if offload else MAX_PACKET
        batches: dict[_Peer, _Batch] | None = {} if self._udp_batch_sender else None
        try:
            for _ in range(self.options.batch):
                try:
                    data = read(fd, size)
                except BlockingIOError:
                    return
                except OSError as exc:
                    _bump(self.stats.errors, "tun_read")
                    if exc.errno == errno.EBADFD:
                        return
                    continue
                if not data:
                    return
                if offload:
                    try:
                        packets = tso.split(data)
                    except KipsecError:
                        _bump(self.stats.errors, "malformed")
                        continue
                    if len(packets) == 1:
                        self._outbound(packets[0], batches)
                    else:
                        self._outbound_segments(packets, batches)
                else:
                    self._outbound(data, batches)
        finally:
            if batches:
                self._send_batches(batches)

    def _outbound(self, packet: bytes, batches: dict[_Peer, _Batch] | None) -> None:
        """Map one packet from the device to its peer and protect, queue or drop it."""
        try:
            peer = self._route_cache.get(_address_key(packet))
            if peer is None:
                peer = self._classify(packet)
                if peer is None:
                    _bump(self.stats.errors, "no_policy")
                    return
            sa = peer.outbound
            if sa is None:
                self._enqueue(peer, packet)
            elif batches is not None and peer.policy.encapsulation == "udp":
                self._protect_into(peer, sa, packet, batches)
            else:
                self._protect(peer, sa, packet)
        except KipsecError:
            _bump(self.stats.errors, "malformed")

    def _outbound_segments(
        self, segments: list[bytes], batches: dict[_Peer, _Batch] | None
    ) -> None:
        """The segments of one TCP super-segment: one flow, so one peer lookup and one SA
        for all of them; sealed in a tight loop when they go out as ESP in UDP."""
        first = segments[0]
        try:
            peer = self._route_cache.get(_address_key(first)) or self._classify(first)
        except KipsecError:
            _bump(self.stats.errors, "malformed", len(segments))
            return
        if peer is None:
            _bump(self.stats.errors, "no_policy", len(segments))
            return
        sa = peer.outbound
        if (
            sa is None
            or batches is None
            or peer.policy.encapsulation != "udp"
            or sa.mode is not Mode.TUNNEL
        ):
            for segment in segments:
                self._outbound(segment, batches)
            return
        next_header = _TUNNEL_NEXT_HEADER[first[0] >> 4]
        rng = self.options.rng
        seal = esp.seal
        batch = batches.get(peer)
        if batch is None:
            batch = batches[peer] = _Batch()
        datagrams = batch.datagrams
        for index, segment in enumerate(segments):
            try:
                datagrams.append(seal(sa, next_header, segment, rng))
            except (LifetimeExpired, SequenceExhausted):
                for rest in segments[index:]:
                    self._spent(peer, sa, rest)
                break
            batch.inner_bytes += len(segment)
        if len(datagrams) >= _BATCH_LIMIT:
            self._send_batches({peer: batch})
            del batches[peer]

    def _protect_into(
        self, peer: _Peer, sa: IpsecSa, packet: bytes, batches: dict[_Peer, _Batch]
    ) -> None:
        """Seal one packet into the peer's batch (sent by :meth:`_send_batches`)."""
        try:
            sealed = self._seal(sa, packet)
        except (LifetimeExpired, SequenceExhausted):
            self._spent(peer, sa, packet)
            return
        except KipsecError:
            _bump(self.stats.errors, "malformed")
            return
        batch = batches.get(peer)
        if batch is None:
            batch = batches[peer] = _Batch()
        batch.datagrams.append(sealed)
        batch.inner_bytes += len(packet)
        if len(batch.datagrams) >= _BATCH_LIMIT:
            self._send_batches({peer: batch})
            del batches[peer]

    def _send_batches(self, batches: dict[_Peer, _Batch]) -> None:
        sender = self._udp_batch_sender
        assert sender is not None
        stats = self.stats
        for peer, batch in batches.items():
            name = peer.policy.peer
            count = len(batch.datagrams)
            try:
                sender(batch.datagrams, peer.dest)
            except OSError:
                _bump(stats.errors, "send")
                continue
            stats.packets_out[name] = stats.packets_out.get(name, 0) + count
            stats.bytes_out[name] = stats.bytes_out.get(name, 0) + batch.inner_bytes

    def _classify(self, packet: bytes) -> _Peer | None:
        """The peer whose selectors cover an outbound packet (cached by address pair)."""
        for peer in self._peers.values():
            if peer.selectors.allows(packet, outbound=True):
                if peer.selectors.address_only:
                    if len(self._route_cache) >= _CACHE_LIMIT:
                        self._route_cache.clear()
                    self._route_cache[_address_key(packet)] = peer
                return peer
        return None

    def _enqueue(self, peer: _Peer, packet: bytes) -> None:
        opts = self.options
        name = peer.policy.peer
        queue = peer.queue
        queue.append(packet)
        peer.queue_bytes += len(packet)
        _bump(self.stats.queued, name)
        while len(queue) > opts.queue_packets or peer.queue_bytes > opts.queue_bytes:
            peer.queue_bytes -= len(queue.popleft())
            _bump(self.stats.no_sa_drops, name)
        if not peer.pending_acquire:
            peer.pending_acquire = True
            try:
                self._on_acquire(name)
            except Exception:
                LIMITER.log(
                    log,
                    logging.ERROR,
                    "acquire callback failed",
                    {"event": "datapath.acquire_error"},
                    exc_info=True,
                )

    def _protect(self, peer: _Peer, sa: IpsecSa, packet: bytes) -> None:
        """Protect one packet on ``sa`` and send it; never raises for a per-packet problem."""
        policy = peer.policy
        try:
            if policy.encapsulation == "udp":
                self._udp_sender(self._seal(sa, packet), peer.dest)
            else:
                self._send_raw(sa, packet)
        except (LifetimeExpired, SequenceExhausted):
            self._spent(peer, sa, packet)
            return
        except KipsecError:
            _bump(self.stats.errors, "malformed")
            return
        except OSError:
            _bump(self.stats.errors, "send")
            return
        name = policy.peer
        stats = self.stats
        stats.packets_out[name] = stats.packets_out.get(name, 0) + 1
        stats.bytes_out[name] = stats.bytes_out.get(name, 0) + len(packet)

    def _spent(self, peer: _Peer, sa: IpsecSa, packet: bytes) -> None:
        """The SA is spent: fail closed, keep the packet, ask for a new SA."""
        _bump(self.stats.errors, "sa_expired")
        if peer.outbound is sa:
            peer.outbound = None
            peer.pending_acquire = False
        self._enqueue(peer, packet)

    def _seal(self, sa: IpsecSa, packet: bytes) -> bytes:
        """The ESP bytes (SPI .. ICV) of one packet, for UDP encapsulation."""
        version, hlen, total, protocol, _, frag = l3_info(packet)
        if sa.mode is Mode.TUNNEL:
            return esp.seal(sa, _TUNNEL_NEXT_HEADER[version], packet[:total], self.options.rng)
        if version == 4:
            if frag & 0x3FFF:
                raise ParseError("fragmented packet: reassemble first", field="ipv4.fragment")
        elif protocol in _IPV6_EXTENSIONS:
            raise ParseError(
                "transport mode over UDP does not carry IPv6 extension headers",
                field="ipv6.extension",
            )
        return esp.seal(sa, protocol, packet[hlen:total], self.options.rng)

    def _send_raw(self, sa: IpsecSa, packet: bytes) -> None:
        if sa.protocol == ProtocolId.AH:
            wire = ah.encapsulate(sa, packet)
        else:
            wire = esp.encapsulate(sa, packet, self.options.rng)
        dst = str(sa.dst)
        if sa.dst.version == 4:
            self._raw[(socket.AF_INET, _IP_PROTOCOL[sa.protocol])].sendto(wire, (dst, 0))
        else:
            assert self._raw_send6 is not None
            self._raw_send6.sendto(wire, (dst, 0))

    # -- inbound -------------------------------------------------------------------------

    def receive_encapsulated(self, data: bytes, source: UdpAddress) -> None:
        """Decrypt one ESP-in-UDP datagram's payload and deliver it (or drop and count)."""
        if len(data) < 8:
            _bump(self.stats.errors, "malformed")
            return
        entry = self._inbound.get((int.from_bytes(data[:4], "big"), ProtocolId.ESP))
        if entry is None:
            self.stats.unknown_spi += 1
            return
        peer, sa, rules = entry
        name = peer.policy.peer
        try:
            next_header, payload = esp.open_(sa, data)
            if next_header == IpProto.NONE:
                return  # a dummy packet (RFC 4303 section 2.6)
            if sa.mode is Mode.TUNNEL:
                if next_header not in (IpProto.IPIP, IpProto.IPV6):
                    raise ParseError("tunnel mode carries no IP packet", field="esp.next_header")
                packet = payload[: l3_info(payload)[2]]
            else:
                packet = _transport_header(sa, next_header, len(payload)) + payload
        except ReplayError:
            _bump(self.stats.replay_drops, name)
            return
        except IntegrityError:
            _bump(self.stats.integrity_drops, name)
            return
        except KipsecError:
            _bump(self.stats.errors, "malformed")
            return
        self._deliver(peer, rules, packet)

    def _deliver(self, peer: _Peer, rules: _Selectors, packet: bytes) -> None:
        """Selector check (``rules``: the SA's), then hand the packet to the pod's stack
        through the device."""
        key = _address_key(packet)
        if key not in rules.inbound_ok:
            try:
                allowed = rules.allows(packet, outbound=False)
            except KipsecError:
                allowed = False
            if not allowed:
                _bump(self.stats.errors, "selector")
                return
            if rules.address_only:
                if len(rules.inbound_ok) >= _CACHE_LIMIT:
                    rules.inbound_ok.clear()
                rules.inbound_ok.add(key)
        if self._tun is None:
            return
        if self.offload:
            self._rx_pending.append(packet)
            counts = self._rx_counts.get(peer.policy.peer)
            if counts is None:
                counts = self._rx_counts[peer.policy.peer] = [0, 0]
            counts[0] += 1
            counts[1] += len(packet)
            return
        try:
            os.write(self._tun.fd, packet)
        except OSError:
            _bump(self.stats.errors, "tun_write")
            return
        name = peer.policy.peer
        stats = self.stats
        stats.packets_in[name] = stats.packets_in.get(name, 0) + 1
        stats.bytes_in[name] = stats.bytes_in.get(name, 0) + len(packet)

    def flush_received(self) -> None:
        """The socket reader ends its batch: write what it delivered (see
        :meth:`_flush_inbound`).

        With offload, :meth:`receive_encapsulated` only collects: every caller calls this
        after the datagrams of one socket read (the daemon's 4500 reader, this datapath's
        raw-socket readers, the test harnesses). Writing here, in the reader's callback,
        and nowhere else: a flush on a later event-loop pass was one more ``epoll_wait``
        and loop turn on every packet's way in (an echo's reply is only generated once the
        request is written), and the ``call_soon`` that kept it as a fallback cost a
        handle and a loop turn per read (bench/README.md, "Latency, issue 14 second
        part")."""
        if self._rx_pending:
            self._flush_inbound()

    def _flush_inbound(self) -> None:
        """Write what arrived since the last flush, TCP segments merged (:mod:`.offload`)."""
        packets, self._rx_pending = self._rx_pending, []
        counts, self._rx_counts = self._rx_counts, {}
        tun = self._tun
        if tun is None or not packets:
            return
        fd = tun.fd
        stats = self.stats
        for write in tso.coalesce(packets):
            try:
                os.write(fd, write)
            except OSError:
                _bump(stats.errors, "tun_write")
        for name, (count, size) in counts.items():
            stats.packets_in[name] = stats.packets_in.get(name, 0) + count
            stats.bytes_in[name] = stats.bytes_in.get(name, 0) + size

    # -- raw sockets ---------------------------------------------------------------------

    def _open_raw(self, protocol: ProtocolId, version: int) -> None:
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        key = (family, _IP_PROTOCOL[protocol])
        if key in self._raw:
            return
        sock = raw_socket(key[1], family, self.options.ids.mark)
        if family == socket.AF_INET6 and self._raw_send6 is None:
            try:
                self._raw_send6 = raw_send_socket(family, self.options.ids.mark)
            except DatapathError:
                sock.close()
                raise
        self._raw[key] = sock
        assert self._loop is not None
        self._loop.add_reader(sock.fileno(), self._on_raw_readable, sock, key[1])

    def _on_raw_readable(self, sock: socket.socket, ip_protocol: int) -> None:
        """Read a batch from a raw ESP/AH socket and write what it delivered before
        returning (as the daemon's 4500 reader does with :meth:`flush_received`)."""
        try:
            for _ in range(self.options.batch):
                try:
                    if sock.family == socket.AF_INET:
                        packet = sock.recv(MAX_PACKET)
                    else:
                        packet = self._recv_raw6(sock, ip_protocol)
                except BlockingIOError:
                    return
                except OSError:
                    _bump(self.stats.errors, "raw_read")
                    return
                if packet:
                    self._receive_raw(packet, ip_protocol)
        finally:
            self.flush_received()

    @staticmethod
    def _recv_raw6(sock: socket.socket, ip_protocol: int) -> bytes:
        """An IPv6 raw packet with its fixed header rebuilt (the kernel strips it)."""
        data, ancdata, _, address = sock.recvmsg(MAX_PACKET, socket.CMSG_SPACE(_PKTINFO6.size))
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                dst = _PKTINFO6.unpack_from(value)[0]
                src = socket.inet_pton(socket.AF_INET6, address[0].split("%")[0])
                first = (6 << 28).to_bytes(4, "big")
                header = first + struct.pack("!HBB", len(data), ip_protocol, 64) + src + dst
                return bytes(header + data)
        return b""

    def _receive_raw(self, packet: bytes, ip_protocol: int) -> None:
        try:
            _, hlen, _, _, _, _ = l3_info(packet)
            offset = hlen + (4 if ip_protocol == IPPROTO_AH else 0)
            protocol = ProtocolId.AH if ip_protocol == IPPROTO_AH else ProtocolId.ESP
            spi = int.from_bytes(packet[offset : offset + 4], "big")
        except KipsecError:
            _bump(self.stats.errors, "malformed")
            return
        entry = self._inbound.get((spi, protocol))
        if entry is None:
            self.stats.unknown_spi += 1
            return
        peer, sa, rules = entry
        name = peer.policy.peer
        try:
            if protocol == ProtocolId.AH:
                inner = ah.decapsulate(sa, packet)
            else:
                inner = esp.decapsulate(sa, packet)
        except ReplayError:
            _bump(self.stats.replay_drops, name)
            return
        except IntegrityError:
            _bump(self.stats.integrity_drops, name)
            return
        except KipsecError:
            _bump(self.stats.errors, "malformed")
            return
        if inner:
            self._deliver(peer, rules, inner)
