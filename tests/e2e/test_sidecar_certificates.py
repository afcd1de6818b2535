"""Two real sidecars whose certificates come from an issuer and are renewed under them.

Each pod runs a small local issuer (the operator's real CSR endpoint code and CA,
support.local_issuer) on its own loopback, standing in for the operator; the sidecars
get only the environment the injecting webhook sets (KIPSEC_OPERATOR_URL,
KIPSEC_TOKEN_FILE, KIPSEC_IDENTITY_DIR) and a document with ``source: operator``.
Certificates live 30 s and are renewed 20 s before they end (every 10 s): the IKE SA and
the child SAs must survive every renewal with the same SPIs, and once the first
certificates have expired a new IKE SA must still authenticate, with the new ones.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from kipsec_operator.certificates.ca import CaState, CertificateAuthority, generate_ca
from support.local_issuer import pod, tunnel_certificate, write_state
from support.netns import Topology, wait_for_output
from support.sidecars import REPO, Sidecar, established, wait_until

pytestmark = pytest.mark.netns

ISSUER_PORT = 18443
LIFETIME = timedelta(seconds=30)


def ike_spis(sidecar: Sidecar, peer: str) -> tuple[str, str]:
    ike = sidecar.peer(peer)["ike_sa"]
    return ike["spi_i"], ike["spi_r"]


def serial(sidecar: Sidecar) -> int:
    cert = x509.load_pem_x509_certificate((identity_dir(sidecar) / "tls.crt").read_bytes())
    return cert.serial_number


def identity_dir(sidecar: Sidecar) -> Path:
    return sidecar.workdir / f"{sidecar.pod}-identity"


def publish(sidecar: Sidecar, topology: Topology, state: CaState) -> None:
    """What the operator does for the pod: its issuer signs with ``state``'s signing CA,
    and its Secret's trust bundle (the document's ``caFiles``) is ``state``'s bundle."""
    work, name = sidecar.workdir, sidecar.pod
    me = pod(name, topology.address(name), namespace="e2e", account=name)
    write_state(
        work / f"{name}-issuer.json",
        state,
        {f"{name}-token": me},
        tunnel_certificate("e2e", duration="30s", renew_before="20s"),
    )
    bundle = work / f"{name}-ca.crt"
    scratch = bundle.with_suffix(".tmp")
    scratch.write_bytes(state.bundle_pem())
    os.replace(scratch, bundle)


def enrol(sidecar: Sidecar, topology: Topology, state: CaState, peer: str) -> None:
    """Start the pod's issuer and write the sidecar's document and environment."""
    work, name = sidecar.workdir, sidecar.pod
    publish(sidecar, topology, state)
    issuer = topology.popen(
        name,
        [
            sys.executable,
            "-m",
            "support.local_issuer",
            "--state",
            str(work / f"{name}-issuer.json"),
            "--listen",
            f"127.0.0.1:{ISSUER_PORT}",
        ],
        stdout=subprocess.PIPE,
        stderr=(work / f"{name}-issuer.log").open("ab"),
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
    )
    assert issuer.stdout is not None
    wait_for_output(issuer.stdout, b"issuer listening", 10)
    (work / f"{name}-token").write_text(f"{name}-token\n")
    directory = identity_dir(sidecar)
    sidecar.env = {
        "KIPSEC_OPERATOR_URL": f"http://127.0.0.1:{ISSUER_PORT}",
        "KIPSEC_TOKEN_FILE": str(work / f"{name}-token"),
        "KIPSEC_IDENTITY_DIR": str(directory),
    }
    auth: dict[str, Any] = {
        "certificate": {
            "certFile": str(directory / "tls.crt"),
            "keyFile": str(directory / "tls.key"),
            "caFiles": [str(work / f"{name}-ca.crt")],
            "source": "operator",
        }
    }
    address = topology.address(peer)
    sidecar.write(
        [{"name": peer, "address": address, "identity": {"address": address}, "start": "onStart"}],
        local={"identity": {"address": topology.address(name)}, "auth": auth},
    )


@dataclass
class Pair:
    a: Sidecar
    b: Sidecar
    state: CaState

    def publish(self, topology: Topology, state: CaState) -> datetime:
        """Publish ``state`` to both pods; returns when (to wait for reloads after it)."""
        self.state = state
        when = datetime.now(UTC)
        for sidecar in (self.a, self.b):
            publish(sidecar, topology, state)
        return when


def enrolled_pair(
    topology: Topology, tmp_path: Path, seed: int
) -> tuple[Sidecar, Sidecar, CaState]:
    """Pods pa and pb on nodes a and b, each with its issuer and a document naming the
    other (not started), and the CA state both were published."""
    topology.add_node("a")
    topology.add_node("b")
    topology.add_pod("pa", "a")
    topology.add_pod("pb", "b")
    state = CaState(signing=new_ca(seed))
    a, b = Sidecar(topology, "pa", tmp_path), Sidecar(topology, "pb", tmp_path)
    enrol(a, topology, state, "pb")
    enrol(b, topology, state, "pa")
    return a, b, state


