"""Reload of certificate credentials: renewed in place (SAs kept) or the peer replaced.

A renewed certificate of the same identity, and a trust bundle that grows or shrinks
during a CA rotation, must not tear the peer's SAs down; another identity, or trust
anchors with nothing in common, must.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from kipsec_sidecar.config.load import load_config_data
from kipsec_sidecar.config.to_core import PeerPlan, to_core
from kipsec_sidecar.daemon.reload import credentials_only, diff, fingerprints
from support.pki import CertificateAuthority, Issued

OLD_CA = CertificateAuthority.root("kipsec ca 1", key_slot=10)
NEW_CA = CertificateAuthority.root("kipsec ca 2", key_slot=11)
OTHER_CA = CertificateAuthority.root("someone else", key_slot=12)
POD_IP = "10.1.0.5"


def leaf(ca: CertificateAuthority, key_slot: int, account: str = "cart") -> Issued:
    return ca.issue(
        account, key_slot=key_slot, ips=[POD_IP], uris=[f"spiffe://c/ns/s/sa/{account}"]
    )


def plan(identity: Issued, *anchors: CertificateAuthority, **peer: Any) -> PeerPlan:
    files = {
        "/id/tls.crt": identity.cert.public_bytes(Encoding.PEM),
        "/id/tls.key": identity.key.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        ),
        "/etc/kipsec/ca.crt": b"".join(a.cert.public_bytes(Encoding.PEM) for a in anchors),
    }
    doc = {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {
            "addresses": [POD_IP],
            "identity": {"address": POD_IP},
            "auth": {
                "certificate": {
                    "certFile": "/id/tls.crt",
                    "keyFile": "/id/tls.key",
                    "caFiles": ["/etc/kipsec/ca.crt"],
                    "source": "operator",
                }
            },
        },
        "peers": [{"name": "pb", "address": "10.1.0.6", **peer}],
    }
    (only,) = to_core(load_config_data(doc), read_file=files.__getitem__)
    return only


def reload(old: PeerPlan, new: PeerPlan) -> tuple[tuple[str, ...], tuple[str, ...]]:
    result = diff(fingerprints([old]), fingerprints([new]))
    result = result.refreshing({"pb": old}, {"pb": new})
    return result.refresh, result.replace


def test_a_renewed_certificate_and_key_of_the_same_identity_refresh_in_place() -> None:
    before, after = plan(leaf(OLD_CA, 20), OLD_CA), plan(leaf(OLD_CA, 21), OLD_CA)

    assert credentials_only(before, after)
    assert reload(before, after) == (("pb",), ())


def test_the_refresh_is_announced_as_a_renewal() -> None:
    before, after = plan(leaf(OLD_CA, 20), OLD_CA), plan(leaf(OLD_CA, 21), OLD_CA)
    result = diff(fingerprints([before]), fingerprints([after]))

    lines = result.refreshing({"pb": before}, {"pb": after}).lines()

    assert lines == ["renewed credentials of peer pb (SAs kept)"]


def test_a_ca_rotation_adding_then_dropping_a_ca_refreshes_in_place() -> None:
    start = plan(leaf(OLD_CA, 20), OLD_CA)
    overlap = plan(leaf(OLD_CA, 20), OLD_CA, NEW_CA)
    promoted = plan(leaf(NEW_CA, 21), OLD_CA, NEW_CA)
    done = plan(leaf(NEW_CA, 21), NEW_CA)

    assert reload(start, overlap) == (("pb",), ())
    assert reload(overlap, promoted) == (("pb",), ())
    assert reload(promoted, done) == (("pb",), ())


def test_trust_anchors_with_nothing_in_common_replace_the_peer() -> None:
    before, after = plan(leaf(OLD_CA, 20), OLD_CA), plan(leaf(OTHER_CA, 21), OTHER_CA)

    assert not credentials_only(before, after)
    assert reload(before, after) == ((), ("pb",))


def test_a_certificate_for_another_identity_replaces_the_peer() -> None:
    before = plan(leaf(OLD_CA, 20), OLD_CA)
    after = plan(leaf(OLD_CA, 21, account="checkout"), OLD_CA)

    assert reload(before, after) == ((), ("pb",))


def test_a_changed_link_with_renewed_credentials_replaces_the_peer() -> None:
    before = plan(leaf(OLD_CA, 20), OLD_CA)
    after = plan(leaf(OLD_CA, 21), OLD_CA, mode="transport")

    assert reload(before, after) == ((), ("pb",))


def test_an_unchanged_certificate_is_neither_refreshed_nor_replaced() -> None:
    same = leaf(OLD_CA, 20)
    before, after = plan(same, OLD_CA), plan(same, OLD_CA)

    assert reload(before, after) == ((), ())
