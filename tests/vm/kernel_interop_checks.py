"""kipsec's kernel datapath against other IPsec implementations, checked inside the test VM.

Not a pytest module: ``tests/vm/test_kernel_interop.py`` asserts what this script prints
(``{"checks": {...}}`` between the result markers, like the other ``*_checks.py``
scripts; the helpers are ``kernel_sidecar_checks``'s). One dual-stack topology
(``kernel_ipv6_checks.add_ipv6``); pa runs ``kipsec-sidecar`` on the kernel datapath
throughout, reconfigured by reload for each link. Its peer in pb is:

- ``userspace/…``: a ``kipsec-sidecar`` on the userspace datapath (the AH of
  :mod:`kipsec_sidecar.core.ah`): AH tunnel mode over IPv4 and AH transport mode over
  IPv6 (each AH length and each mode once; the other two combinations are the charon
  links below for the kernel's AH, and for the userspace AH the netns tier's
  ``tests/e2e/test_userspace_datapath.py`` over IPv4 and scapy's AH in every layout in
  ``tests/conformance/test_scapy_crosscheck.py``); pa initiates.
- ``charon/…``: strongSwan's charon with ``kernel-netlink`` (no libipsec: the VM
  kernel's own ESP and AH, which is how strongSwan normally runs): ESP tunnel in UDP,
  raw ESP in transport mode, and AH over IPv4 and IPv6, tunnel and transport mode. pa
  initiates the tunnels, charon the transport-mode links. Then an IKEv1 link (charon
  with ``version = 1``, kipsec's peer with ``ikeVersion: 1``, PSK main mode and quick
  mode): raw ESP tunnel that pa initiates, the same checks, both sides reporting IKE
  version 1, and a phase-2 rekey charon starts under a 20 ms ping: no ping lost, and
  pa's kernel then holds only the new quick mode's states.

Each link: pings both ways, the wire carries that protocol (and never the ping's
pattern in clear, unless AH), pa's ``ip xfrm`` holds exactly its two states and two
policies; for AH also the AH header's length on the wire in both directions (RFC 4302
section 3.3.3.2.1: the ICV padded to 32 bits over IPv4, 64 over IPv6: 28 and 32 bytes
with HMAC-SHA2-256-128) and, against charon, that pa's states carry ``flag align4``
exactly where charon's do (IPv4 AH). Before kipsec set ``XFRM_STATE_ALIGN4`` its
kernel sent 32-byte AH over IPv4 and dropped the peers' 28-byte AH (issue 12).

The result's ``timings`` hold each phase's and each link's seconds (``KIPSEC_VM_RESULT``
in ``conftest.py``): what a link costs the VM tier, before adding or dropping one.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(REPO / "sidecar"), str(REPO / "lab"), str(REPO / "tests")]

from kipsec_sidecar.state import ControlError  # noqa: E402
from support.capture import Capture  # noqa: E402
from support.netns import Topology  # noqa: E402
from support.sidecars import PSK, Sidecar, fqdn, peer_entry, wait_until  # noqa: E402
from vm.kernel_ipv6_checks import V6  # noqa: E402
from vm.kernel_lifecycle_checks import document, run_dual_stack, v4_addresses  # noqa: E402
from vm.kernel_sidecar_checks import (  # noqa: E402
    captured_two_way,
    check,
    checking,
    describe,
    expect_kernel_entries,
    rekey_under_ping,
    settled,
    start,
    stop_clean,
    timed,
    up,
    xfrm_states,
)

#: Seconds a sidecar may take to answer on its control socket: importing the daemon took
#: 203 s in the VM on a loaded 2-core host (2026-12-07), more than the 150 s of
#: ``kernel_sidecar_checks.START_TIMEOUT``.
SIDECAR_START_TIMEOUT = 420.0
#: AH header bytes (fixed part, HMAC-SHA2-256-128 ICV, padding) by IP version, from
#: RFC 4302 section 3.3.3.2.1 (not from the implementation under test).
AH_LENGTH = {4: 28, 6: 32}


@dataclass(frozen=True)
class Link:
    """One configuration of the pa–pb link: outer (and inner) IP version, protocol,
    mode, ESP in UDP or not, and who initiates against charon."""

    version: int
    protocol: str
    mode: str
    udp: bool = False
    charon_initiates: bool = False  #: else pa (kipsec) initiates
    ike_version: int = 2  #: 1: main mode and quick mode (charon ``version = 1``)

    @property
    def name(self) -> str:
        how = "udp" if self.udp else "raw"
        v1 = "-ikev1" if self.ike_version == 1 else ""
        return f"{self.protocol}-ipv{self.version}-{self.mode}-{how}{v1}"

    @property
    def kind(self) -> str:
        """What the capture should see: ``esp-in-udp``, ``esp`` or ``ah``."""
        return "esp-in-udp" if self.udp else self.protocol

    def options(self) -> dict[str, Any]:
        """The kipsec peer entry's keys for this link."""
        options: dict[str, Any] = {
            "protocol": self.protocol,
            "mode": self.mode,
            "encapsulation": "udp" if self.udp else "raw",
        }
        if self.ike_version == 1:
            options["ikeVersion"] = 1
        return options

    def addresses(self, topo: Topology) -> dict[str, str]:
        return V6 if self.version == 6 else v4_addresses(topo)

    def peer(self, topo: Topology, name: str, **extra: Any) -> dict[str, Any]:
        """kipsec's peer entry for pod ``name`` over this link's IP version."""
        return peer_entry(topo, name, address=self.addresses(topo)[name], **self.options(), **extra)


