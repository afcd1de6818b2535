"""Interoperability with strongSwan: a kipsec sidecar and charon negotiate, carry traffic,
rekey and delete, each side taking its turn as the one that acts.

Topology: two nodes, a pod behind each, no plain route between the pod CIDRs, so pod
traffic crosses only inside the tunnel. charon (kernel-libipsec, see
``support.strongswan``) runs on node b as the gateway of pod CIDR 10.10.2.0/24 —
libipsec cannot protect traffic to its own IKE address, so it must be a gateway, and
its peer must then be one too: the kipsec sidecar runs on node a as the gateway of
10.10.1.0/24 (the userspace datapath routes forwarded traffic into its TUN device just
like a pod's own). libipsec always sends ESP in UDP 4500 and makes both sides believe a
NAT is present, so this also exercises kipsec's NAT-T switch.

Each side is driven with its own tools: the ``kipsec-sidecar`` CLI (``rekey --child|--ike``,
``terminate``; ``sas --json`` through the control socket) and vici (what ``swanctl
--rekey``/``--terminate`` send).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from support.interop import (
    add_gateway_nodes,
    assert_traffic_both_ways_only_encrypted,
    gateway_peer,
    kipsec_installed_spis,
    mirrored,
)
from support.netns import Topology
from support.pki import CertificateAuthority
from support.sidecars import (
    PSK,
    Sidecar,
    established,
    fqdn,
    wait_until,
)
from support.strongswan import CertAuth, Charon, CharonFactory, IkeSa, Psk, gateway_pair

pytestmark = pytest.mark.netns

AuthKind = Literal["psk", "ecdsa"]
ESP_NAMES = {
    "aes256gcm16": ("aes-gcm-16-256", "AES_GCM_16"),
    "chacha20poly1305": ("chacha20-poly1305-256", "CHACHA20_POLY1305"),
}
"""ESP proposal → (kipsec's name in ``sas --json``, charon's ``encr-alg``)."""

Setup = Callable[..., tuple[Sidecar, Charon]]


@pytest.fixture
def interop(gateway_topology: Topology, strongswan_factory: CharonFactory, tmp_path: Path) -> Setup:
    """``setup(auth, esp, kipsec_initiates)`` → an established (kipsec on a, charon on b)."""
    topo = gateway_topology
    add_gateway_nodes(topo)

    def setup(
        auth: AuthKind = "psk",
        esp: str = "aes256gcm16",
        kipsec_initiates: bool = True,
        *,
        kipsec_psk: dict[str, Any] | None = None,
        charon_secret: str = PSK,
        workers: int = 1,
    ) -> tuple[Sidecar, Charon]:
        sidecar = Sidecar(topo, "a", tmp_path)
        local: dict[str, Any] = {}
        if auth == "psk":
            charon_auth: Psk | CertAuth = Psk(charon_secret)
            if kipsec_psk is not None:
                local["auth"] = {"psk": kipsec_psk}
        else:
            root = CertificateAuthority.root("kipsec interop root")
            ours = root.issue("a", dns=[fqdn("a")], key_kind="ec256", key_slot=60)
            theirs = root.issue("b", dns=[fqdn("b")], key_kind="ec256", key_slot=61)
            local["auth"] = sidecar.certificate_auth(ours, root)
            charon_auth = CertAuth(theirs, (root.cert,))
        peer = gateway_peer(
            topo,
            start="onStart" if kipsec_initiates else "onDemand",
        )
        sidecar.write(
            [peer],
            local=local,
            proposals={"ike": ["aes256gcm16-prfsha256-x25519"], "esp": [esp]},
            **({"datapathWorkers": workers} if workers != 1 else {}),
        )
        _, conn_b = gateway_pair(
            topo,
            "a",
            "b",
            auth=(charon_auth, charon_auth),
            ids=(fqdn("a"), fqdn("b")),
            child_options={"esp_proposals": (esp,)},
        )
        charon = strongswan_factory(topo, "b")
        charon.configure(conn_b)
        charon.load()
        sidecar.start()
        if not kipsec_initiates:
            charon.initiate("net", timeout=8)
        charon.wait_established(child="net", timeout=8)
        wait_until("kipsec established with charon", established(sidecar, "b"), timeout=8)
        return sidecar, charon

    return setup


def ike_spis(charon: Charon) -> set[tuple[str, str]]:
    return {(sa.initiator_spi, sa.responder_spi) for sa in charon.list_sas()}


def kipsec_ike_spis(sidecar: Sidecar) -> tuple[str, str]:
    ike = sidecar.peer("b")["ike_sa"]
    return (ike["spi_i"], ike["spi_r"])


@pytest.mark.parametrize(
    ("kipsec_initiates", "auth", "esp"),
    [
        (True, "psk", "aes256gcm16"),
        (True, "ecdsa", "chacha20poly1305"),
        (False, "psk", "chacha20poly1305"),
        (False, "ecdsa", "aes256gcm16"),
    ],
    ids=["kipsec-initiates-psk-gcm", "kipsec-initiates-ecdsa-chacha",
         "strongswan-initiates-psk-chacha", "strongswan-initiates-ecdsa-gcm"],
)  # fmt: skip
def test_kipsec_and_strongswan_establish_and_carry_pod_traffic(
    interop: Setup,
    gateway_topology: Topology,
    tmp_path: Path,
    kipsec_initiates: bool,
    auth: AuthKind,
    esp: str,
) -> None:
    sidecar, charon = interop(auth, esp, kipsec_initiates)
    sa: IkeSa = charon.wait_established(child="net")
    assert sa.initiator is not kipsec_initiates
    assert sa.remote_id == fqdn("a")
    view = sidecar.peer("b")
    assert view["ike_sa"]["initiator"] is kipsec_initiates
    assert view["ike_sa"]["nat_detected"], "libipsec fakes a NAT: kipsec must see one"
    assert_traffic_both_ways_only_encrypted(gateway_topology, tmp_path / "wire.pcap")
    (child,) = sidecar.installed("b")
    kipsec_name, charon_name = ESP_NAMES[esp]
    assert child["encryption"] == kipsec_name and child["encapsulation"] == "udp", child
    charon_child = charon.wait_established(child="net").child("net")
    assert charon_child is not None and charon_child.encr_alg == charon_name
    assert mirrored(sidecar, charon)
    assert child["packets_in"] >= 4 and child["packets_out"] >= 4, child


@pytest.mark.parametrize(
    ("kipsec_form", "charon_form"),
    [("0x", "text"), ("0s", "0x")],
    ids=["kipsec-hex-file-charon-text", "kipsec-base64-inline-charon-hex"],
)
def test_a_psk_written_in_hex_or_base64_is_the_same_key_to_strongswan(
    interop: Setup, gateway_topology: Topology, tmp_path: Path, kipsec_form: str, charon_form: str
) -> None:
    """swanctl.conf's ``0x``/``0s`` forms mean the same bytes to kipsec (file and inline)."""
    key = PSK.encode()
    forms = {"0x": "0x" + key.hex(), "0s": "0s" + base64.b64encode(key).decode(), "text": PSK}
    if kipsec_form == "0x":
        (tmp_path / "psk").write_text(forms["0x"] + "\n")
        kipsec_psk: dict[str, Any] = {"secretFile": str(tmp_path / "psk")}
    else:
        kipsec_psk = {"value": forms[kipsec_form]}
    interop("psk", "aes256gcm16", True, kipsec_psk=kipsec_psk, charon_secret=forms[charon_form])
    assert_traffic_both_ways_only_encrypted(gateway_topology, tmp_path / "wire.pcap")


