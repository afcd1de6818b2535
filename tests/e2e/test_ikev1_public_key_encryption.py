"""IKEv1 main mode authenticated by public-key encryption (RFC 2409 sections 5.2 and 5.3,
methods 4 and 5) between two real kipsec sidecars in network namespaces.

strongSwan has no public-key-encryption mode (charon implements methods 1, 3, 9-11 and
hybrid/XAuth variants only), so this pair is kipsec to kipsec; the key derivations are
checked independently in tests/conformance/test_ikev1_key_derivation.py. Each sidecar
gets its RSA certificate and key and the peer's certificate (`peerCertFile`); traffic
(ICMP, UDP, TCP) must cross both ways through the negotiated SAs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from support.netns import Topology, udp_roundtrip
from support.pki import CertificateAuthority
from support.sidecars import (
    MARKER,
    Sidecar,
    established,
    fqdn,
    peer_entry,
    ping_marked,
    tcp_roundtrip,
    wait_until,
)

pytestmark = pytest.mark.netns


NAMES = ("pa", "pb")
PAIRS = (NAMES, NAMES[::-1])


def configure(
    topology: Topology, tmp_path: Path, method: str, *, wrong_peer_key: bool = False
) -> dict[str, Sidecar]:
    """Two RSA sidecars, each told the other's certificate; ``wrong_peer_key``: pa is
    told a certificate with pb's name but another key (so it encrypts to the wrong key)."""
    for name in NAMES:
        topology.add_node(name[1:])
        topology.add_pod(name, name[1:])
    ca = CertificateAuthority.root("kipsec ikev1 public-key encryption e2e root")
    sidecars = {name: Sidecar(topology, name, tmp_path) for name in NAMES}
    auths: dict[str, dict[str, Any]] = {}
    for slot, name in enumerate(NAMES):
        issued = ca.issue(name, dns=[fqdn(name)], key_kind="rsa", key_slot=60 + slot)
        auths[name] = sidecars[name].certificate_auth(issued, ca)
    peer_files = {peer: auths[peer]["certificate"]["certFile"] for peer in NAMES}
    if wrong_peer_key:
        impostor = ca.issue("pb", dns=[fqdn("pb")], key_kind="rsa", key_slot=62)
        peer_files["pb"] = str(tmp_path / "pb-impostor.crt")
        Path(peer_files["pb"]).write_bytes(impostor.cert.public_bytes(Encoding.PEM))
    for name, peer in PAIRS:
        auth = auths[name]
        auth["certificate"]["publicKeyEncryption"] = method
        auth["certificate"]["peerCertFile"] = peer_files[peer]
        sidecars[name].write(
            [peer_entry(topology, peer, ikeVersion=1)],
            local={"auth": auth},
            proposals={"esp": ["aes128-sha256"]},
        )
    return sidecars


@pytest.mark.parametrize("method", ["rsa", "revised"])
def test_two_sidecars_authenticate_by_public_key_encryption(
    topology: Topology, tmp_path: Path, method: str
) -> None:
    sidecars = configure(topology, tmp_path, method)
    try:
        for sidecar in sidecars.values():
            sidecar.start()
        wait_until(
            "both IKEv1 SAs",
            lambda: all(established(sidecars[a], b)() for a, b in PAIRS),
            timeout=20,
        )
        for a, b in PAIRS:
            assert sidecars[a].peer(b)["ike_sa"]["ike_version"] == 1
        for number, (src, dst) in enumerate(PAIRS):
            ping_marked(topology, src, dst)
            assert udp_roundtrip(topology, src, dst, MARKER, port=7700 + number) == MARKER
            tcp_roundtrip(topology, src, dst, port=7800 + number)
    finally:
        for sidecar in sidecars.values():
            sidecar.stop()


def test_encrypting_to_the_wrong_peer_key_establishes_nothing(
    topology: Topology, tmp_path: Path
) -> None:
    """pa's peerCertFile names pb but holds another key: with signatures it would not
    matter; with public-key encryption pb cannot open pa's nonce and nothing comes up."""
    sidecars = configure(topology, tmp_path, "rsa", wrong_peer_key=True)
    try:
        for sidecar in sidecars.values():
            sidecar.start()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert not any(established(sidecars[a], b)() for a, b in PAIRS)
            time.sleep(0.5)
    finally:
        for sidecar in sidecars.values():
            sidecar.stop()
