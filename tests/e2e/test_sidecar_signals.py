"""Signals to the sidecar daemon: SIGHUP reloads, a second SIGTERM cuts the shutdown short.

- SIGHUP reloads the configuration file at once. The file watch is slowed down to a
  minute here (``config_poll_interval``), so only the signal can explain a change that
  shows up within half a second of it; a peer whose entry changed gets new SAs, and a
  peer whose entry did not keeps its SPIs.
- SIGTERM sends DELETE for every IKE SA and waits (bounded) for the answers. When the
  peer is unreachable that wait runs to its end; a second SIGTERM ends it at once, and
  the daemon still removes its device, rules and routes before it exits.
- With ``failClosedOnExit`` SIGTERM leaves the blackholes, rules and inbound filter, so
  the peers' traffic is dropped until the next run takes them over.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kipsec_sidecar.datapath.routing import DEFAULT_RULE_PRIORITY, DEFAULT_TABLE
from support.capture import Capture
from support.netns import WIRE, WIRE_BRIDGE, Topology
from support.sidecars import MARKER, Sidecar, established, peer_entry, wait_until

pytestmark = pytest.mark.netns

SLOW_POLL = 60.0
"""Seconds between configuration file checks in these tests: never, in practice."""


def _pods(topology: Topology, *names: str) -> None:
    for index, pod in enumerate(names):
        node = f"n{index}"
        topology.add_node(node)
        topology.add_pod(pod, node)


def _pid(sidecar: Sidecar) -> int:
    assert sidecar.proc is not None and sidecar.proc.poll() is None, sidecar.tail()
    return sidecar.proc.pid


def _wait_fast(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll ``check`` every 10 ms; return the seconds it took (AssertionError on timeout)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except Exception:  # the sidecar is busy reloading: not yet
            pass
        time.sleep(0.01)
    raise AssertionError(f"{what}: not within {timeout}s")


def test_sighup_applies_a_changed_peer_at_once_and_leaves_the_others_alone(
    topology: Topology, tmp_path: Path
) -> None:
    _pods(topology, "pa", "pb", "pc")
    a, b, c = (Sidecar(topology, name, tmp_path) for name in ("pa", "pb", "pc"))
    b.write([peer_entry(topology, "pa", start="onDemand")])
    c.write(
        [
            peer_entry(
                topology,
                "pa",
                start="onDemand",
                proposals={"esp": ["aes256gcm16", "chacha20poly1305"]},
            )
        ]
    )
    a.write([peer_entry(topology, "pb"), peer_entry(topology, "pc")])
    b.start()
    c.start()
    a.start(config_poll_interval=SLOW_POLL)
    wait_until(
        "pa established with pb and pc", lambda: all(established(a, p)() for p in ["pb", "pc"])
    )
    pb_spis, pc_spis = a.spis("pb"), a.spis("pc")
    assert a.installed("pc")[0]["encryption"].startswith("aes-gcm")

    changed = peer_entry(topology, "pc", proposals={"esp": ["chacha20poly1305"]})
    a.write([peer_entry(topology, "pb"), changed])
    time.sleep(1.5)  # longer than the default 1 s file check: the slow watch has not run
    assert a.spis("pc") == pc_spis, "the file was reloaded without SIGHUP"

    def pc_on_chacha() -> bool:
        return (
            any(child["encryption"].startswith("chacha20") for child in a.installed("pc"))
            and established(a, "pc")()
        )

    os.kill(_pid(a), signal.SIGHUP)
    took = _wait_fast("pc up again with its new proposal", pc_on_chacha, timeout=3.0)
    assert took < 0.5, f"SIGHUP applied after {took:.2f}s"
    assert a.spis("pc").isdisjoint(pc_spis)
    assert a.spis("pb") == pb_spis, "the unchanged peer was touched"
    assert b.spis("pa") == {(spi_out, spi_in) for spi_in, spi_out in pb_spis}
    topology.ping("pa", "pc")
    topology.ping("pa", "pb")
    assert "SIGHUP" in a.log.read_text()


def test_second_sigterm_stops_waiting_for_delete_answers_and_still_cleans_up(
    topology: Topology, tmp_path: Path
) -> None:
    _pods(topology, "pa", "pb")
    a, b = Sidecar(topology, "pa", tmp_path), Sidecar(topology, "pb", tmp_path)
    a.write([peer_entry(topology, "pb")])
    b.write([peer_entry(topology, "pa", start="onDemand")])
    b.start()
    a.start(shutdown_wait=5.0)
    wait_until("pa-pb established", established(a, "pb"))
    topology.run(
        "pb",
        "nft",
        "-f",
        "-",
        input=(
            "table inet mute {\n  chain input {\n"
            "    type filter hook input priority filter; policy accept;\n"
            "    udp dport { 500, 4500 } drop\n  }\n}\n"
        ),
    )
    pid = _pid(a)
    os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    assert a.running, "pa did not wait for the DELETE answer:\n" + a.tail()
    second = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    assert a.proc is not None
    code = a.proc.wait(timeout=5)
    took = time.monotonic() - second
    assert took < 1.0, f"exited {took:.2f}s after the second SIGTERM:\n{a.tail()}"
    assert code == 1, a.tail()
    log = a.log.read_text()
    assert "second stop signal" in log and "exiting without cleanup" not in log, a.tail()

    assert "kipsec0" not in topology.run("pa", "ip", "-o", "link").stdout
    rules = topology.run("pa", "ip", "rule").stdout
    assert f"{DEFAULT_RULE_PRIORITY}:" not in rules and str(DEFAULT_TABLE) not in rules, rules
    routes = topology.run("pa", "ip", "route", "show", "table", str(DEFAULT_TABLE), check=False)
    assert routes.stdout.strip() == "", routes.stdout


def test_with_fail_closed_on_exit_a_sigterm_leaves_the_peers_traffic_blocked_until_restart(
    topology: Topology, tmp_path: Path
) -> None:
    """What the operator renders for pods: a restarted sidecar container must not let the
    app's traffic to its peers out in clear while it is down (userspace datapath here;
    the kernel datapath's policies are checked in the VM)."""
    _pods(topology, "pa", "pb")
    a, b = Sidecar(topology, "pa", tmp_path), Sidecar(topology, "pb", tmp_path)
    a.write([peer_entry(topology, "pb")], failClosedOnExit=True)
    b.write([peer_entry(topology, "pa", start="onDemand")])
    b.start()
    a.start()
    wait_until("pa-pb established", established(a, "pb"))
    topology.ping("pa", "pb")
    table = str(DEFAULT_TABLE)

    assert a.stop() == 0, a.tail()
    routes = topology.run("pa", "ip", "route", "show", "table", table).stdout
    assert f"blackhole {topology.address('pb')}" in routes, routes
    assert f"{DEFAULT_RULE_PRIORITY + 1}:" in topology.run("pa", "ip", "rule").stdout
    assert "kipsec_inbound" in topology.run("pa", "nft", "list", "tables").stdout
    with Capture(topology, WIRE, WIRE_BRIDGE, tmp_path / "down.pcap") as capture:
        down = topology.run(
            "pa",
            *("ping", "-n", "-q", "-c", "3", "-i", "0.2", "-w", "2"),
            *("-p", MARKER[:16].hex(), topology.address("pb")),
            check=False,
        )
    assert down.returncode != 0, down.stdout
    assert not capture.summary.contains(MARKER[:16]), capture.summary.describe()

    a.write([peer_entry(topology, "pb")])  # the next stop leaves nothing
    logged = len(a.log.read_bytes())
    a.start()
    wait_until("pa-pb established again", established(a, "pb"))
    topology.ping("pa", "pb")
    since = a.log.read_bytes()[logged:].decode()
    # The blackhole was taken over in place: nothing stale was left to remove.
    assert "sidecar started" in since and "stale" not in since, since
    assert a.stop() == 0, a.tail()
    assert topology.run("pa", "ip", "route", "show", "table", table).stdout.strip() == ""
    assert f"{DEFAULT_RULE_PRIORITY}:" not in topology.run("pa", "ip", "rule").stdout
    assert "kipsec_inbound" not in topology.run("pa", "nft", "list", "tables").stdout
