"""The kernel datapath: the kernel's XFRM carries the traffic, kipsec only programs it.

Each peer gets XFRM policies (out, in, and fwd for a gateway) when it is added: from then
on the kernel never sends its protected traffic in the clear, with or without a state
(without one it drops the packet and multicasts an ACQUIRE, which this datapath turns
into the daemon's :data:`~.base.AcquireCallback`). SAs become XFRM states. Everything
carries kipsec's owner mark and a reqid of kipsec's range (see :mod:`.xfrm_sa`), so
:meth:`KernelDatapath.start` and :meth:`~KernelDatapath.drop_stale` remove exactly what
an earlier run left and :meth:`KernelDatapath.close` leaves nothing.

A sidecar that exits with ``fail_closed`` (see :meth:`KernelDatapath.close`) leaves its
policies without states, so the kernel keeps dropping the peers' traffic until the next
run: that run's :meth:`~KernelDatapath.start` removes only stale states, the peers it
adds replace the policies in place (UPDPOLICY keys them by selector, direction and
mark), and :meth:`~KernelDatapath.drop_stale` removes the rest.

Make-before-break follows the daemon's call order: ``install_inbound`` adds the new
inbound state beside the old; ``set_outbound`` adds the new outbound state *before*
deleting the old one (the kernel prefers the newest valid state for a template, so
traffic moves at once and no packet finds no state); ``remove_inbound`` deletes the old
inbound state last. Policies are never touched during a rekey.

Two things the daemon must do for this datapath (it owns the sockets):
- set ``UDP_ENCAP_ESPINUDP`` on its port-4500 socket (:func:`enable_udp_encap`), so the
  kernel decapsulates ESP-in-UDP itself and only IKE reaches the socket;
- exempt its IKE sockets from XFRM policies (:func:`bypass_policies`), or IKE between
  two transport-mode peers would itself need the SA it negotiates.

The kernel needs the raw keys: they come from the IpsecSa (:attr:`IpsecSa.encr_key`,
``integ_key``). The optional ``keys`` callable overrides that (kept for callers that
hold keys elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from ..core.ike.constants import ProtocolId
from ..core.ipsec_sa import IpsecSa
from .base import (
    AcquireCallback,
    DatapathError,
    DatapathStats,
    IPAddress,
    PeerPolicy,
    UdpAddress,
)
from .mtu import DEFAULT_NFT_TABLE, install_xfrm_mss_clamp, remove_mss_clamp
from .probe import probe_kernel_esp
from .xfrm import XfrmAcquire, XfrmError, XfrmExpire, XfrmGroup, XfrmSocket
from .xfrm_sa import (
    DEFAULT_OWNER_MASK,
    REQID_RANGE,
    SaKeys,
    XfrmEncap,
    XfrmMappingError,
    XfrmPolicySpec,
    XfrmProto,
    XfrmStateSpec,
    owner_mark,
    peer_policies,
    sa_keys,
    safety_net_seconds,
    state_selector,
    state_spec,
)

log = logging.getLogger(__name__)

SOL_UDP = 17
UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2
IP_XFRM_POLICY = 17
IPV6_XFRM_POLICY = 35
STATS_INTERVAL = 5.0  # seconds between reads of the kernel's SA counters

#: (peer, spi, hard) for a kernel EXPIRE of an SA (byte/packet or time lifetime).
ExpireCallback = Callable[[str, int, bool], None]


def enable_udp_encap(sock: socket.socket) -> None:
    """Make the kernel decapsulate ESP-in-UDP arriving on this UDP socket (RFC 3948).

    Datagrams starting with the 4-byte non-ESP marker (IKE) still reach the socket.
    """
    sock.setsockopt(SOL_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)


def bypass_policies(sock: socket.socket) -> None:
    """Exempt this socket's traffic from every XFRM policy, both directions (like charon's
    IKE sockets): a per-socket policy with action ALLOW and no template."""
    level, name = (
        (socket.IPPROTO_IP, IP_XFRM_POLICY)
        if sock.family == socket.AF_INET
        else (socket.IPPROTO_IPV6, IPV6_XFRM_POLICY)
    )
    for direction in (0, 1):  # in, out
        # struct xfrm_userpolicy_info, zeroed but for the selector's family (the kernel
        # refuses AF_UNSPEC), dir, action ALLOW and priority 0.
        policy = bytearray(168)
        struct.pack_into("=H", policy, 40, sock.family)
        struct.pack_into("=IIBBBB", policy, 152, 0, 0, direction, 0, 0, 0)
        for off in (56, 64, 72, 80):  # lft: soft/hard byte and packet limits = infinity
            struct.pack_into("=Q", policy, off, 0xFFFFFFFFFFFFFFFF)
        sock.setsockopt(level, name, bytes(policy))


@dataclass
class _Peer:
    policy: PeerPolicy
    reqid: int
    specs: list[XfrmPolicySpec]
    outbound: IpsecSa | None = None
    inbound: list[IpsecSa] = field(default_factory=list)
    acquired: bool = False  # the AcquireCallback fired and no outbound SA came since
    retired: dict[str, int] = field(default_factory=dict)  # counters of deleted states


class KernelDatapath:
    """The :class:`~.base.Datapath` on the kernel's XFRM (ESP/AH in the kernel).

    ``local_addr`` is this sidecar's IPsec endpoint for peers whose
    :attr:`~.base.PeerPolicy.local_addr` is unset (transport mode needs one of them);
    ``netns`` programs a named namespace instead of the current one (tests);
    ``local_port`` is the daemon's NAT-T port (the source of UDP-encapsulated ESP).
    """

    name = "kernel"

    def __init__(
        self,
        *,
        keys: Callable[[IpsecSa], SaKeys] | None = None,
        local_addr: IPAddress | None = None,
        on_acquire: AcquireCallback | None = None,
        on_expire: ExpireCallback | None = None,
        netns: str | None = None,
        owner_mask: int = DEFAULT_OWNER_MASK,
        local_port: int = 4500,
        forward: bool = False,
    ) -> None:
        self.stats = DatapathStats()
        self._keys: Callable[[IpsecSa], SaKeys] = keys or sa_keys
        self._local_addr = local_addr
        self._on_acquire = on_acquire
        self._on_expire = on_expire
        self._netns = netns
        self._owner_mask = owner_mask
        self._mark = owner_mark(owner_mask)
        self._local_port = local_port
        self._forward = forward
        self._peers: dict[str, _Peer] = {}
        self._free_reqids = list(reversed(REQID_RANGE[:-1]))  # the last is the probe's
        self._xfrm: XfrmSocket | None = None
        self._events: XfrmSocket | None = None
        self._stats_task: asyncio.Task[None] | None = None

    def attach(self, *, on_expire: ExpireCallback | None, local_port: int) -> None:
        """The daemon's side, known only once the datapath exists: where kernel EXPIREs
        go and the NAT-T port its 4500 socket is bound to (the source port of
        UDP-encapsulated ESP). Call before :meth:`start`."""
        self._on_expire = on_expire
        self._local_port = local_port

    # -- lifecycle

    async def start(self) -> None:
        """Check the kernel, remove what an earlier run left, listen for ACQUIRE/EXPIRE.

        Raises DatapathError when the kernel cannot take ESP SAs (with the probe's reason).
        """
        kernel, reason = probe_kernel_esp(netns=self._netns, owner_mask=self._owner_mask)
        if not kernel:
            raise DatapathError(f"datapath kernel is unavailable: {reason}")
        try:
            self._xfrm = XfrmSocket(netns=self._netns)
            # Stale policies stay until drop_stale: they block the peers' traffic
            # until the peers added next take them over (UPDPOLICY replaces in place).
            states, _ = self._xfrm.flush_owned(self._owner_mask, REQID_RANGE, policies=False)
            self._events = XfrmSocket(
                netns=self._netns, groups=XfrmGroup.ACQUIRE | XfrmGroup.EXPIRE
            )
        except OSError as exc:
            raise DatapathError(f"cannot open XFRM netlink: {exc}") from exc
        if states:
            log.info("removed stale kernel state of an earlier run", extra={"states": states})
        if self._netns is None and not install_xfrm_mss_clamp(DEFAULT_NFT_TABLE):
            log.warning("nft not found: the MSS advertised through SAs is not clamped")
        loop = asyncio.get_running_loop()
        loop.add_reader(self._events.fileno(), self._on_events)
        self._stats_task = loop.create_task(self._poll_stats())

    def drop_stale(self) -> None:
        """Remove the owned policies no added peer has (an earlier run's, for peers it
        had and this configuration has not)."""
        current = {
            (spec.selector, int(spec.direction)) for p in self._peers.values() for spec in p.specs
        }
        _, policies = self._sock.flush_owned(
            self._owner_mask,
            REQID_RANGE,
            states=False,
            keep=lambda pol: (pol.selector, pol.direction) in current,
        )
        if policies:
            log.info(
                "removed stale kernel policies of an earlier run", extra={"policies": policies}
            )

    async def close(self, *, fail_closed: bool = False) -> None:
        """Remove every owned state and policy; with ``fail_closed`` the policies stay
        (the kernel drops the peers' traffic: no SA matches their templates)."""
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
            self._stats_task = None
        if self._events is not None:
            asyncio.get_running_loop().remove_reader(self._events.fileno())
            self._events.close()
            self._events = None
        if self._xfrm is not None:
            self._xfrm.flush_owned(self._owner_mask, REQID_RANGE, policies=not fail_closed)
            self._xfrm.close()
            self._xfrm = None
        if self._netns is None:
            remove_mss_clamp(DEFAULT_NFT_TABLE)
        self._peers.clear()

    @property
    def _sock(self) -> XfrmSocket:
        if self._xfrm is None:
            raise DatapathError("kernel datapath is not started")
        return self._xfrm

    # -- peers and policies

    def add_peer(self, policy: PeerPolicy) -> None:
        if policy.peer in self._peers:
            raise DatapathError(f"peer {policy.peer!r} is already added")
        if not self._free_reqids:
            raise DatapathError("no free reqid: too many peers for kipsec's reqid range")
        reqid = self._free_reqids.pop()
        try:
            specs = peer_policies(
                policy,
                local_addr=policy.local_addr or self._local_addr,
                reqid=reqid,
                mark=self._mark,
                forward=self._forward,
            )
        except XfrmMappingError as exc:
            self._free_reqids.append(reqid)
            raise DatapathError(str(exc)) from exc
        peer = _Peer(policy, reqid, [])
        self._peers[policy.peer] = peer
        for spec in specs:
            self._call(policy.peer, "install policy", partial(self._sock.update_policy, spec))
            peer.specs.append(spec)

    def remove_peer(self, peer: str) -> None:
        state = self._peers.pop(peer, None)
        if state is None:
            return
        for sa in state.inbound:
            self._delete_sa(peer, sa, outbound=False)
        if state.outbound is not None:
            self._delete_sa(peer, state.outbound, outbound=True)
        for spec in state.specs:
            self._ignore_missing(
                partial(self._sock.delete_policy, spec.selector, spec.direction, spec.mark)
            )
        self._free_reqids.append(state.reqid)

    def _peer(self, peer: str) -> _Peer:
        try:
            return self._peers[peer]
        except KeyError:
            raise DatapathError(f"unknown peer {peer!r}") from None

    # -- SAs

    def _spec(
        self, peer: _Peer, sa: IpsecSa, inbound: bool, remote_port: int | None = None
    ) -> XfrmStateSpec:
        """The state for one direction of ``sa``. ``remote_port`` (a NAT's mapping of the
        peer's 4500) goes in the encapsulation on both directions (RFC 3948); the hard
        time limit is the safety net of :func:`~.xfrm_sa.safety_net_seconds`."""
        encap = None
        if sa.udp_encap:
            remote_port = peer.policy.remote_port if remote_port is None else remote_port
            encap = (
                XfrmEncap(remote_port, self._local_port)
                if inbound
                else XfrmEncap(self._local_port, remote_port)
            )
        hard = safety_net_seconds(peer.policy.child_lifetime)
        try:
            return state_spec(
                sa,
                self._keys(sa),
                reqid=peer.reqid,
                mark=self._mark,
                encap=encap,
                selector=state_selector(sa, peer.policy, inbound=inbound),
                lifetime_seconds=(0, hard) if hard else None,
            )
        except XfrmMappingError as exc:
            raise DatapathError(f"peer {peer.policy.peer!r}: {exc}") from exc

    def install_inbound(self, peer: str, sa: IpsecSa, *, remote_port: int | None = None) -> None:
        state = self._peer(peer)
        spec = self._spec(state, sa, inbound=True, remote_port=remote_port)
        self._call(peer, "install inbound SA", partial(self._sock.new_sa, spec))
        state.inbound.append(sa)

    def set_outbound(self, peer: str, sa: IpsecSa, *, remote_port: int | None = None) -> None:
        state = self._peer(peer)
        old = state.outbound
        if old is not None and old.spi == sa.spi and old.dst == sa.dst:
            return
        spec = self._spec(state, sa, inbound=False, remote_port=remote_port)
        self._call(peer, "install outbound SA", partial(self._sock.new_sa, spec))
        state.outbound = sa
        state.acquired = False
        if old is not None:
            self._delete_sa(peer, old, outbound=True)

    def remove_inbound(self, peer: str, spi: int) -> None:
        state = self._peer(peer)
        for sa in [s for s in state.inbound if s.spi == spi]:
            self._delete_sa(peer, sa, outbound=False)
            state.inbound.remove(sa)

    def clear_outbound(self, peer: str) -> None:
        state = self._peer(peer)
        if state.outbound is not None:
            self._delete_sa(peer, state.outbound, outbound=True)
            state.outbound = None

    def discard_queued(self, peer: str) -> None:
        """Nothing to do: without a state the kernel drops the packet that caused the
        ACQUIRE (larval states hold none)."""

    def receive_encapsulated(self, data: bytes, source: UdpAddress) -> None:
        # With UDP_ENCAP set on the daemon's socket the kernel consumes ESP-in-UDP; one
        # arriving here means the socket lacks it (see enable_udp_encap).
        self.stats.errors["esp_in_udp_on_socket"] = (
            self.stats.errors.get("esp_in_udp_on_socket", 0) + 1
        )

    def flush_received(self) -> None:
        return None  # nothing is held: the kernel delivers ESP it decapsulates

    def outbound_sa(self, peer: str) -> IpsecSa | None:
        state = self._peers.get(peer)
        return state.outbound if state else None

    def inbound_sas(self, peer: str) -> list[IpsecSa]:
        state = self._peers.get(peer)
        return list(state.inbound) if state else []

    def _delete_sa(self, peer: str, sa: IpsecSa, *, outbound: bool) -> None:
        """Delete one state, keeping its final counters so the peer's totals never drop."""
        proto = XfrmProto.ESP if sa.protocol == ProtocolId.ESP else XfrmProto.AH
        with contextlib.suppress(XfrmError, TimeoutError):
            state = self._peers.get(peer)
            if state is not None:
                final = self._counters(sa, outbound)
                retired = state.retired
                for key, value in final.items():
                    retired[key] = retired.get(key, 0) + value
        self._ignore_missing(partial(self._sock.delete_sa, sa.dst, sa.spi, proto, self._mark))

    def _counters(self, sa: IpsecSa, outbound: bool) -> dict[str, int]:
        proto = XfrmProto.ESP if sa.protocol == ProtocolId.ESP else XfrmProto.AH
        kernel = self._sock.get_sa(sa.dst, sa.spi, proto, self._mark)
        direction = "out" if outbound else "in"
        return {
            f"packets_{direction}": kernel.packets,
            f"bytes_{direction}": kernel.bytes,
            "replay_drops": kernel.replay_errors + kernel.replay_window_errors,
            "integrity_drops": kernel.integrity_errors,
        }

    # -- kernel calls

    def _call(self, peer: str, what: str, call: Callable[[], None]) -> None:
        try:
            call()
        except (XfrmError, TimeoutError) as exc:
            self.stats.errors["netlink"] = self.stats.errors.get("netlink", 0) + 1
            raise DatapathError(f"peer {peer!r}: {what}: {exc}") from exc

    def _ignore_missing(self, call: Callable[[], None]) -> None:
        try:
            call()
        except XfrmError as exc:
            if exc.errno not in (errno.ENOENT, errno.ESRCH):
                self.stats.errors["netlink"] = self.stats.errors.get("netlink", 0) + 1
                log.warning("kernel refused a removal", extra={"error": str(exc)})

    # -- notifications and counters

    def _on_events(self) -> None:
        if self._events is None:
            return
        for event in self._events.read_events():
            if isinstance(event, XfrmAcquire):
                self._acquire(event)
            elif isinstance(event, XfrmExpire):
                self._expire(event)

    def _acquire(self, event: XfrmAcquire) -> None:
        if event.mark != self._mark:
            return
        for name, state in self._peers.items():
            if str(state.policy.remote_addr) == event.dst and state.outbound is None:
                self.stats.no_sa_drops[name] = self.stats.no_sa_drops.get(name, 0) + 1
                if not state.acquired and self._on_acquire is not None:
                    state.acquired = True
                    self._on_acquire(name)

    def _expire(self, event: XfrmExpire) -> None:
        for name, state in self._peers.items():
            if state.reqid == event.reqid:
                if self._on_expire is not None:
                    self._on_expire(name, event.spi, event.hard)
                return

    def refresh_stats(self) -> None:
        """Read the kernel's counters of every installed SA into :attr:`stats`.

        Totals per peer: the live states' counters plus those of states deleted since
        (rekeys), so the exported counters only grow.
        """
        for name, state in self._peers.items():
            totals = dict(state.retired)
            sas = [(sa, False) for sa in state.inbound]
            if state.outbound is not None:
                sas.append((state.outbound, True))
            for sa, outbound in sas:
                try:
                    live = self._counters(sa, outbound)
                except XfrmError:
                    continue
                # The SA's own counters feed the snapshot and the daemon's byte/packet
                # soft-limit check, as the userspace datapath's do.
                direction = "out" if outbound else "in"
                sa.packets = live[f"packets_{direction}"]
                sa.bytes = live[f"bytes_{direction}"]
                for key, value in live.items():
                    totals[key] = totals.get(key, 0) + value
            for key, value in totals.items():
                getattr(self.stats, key)[name] = value

    async def _poll_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            try:
                self.refresh_stats()
            except (OSError, DatapathError) as exc:
                log.warning("cannot read kernel SA counters", extra={"error": str(exc)})