USERSPACE_LINKS = (
    Link(4, "ah", "tunnel"),
    Link(6, "ah", "transport"),
)
CHARON_LINKS = (
    Link(4, "esp", "tunnel", udp=True),
    Link(4, "esp", "transport", charon_initiates=True),
    Link(4, "ah", "tunnel"),
    Link(4, "ah", "transport", charon_initiates=True),
    Link(6, "ah", "tunnel"),
    Link(6, "ah", "transport", charon_initiates=True),
    Link(4, "esp", "tunnel", ike_version=1),
)
#: charon's IKEv1 (ISAKMP SA) proposal: kipsec's default for an ``ikeVersion: 1`` peer
#: (IKEv1 has no AEAD for phase 1, so the IKEv2 default cannot serve).
CHARON_IKEV1_PROPOSALS = ("aes256-sha256-modp2048",)


def ah_lengths(capture: Capture) -> dict[str, list[int]]:
    """{source address: the AH header lengths in bytes it sent} in ``capture``."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    summary = capture.summary
    found: dict[str, set[int]] = {}
    for packet in [*summary.of_kind("ah"), *summary.of_kind("ipv6")]:
        if packet.protocol != 51:
            continue
        frame = Ether(packet.data)
        outer = frame[IP] if IP in frame else frame[IPv6]
        data = bytes(outer)
        offset = outer.ihl * 4 if IP in frame else 40
        found.setdefault(outer.src, set()).add((data[offset + 1] + 2) * 4)
    return {src: sorted(lengths) for src, lengths in found.items()}


def check_link(
    prefix: str, topo: Topology, work: Path, a: Sidecar, link: Link
) -> tuple[dict[str, str], Capture]:
    """The checks every link gets (see the module docstring); returns pa/pb's addresses
    and the capture."""
    addresses = link.addresses(topo)
    capture = captured_two_way(prefix, topo, work, link.kind, addresses=addresses)
    outer = (addresses["pa"], addresses["pb"])
    expect_kernel_entries(
        prefix, topo, a, "pb", proto=link.protocol, mode=link.mode, encap=link.udp, outer=outer
    )
    if link.protocol == "ah":
        lengths = ah_lengths(capture)
        want = [AH_LENGTH[link.version]]
        check(
            f"{prefix}/ah-length",
            all(lengths.get(addresses[pod]) == want for pod in ("pa", "pb")),
            f"AH header bytes by sender {lengths}; RFC 4302 wants {want} from both",
        )
    return addresses, capture


def reconfigure(
    a: Sidecar,
    b: Sidecar | None,
    link: Link,
    topo: Topology,
    between: Callable[[], None] | None = None,
) -> None:
    """pa ends its SAs with pb; (``between`` reconfigures charon then;) pb's sidecar (if
    given: the userspace one) and then pa reload for ``link``; pa initiates unless
    charon does."""
    a.control("terminate", peer="pb")
    wait_until(
        "no child SA left",
        lambda: not a.peer("pb")["children"] and (b is None or not b.peer("pa")["children"]),
        30,
    )
    if between is not None:
        between()
    if b is not None:
        b.write([link.peer(topo, "pa", start="onDemand")], **userspace_document(topo))
        b.control("reload")
    how = "onDemand" if link.charon_initiates else "onStart"
    a.write([link.peer(topo, "pb", start=how)], **document(topo, "pa"))
    a.control("reload")


def userspace_document(topo: Topology) -> dict[str, Any]:
    return document(topo, "pb", datapath="userspace")


def wanted(link: Link) -> Callable[[dict[str, Any]], bool]:
    """Whether a child in a sidecar's snapshot has ``link``'s protocol and mode."""

    def matches(child: dict[str, Any]) -> bool:
        return (child["protocol"], child["mode"]) == (link.protocol, link.mode)

    return matches


def against_userspace(topo: Topology, work: Path, a: Sidecar, b: Sidecar) -> None:
    """pb on the userspace datapath: AH, both IP versions, both modes."""
    first = USERSPACE_LINKS[0]
    (work / "userspace").mkdir(parents=True, exist_ok=True)  # the captures' directory
    a.write([first.peer(topo, "pb")], **document(topo, "pa"))
    b.write([first.peer(topo, "pa", start="onDemand")], **userspace_document(topo))
    start(a, b)
    check(
        "userspace/datapaths",
        a.sas()["datapath"] == "kernel" and b.sas()["datapath"] == "userspace",
        f"{a.sas()['datapath']} / {b.sas()['datapath']}",
    )
    for link in USERSPACE_LINKS:
        prefix = f"userspace/{link.name}"
        with timed(prefix), checking(prefix):
            if link is not first:
                reconfigure(a, b, link, topo)
            up((a, "pb"), (b, "pa"), check_view=wanted(link))
            settled(topo, (a, "pb"))  # pb's SAs live in its process, not in the kernel
            check_link(prefix, topo, work, a, link)


def charon_connection(topo: Topology, link: Link) -> Any:
    """charon's side of ``link`` in pb (host-to-host selectors, its AH or ESP proposal)."""
    from support.strongswan import DEFAULT_IKE_PROPOSALS, Child, Connection, Psk

    addresses = link.addresses(topo)
    me, other = addresses["pa"], addresses["pb"]
    plen = 32 if link.version == 4 else 128
    return Connection(
        name="kipsec",
        local_addrs=(other,),
        remote_addrs=(me,),
        auth=Psk(PSK),
        local_id=fqdn("pb"),
        remote_id=fqdn("pa"),
        encap=link.udp,
        version=1 if link.ike_version == 1 else 2,
        proposals=CHARON_IKEV1_PROPOSALS if link.ike_version == 1 else DEFAULT_IKE_PROPOSALS,
        extra={"aggressive": "no"} if link.ike_version == 1 else {},
        children=(
            Child(
                "pods",
                local_ts=(f"{other}/{plen}",),
                remote_ts=(f"{me}/{plen}",),
                mode="tunnel" if link.mode == "tunnel" else "transport",
                ah_proposals=("sha256",) if link.protocol == "ah" else (),
            ),
        ),
    )