@pytest.mark.parametrize("workers", [1, 2], ids=["workers1", "workers2"])
def test_child_rekeys_initiated_by_either_side_keep_traffic_flowing(
    interop: Setup, gateway_topology: Topology, tmp_path: Path, workers: int
) -> None:
    """Also with the two-worker datapath: one SA per direction is all strongSwan needs."""
    sidecar, charon = interop("psk", "aes256gcm16", True, workers=workers)
    first = kipsec_installed_spis(sidecar)
    sidecar.cli("rekey", "--child", "b")
    wait_until(
        "charon to hold kipsec's rekeyed child",
        lambda: mirrored(sidecar, charon) and kipsec_installed_spis(sidecar).isdisjoint(first),
        timeout=5,
    )
    assert_traffic_both_ways_only_encrypted(gateway_topology, tmp_path / "after-kipsec.pcap")
    second = kipsec_installed_spis(sidecar)
    assert charon.rekey(child="net") >= 1  # charon counts one match per queued task
    wait_until(
        "kipsec to hold charon's rekeyed child",
        lambda: (
            mirrored(sidecar, charon) and kipsec_installed_spis(sidecar).isdisjoint(first | second)
        ),
        timeout=5,
    )
    assert_traffic_both_ways_only_encrypted(gateway_topology, tmp_path / "after-charon.pcap")
    assert sidecar.sas()["rekeys"]["child"] >= 2


