"""The daemon's reload across certificate renewals under IKEv1 public-key encryption:
it keeps the private key a renewal replaced for
:data:`~kipsec_sidecar.daemon.reload.RETIRED_KEY_GRACE` and drops it when the grace ends
or a reload changes the identity; a renewed peer certificate refreshes the peer in
place; the live ISAKMP SAs re-authenticate with the renewed credentials.

A real :class:`Sidecar` reloading documents from files, off the network (a recording
datapath, no sockets); the main modes across a renewal are in
``test_ikev1_retired_key.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from kipsec_sidecar.core.ike.config import RetiredKey
from kipsec_sidecar.daemon.reload import RETIRED_KEY_GRACE, retired_key
from kipsec_sidecar.daemon.sidecar import Sidecar
from support.pki import CertificateAuthority, Issued
from support.recording_datapath import offline_sidecar

CA = CertificateAuthority.root("kipsec retired key ca", key_slot=12)
OLD = CA.issue("pod-a", key_kind="rsa", key_slot=87, dns=["pod-a.test"])
RENEWED = CA.issue("pod-a", key_kind="rsa", key_slot=88, dns=["pod-a.test"])
OTHER = CA.issue("pod-c", key_kind="rsa", key_slot=89, dns=["pod-c.test"])
AGAIN = CA.issue("pod-a", key_kind="rsa", key_slot=90, dns=["pod-a.test"])
PEER = CA.issue("pod-b", key_kind="rsa", key_slot=91, dns=["pod-b.test"])
PEER_RENEWED = CA.issue("pod-b", key_kind="rsa", key_slot=84, dns=["pod-b.test"])
PEER_OTHER = CA.issue("pod-d", key_kind="rsa", key_slot=83, dns=["pod-d.test"])


def write_identity(directory: Path, leaf: Issued) -> None:
    (directory / "tls.crt").write_bytes(leaf.cert.public_bytes(Encoding.PEM))
    (directory / "tls.key").write_bytes(
        leaf.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )


def write_document(directory: Path) -> Path:
    (directory / "ca.crt").write_bytes(CA.cert.public_bytes(Encoding.PEM))
    (directory / "peer.crt").write_bytes(PEER.cert.public_bytes(Encoding.PEM))
    certificate = {
        "certFile": "tls.crt",
        "keyFile": "tls.key",
        "caFiles": ["ca.crt"],
        "peerCertFile": "peer.crt",
        "publicKeyEncryption": "rsa",
    }
    doc = {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {"addresses": ["10.78.0.1"], "auth": {"certificate": certificate}},
        "peers": [
            {
                "name": "pb",
                "address": "10.78.0.2",
                "ikeVersion": 1,
                "start": "onDemand",
                "identity": {"fqdn": "pod-b.test"},
            }
        ],
    }
    path = directory / "config.yaml"
    path.write_text(json.dumps(doc))
    return path


def retired(car: Sidecar) -> RetiredKey | None:
    return retired_key(car.peers["pb"].plan)


Timers = list[tuple[float, Callable[[], None]]]


async def renewed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Sidecar, RetiredKey, Timers]:
    """A started sidecar whose key OLD was renewed (RENEWED) and reloaded: the key kept
    and the timers the reload set (recorded, and set)."""
    write_identity(tmp_path, OLD)
    car = offline_sidecar(write_document(tmp_path), monkeypatch)
    await car.start()
    assert retired(car) is None
    timers: Timers = []
    call_at = car.loop.call_at

    def recorded(when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        timers.append((when, callback))
        return call_at(when, callback)

    monkeypatch.setattr(car.loop, "call_at", recorded)
    write_identity(tmp_path, RENEWED)
    reloaded_at = car.loop.time()
    assert await car.reload() == ["renewed credentials of peer pb (SAs kept)"]
    kept = retired(car)
    assert kept is not None and kept.private_key is not None
    assert reloaded_at + RETIRED_KEY_GRACE <= kept.until <= car.loop.time() + RETIRED_KEY_GRACE
    return car, kept, timers


def test_a_renewal_keeps_the_replaced_key_for_the_grace_then_drops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        car, kept, timers = await renewed(tmp_path, monkeypatch)
        assert kept.private_key.public_key() == OLD.cert.public_key()
        ike = car.peers["pb"].plan.ike
        assert ike is not None  # what signs and what is sent: the new key
        assert ike.auth.private_key.public_key() == RENEWED.cert.public_key()
        assert timers == [(kept.until, kept.drop)]

        assert await car.reload() == []  # nothing changed: the same key, the same grace
        assert retired(car) is kept and len(timers) == 1
        timers[0][1]()  # the grace ends
        assert kept.private_key is None

        car.hurry()
        await car.stop()

    asyncio.run(main())


def test_a_reload_that_changes_the_identity_drops_the_replaced_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        car, kept, _ = await renewed(tmp_path, monkeypatch)
        write_identity(tmp_path, OTHER)
        assert await car.reload() == ["replaced peer pb (configuration changed)"]
        assert kept.private_key is None and retired(car) is None

        car.hurry()
        await car.stop()

    asyncio.run(main())


def test_a_second_renewal_within_the_grace_keeps_only_the_newer_replaced_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        car, kept, timers = await renewed(tmp_path, monkeypatch)
        write_identity(tmp_path, AGAIN)
        assert await car.reload() == ["renewed credentials of peer pb (SAs kept)"]
        newer = retired(car)
        assert kept.private_key is None
        assert newer is not None and newer.private_key.public_key() == RENEWED.cert.public_key()
        assert [cb for _, cb in timers] == [kept.drop, newer.drop]

        car.hurry()
        await car.stop()

    asyncio.run(main())


def test_a_renewed_peer_certificate_refreshes_in_place_and_the_live_sa_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer renewed (our document's ``peerCertFile`` names its new certificate, the
    same identity): its SAs stay, and the ISAKMP SA alive then re-authenticates with the
    new plan (it encrypts to the peer's new key). Another identity replaces the peer."""

    async def main() -> None:
        write_identity(tmp_path, OLD)
        car = offline_sidecar(write_document(tmp_path), monkeypatch)
        sent: list[bytes] = []
        monkeypatch.setattr(car.sockets, "send", lambda data, *_a, **_k: sent.append(data))
        await car.start()
        await car.initiate("pb")
        (sa,) = car.peers["pb"].live_sas()
        assert sent  # main mode message 1

        (tmp_path / "peer.crt").write_bytes(PEER_RENEWED.cert.public_bytes(Encoding.PEM))
        assert await car.reload() == ["renewed credentials of peer pb (SAs kept)"]
        assert car.peers["pb"].live_sas() == [sa]
        assert sa.config is car.peers["pb"].plan.ike
        assert sa.config.auth.peer_certificate == PEER_RENEWED.der

        (tmp_path / "peer.crt").write_bytes(PEER_OTHER.cert.public_bytes(Encoding.PEM))
        assert await car.reload() == ["replaced peer pb (configuration changed)"]

        car.hurry()
        await car.stop()

    asyncio.run(main())
