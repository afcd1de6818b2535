"""Both sidecars reload the same changed peer at once (a Tunnel edited in the cluster).

When a Tunnel changes, the configurations of both of its pods change together, so both
sidecars replace the peer and re-initiate at about the same moment. Within a few seconds
they must settle on exactly one child SA each, negotiated with the new configuration,
with matching SPIs (each side's outbound SA is the other's inbound) and traffic both ways.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from support.netns import Topology
from support.sidecars import Sidecar, established, peer_entry, wait_until

pytestmark = pytest.mark.netns

SLOW_POLL = 60.0
"""Seconds between configuration file checks: only SIGHUP reloads in this test."""
SETTLE = 10.0
"""Seconds both sides get to settle on one child SA after the simultaneous SIGHUP."""


def _pid(sidecar: Sidecar) -> int:
    assert sidecar.proc is not None and sidecar.proc.poll() is None, sidecar.tail()
    return sidecar.proc.pid


def _events(sidecar: Sidecar) -> str:
    """The sidecar's log without the test's own ``sas`` polling."""
    lines = sidecar.log.read_text(errors="replace").splitlines()
    return "\n".join([line for line in lines if "control request" not in line][-40:])


def _entries(topology: Topology, esp: str) -> tuple[dict[str, Any], dict[str, Any]]:
    proposals = {"esp": [esp]}
    return (
        peer_entry(topology, "pb", mode="tunnel", proposals=proposals),
        peer_entry(topology, "pa", mode="tunnel", proposals=proposals),
    )


def test_both_sides_reload_a_changed_peer_at_once_and_settle_on_one_child_sa(
    topology: Topology, tmp_path: Path
) -> None:
    for index, pod in enumerate(("pa", "pb")):
        topology.add_node(f"n{index}")
        topology.add_pod(pod, f"n{index}")
    a, b = Sidecar(topology, "pa", tmp_path), Sidecar(topology, "pb", tmp_path)
    to_b, to_a = _entries(topology, "aes256gcm16")
    a.write([to_b])
    b.write([to_a])
    a.start(config_poll_interval=SLOW_POLL)
    b.start(config_poll_interval=SLOW_POLL)
    wait_until("pa-pb established", lambda: established(a, "pb")() and established(b, "pa")())
    old = a.spis("pb") | b.spis("pa")
    assert a.installed("pb")[0]["encryption"].startswith("aes-gcm")

    to_b, to_a = _entries(topology, "chacha20poly1305")
    a.write([to_b])
    b.write([to_a])
    pid_a, pid_b = _pid(a), _pid(b)
    os.kill(pid_a, signal.SIGHUP)
    os.kill(pid_b, signal.SIGHUP)

    def settled() -> bool:
        mine, theirs = a.peer("pb"), b.peer("pa")
        if mine["state"] != "established" or theirs["state"] != "established":
            return False
        if len(mine["children"]) != 1 or len(theirs["children"]) != 1:
            return False
        ca, cb = mine["children"][0], theirs["children"][0]
        return bool(
            ca["state"] == cb["state"] == "installed"
            and ca["encryption"].startswith("chacha20")
            and cb["encryption"].startswith("chacha20")
            and ca["spi_out"] == cb["spi_in"]
            and ca["spi_in"] == cb["spi_out"]
        )

    start = time.monotonic()
    try:
        wait_until("both sides on one chacha20 child SA", settled, timeout=SETTLE)
    except AssertionError as exc:
        detail = "\n".join(
            f"--- {s.pod} sas ---\n{s.sas()}\n--- {s.pod} log ---\n{_events(s)}" for s in (a, b)
        )
        raise AssertionError(f"{exc}\n{detail}") from None
    took = time.monotonic() - start
    # Still settled a moment later: no late duplicate or delete undoes it.
    time.sleep(1.0)
    assert settled(), f"unsettled again after {took:.2f}s:\n{a.sas()}\n{b.sas()}"
    assert a.spis("pb").isdisjoint(old) and b.spis("pa").isdisjoint(old)
    topology.ping("pa", "pb", count=2)
    topology.ping("pb", "pa", count=2)
    assert "SIGHUP" in a.log.read_text() and "SIGHUP" in b.log.read_text()
