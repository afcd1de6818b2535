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

All calls are synchronous netlink round trips (well under a millisecond) made from the
event loop at set-up and on peer changes, never per packet. pyroute2's synchronous
``IPRoute`` runs its own asyncio loop and refuses to work in a thread whose loop is
running, so :class:`NetlinkThread` keeps it on one dedicated thread and the datapath
waits for each answer (bounded by :data:`NETLINK_TIMEOUT`).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..core.traffic_selectors import TrafficSelector
from .base import DatapathError

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
NETLINK_TIMEOUT = 10.0


class NetlinkThread:
    """An ``IPRoute`` living on its own thread; ``proxy.method(...)`` runs it there.

    Results that are generators are turned into lists on that thread. The socket is
    opened in the network namespace of the process (threads share it unless they call
    setns, which nothing here does).
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kipsec-netlink")
        self._ipr: IPRoute = self._executor.submit(IPRoute).result(NETLINK_TIMEOUT)

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = getattr(self._ipr, name)(*args, **kwargs)
        if isinstance(result, Iterator):
            return list(result)
        return result

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            return self._executor.submit(self._call, name, args, kwargs).result(NETLINK_TIMEOUT)

        return call

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._executor.submit(self._ipr.close).result(NETLINK_TIMEOUT)
        self._executor.shutdown(wait=True)


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


def _route_network(route: Any) -> IPNetwork:
    """The destination prefix of a dumped route (no ``dst``: the default route)."""
    zero: ipaddress.IPv4Address | ipaddress.IPv6Address = (
        ipaddress.IPv6Address(0) if route["family"] == socket.AF_INET6 else ipaddress.IPv4Address(0)
    )
    return ipaddress.ip_network((route.get("dst") or zero, route["dst_len"]))


def _family(net: IPNetwork) -> int:
    return socket.AF_INET if net.version == 4 else socket.AF_INET6


class PolicyRouting:
    """The rules and routes of one datapath, in the current network namespace."""

    def __init__(self, ids: RoutingIds | None = None) -> None:
        self.ids = ids or RoutingIds()
        self._ipr = NetlinkThread()
        self._protected: dict[IPNetwork, int] = {}  # prefix -> how many peers route it

    def close(self, *, keep: bool = False) -> None:
        """Remove every rule and route this object's ids identify (unless ``keep``: the
        rules and blackholes then fail closed until the next run), then the socket."""
        if not keep:
            self.remove_stale()
        self._protected.clear()
        self._ipr.close()

    # -- state of earlier runs ---------------------------------------------------------

    def _own_rules(self) -> Iterator[Any]:
        ids = self.ids
        for family in _FAMILIES:
            with contextlib.suppress(NetlinkError):
                for rule in self._ipr.get_rules(family=family):
                    priority = rule.get("priority")
                    table = rule.get("FRA_TABLE") or rule.get("table")
                    if priority == ids.rule_priority and table == MAIN_TABLE:
                        if rule.get("fwmark") == ids.mark:
                            yield rule
                    elif priority == ids.rule_priority + 1 and table == ids.table:
                        yield rule

    def _own_routes(self) -> Iterator[Any]:
        for family in _FAMILIES:
            with contextlib.suppress(NetlinkError):
                for route in self._ipr.get_routes(family=family, table=self.ids.table):
                    if route["proto"] == self.ids.route_proto:
                        yield route

    def remove_stale(self) -> int:
        """Delete the rules and routes an earlier run (or this one) left; return how many.

        Only rules with this object's priorities *and* its table/mark, and only routes in
        its table with its protocol number, are touched.
        """
        removed = 0
        for rule in list(self._own_rules()):
            with contextlib.suppress(NetlinkError):
                self._ipr.rule(
                    "del",
                    family=rule["family"],
                    priority=rule.get("priority"),
                    table=rule.get("FRA_TABLE") or rule.get("table"),
                    **_mark_args(rule),
                )
                removed += 1
        for route in list(self._own_routes()):
            removed += self._delete_route(route)
        return removed

    def _delete_route(self, route: Any) -> int:
        """Delete one dumped route of ours; 1 if it was deleted, 0 if it was gone."""
        try:
            self._ipr.route(
                "del",
                family=route["family"],
                table=self.ids.table,
                dst=route.get("dst"),
                dst_len=route["dst_len"],
                priority=route.get("priority"),
                type=route["type"],
                proto=self.ids.route_proto,
            )
        except NetlinkError:
            return 0
        return 1

    def drop_unclaimed(self) -> int:
        """Delete the routes of this object's ids for prefixes it does not protect now
        (an earlier run's, for peers this run has not); return how many."""
        return sum(
            self._delete_route(route)
            for route in list(self._own_routes())
            if _route_network(route) not in self._protected
        )

    def own_state(self) -> tuple[int, int]:
        """(rules, routes) of this object's ids present in the kernel now (for tests, CLI)."""
        return len(list(self._own_rules())), len(list(self._own_routes()))

    # -- set-up ------------------------------------------------------------------------

    def install_rules(self) -> None:
        """Add the mark-bypass rule and the table rule for IPv4 and IPv6 (an identical
        rule an earlier run left is taken over as it is)."""
        ids = self.ids
        for family in _FAMILIES:
            try:
                self._add_rule(
                    family=family,
                    priority=ids.rule_priority,
                    table=MAIN_TABLE,
                    fwmark=ids.mark,
                    fwmask=0xFFFFFFFF,
                )
                self._add_rule(family=family, priority=ids.rule_priority + 1, table=ids.table)
            except NetlinkError as exc:
                if family == socket.AF_INET6 and exc.code in (97, 95):  # no IPv6 here
                    continue
                raise DatapathError(
                    f"ip rule priority {ids.rule_priority} (table {ids.table}): {exc}"
                ) from None

    def _add_rule(self, **rule: Any) -> None:
        try:
            self._ipr.rule("add", **rule)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise

    def link_index(self, ifname: str) -> int:
        """The interface index of ``ifname``; DatapathError when it does not exist."""
        found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            raise DatapathError(f"interface {ifname} does not exist")
        return int(found[0])

    def set_link(self, ifname: str, *, mtu: int) -> int:
        """Set ``ifname``'s MTU and bring it up; return its index."""
        index = self.link_index(ifname)
        try:
            self._ipr.link("set", index=index, mtu=mtu, state="up")
        except NetlinkError as exc:
            raise DatapathError(f"interface {ifname}: setting MTU {mtu} failed: {exc}") from None
        return index

    def link_mtu(self, ifname: str) -> int:
        link = self._ipr.get_links(self.link_index(ifname))[0]
        return int(link.get("IFLA_MTU"))

    # -- protected prefixes --------------------------------------------------------------

    def protect(self, net: IPNetwork, oif: int) -> None:
        """Route ``net`` into the TUN device ``oif``, with the blackhole fallback under it.

        Reference-counted: two peers may share a prefix (the route is one).
        """
        count = self._protected.get(net, 0)
        if count == 0:
            common = {
                "family": _family(net),
                "table": self.ids.table,
                "dst": str(net.network_address),
                "dst_len": net.prefixlen,
                "proto": self.ids.route_proto,
            }
            try:
                self._ipr.route("replace", type=RTN_BLACKHOLE, priority=FALLBACK_METRIC, **common)
                self._ipr.route("replace", oif=oif, priority=PROTECTED_METRIC, **common)
            except NetlinkError as exc:
                raise DatapathError(f"route {net} in table {self.ids.table}: {exc}") from None
        self._protected[net] = count + 1

    def unprotect(self, net: IPNetwork) -> None:
        """Drop one reference to ``net``; the last one removes both of its routes."""
        count = self._protected.get(net, 0)
        if count > 1:
            self._protected[net] = count - 1
            return
        self._protected.pop(net, None)
        for priority in (PROTECTED_METRIC, FALLBACK_METRIC):
            with contextlib.suppress(NetlinkError):
                self._ipr.route(
                    "del",
                    family=_family(net),
                    table=self.ids.table,
                    dst=str(net.network_address),
                    dst_len=net.prefixlen,
                    priority=priority,
                    proto=self.ids.route_proto,
                )

    # -- path MTU ----------------------------------------------------------------------

    def path_mtu(self, dst: str | None = None, *, exclude: str | None = None) -> int:
        """The MTU towards ``dst`` as the sidecar's marked sockets see it.

        With ``dst``: the route's MTU metric if it has one, else its device's MTU. Without:
        the MTU of the main table's default-route device, else the largest MTU of the
        namespace's non-loopback links other than ``exclude`` (the TUN device itself).
        """
        if dst is not None:
            with contextlib.suppress(NetlinkError):
                route = self._ipr.route("get", dst=dst, mark=self.ids.mark)[0]
                metrics = route.get("RTA_METRICS")
                if metrics is not None and metrics.get("RTAX_MTU"):
                    return int(metrics.get("RTAX_MTU"))
                oif = route.get("RTA_OIF")
                if oif is not None:
                    return int(self._ipr.get_links(oif)[0].get("IFLA_MTU"))
        for family in _FAMILIES:
            with contextlib.suppress(NetlinkError):
                for route in self._ipr.get_routes(family=family, table=MAIN_TABLE):
                    if route["dst_len"] == 0 and route.get("RTA_OIF") is not None:
                        return int(self._ipr.get_links(route.get("RTA_OIF"))[0].get("IFLA_MTU"))
        mtus = [
            int(link.get("IFLA_MTU"))
            for link in self._ipr.get_links()
            if link.get("IFLA_IFNAME") not in ("lo", exclude)
        ]
        if not mtus:
            raise DatapathError("no network interface to take the path MTU from")
        return max(mtus)


def _mark_args(rule: Any) -> dict[str, int]:
    mark = rule.get("fwmark")
    if mark is None:
        return {}
    return {"fwmark": mark, "fwmask": rule.get("fwmask") or 0xFFFFFFFF}
