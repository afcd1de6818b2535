"""Routes, rules and links over rtnetlink (``NETLINK_ROUTE``), on the standard ``socket`` module.

Why not pyroute2: the userspace datapath needs eight requests (route replace/delete/dump/
get, rule add/delete/dump, link set/dump), and pyroute2 costs every sidecar start ~160
modules, ~0.3 s and ~10 MiB to make them (``bench/sidecar_startup.py``). Its synchronous
``IPRoute`` also runs an event loop of its own, which forced a dedicated thread. Here a
request is a ``struct`` packing and one ``send``, its answer one ``recv``: synchronous,
well under a millisecond, safe to call from the event loop. Several requests go in one
``send`` (:meth:`RtNetlink.transact`): the kernel handles the messages of one datagram in
order and acknowledges each, so a peer's two routes cost one round trip.

The framing, acknowledgements and reply parsing are :mod:`.netlink`'s (shared with the
capability probe's XFRM messages); this module holds the rtnetlink part
(``linux/rtnetlink.h``, ``linux/fib_rules.h``, ``linux/if_link.h``): the fixed family
headers (``rtmsg`` for routes, ``fib_rule_hdr`` for rules — the same 12-byte layout —,
``ifinfomsg`` for links) and the attribute numbers. Replies are parsed by
:func:`parse_messages`, which checks every length against the buffer and raises
:class:`NetlinkParseError` on anything malformed (``tests/fuzz/test_fuzz_rtnetlink.py``).

The kernel datapath's XFRM code keeps pyroute2 (:mod:`.xfrm`); it loads only there.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

from . import netlink
from .netlink import (
    BATCH_MESSAGES,
    NETLINK_ROUTE,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_MULTI,
    NLM_F_REPLACE,
    NLMSG_DONE,
    NLMSG_ERROR,
    TIMEOUT,
    Message,
    NetlinkError,
    NetlinkParseError,
    Request,
    attr,
    error,
    parse_attrs,
    u32_attr,
)

# linux/rtnetlink.h
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
RTA_DST, RTA_OIF, RTA_PRIORITY, RTA_METRICS, RTA_TABLE, RTA_MARK = 1, 4, 6, 8, 15, 16
RTAX_MTU = 2
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_TABLE_COMPAT = 252  # in the header when the table id does not fit its byte
# linux/fib_rules.h
FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_FWMASK = 6, 10, 15, 16
FR_ACT_TO_TBL = 1
# linux/if_link.h
IFLA_IFNAME, IFLA_MTU = 3, 4
IFF_UP = 0x1

_RTMSG = struct.Struct("=BBBBBBBBI")  # also fib_rule_hdr: same sizes, other names
_IFINFOMSG = struct.Struct("=BxHiII")


def _family_header(kind: int) -> struct.Struct | None:
    if kind in (RTM_NEWLINK, RTM_NEWLINK + 1, RTM_GETLINK):
        return _IFINFOMSG
    if RTM_NEWROUTE <= kind <= RTM_GETROUTE or RTM_NEWRULE <= kind <= RTM_GETRULE:
        return _RTMSG
    return None


def parse_messages(data: bytes | memoryview) -> list[Message]:
    """Every message in one datagram the kernel sent (``rtmsg``/``fib_rule_hdr``/
    ``ifinfomsg`` headers unpacked into ``fields``); NetlinkParseError if malformed."""
    return netlink.parse_messages(data, _family_header)


def rtmsg(
    family: int,
    *,
    dst_len: int = 0,
    table: int = 0,
    proto: int = 0,
    scope: int = RT_SCOPE_UNIVERSE,
    type: int = 0,
    action: int | None = None,
) -> bytes:
    """An ``rtmsg`` (or, with ``action``, a ``fib_rule_hdr``: its ``scope`` and ``type``
    bytes are then reserved and the action)."""
    header_table = table if table < 256 else RT_TABLE_COMPAT
    if action is not None:
        return _RTMSG.pack(family, 0, 0, 0, header_table, 0, 0, action, 0)
    return _RTMSG.pack(family, dst_len, 0, 0, header_table, proto, scope, type, 0)


def ifinfomsg(index: int = 0, *, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)


class RtNetlink(netlink.NetlinkSocket):
    """A ``NETLINK_ROUTE`` socket in the caller's network namespace."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        super().__init__(NETLINK_ROUTE, timeout=timeout, headers=_family_header)

    def dump(self, kind: int, payload: bytes) -> Iterator[Message]:
        return iter(self.query(Request(kind, NLM_F_DUMP, payload)))


__all__ = [
    "BATCH_MESSAGES",
    "FRA_FWMARK",
    "FRA_FWMASK",
    "FRA_PRIORITY",
    "FRA_TABLE",
    "FR_ACT_TO_TBL",
    "IFF_UP",
    "IFLA_IFNAME",
    "IFLA_MTU",
    "NLMSG_DONE",
    "NLMSG_ERROR",
    "NLM_F_CREATE",
    "NLM_F_DUMP",
    "NLM_F_EXCL",
    "NLM_F_MULTI",
    "NLM_F_REPLACE",
    "RTAX_MTU",
    "RTA_DST",
    "RTA_MARK",
    "RTA_METRICS",
    "RTA_OIF",
    "RTA_PRIORITY",
    "RTA_TABLE",
    "RTM_DELROUTE",
    "RTM_DELRULE",
    "RTM_GETLINK",
    "RTM_GETROUTE",
    "RTM_GETRULE",
    "RTM_NEWLINK",
    "RTM_NEWROUTE",
    "RTM_NEWRULE",
    "RTN_UNICAST",
    "Message",
    "NetlinkError",
    "NetlinkParseError",
    "Request",
    "RtNetlink",
    "attr",
    "error",
    "ifinfomsg",
    "parse_attrs",
    "parse_messages",
    "rtmsg",
    "u32_attr",
]
