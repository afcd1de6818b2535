"""The userspace datapath's policy routing on its own rtnetlink code, in a real namespace.

:mod:`kipsec_sidecar.datapath.routing` speaks rtnetlink itself
(:mod:`kipsec_sidecar.datapath.rtnetlink`, no pyroute2). Each test runs ``PolicyRouting``
inside a pod's namespace against the kernel and reads the result back with iproute2's
``ip``, an independent implementation of the same protocol: what ``ip`` lists is what
the kernel holds. A persistent TUN device (``ip tuntap``) stands in for the datapath's.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kipsec_sidecar.datapath.routing import DEFAULT_ROUTE_PROTO, DEFAULT_RULE_PRIORITY
from kipsec_sidecar.datapath.routing import DEFAULT_TABLE as TABLE
from support.netns import Topology

pytestmark = pytest.mark.netns

POD = "pr"
DEVICE = "kt0"

#: Runs in the pod: a PolicyRouting, then ``steps`` (a Python body with ``r`` the
#: PolicyRouting, ``net`` ip_network, ``out`` a dict printed as JSON at the end).
_SCRIPT = r"""
import ipaddress, json, sys
from kipsec_sidecar.datapath.base import DatapathError
from kipsec_sidecar.datapath.routing import PolicyRouting
net = ipaddress.ip_network
out = {}
r = PolicyRouting()
try:
    exec(sys.argv[1])
finally:
    r.close(keep=True)
