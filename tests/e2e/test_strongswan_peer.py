"""The strongSwan test-peer harness: two charons as node gateways carry pod traffic.

These prove the scaffolding the interop tests stand on: charon starts in a namespace
with its own config, establishes with PSK and with ECDSA certificates, pod-to-pod
traffic flows through the tunnel, and a capture between the nodes shows only IPsec —
never the plaintext marker the pods sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from support.capture import Capture
from support.netns import WIRE, WIRE_BRIDGE, Topology, udp_roundtrip
from support.pki import CertificateAuthority, KeyKind
from support.strongswan import (
    Auth,
    CertAuth,
    Charon,
    CharonFactory,
    CharonTimeout,
    Psk,
    gateway_pair,
    render,
)

pytestmark = pytest.mark.netns

MARKER = b"kipsec-plaintext-marker-7f3a"
PING_PATTERN = MARKER[:16].hex()
"""``ping -p`` fills the ICMP payload with up to 16 pattern bytes."""
PSK = Psk("kipsec-test-psk-0123456789abcdef")


def gateways(
    topo: Topology,
    strongswan_factory: CharonFactory,
    auth: tuple[Auth, Auth],
    ids: tuple[str, str] = ("left.kipsec.test", "right.kipsec.test"),
    **options: Any,
) -> tuple[Charon, Charon]:
    """Nodes a and b with a pod each, and a loaded charon on each node."""
    topo.add_node("a")
    topo.add_node("b")
    topo.add_pod("pa", "a")
    topo.add_pod("pb", "b")
    left = strongswan_factory(topo, "a")
    right = strongswan_factory(topo, "b")
    conn_left, conn_right = gateway_pair(topo, "a", "b", auth=auth, ids=ids, **options)
    left.configure(conn_left)
    right.configure(conn_right)
    left.load()
    right.load()
    return left, right


def assert_pods_talk_only_through_ipsec(topo: Topology, tmp_path: Path) -> None:
    with Capture(topo, WIRE, WIRE_BRIDGE, tmp_path / "wire.pcap") as capture:
        topo.run("pa", "ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "2",
                 "-p", PING_PATTERN, topo.address("pb"))  # fmt: skip
        assert udp_roundtrip(topo, "pa", "pb", MARKER) == MARKER
        assert udp_roundtrip(topo, "pb", "pa", MARKER) == MARKER
    summary = capture.summary
    assert summary.kinds["esp-in-udp"] >= 8, summary.describe()
    assert not summary.unexpected(), summary.describe()
    assert not summary.contains(MARKER), summary.describe()
    assert not summary.contains(MARKER[:16]), summary.describe()


@pytest.mark.parametrize(
    ("esp_proposal", "encr_alg"),
    [("aes256gcm16", "AES_GCM_16"), ("chacha20poly1305", "CHACHA20_POLY1305")],
)
def test_psk_gateways_establish_and_carry_pod_traffic_encrypted(
    gateway_topology: Topology,
    strongswan_factory: CharonFactory,
    tmp_path: Path,
    esp_proposal: str,
    encr_alg: str,
) -> None:
    left, right = gateways(
        gateway_topology,
        strongswan_factory,
        (PSK, PSK),
        child_options={"esp_proposals": (esp_proposal,)},
    )
    left.initiate("net")
    sa = right.wait_established(child="net", timeout=5)
    assert (sa.remote_id, sa.initiator, sa.encr_alg) == ("left.kipsec.test", False, "AES_GCM_16")
    assert_pods_talk_only_through_ipsec(gateway_topology, tmp_path)
    child = left.wait_established(child="net").child("net")
    assert child is not None
    assert child.encr_alg == encr_alg
    assert child.packets_out >= 4
    assert child.encap, "libipsec always encapsulates ESP in UDP"


@pytest.mark.parametrize("key_kind", ["ec256", "rsa"])
def test_certificate_gateways_establish_and_carry_pod_traffic_encrypted(
    gateway_topology: Topology, strongswan_factory: CharonFactory, tmp_path: Path, key_kind: KeyKind
) -> None:
    root = CertificateAuthority.root("kipsec interop root")
    left_cert = root.issue("left", dns=["left.kipsec.test"], key_kind=key_kind, key_slot=20)
    right_cert = root.issue("right", dns=["right.kipsec.test"], key_kind=key_kind, key_slot=21)
    left, right = gateways(
        gateway_topology,
        strongswan_factory,
        (CertAuth(left_cert, (root.cert,)), CertAuth(right_cert, (root.cert,))),
    )
    right.initiate("net")
    sa = left.wait_established(child="net", timeout=5)
    assert sa.remote_id == "right.kipsec.test"
    assert_pods_talk_only_through_ipsec(gateway_topology, tmp_path)


def test_psk_mismatch_fails_with_the_log_in_the_message(
    gateway_topology: Topology, strongswan_factory: CharonFactory
) -> None:
    left, _right = gateways(
        gateway_topology, strongswan_factory, (PSK, Psk("another-psk-of-sufficient-length"))
    )
    with pytest.raises(CharonTimeout, match="charon a log") as failure:
        left.initiate("net", timeout=3)
    assert "AUTHENTICATION_FAILED" in str(failure.value)


def test_child_rekey_and_terminate_are_seen_by_the_peer(
    gateway_topology: Topology, strongswan_factory: CharonFactory
) -> None:
    left, right = gateways(gateway_topology, strongswan_factory, (PSK, PSK))
    left.initiate("net")
    before = right.wait_established(child="net").child("net")
    assert before is not None
    assert left.rekey(child="net") == 1
    right.wait_for(
        lambda sas: any(
            c.state == "INSTALLED" and c.spi_in != before.spi_in for sa in sas for c in sa.children
        ),
        timeout=5,
        what="a rekeyed CHILD_SA",
    )
    left.terminate(ike="gw")
    right.wait_for(lambda sas: not sas, timeout=5, what="the IKE_SA to be deleted")


def test_capture_catches_cleartext_once_the_tunnel_is_gone(
    topology: Topology, strongswan_factory: CharonFactory, tmp_path: Path
) -> None:
    """With plain pod routes present, deleting the CHILD_SA lets pod traffic out in the
    clear (libipsec fails open): the wire assertion must catch it."""
    left, right = gateways(topology, strongswan_factory, (PSK, PSK))
    left.initiate("net")
    right.wait_established(child="net")
    left.terminate(ike="gw")
    right.wait_for(lambda sas: not sas, timeout=5, what="the IKE_SA to be deleted")
    with pytest.raises(AssertionError, match="kinds"):
        assert_pods_talk_only_through_ipsec(topology, tmp_path)


def test_swanctl_conf_has_one_key_per_line() -> None:
    text = render({"conn": {"local_addrs": ["192.0.2.1", "192.0.2.2"], "encap": True}})
    assert text.splitlines() == [
        "conn {",
        "    local_addrs = 192.0.2.1,192.0.2.2",
        "    encap = yes",
        "}",
    ]