@pytest.fixture
def pair(topology: Topology, tmp_path: Path) -> Iterator[Pair]:
    a, b, state = enrolled_pair(topology, tmp_path, seed=3)
    try:
        a.start()
        b.start()
        wait_until("pa and pb established", both_established(a, b))
        yield Pair(a, b, state)
    finally:
        for sidecar in (a, b):
            sidecar.stop()


def new_ca(seed: int) -> CertificateAuthority:
    now = datetime.now(UTC)
    return generate_ca(now - timedelta(hours=1), timedelta(days=1), random.Random(seed).randbytes)


def both_established(a: Sidecar, b: Sidecar) -> Callable[[], bool]:
    return lambda: established(a, "pb")() and established(b, "pa")()


def renewals(sidecar: Sidecar) -> int:
    return sidecar.log.read_text().count("certificate renewed")


def reloaded_since(sidecar: Sidecar, since: datetime) -> bool:
    """Whether a reload finished well after ``since`` (so it read what was written then)."""
    margin = since + timedelta(seconds=0.2)
    for line in sidecar.log.read_text().splitlines():
        if "configuration reloaded" in line:
            stamp = datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00"))
            if stamp > margin:
                return True
    return False


def signed_by(sidecar: Sidecar, ca: CertificateAuthority) -> bool:
    cert = x509.load_pem_x509_certificate((identity_dir(sidecar) / "tls.crt").read_bytes())
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def still_up(pair: Pair, topology: Topology, ike: tuple[str, str], children: Any) -> None:
    """The same IKE SA and child SAs as before, carrying traffic, no peer replaced."""
    a, b = pair.a, pair.b
    assert ike_spis(a, "pb") == ike and ike_spis(b, "pa") == ike
    assert (a.spis("pb"), b.spis("pa")) == children
    topology.ping("pa", "pb")
    assert "replaced peer" not in a.log.read_text() + b.log.read_text()


def reauthenticate(pair: Pair, old_ike: tuple[str, str]) -> None:
    """A new IKE SA (so a new IKE_AUTH with today's certificates and bundles) comes up."""
    pair.a.control("terminate", peer="pb")
    wait_until("pa-pb down", lambda: not pair.a.peer("pb")["children"])
    pair.a.control("initiate", peer="pb")
    wait_until("pa-pb established again", both_established(pair.a, pair.b))
    assert ike_spis(pair.a, "pb") != old_ike


def test_renewed_certificates_keep_the_ike_and_child_sas(pair: Pair, topology: Topology) -> None:
    a, b = pair.a, pair.b
    issued_at = time.monotonic()
    first = (serial(a), serial(b))
    ike, children = ike_spis(a, "pb"), (a.spis("pb"), b.spis("pa"))

    wait_until("both renewed twice", lambda: renewals(a) >= 2 and renewals(b) >= 2, timeout=35)

    assert (serial(a), serial(b)) != first
    still_up(pair, topology, ike, children)
    # The first certificates have expired: a new IKE SA authenticates with the new ones.
    time.sleep(max(0.0, issued_at + LIFETIME.total_seconds() + 1 - time.monotonic()))
    reauthenticate(pair, ike)
    topology.ping("pa", "pb")


def test_a_ca_rotation_under_running_sas_keeps_them(pair: Pair, topology: Topology) -> None:
    a, b = pair.a, pair.b
    ike, children = ike_spis(a, "pb"), (a.spis("pb"), b.spis("pa"))
    old, new = pair.state.signing, new_ca(4)

    # prepare: both CAs trusted, the old one signs
    since = pair.publish(topology, pair.state.with_pending(new, datetime.now(UTC)))
    wait_until(
        "bundle old+new applied",
        lambda: reloaded_since(a, since) and reloaded_since(b, since),
        timeout=30,
    )
    # promote: the new CA signs; the next renewals bring certificates from it
    pair.publish(topology, pair.state.promoted(datetime.now(UTC)))
    wait_until("new-CA certificates", lambda: signed_by(a, new) and signed_by(b, new), timeout=25)
    # drop: only the new CA is trusted
    since = pair.publish(topology, CaState(signing=new))
    wait_until(
        "bundle new applied",
        lambda: reloaded_since(a, since) and reloaded_since(b, since),
        timeout=30,
    )

    assert not signed_by(a, old)
    still_up(pair, topology, ike, children)
    reauthenticate(pair, ike)


def test_a_document_naming_source_operator_only_after_start_gets_its_certificate(
    topology: Topology, tmp_path: Path
) -> None:
    # The operator's first document for a pod whose peers have no address yet has no
    # peer and no certificate; the next one names `source: operator`. The running
    # sidecar enrolls then and applies it once the certificate exists (before, it
    # refused that document for good: the certificate file it names did not exist, and
    # nothing would ever write it).
    a, b, _ = enrolled_pair(topology, tmp_path, seed=5)
    later = a.config.read_bytes()
    a.write([], local={"identity": {"address": topology.address("pa")}})
    try:
        a.start()
        b.start()
        assert not (identity_dir(a) / "tls.crt").exists()
        scratch = a.config.with_suffix(".later")
        scratch.write_bytes(later)
        os.replace(scratch, a.config)
        wait_until("pa and pb established", both_established(a, b), timeout=30)
        assert "certificate issued" in a.log.read_text()
        topology.ping("pa", "pb")
    finally:
        for sidecar in (a, b):
            sidecar.stop()
