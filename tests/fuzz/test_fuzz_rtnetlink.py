"""Hostile bytes into the rtnetlink reply parser: only NetlinkParseError comes out.

:func:`kipsec_sidecar.datapath.rtnetlink.parse_messages` reads what the kernel answers to
the userspace datapath's route, rule and link requests, and ``Route.parse`` /
``Rule.parse`` turn those into what :mod:`kipsec_sidecar.datapath.routing` acts on.
Random datagrams, and truncations and byte flips of well-formed replies (a route dump
part, a rule, a link, an error acknowledgement), must parse or raise NetlinkParseError —
never IndexError, struct.error or a value read past its message.
"""

from __future__ import annotations

import contextlib
import socket
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kipsec_sidecar.datapath import rtnetlink as nl
from kipsec_sidecar.datapath.routing import Route, Rule

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def message(kind: int, payload: bytes, *, flags: int = nl.NLM_F_MULTI, seq: int = 7) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload


ROUTE = message(
    nl.RTM_NEWROUTE,
    nl.rtmsg(socket.AF_INET, dst_len=24, table=27504, proto=107, type=6)
    + nl.u32_attr(nl.RTA_TABLE, 27504)
    + nl.attr(nl.RTA_DST, bytes([10, 1, 2, 0]))
    + nl.u32_attr(nl.RTA_PRIORITY, 1000)
    + nl.attr(nl.RTA_METRICS, nl.u32_attr(nl.RTAX_MTU, 1280)),
)
ROUTE6 = message(
    nl.RTM_NEWROUTE,
    nl.rtmsg(socket.AF_INET6, dst_len=64, table=254, proto=107, type=1)
    + nl.attr(nl.RTA_DST, bytes(range(16)))
    + nl.u32_attr(nl.RTA_OIF, 3),
)
RULE = message(
    nl.RTM_NEWRULE,
    nl.rtmsg(socket.AF_INET, table=254, action=nl.FR_ACT_TO_TBL)
    + nl.u32_attr(nl.FRA_PRIORITY, 6876)
    + nl.u32_attr(nl.FRA_FWMARK, 0x6B70)
    + nl.u32_attr(nl.FRA_FWMASK, 0xFFFFFFFF),
)
LINK = message(
    nl.RTM_NEWLINK,
    nl.ifinfomsg(3, flags=nl.IFF_UP) + nl.attr(nl.IFLA_IFNAME, b"kipsec0\0") + nl.u32_attr(4, 1438),
)
ACK = message(nl.NLMSG_ERROR, struct.pack("=i", -17) + bytes(16), flags=0)
DONE = message(nl.NLMSG_DONE, struct.pack("=i", 0))
VALID = [ROUTE, ROUTE6, RULE, LINK, ACK, DONE, ROUTE + RULE + DONE]


def use(data: bytes) -> None:
    """Parse ``data`` and read every message the way routing does."""
    for parsed in nl.parse_messages(data):
        if parsed.type == nl.RTM_NEWROUTE:
            route = Route.parse(parsed)
            assert route.network.prefixlen <= route.network.max_prefixlen
            metrics = parsed.attrs.get(nl.RTA_METRICS)
            if metrics is not None:
                nl.Message(0, 0, 0, attrs=nl.parse_attrs(metrics)).u32(nl.RTAX_MTU)
        elif parsed.type == nl.RTM_NEWRULE:
            Rule.parse(parsed)
        elif parsed.type == nl.RTM_NEWLINK:
            parsed.u32(nl.IFLA_MTU)
            parsed.string(nl.IFLA_IFNAME)


def test_well_formed_replies_parse_to_what_was_built() -> None:
    route, rule, done = nl.parse_messages(ROUTE + RULE + DONE)
    assert str(Route.parse(route).network) == "10.1.2.0/24"
    assert Route.parse(route).table == 27504 and Route.parse(route).priority == 1000
    assert Rule.parse(rule) == Rule(socket.AF_INET, 6876, 254, 0x6B70, 0xFFFFFFFF)
    assert done.type == nl.NLMSG_DONE
    (ack,) = nl.parse_messages(ACK)
    assert ack.error == 17
    (link,) = nl.parse_messages(LINK)
    assert (link.string(nl.IFLA_IFNAME), link.u32(nl.IFLA_MTU)) == ("kipsec0", 1438)


@FUZZ
@given(st.binary(max_size=512))
def test_random_datagrams_raise_only_the_parse_error(data: bytes) -> None:
    with contextlib.suppress(nl.NetlinkParseError):
        use(data)


@FUZZ
@given(
    st.sampled_from(VALID),
    st.integers(min_value=0, max_value=400),
    st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.integers(0, 255)), max_size=4),
)
def test_truncated_and_flipped_replies_raise_only_the_parse_error(
    valid: bytes, cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(valid[: max(cut, 1)] if cut < len(valid) else valid)
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    with contextlib.suppress(nl.NetlinkParseError):
        use(bytes(data))


@FUZZ
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=0xFFFF))
def test_attribute_lists_never_read_past_their_end(data: bytes, kind: int) -> None:
    attrs = data + nl.attr(kind, b"x")  # a valid attribute after hostile ones
    with contextlib.suppress(nl.NetlinkParseError):
        for value in nl.parse_attrs(attrs).values():
            assert len(value) <= len(attrs)