def test_ike_rekeys_initiated_by_either_side_keep_the_children(
    interop: Setup, gateway_topology: Topology, tmp_path: Path
) -> None:
    sidecar, charon = interop("ecdsa", "aes256gcm16", False)
    children = kipsec_installed_spis(sidecar)
    first = kipsec_ike_spis(sidecar)
    assert not sidecar.peer("b")["ike_sa"]["initiator"], "charon initiated"
    sidecar.cli("rekey", "--ike", "b")
    wait_until(
        "both sides on kipsec's new IKE SA",
        lambda: (
            kipsec_ike_spis(sidecar) != first and ike_spis(charon) == {kipsec_ike_spis(sidecar)}
        ),
        timeout=5,
    )
    second = kipsec_ike_spis(sidecar)
    # The new IKE SA's original initiator is the side that rekeyed (RFC 7296 2.18).
    assert sidecar.peer("b")["ike_sa"]["initiator"], "kipsec rekeyed the IKE SA"
    assert charon.rekey(ike="gw") >= 1
    wait_until(
        "both sides on charon's new IKE SA",
        lambda: (
            kipsec_ike_spis(sidecar) not in (first, second)
            and ike_spis(charon) == {kipsec_ike_spis(sidecar)}
        ),
        timeout=5,
    )
    assert not sidecar.peer("b")["ike_sa"]["initiator"], "charon rekeyed the IKE SA"
    assert kipsec_installed_spis(sidecar) == children, "an IKE rekey keeps the CHILD_SAs"
    assert mirrored(sidecar, charon)
    assert_traffic_both_ways_only_encrypted(gateway_topology, tmp_path / "wire.pcap")
    assert sidecar.sas()["rekeys"]["ike"] >= 2


def test_delete_from_kipsec_is_noticed_by_strongswan(
    interop: Setup, gateway_topology: Topology
) -> None:
    sidecar, charon = interop("psk", "aes256gcm16", False)
    old = kipsec_ike_spis(sidecar)
    sidecar.cli("terminate", "b")
    charon.wait_for(lambda sas: not sas, timeout=5, what="charon to drop the deleted IKE_SA")
    view = sidecar.peer("b")
    assert view["ike_sa"] is None and view["children"] == [], view
    # terminate holds the peer down (its packets are dropped) until initiate, which
    # brings a new IKE SA, now initiated by kipsec, and charon accepts it.
    sidecar.cli("initiate", "b")
    wait_until("kipsec and charon on one new IKE SA", lambda: mirrored(sidecar, charon), 5)
    assert ike_spis(charon) == {kipsec_ike_spis(sidecar)} and kipsec_ike_spis(sidecar) != old
    assert sidecar.peer("b")["ike_sa"]["initiator"] is True


def test_delete_from_strongswan_is_noticed_by_kipsec(
    interop: Setup, gateway_topology: Topology
) -> None:
    sidecar, charon = interop("psk", "chacha20poly1305", True)
    old_ike, old_children = kipsec_ike_spis(sidecar), kipsec_installed_spis(sidecar)
    charon.terminate(ike="gw")

    def dropped() -> bool:
        view = sidecar.peer("b")
        ike = view["ike_sa"]
        spis = {(c["spi_in"], c["spi_out"]) for c in view["children"]}
        return (ike is None or (ike["spi_i"], ike["spi_r"]) != old_ike) and not spis & old_children

    wait_until("kipsec to drop the SAs charon deleted", dropped, timeout=5)
    # kipsec's peer is onStart: it re-establishes (after a backoff) and charon accepts.
    wait_until("a new IKE SA on both sides", lambda: mirrored(sidecar, charon), timeout=6)
    assert ike_spis(charon) == {kipsec_ike_spis(sidecar)}
    assert kipsec_ike_spis(sidecar) != old_ike