def against_charon(topo: Topology, work: Path, a: Sidecar, b: Sidecar) -> None:
    """pb's sidecar stops; charon with kernel-netlink takes its place for each link."""
    from support.strongswan import PLUGINS, Charon

    # Within STOP_GRACE: a SIGKILLed userspace datapath would leave its fail-closed
    # blackhole routes to pa in pb, and charon's packets would go nowhere.
    stop_clean("userspace-pb", topo, b)
    (work / "charon").mkdir(parents=True, exist_ok=True)
    plugins = tuple(p for p in PLUGINS if p != "kernel-libipsec")
    peer = Charon(topo, "pb", work / "charon", plugins=plugins, timeout=180.0).start()
    try:
        for link in CHARON_LINKS:
            prefix = f"charon/{link.name}"
            with timed(prefix), checking(prefix):

                def charon_for(link: Link = link) -> None:
                    wait_until("charon has no SA left", lambda: not peer.list_sas(), 30)
                    peer.configure(charon_connection(topo, link))
                    peer.load()

                reconfigure(a, None, link, topo, charon_for)
                if link.charon_initiates:
                    peer.initiate("pods", ike="kipsec", timeout=90.0)
                else:
                    with contextlib.suppress(ControlError):  # already initiating after reload
                        a.control("initiate", peer="pb")
                up((a, "pb"), check_view=wanted(link))
                settled(topo, (a, "pb"))
                check_link(prefix, topo, work, a, link)
                ike = peer.established(ike="kipsec")
                check(
                    f"{prefix}/charon-has-the-child",
                    ike is not None and ike.child("pods") is not None,
                    f"{ike} / {peer.log_tail(20)}",
                )
                if link.protocol == "ah":
                    flags = {
                        side: sorted("align4" in s.text for s in xfrm_states(topo.namespace(side)))
                        for side in ("pa", "pb")
                    }
                    expected = [link.version == 4] * 2
                    check(
                        f"{prefix}/align4-as-charon",
                        flags == {"pa": expected, "pb": expected},
                        f"align4 per state {flags}, want {expected} on both\n"
                        f"{describe(topo.namespace('pa'))}\n{describe(topo.namespace('pb'))}",
                    )
                if link.ike_version == 1:
                    ikev1_link(prefix, topo, a, peer, ike)
    finally:
        peer.stop()


def ikev1_link(prefix: str, topo: Topology, a: Sidecar, peer: Any, ike: Any) -> None:
    """The IKEv1 link's own checks: both sides say version 1 (``ike``: charon's IKE SA,
    whose vici ``version`` is the IKE major version); charon's quick mode rekey replaces
    pa's kernel states under traffic without loss."""
    theirs = None if ike is None else str(ike.raw.get("version"))
    versions = (a.peer("pb")["ike_sa"]["ike_version"], theirs)
    check(f"{prefix}/ike-version-1", versions == (1, "1"), f"kipsec, charon: {versions}")

    def charon_rekeys() -> str:
        return f"charon rekey matched {peer.rekey(child='pods')} child SA(s)"

    rekey_under_ping(prefix, topo, a, charon_rekeys)


def scenario(topo: Topology, work: Path) -> None:
    a = Sidecar(topo, "pa", work)
    b = Sidecar(topo, "pb", work)
    try:
        for name, step in (("userspace", against_userspace), ("charon", against_charon)):
            with timed(name), checking(name):
                step(topo, work, a, b)
    finally:
        stop_clean("interop-pa", topo, a)
        b.stop()


if __name__ == "__main__":
    run_dual_stack("kvmio", scenario, SIDECAR_START_TIMEOUT)
