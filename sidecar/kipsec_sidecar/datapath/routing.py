"""Policy routing for the userspace datapath: what goes into the TUN device, and what never
goes anywhere else.

The layout, in the pod's network namespace (``ip rule`` / ``ip route`` terms)::

    <prio>:     from all fwmark <mark> lookup main        # the sidecar's own sockets
    <prio+1>:   from all lookup <table>                   # everything else: table first
    32766:      from all lookup main                      # (kernel default)

    table <table>:
        <prefix> dev kipsec0 proto <proto> metric 100     # protected: into the datapath
        blackhole <prefix> proto <proto> metric 1000      # fail closed when kipsec0 is gone

- The sidecar's IKE and ESP sockets carry the socket mark (:mod:`.sockets`), so their
  packets — whose outer destination is often the very pod address being protected —
  skip table ``<table>`` and leave through the main table.
- Every protected prefix has two routes. While the TUN device exists the one through it
  wins (lower metric). When the device disappears (the sidecar exited or was
  SIGKILLed and its descriptor closed), the kernel deletes the routes through it and the
  blackhole is left: the traffic is dropped, never sent in the clear through the main
  table's default route. Rules and blackholes are plain kernel state and survive the
  process on purpose.
- What this module created is recognised by the route protocol number (``proto``) in
  ``<table>``, and by the rule priorities together with their table/mark, so a restart
  removes exactly the state of an earlier run and nothing else.

All calls are synchronous rtnetlink round trips (well under a millisecond, :mod:`.rtnetlink`)
made from the event loop at set-up and on peer changes, never per packet; the two routes of
a prefix go to the kernel in one ``send``.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..core.traffic_selectors import TrafficSelector
from . import rtnetlink as nl
from .base import DatapathError
from .rtnetlink import Message, NetlinkError, Request

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TABLE = 0x6B70  # 27504
DEFAULT_MARK = 0x6B70
DEFAULT_RULE_PRIORITY = 0x6B70 // 4  # 6876: after "local" (0), well before "main" (32766)
DEFAULT_ROUTE_PROTO = 0x6B  # 107: unassigned in /etc/iproute2/rt_protos
MAIN_TABLE = 254
PROTECTED_METRIC = 100
FALLBACK_METRIC = 1000
RTN_BLACKHOLE = 6
_FAMILIES = (socket.AF_INET, socket.AF_INET6)


@dataclass(frozen=True, slots=True)
class RoutingIds:
    """The numbers that make this sidecar's kernel state recognisable as its own."""

    table: int = DEFAULT_TABLE
    mark: int = DEFAULT_MARK
    rule_priority: int = DEFAULT_RULE_PRIORITY  #: the mark rule; the table rule is +1
    route_proto: int = DEFAULT_ROUTE_PROTO

    def __post_init__(self) -> None:
        if not 1 <= self.table < 0xFFFFFFFF or self.table in (253, 254, 255):
            raise DatapathError(f"routing table {self.table} is reserved or out of range")
        if not 1 <= self.mark <= 0xFFFFFFFF:
            raise DatapathError(f"socket mark {self.mark:#x} must be non-zero and 32-bit")
        if not 1 <= self.rule_priority < 32765:
            raise DatapathError(f"rule priority {self.rule_priority} must be in 1-32764")
        if not 5 <= self.route_proto <= 255:
            raise DatapathError(f"route protocol {self.route_proto} must be in 5-255")


def selector_networks(selectors: Iterable[TrafficSelector]) -> list[IPNetwork]:
    """The CIDR blocks covering the address ranges of ``selectors`` (ports are ignored:
    routing is per address; the datapath drops what no selector allows)."""
    networks: list[IPNetwork] = []
    for ts in selectors:
        for net in ipaddress.summarize_address_range(ts.start_addr, ts.end_addr):
            if net not in networks:
                networks.append(net)
    return networks


def _family(net: IPNetwork) -> int:
    return socket.AF_INET if net.version == 4 else socket.AF_INET6


