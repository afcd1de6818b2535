"""Manual keying: per-link SPIs and keys from a master key, mirrored, rotated by new SPIs."""

from __future__ import annotations

from kipsec_operator.crds.models import TunnelSpec
from kipsec_operator.reconcile.cluster import Cluster, PodRef
from kipsec_operator.reconcile.manual import ManualSaPair, derive_pair, manual_link
from kipsec_operator.reconcile.peers import Link
from kipsec_sidecar.config.proposals import parse_manual_algorithms
from support.operator_objects import MASTER_KEY_HEX, secret

A = PodRef("ns", "a", "uid-a", ("10.0.0.1",))
B = PodRef("ns", "b", "uid-b", ("10.0.0.2",))
C = PodRef("ns", "c", "uid-c", ("10.0.0.3",))
TUNNEL = ("ns", "t")
AES_GCM = parse_manual_algorithms("aes256gcm16", None, "esp")
MASTER = bytes.fromhex(MASTER_KEY_HEX)


def _pair(local: PodRef, remote: PodRef, master: bytes = MASTER) -> ManualSaPair:
    return derive_pair(master, Link(TUNNEL, local, remote, "mesh"), AES_GCM)


def test_the_two_ends_of_a_link_mirror_each_other() -> None:
    ours, theirs = _pair(A, B), _pair(B, A)
    assert (ours.spi_in, ours.spi_out) == (theirs.spi_out, theirs.spi_in)
    assert ours.inbound == theirs.outbound
    assert ours.outbound == theirs.inbound


def test_each_direction_and_each_link_has_its_own_spi_and_keys() -> None:
    ab, ac = _pair(A, B), _pair(A, C)
    spis = {ab.spi_in, ab.spi_out, ac.spi_in, ac.spi_out}
    assert len(spis) == 4
    assert ab.inbound.encryption != ab.outbound.encryption
    assert all(256 <= spi <= 0xFFFFFFFF for spi in spis)


def test_keys_have_the_length_the_algorithm_needs() -> None:
    pair = _pair(A, B)
    assert len(pair.inbound.encryption) == 36
    assert pair.inbound.integrity == b""


def test_derivation_is_deterministic() -> None:
    assert _pair(A, B) == _pair(A, B)


def test_a_recreated_pod_gets_new_keys() -> None:
    again = PodRef("ns", "b", "uid-b2", ("10.0.0.2",))
    assert _pair(A, B).spi_out != _pair(A, again).spi_out


def test_a_new_master_key_brings_new_spis() -> None:
    old, new = _pair(A, B), _pair(A, B, bytes.fromhex("22" * 32))
    assert {old.spi_in, old.spi_out}.isdisjoint({new.spi_in, new.spi_out})


def test_a_previous_key_in_the_secret_keeps_the_old_pair_for_the_overlap() -> None:
    data = {"key": "33" * 32, "previousKey": MASTER_KEY_HEX}
    cluster = Cluster.of([secret("master", data, namespace="ns")])
    spec = TunnelSpec.model_validate(
        {
            "selector": {"from": {}},
            "keying": "manual",
            "manual": {"secretRef": {"name": "master"}},
        }
    )
    derived = manual_link(Link(TUNNEL, A, B, "mesh"), spec, cluster)
    assert derived is not None
    assert derived.previous == _pair(A, B)
    assert derived.current == _pair(A, B, bytes.fromhex("33" * 32))


def test_the_keys_document_holds_only_the_keys_the_algorithm_uses() -> None:
    hmac = parse_manual_algorithms(None, "sha256", "ah")
    pair = derive_pair(MASTER, Link(TUNNEL, A, B, "mesh"), hmac)
    assert pair.keys_document().splitlines()[0].startswith("integrityIn: ")
    assert "encryption" not in pair.keys_document()