print(json.dumps(out))
"""


@pytest.fixture
def pod(topology: Topology) -> Topology:
    topology.add_node("a")
    topology.add_pod(POD, "a")
    topology.ip(POD, f"tuntap add {DEVICE} mode tun")
    # The topology disables IPv6 everywhere; the device routes an IPv6 prefix too.
    topology.sysctl(POD, {f"net.ipv6.conf.{DEVICE}.disable_ipv6": "0"})
    return topology


def routing(topology: Topology, steps: str) -> dict[str, Any]:
    """Run ``steps`` against a PolicyRouting in the pod; the ``out`` dict it filled."""
    result = topology.python(POD, _SCRIPT, steps, timeout=60)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def routes(topology: Topology, *family: str) -> list[str]:
    listing = topology.run(POD, "ip", *family, "route", "show", "table", str(TABLE)).stdout
    return [" ".join(line.split()) for line in listing.splitlines()]


def rules(topology: Topology, *family: str) -> list[str]:
    listing = topology.run(POD, "ip", *family, "rule").stdout
    prefixes = (f"{DEFAULT_RULE_PRIORITY}:", f"{DEFAULT_RULE_PRIORITY + 1}:")
    return [" ".join(line.split()) for line in listing.splitlines() if line.startswith(prefixes)]


def test_set_link_rules_and_a_hundred_protected_prefixes_are_what_ip_lists(
    pod: Topology,
) -> None:
    out = routing(
        pod,
        f"out['index'] = r.set_link('{DEVICE}', mtu=1400)\n"
        f"out['mtu'] = r.link_mtu('{DEVICE}')\n"
        "r.install_rules()\n"
        "r.install_rules()  # taken over as it is, not doubled\n"
        "for n in range(100):\n"
        "    r.protect(net(f'10.77.{n}.0/24'), out['index'])\n"
        "r.protect(net('fd00:77::/64'), out['index'])\n"
        "out['state'] = r.own_state()\n",
    )
    assert out["mtu"] == 1400
    link = pod.run(POD, "ip", "-o", "link", "show", DEVICE).stdout
    assert " mtu 1400 " in link and "UP" in link.split("<")[1].split(">")[0].split(",")
    mark, table = DEFAULT_RULE_PRIORITY, DEFAULT_RULE_PRIORITY + 1
    expected_rules = [
        f"{mark}: from all fwmark {TABLE:#x} lookup main",
        f"{table}: from all lookup {TABLE}",
    ]
    assert rules(pod) == expected_rules
    assert rules(pod, "-6") == expected_rules
    listed = routes(pod)
    assert len(listed) == 200
    for n in range(100):
        prefix = f"10.77.{n}.0/24"
        assert f"{prefix} dev {DEVICE} proto {DEFAULT_ROUTE_PROTO} metric 100" in " ".join(
            line for line in listed if line.startswith(prefix)
        )
        assert f"blackhole {prefix} proto {DEFAULT_ROUTE_PROTO} metric 1000" in listed
    listed6 = routes(pod, "-6")
    assert len(listed6) == 2, listed6
    device6, blackhole6 = listed6  # IPv6 lists blackholes "dev lo"
    assert device6.startswith(f"fd00:77::/64 dev {DEVICE} proto {DEFAULT_ROUTE_PROTO} metric 100")
    assert blackhole6.startswith("blackhole fd00:77::/64 dev lo")
    assert f" proto {DEFAULT_ROUTE_PROTO} metric 1000" in blackhole6
    assert out["state"] == [4, 202]


def test_shared_prefixes_are_counted_and_unprotect_removes_both_routes(pod: Topology) -> None:
    routing(
        pod,
        f"i = r.set_link('{DEVICE}', mtu=1400)\n"
        "r.protect(net('10.78.0.0/24'), i)\n"
        "r.protect(net('10.78.0.0/24'), i)  # a second peer, same prefix\n"
        "r.protect(net('10.78.1.0/24'), i)\n"
        "r.unprotect(net('10.78.0.0/24'))\n"
        "r.unprotect(net('10.78.1.0/24'))\n",
    )
    listed = routes(pod)
    assert [line.split()[0:2] for line in listed] == [
        ["10.78.0.0/24", "dev"],
        ["blackhole", "10.78.0.0/24"],
    ], listed


def test_a_refused_route_is_a_datapath_error_naming_the_prefix_and_the_reason(
    pod: Topology,
) -> None:
    out = routing(
        pod,
        "try:\n"
        "    r.protect(net('10.79.0.0/24'), 999999)\n"
        "except DatapathError as exc:\n"
        "    out['error'] = str(exc)\n"
        "try:\n"
        "    r.set_link('nosuch0', mtu=1400)\n"
        "except DatapathError as exc:\n"
        "    out['link'] = str(exc)\n"
        "out['state'] = r.own_state()\n",
    )
    assert out["error"].startswith(f"route 10.79.0.0/24 in table {TABLE}: ")
    assert "No such device" in out["error"]
    assert out["link"] == "interface nosuch0 does not exist"
    # The blackhole went in with the refused route (one datagram): fail closed.
    assert routes(pod) == [f"blackhole 10.79.0.0/24 proto {DEFAULT_ROUTE_PROTO} metric 1000"]
    assert out["state"] == [0, 1]


def test_remove_stale_deletes_a_thousand_routes_in_batches_and_only_its_own(
    pod: Topology,
) -> None:
    # More requests than one send carries (rtnetlink.BATCH_MESSAGES): several datagrams, and
    # acknowledgements spread over several reads.
    prio = DEFAULT_RULE_PRIORITY
    commands = [
        f"rule add priority {prio} fwmark {TABLE:#x} lookup main",
        f"rule add priority {prio + 1} lookup {TABLE}",
        f"rule add priority {prio + 1} lookup 100",
        f"route add blackhole 10.80.0.0/24 table {TABLE} proto static",
    ]
    commands += [
        f"route add blackhole 10.{81 + n // 250}.{n % 250}.0/24 table {TABLE} "
        f"proto {DEFAULT_ROUTE_PROTO} metric 1000"
        for n in range(1000)
    ]
    pod.ip(POD, *commands)
    out = routing(
        pod,
        "out['before'] = r.own_state()\n"
        "out['removed'] = r.remove_stale()\n"
        "out['after'] = r.own_state()\n",
    )
    assert out["before"] == [2, 1000]
    assert out["removed"] == 1002
    assert out["after"] == [0, 0]
    assert routes(pod) == ["blackhole 10.80.0.0/24 proto static"]
    assert rules(pod) == [f"{prio + 1}: from all lookup 100"]


def test_drop_unclaimed_keeps_the_prefixes_protected_now(pod: Topology) -> None:
    pod.ip(
        POD,
        f"route add blackhole 10.82.0.0/24 table {TABLE} proto {DEFAULT_ROUTE_PROTO} metric 1000",
        f"route add blackhole 10.82.1.0/24 table {TABLE} proto {DEFAULT_ROUTE_PROTO} metric 1000",
    )
    out = routing(
        pod,
        f"i = r.set_link('{DEVICE}', mtu=1400)\n"
        "r.protect(net('10.82.0.0/24'), i)\n"
        "out['dropped'] = r.drop_unclaimed()\n",
    )
    assert out["dropped"] == 1
    assert [line.split()[0:2] for line in routes(pod)] == [
        ["10.82.0.0/24", "dev"],
        ["blackhole", "10.82.0.0/24"],
    ]


def test_path_mtu_reads_the_route_metric_the_device_and_the_default_route(
    pod: Topology,
) -> None:
    eth = pod.run(POD, "ip", "-o", "route", "show", "default").stdout.split(" dev ")[1].split()[0]
    pod.ip(POD, f"link set {eth} mtu 1450", "route add 192.0.2.0/24 dev lo mtu 1280")
    out = routing(
        pod,
        "out['default'] = r.path_mtu()\n"
        "out['metric'] = r.path_mtu('192.0.2.1')\n"
        "out['device'] = r.path_mtu('198.51.100.1')\n",
    )
    assert out == {"default": 1450, "metric": 1280, "device": 1450}
