"""The sidecar matrix: every mode, protocol, encapsulation and kind of keying carries pod
traffic, and only IPsec is ever seen between the nodes.

Each case starts real sidecars in pod namespaces (two, or a three-pod full mesh), sends
ICMP, UDP and TCP both ways between every pair of pods with a plaintext marker in every
payload, and captures the node segment meanwhile. The capture must hold only IPsec (ESP
in UDP 4500, raw ESP or AH, as configured) plus IKE and the segment's ARP; with ESP the
marker must never appear, with AH (integrity only, no encryption) it may appear only
inside AH packets. The cases are not the full cross product: each value of each
dimension appears at least once, and the mesh once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from support.capture import Capture, CaptureSummary
from support.netns import WIRE, WIRE_BRIDGE, Topology, udp_roundtrip
from support.pki import CertificateAuthority
from support.sidecars import (
    MARKER,
    Sidecar,
    fqdn,
    peer_entry,
    ping_marked,
    tcp_roundtrip,
    wait_mesh,
)

pytestmark = pytest.mark.netns

Auth = Literal["psk", "ecdsa", "rsa", "manual"]


@dataclass(frozen=True)
class Case:
    """One row of the matrix."""

    pods: int
    auth: Auth
    mode: Literal["tunnel", "transport"]
    protocol: Literal["esp", "ah"]
    encapsulation: Literal["udp", "raw"]

    @property
    def id(self) -> str:
        return f"{self.pods}pods-{self.auth}-{self.mode}-{self.protocol}-{self.encapsulation}"

    @property
    def wire_kind(self) -> str:
        """How the capture classifies this case's protected packets."""
        if self.protocol == "ah":
            return "ah"
        return "esp-in-udp" if self.encapsulation == "udp" else "esp"


CASES = [
    Case(2, "psk", "tunnel", "esp", "udp"),
    Case(2, "ecdsa", "transport", "esp", "raw"),
    Case(2, "rsa", "tunnel", "ah", "raw"),
    Case(2, "manual", "transport", "ah", "raw"),
    Case(2, "manual", "tunnel", "esp", "udp"),
    Case(3, "ecdsa", "tunnel", "esp", "udp"),
]

PROTECTED_KINDS = ("esp", "esp-in-udp", "ah")


def _spi(src: int, dst: int) -> int:
    """The manual SPI of the SA from pod number ``src`` to pod number ``dst``."""
    return 0x1000 + 0x10 * src + dst


def _key(src: int, dst: int, size: int) -> str:
    """A distinct manual key (hex) per direction: ``size`` bytes."""
    return bytes([0x40 + 0x10 * src + dst]).hex() * size


def manual_peer(topo: Topology, case: Case, me: int, peer: int, name: str) -> dict[str, Any]:
    """The manually keyed peer section for ``name``, mirrored on the other side."""
    manual: dict[str, Any] = {"spiIn": _spi(peer, me), "spiOut": _spi(me, peer)}
    if case.protocol == "ah":
        manual["integrity"] = "sha256"
        manual["keys"] = {"integrityIn": _key(peer, me, 32), "integrityOut": _key(me, peer, 32)}
    else:
        manual["encryption"] = "aes256gcm16"
        manual["keys"] = {
            "encryptionIn": _key(peer, me, 36),
            "encryptionOut": _key(me, peer, 36),
        }
    return {
        "name": name,
        "address": topo.address(name),
        "keying": "manual",
        "mode": case.mode,
        "protocol": case.protocol,
        "manual": manual,
    }


def build(topo: Topology, case: Case, workdir: Path) -> dict[str, Sidecar]:
    """Nodes and pods for the case, and one configured (not yet started) sidecar per pod."""
    names = [f"p{chr(ord('a') + i)}" for i in range(case.pods)]
    for name in names:
        topo.add_node(name[1:])
        topo.add_pod(name, name[1:])
    ca: CertificateAuthority | None = None
    if case.auth in ("ecdsa", "rsa"):
        ca = CertificateAuthority.root(f"kipsec matrix {case.auth} root")
    sidecars: dict[str, Sidecar] = {}
    for me, name in enumerate(names):
        sidecar = Sidecar(topo, name, workdir)
        peers = []
        for other, peer_name in enumerate(names):
            if peer_name == name:
                continue
            if case.auth == "manual":
                peers.append(manual_peer(topo, case, me, other, peer_name))
            else:
                peers.append(peer_entry(topo, peer_name, mode=case.mode, protocol=case.protocol))
        local: dict[str, Any] = {}
        if ca is not None:
            issued = ca.issue(
                name,
                dns=[fqdn(name)],
                key_kind="ec256" if case.auth == "ecdsa" else "rsa",
                key_slot=40 + me,
            )
            local["auth"] = sidecar.certificate_auth(issued, ca)
        elif case.auth == "manual":
            local["auth"] = None
            local["identity"] = None
        extra: dict[str, Any] = {"encapsulation": case.encapsulation}
        if case.protocol == "ah":
            extra["natTraversal"] = {"enabled": False}
        sidecar.write(peers, local=local, **extra)
        sidecars[name] = sidecar
    return sidecars


def exercise(topo: Topology, names: list[str]) -> None:
    """ICMP, UDP and TCP, both ways, between every pair of pods, each carrying MARKER."""
    for number, (src, dst) in enumerate(itertools.permutations(names, 2)):
        ping_marked(topo, src, dst)
        assert udp_roundtrip(topo, src, dst, MARKER, port=7700 + number) == MARKER
        tcp_roundtrip(topo, src, dst, port=7800 + number)


def assert_only_ipsec(summary: CaptureSummary, case: Case) -> None:
    assert not summary.unexpected(), summary.describe()
    assert summary.kinds[case.wire_kind] >= 10, summary.describe()
    others = set(PROTECTED_KINDS) - {case.wire_kind}
    assert not summary.of_kind(*others), summary.describe()
    marked = summary.with_marker(MARKER) + summary.with_marker(MARKER[:16])
    if case.protocol == "esp":
        assert not marked, summary.describe()
    else:  # AH authenticates but does not encrypt: the marker travels, inside AH only
        assert marked, "AH carries the payload in clear: the capture should see the marker"
        assert {p.kind for p in marked} == {"ah"}, summary.describe()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_pods_talk_only_through_ipsec(topology: Topology, tmp_path: Path, case: Case) -> None:
    sidecars = build(topology, case, tmp_path)
    try:
        for sidecar in sidecars.values():
            sidecar.start()
        wait_mesh(sidecars, timeout=8)
        with Capture(topology, WIRE, WIRE_BRIDGE, tmp_path / "wire.pcap") as capture:
            exercise(topology, list(sidecars))
        assert_only_ipsec(capture.summary, case)
        for sidecar in sidecars.values():
            for peer in sidecar.sas()["peers"]:
                assert peer["keying"] == ("manual" if case.auth == "manual" else "ike")
                (child,) = [c for c in peer["children"] if c["state"] == "installed"]
                assert (child["mode"], child["protocol"], child["encapsulation"]) == (
                    case.mode,
                    case.protocol,
                    case.encapsulation,
                ), child
                assert child["packets_in"] > 0 and child["packets_out"] > 0, child
    finally:
        for sidecar in sidecars.values():
            sidecar.stop()