@dataclass(frozen=True, slots=True)
class Route:
    """A dumped route: what deleting it exactly takes, and its prefix."""

    network: IPNetwork
    table: int
    proto: int
    type: int
    priority: int | None
    oif: int | None

    @classmethod
    def parse(cls, message: Message) -> Route:
        family, dst_len, _, _, table, proto, _, kind, _ = message.header(nl.RTM_NEWROUTE)
        size = 4 if family == socket.AF_INET else 16
        dst = message.attrs.get(nl.RTA_DST, bytes(size))
        if len(dst) != size or dst_len > size * 8:
            raise nl.NetlinkParseError(f"route: {len(dst)}-byte destination /{dst_len}")
        address = ipaddress.ip_address(dst)
        return cls(
            network=ipaddress.ip_network((address, dst_len), strict=False),
            table=message.u32(nl.RTA_TABLE) or table,
            proto=proto,
            type=kind,
            priority=message.u32(nl.RTA_PRIORITY),
            oif=message.u32(nl.RTA_OIF),
        )


@dataclass(frozen=True, slots=True)
class Rule:
    """A dumped rule: the fields this module recognises its own by."""

    family: int
    priority: int | None
    table: int
    fwmark: int | None
    fwmask: int | None

    @classmethod
    def parse(cls, message: Message) -> Rule:
        family, _, _, _, table, *_ = message.header(nl.RTM_NEWRULE)
        return cls(
            family=family,
            priority=message.u32(nl.FRA_PRIORITY),
            table=message.u32(nl.FRA_TABLE) or table,
            fwmark=message.u32(nl.FRA_FWMARK),
            fwmask=message.u32(nl.FRA_FWMASK),
        )


def _rule_request(kind: int, flags: int, rule: Rule) -> Request:
    payload = nl.rtmsg(rule.family, table=rule.table, action=nl.FR_ACT_TO_TBL)
    payload += nl.u32_attr(nl.FRA_TABLE, rule.table)
    if rule.priority is not None:
        payload += nl.u32_attr(nl.FRA_PRIORITY, rule.priority)
    if rule.fwmark is not None:
        payload += nl.u32_attr(nl.FRA_FWMARK, rule.fwmark)
        payload += nl.u32_attr(nl.FRA_FWMASK, 0xFFFFFFFF if rule.fwmask is None else rule.fwmask)
    return Request(kind, flags, payload)


