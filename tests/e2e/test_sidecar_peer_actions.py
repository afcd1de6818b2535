"""Start, close and dead-peer actions, ``terminate`` holding a peer down, and ``--wait``,
with strongSwan as the peer.

Topology as in ``test_strongswan_interop``: the kipsec sidecar is the gateway of pod
CIDR 10.10.1.0/24 on node a, charon (kernel-libipsec) the gateway of 10.10.2.0/24 on
node b, no plain route between the pod CIDRs, so pod traffic crosses only inside the
tunnel. One topology and one charon serve the whole module (each test starts its own
sidecar with its own document); a test leaves charon without SAs, restarting it if a
dead-peer test left a stale one. Liveness is "dead" when nftables in node b drops
everything node a sends to charon's IKE and NAT-T ports.

"Stays down" is checked over a bounded window (:data:`QUIET`) with traffic flowing:
no SA on either side, nothing but IKE/ESP on the wire and never the pods' plaintext.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.capture import Capture, CaptureSummary
from support.netns import WIRE, WIRE_BRIDGE, Topology
from support.requirements import unavailable
from support.sidecars import (
    MARKER,
    PSK,
    Sidecar,
    established,
    fqdn,
    peer_entry,
    ping_marked,
    wait_until,
)
from support.strongswan import Charon, Psk, gateway_pair, is_available

pytestmark = pytest.mark.netns

#: Seconds a peer must stay down under traffic to count as "stays down".
QUIET = 2.5
#: Liveness for the dead-peer tests: probe after 1 s idle, dead after 3 s unanswered.
FAST_LIVENESS = {"interval": "1s", "timeout": "3s"}
BLOCK_TABLE = "kipsec_test_block"


class Site:
    """The module's topology with charon on node b; :meth:`kipsec` starts a sidecar on a."""

    def __init__(self, topology: Topology, workdir: Path) -> None:
        self.topology = topology
        self.workdir = workdir
        self.sidecar: Sidecar | None = None
        self.runs = 0
        self.charon = self.start_charon()

    def start_charon(self) -> Charon:
        """A new charon on node b (a new work directory each time) with the gateway conn."""
        _, conn_b = gateway_pair(
            self.topology, "a", "b", auth=(Psk(PSK), Psk(PSK)), ids=(fqdn("a"), fqdn("b"))
        )
        charon = Charon(self.topology, "b", self.workdir / f"strongswan-b{self.runs}")
        charon.configure(conn_b)
        charon.start()
        charon.load()
        return charon

    def kipsec(
        self, *, liveness: dict[str, str] | None = None, ike: str | None = None, **peer: Any
    ) -> Sidecar:
        """A fresh sidecar on node a whose peer ``b`` is charon, with ``peer`` options."""
        self.reset()
        self.runs += 1
        workdir = self.workdir / f"run{self.runs}"
        workdir.mkdir()
        sidecar = Sidecar(self.topology, "a", workdir)
        entry = peer_entry(
            self.topology,
            "b",
            trafficSelectors={
                "local": [str(self.topology.node("a").pod_cidr)],
                "remote": [str(self.topology.node("b").pod_cidr)],
            },
            **peer,
        )
        if liveness is not None:
            entry["liveness"] = liveness
        sidecar.write(
            [entry],
            proposals={"ike": [ike or "aes256gcm16-prfsha256-x25519"], "esp": ["aes256gcm16"]},
        )
        self.sidecar = sidecar
        return sidecar.start()

    def reset(self) -> None:
        """Stop the previous sidecar, unblock, and leave charon without any SA."""
        if self.sidecar is not None:
            self.sidecar.stop()
            self.sidecar = None
        self.unblock()
        with contextlib.suppress(AssertionError):
            self.charon.wait_for(lambda sas: not sas, timeout=3, what="charon without SAs")
            return
        self.charon.stop()  # a stale SA of a dead-peer test: start afresh
        self.charon = self.start_charon()

    def block(self) -> None:
        """Node b drops everything node a sends to charon's IKE and NAT-T ports."""
        a = self.topology.node("a").address
        rules = (
            f"table inet {BLOCK_TABLE} {{\n"
            "  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            f"    ip saddr {a} udp dport {{ 500, 4500 }} drop\n"
            "  }\n"
            "}\n"
        )
        self.topology.run("b", "nft", "-f", "-", input=rules)

    def unblock(self) -> None:
        self.topology.run("b", "nft", "delete", "table", "inet", BLOCK_TABLE, check=False)

    def charon_sas(self) -> list[Any]:
        return [sa for sa in self.charon.list_sas() if sa.children]

    def ping(self, seconds: float = QUIET) -> None:
        """Marked pings from pod pa to pod pb for ``seconds``; losses are expected."""
        count = max(1, int(seconds / 0.2))
        self.topology.run(
            "pa",
            *("ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1"),
            *("-p", MARKER[:16].hex(), self.topology.address("pb")),
            check=False,
            timeout=seconds + 5,
        )

    def assert_stays_down(
        self, sidecar: Sidecar, path: Path, *, ike_sa: bool = False, stale: bool = False
    ) -> CaptureSummary:
        """Pinging for :data:`QUIET` s brings no child SA back (nor an IKE SA unless
        ``ike_sa``: only the child was deleted) and nothing in clear on the wire.
        ``stale``: charon still holds the SA kipsec declared dead (it runs no DPD), so
        only kipsec's side is checked for SAs."""
        drops = sidecar.sas()["drops"]["no_sa"]
        with Capture(self.topology, WIRE, WIRE_BRIDGE, path) as capture:
            self.ping()
        summary = capture.summary
        view = sidecar.peer("b")
        assert view["children"] == [] and (ike_sa or view["ike_sa"] is None), view
        assert stale or not self.charon_sas(), self.charon.list_sas()
        assert not summary.contains(MARKER[:16]), summary.describe()
        assert not summary.unexpected(), summary.describe()
        assert summary.kinds["esp-in-udp"] == 0, summary.describe()
        assert sidecar.sas()["drops"]["no_sa"] > drops, "the pings were not dropped"
        return summary

    def wait_up(self, sidecar: Sidecar, timeout: float = 8.0) -> None:
        wait_until("kipsec established with charon", established(sidecar, "b"), timeout)
        self.charon.wait_established(child="net", timeout=timeout)

    def wait_down(self, sidecar: Sidecar, timeout: float = 8.0) -> None:
        wait_until("kipsec without SAs", lambda: not sidecar.peer("b")["children"], timeout)