class PolicyRouting:
    """The rules and routes of one datapath, in the current network namespace."""

    def __init__(self, ids: RoutingIds | None = None) -> None:
        self.ids = ids or RoutingIds()
        try:
            self._nl = nl.RtNetlink()
        except OSError as exc:
            raise DatapathError(f"netlink socket: {exc}") from None
        self._protected: dict[IPNetwork, int] = {}  # prefix -> how many peers route it

    def close(self, *, keep: bool = False) -> None:
        """Remove every rule and route this object's ids identify (unless ``keep``: the
        rules and blackholes then fail closed until the next run), then the socket."""
        try:
            if not keep:
                self.remove_stale()
        finally:
            self._protected.clear()
            self._nl.close()

    def _route(
        self,
        kind: int,
        net: IPNetwork,
        priority: int | None,
        *,
        flags: int = 0,
        type: int = nl.RTN_UNICAST,
        oif: int | None = None,
    ) -> Request:
        """A route message for ``net`` in this object's table with its protocol number;
        ``type`` 0 (deletes) matches any type."""
        ids = self.ids
        payload = nl.rtmsg(
            _family(net), dst_len=net.prefixlen, table=ids.table, proto=ids.route_proto, type=type
        )
        payload += nl.u32_attr(nl.RTA_TABLE, ids.table)
        payload += nl.attr(nl.RTA_DST, net.network_address.packed)
        if priority is not None:
            payload += nl.u32_attr(nl.RTA_PRIORITY, priority)
        if oif is not None:
            payload += nl.u32_attr(nl.RTA_OIF, oif)
        return Request(kind, flags, payload)

    # -- state of earlier runs ---------------------------------------------------------

    def _dump(self, kind: int, family: int) -> list[Message]:
        """A route or rule dump of ``family``; none where the family is unsupported."""
        try:
            return self._nl.query(Request(kind, nl.NLM_F_DUMP, nl.rtmsg(family)))
        except NetlinkError:
            return []

    def _own_rules(self) -> Iterator[Rule]:
        ids = self.ids
        for family in _FAMILIES:
            for message in self._dump(nl.RTM_GETRULE, family):
                rule = Rule.parse(message)
                if rule.priority == ids.rule_priority and rule.table == MAIN_TABLE:
                    if rule.fwmark == ids.mark:
                        yield rule
                elif rule.priority == ids.rule_priority + 1 and rule.table == ids.table:
                    yield rule

    def _own_routes(self) -> Iterator[Route]:
        for family in _FAMILIES:
            for message in self._dump(nl.RTM_GETROUTE, family):
                route = Route.parse(message)
                if route.table == self.ids.table and route.proto == self.ids.route_proto:
                    yield route

    def remove_stale(self) -> int:
        """Delete the rules and routes an earlier run (or this one) left; return how many.

        Only rules with this object's priorities *and* its table/mark, and only routes in
        its table with its protocol number, are touched.
        """
        requests = [_rule_request(nl.RTM_DELRULE, 0, rule) for rule in self._own_rules()]
        return self._deleted(requests) + self._delete_routes(list(self._own_routes()))

    def _deleted(self, requests: list[Request]) -> int:
        """Send delete ``requests`` in one batch; how many the kernel carried out."""
        return sum(1 for code in self._nl.transact(requests) if code == 0)

    def _delete_routes(self, routes: list[Route]) -> int:
        """Delete dumped routes of ours in one batch; how many were deleted (not gone)."""
        return self._deleted(
            [self._route(nl.RTM_DELROUTE, r.network, r.priority, type=r.type) for r in routes]
        )

    def drop_unclaimed(self) -> int:
        """Delete the routes of this object's ids for prefixes it does not protect now
        (an earlier run's, for peers this run has not); return how many."""
        return self._delete_routes(
            [r for r in self._own_routes() if r.network not in self._protected]
        )

    def own_state(self) -> tuple[int, int]:
        """(rules, routes) of this object's ids present in the kernel now (for tests, CLI)."""
        return len(list(self._own_rules())), len(list(self._own_routes()))

    # -- set-up ------------------------------------------------------------------------

    def install_rules(self) -> None:
        """Add the mark-bypass rule and the table rule for IPv4 and IPv6 (an identical
        rule an earlier run left is taken over as it is)."""
        ids = self.ids
        add = nl.NLM_F_CREATE | nl.NLM_F_EXCL
        for family in _FAMILIES:
            codes = self._nl.transact(
                [
                    _rule_request(
                        nl.RTM_NEWRULE,
                        add,
                        Rule(family, ids.rule_priority, MAIN_TABLE, ids.mark, 0xFFFFFFFF),
                    ),
                    _rule_request(
                        nl.RTM_NEWRULE,
                        add,
                        Rule(family, ids.rule_priority + 1, ids.table, None, None),
                    ),
                ]
            )
            failed = [code for code in codes if code not in (0, errno.EEXIST)]
            if not failed:
                continue
            if family == socket.AF_INET6 and failed[0] in (errno.EAFNOSUPPORT, errno.EOPNOTSUPP):
                continue  # no IPv6 here
            raise DatapathError(
                f"ip rule priority {ids.rule_priority} (table {ids.table}): {nl.error(failed[0])}"
            )

    def link_index(self, ifname: str) -> int:
        """The interface index of ``ifname``; DatapathError when it does not exist."""
        try:
            return socket.if_nametoindex(ifname)
        except OSError:
            raise DatapathError(f"interface {ifname} does not exist") from None

    def set_link(self, ifname: str, *, mtu: int) -> int:
        """Set ``ifname``'s MTU and bring it up; return its index."""
        index = self.link_index(ifname)
        payload = nl.ifinfomsg(index, flags=nl.IFF_UP, change=nl.IFF_UP)
        try:
            self._nl.call(Request(nl.RTM_NEWLINK, 0, payload + nl.u32_attr(nl.IFLA_MTU, mtu)))
        except NetlinkError as exc:
            raise DatapathError(f"interface {ifname}: setting MTU {mtu} failed: {exc}") from None
        return index

    def _links(self, index: int = 0) -> list[Message]:
        if index:
            return self._nl.query(Request(nl.RTM_GETLINK, 0, nl.ifinfomsg(index)))
        return self._nl.query(Request(nl.RTM_GETLINK, nl.NLM_F_DUMP, nl.ifinfomsg()))

    def _mtu_of(self, index: int) -> int:
        for link in self._links(index):
            mtu = link.u32(nl.IFLA_MTU)
            if mtu is not None:
                return mtu
        raise DatapathError(f"interface index {index} has no MTU")

    def link_mtu(self, ifname: str) -> int:
        return self._mtu_of(self.link_index(ifname))

    # -- protected prefixes --------------------------------------------------------------

    def protect(self, net: IPNetwork, oif: int) -> None:
        """Route ``net`` into the TUN device ``oif``, with the blackhole fallback under it
        (both in one ``send``).

        Reference-counted: two peers may share a prefix (the route is one).
        """
        count = self._protected.get(net, 0)
        if count == 0:
            replace = nl.NLM_F_CREATE | nl.NLM_F_REPLACE
            codes = self._nl.transact(
                [
                    self._route(
                        nl.RTM_NEWROUTE, net, FALLBACK_METRIC, flags=replace, type=RTN_BLACKHOLE
                    ),
                    self._route(nl.RTM_NEWROUTE, net, PROTECTED_METRIC, flags=replace, oif=oif),
                ]
            )
            failed = next((code for code in codes if code), 0)
            if failed:
                raise DatapathError(f"route {net} in table {self.ids.table}: {nl.error(failed)}")
        self._protected[net] = count + 1

    def unprotect(self, net: IPNetwork) -> None:
        """Drop one reference to ``net``; the last one removes both of its routes."""
        count = self._protected.get(net, 0)
        if count > 1:
            self._protected[net] = count - 1
            return
        self._protected.pop(net, None)
        self._deleted(
            [
                self._route(nl.RTM_DELROUTE, net, priority, type=0)
                for priority in (PROTECTED_METRIC, FALLBACK_METRIC)
            ]
        )

    # -- path MTU ----------------------------------------------------------------------

    def path_mtu(self, dst: str | None = None, *, exclude: str | None = None) -> int:
        """The MTU towards ``dst`` as the sidecar's marked sockets see it.

        With ``dst``: the route's MTU metric if it has one, else its device's MTU. Without:
        the MTU of the main table's default-route device, else the largest MTU of the
        namespace's non-loopback links other than ``exclude`` (the TUN device itself).
        """
        if dst is not None:
            with contextlib.suppress(NetlinkError, DatapathError):
                if found := self._route_get_mtu(ipaddress.ip_address(dst)):
                    return found
        for family in _FAMILIES:
            for message in self._dump(nl.RTM_GETROUTE, family):
                route = Route.parse(message)
                if route.table == MAIN_TABLE and route.network.prefixlen == 0 and route.oif:
                    return self._mtu_of(route.oif)
        mtus = [
            mtu
            for link in self._links()
            if link.string(nl.IFLA_IFNAME) not in ("lo", exclude)
            and (mtu := link.u32(nl.IFLA_MTU)) is not None
        ]
        if not mtus:
            raise DatapathError("no network interface to take the path MTU from")
        return max(mtus)

    def _route_get_mtu(self, dst: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
        """``ip route get <dst> mark <mark>``: its MTU metric, else its device's MTU."""
        family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
        payload = nl.rtmsg(family, dst_len=dst.max_prefixlen)
        payload += nl.attr(nl.RTA_DST, dst.packed) + nl.u32_attr(nl.RTA_MARK, self.ids.mark)
        for route in self._nl.query(Request(nl.RTM_GETROUTE, 0, payload)):
            metrics = route.attrs.get(nl.RTA_METRICS)
            if metrics is not None:
                mtu = nl.Message(0, 0, 0, attrs=nl.parse_attrs(metrics)).u32(nl.RTAX_MTU)
                if mtu:
                    return mtu
            oif = route.u32(nl.RTA_OIF)
            if oif is not None:
                return self._mtu_of(oif)
        return 0