@pytest.fixture(scope="module")
def site(_swept: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    reason = is_available()
    if reason is not None:
        unavailable(reason)
    workdir = tmp_path_factory.mktemp("actions")
    with Topology(pod_routes=False) as topo:
        for node, pod in (("a", "pa"), ("b", "pb")):
            topo.add_node(node)
            topo.add_pod(pod, node)
        site = Site(topo, workdir)
        try:
            yield site
        finally:
            if site.sidecar is not None:
                site.sidecar.stop()
            site.charon.stop()


# --- start ----------------------------------------------------------------------------------


def test_start_none_answers_strongswan_but_traffic_never_initiates(
    site: Site, tmp_path: Path
) -> None:
    sidecar = site.kipsec(start="none")
    site.assert_stays_down(sidecar, tmp_path / "none.pcap")
    assert sidecar.peer("b")["state"] == "idle"
    site.charon.initiate("net", timeout=8)
    site.wait_up(sidecar)
    assert sidecar.peer("b")["ike_sa"]["initiator"] is False
    ping_marked(site.topology, "pa", "pb")


def test_start_on_demand_initiates_on_the_first_packet(site: Site) -> None:
    sidecar = site.kipsec(start="onDemand")
    time.sleep(1.0)
    assert sidecar.peer("b")["state"] == "idle" and not site.charon_sas()
    site.ping(1.0)
    site.wait_up(sidecar)
    assert sidecar.peer("b")["ike_sa"]["initiator"] is True


def test_start_on_start_initiates_without_traffic(site: Site) -> None:
    sidecar = site.kipsec(start="onStart")
    site.wait_up(sidecar)
    assert sidecar.peer("b")["ike_sa"]["initiator"] is True
    assert sidecar.peer("b")["children"][0]["packets_out"] == 0


# --- close actions: strongSwan deletes the IKE SA or the child SA ---------------------------


@pytest.mark.parametrize("scope", ["ike", "child"])
@pytest.mark.parametrize("action", ["none", "onDemand", "restart"])
def test_close_action_when_strongswan_deletes(
    site: Site, tmp_path: Path, action: str, scope: str
) -> None:
    sidecar = site.kipsec(start="onStart", closeAction=action)
    site.wait_up(sidecar)
    before = sidecar.spis("b")
    if scope == "ike":
        site.charon.terminate(ike="gw")
    else:
        site.charon.terminate(child="net")
    if action == "restart":
        wait_until(
            "kipsec to re-establish at once, without traffic",
            lambda: established(sidecar, "b")() and sidecar.spis("b").isdisjoint(before),
            timeout=8,
        )
        site.charon.wait_established(child="net", timeout=8)
        return
    site.wait_down(sidecar)
    assert sidecar.peer("b")["reconnect"] == action
    if action == "none":
        site.assert_stays_down(sidecar, tmp_path / "close-none.pcap", ike_sa=scope == "child")
        return
    time.sleep(1.0)
    assert not sidecar.peer("b")["children"], "onDemand came back without traffic"
    site.ping(1.0)
    site.wait_up(sidecar)
    assert sidecar.spis("b").isdisjoint(before)


# --- dead-peer actions: node b drops kipsec's IKE and ESP -----------------------------------


@pytest.mark.parametrize("action", ["none", "onDemand", "restart"])
def test_dpd_action_when_strongswan_goes_silent(site: Site, tmp_path: Path, action: str) -> None:
    sidecar = site.kipsec(start="onStart", dpdAction=action, liveness=FAST_LIVENESS)
    site.wait_up(sidecar)
    site.block()
    wait_until(
        "kipsec to declare charon dead",
        lambda: (
            sidecar.peer("b")["last_error"] == "PEER_DEAD"
            or bool(sidecar.peer("b")["last_failure"] == "peer_dead")
        ),
        timeout=15,
    )
    site.wait_down(sidecar)
    assert sidecar.peer("b")["reconnect"] == action
    site.unblock()
    if action == "restart":
        wait_until("kipsec to re-establish without traffic", established(sidecar, "b"), 15)
        return
    if action == "none":
        summary = site.assert_stays_down(sidecar, tmp_path / "dpd-none.pcap", stale=True)
        assert summary.kinds["ike"] == 0, summary.describe()
        return
    time.sleep(1.0)
    assert not sidecar.peer("b")["children"], "onDemand came back without traffic"
    site.ping(1.0)
    wait_until("kipsec re-established on traffic", established(sidecar, "b"), 10)


# --- terminate and --wait -------------------------------------------------------------------


def test_terminate_keeps_the_peer_down_under_traffic_until_initiate(
    site: Site, tmp_path: Path
) -> None:
    sidecar = site.kipsec(start="onStart")  # closeAction restart, onDemand on traffic
    site.wait_up(sidecar)
    done = sidecar.cli("terminate", "b", "--wait", "10", timeout=40, check=False)
    assert done.returncode == 0, done.stderr
    assert "stays down" in done.stdout
    assert sidecar.peer("b")["terminated"] is True
    summary = site.assert_stays_down(sidecar, tmp_path / "terminated.pcap")
    assert summary.kinds["ike"] == 0, summary.describe()
    up = sidecar.cli("initiate", "b", "--wait", "10", timeout=40, check=False)
    assert up.returncode == 0, up.stderr
    assert established(sidecar, "b")(), "initiate --wait returned before the child SA"
    assert sidecar.peer("b")["terminated"] is False
    ping_marked(site.topology, "pa", "pb")


def test_a_reload_ends_terminate_and_an_on_start_peer_initiates_again(site: Site) -> None:
    sidecar = site.kipsec(start="onStart")
    site.wait_up(sidecar)
    sidecar.control("terminate", peer="b", wait=10)
    assert sidecar.peer("b")["terminated"] is True
    sidecar.control("reload")
    site.wait_up(sidecar)  # without traffic: onStart again
    assert sidecar.peer("b")["terminated"] is False


def test_rekey_wait_returns_when_the_new_sas_are_in_place(site: Site) -> None:
    sidecar = site.kipsec(start="onStart")
    site.wait_up(sidecar)
    before = sidecar.spis("b")
    child = sidecar.cli("rekey", "b", "--child", "--wait", "10", timeout=40, check=False)
    assert child.returncode == 0, child.stderr
    assert sidecar.spis("b").isdisjoint(before) or len(sidecar.spis("b")) > len(before)
    ike_before = sidecar.peer("b")["ike_sa"]["spi_i"]
    ike = sidecar.cli("rekey", "b", "--ike", "--wait", "10", timeout=40, check=False)
    assert ike.returncode == 0, ike.stderr
    assert sidecar.peer("b")["ike_sa"]["spi_i"] != ike_before


def test_initiate_wait_fails_with_the_reason_when_no_proposal_matches(site: Site) -> None:
    sidecar = site.kipsec(start="none", ike="aes128gcm16-prfsha256-ecp256")
    failed = sidecar.cli("initiate", "b", "--wait", "10", timeout=40, check=False)
    assert failed.returncode == 1, (failed.stdout, failed.stderr)
    assert "NO_PROPOSAL_CHOSEN" in failed.stderr, failed.stderr


def test_initiate_wait_times_out_when_the_peer_is_unreachable(site: Site) -> None:
    sidecar = site.kipsec(start="none")
    site.block()
    started = time.monotonic()
    late = sidecar.cli("initiate", "b", "--wait", "2", timeout=40, check=False)
    assert late.returncode == 4, (late.stdout, late.stderr)
    assert "timeout" in late.stderr
    assert 1.5 < time.monotonic() - started < 15
    site.unblock()
