"""IKE handshakes per second between two in-memory peers: IKEv2 (IKE_SA_INIT + IKE_AUTH)
and IKEv1 (main mode + quick mode).

Run: ``.venv/bin/python bench/ike_handshakes.py [--seconds 2]``

Each row runs complete handshakes — initiator IkeSa against a responder Endpoint, with
the first child SA, through :mod:`support.ike_pair` (no sockets, fake clock) — for about
``--seconds`` of wall time, and prints handshakes per second and the mean time of one.
Suites: IKEv2 with PSK and ECDSA P-256 certificates (RFC 7427 method 14 and RFC 4754
method 9), each with X25519 and with ECP-256 key exchange; IKEv1 (``version=1``) main
mode and quick mode with PSK (MODP-2048 and ECP-256), ECDSA P-256 (method 9) and RSA-2048
(method 3) signatures, and RSA-2048 public-key encryption (methods 4 and 5). Total run
time stays bounded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from kipsec_sidecar.core.ike.config import (
    AuthConfig,
    Identity,
    IkeConfig,
    IkeProposal,
)
from kipsec_sidecar.core.ike.constants import AuthMethod, DhGroup
from support.ike_pair import (
    INITIATOR_ADDR,
    RESPONDER_ADDR,
    V1_IKE_PROPOSALS,
    IkePair,
    child_config,
    mirrored,
    pair_configs,
)
from support.pki import NOW, CertificateAuthority, Issued, KeyKind

Factory = Callable[[], tuple[IkeConfig, IkeConfig]]


def _psk(group: int) -> Factory:
    proposals = (IkeProposal(dh=(group,)),)

    def make() -> tuple[IkeConfig, IkeConfig]:
        def side(me: str, peer: str, addr: tuple[str, int], mirror: bool) -> IkeConfig:
            child = mirrored(child_config()) if mirror else child_config()
            auth = AuthConfig(
                "psk",
                local_id=Identity.fqdn(me),
                remote_id=Identity.fqdn(peer),
                psk=b"benchmark pre-shared key",
            )
            return IkeConfig(auth=auth, children=(child,), local_addr=addr, proposals=proposals)

        return side("a.example", "b.example", INITIATOR_ADDR, False), side(
            "b.example", "a.example", RESPONDER_ADDR, True
        )

    return make


def _signer(
    me: str, peer: str, leaf: Issued, root: CertificateAuthority, method: int | None = None
) -> AuthConfig:
    return AuthConfig(
        "signature",
        local_id=Identity.fqdn(me),
        remote_id=Identity.fqdn(peer),
        private_key=leaf.key,
        certificates=(leaf.der,),
        trust_anchors=(root.der,),
        signature_method=method,
    )


def _ecdsa(group: int, method: int) -> Factory:
    root = CertificateAuthority.root("bench root")
    leaves = {
        n: root.issue(n, dns=[n], key_slot=30 + i) for i, n in enumerate(("a.example", "b.example"))
    }
    proposals = (IkeProposal(dh=(group,)),)

    def make() -> tuple[IkeConfig, IkeConfig]:
        def side(me: str, peer: str, addr: tuple[str, int], mirror: bool) -> IkeConfig:
            child = mirrored(child_config()) if mirror else child_config()
            return IkeConfig(
                auth=_signer(me, peer, leaves[me], root, method),
                children=(child,),
                local_addr=addr,
                proposals=proposals,
                wall_clock_epoch=NOW.timestamp(),
            )

        return side("a.example", "b.example", INITIATOR_ADDR, False), side(
            "b.example", "a.example", RESPONDER_ADDR, True
        )

    return make


def _ikev1(group: int, auth: str) -> Factory:
    root = CertificateAuthority.root("bench v1 root")
    kind: KeyKind = "ec256" if auth in ("psk", "ecdsa") else "rsa"
    leaves = {
        n: root.issue(n, dns=[n], key_kind=kind, key_slot=40 + i)
        for i, n in enumerate(("a.example", "b.example"))
    }
    proposals = tuple(replace(p, dh=(group,)) for p in V1_IKE_PROPOSALS)

    def signing(config: IkeConfig, me: str, peer: str) -> IkeConfig:
        if auth == "psk":
            return config
        signer = _signer(me, peer, leaves[me], root)
        if auth in ("rsa-encryption", "rsa-revised"):
            method = 4 if auth == "rsa-encryption" else 5
            signer = replace(
                signer, public_key_encryption=method, peer_certificate=leaves[peer].der
            )
        return replace(config, auth=signer, wall_clock_epoch=NOW.timestamp())

    def make() -> tuple[IkeConfig, IkeConfig]:
        i, r = pair_configs(version=1, i_proposals=proposals, r_proposals=proposals)
        return signing(i, "a.example", "b.example"), signing(r, "b.example", "a.example")

    return make


SUITES: dict[str, Factory] = {
    "PSK, X25519": _psk(DhGroup.CURVE25519),
    "PSK, ECP-256": _psk(DhGroup.ECP_256),
    "ECDSA P-256 (method 14), X25519": _ecdsa(DhGroup.CURVE25519, AuthMethod.DIGITAL_SIGNATURE),
    "ECDSA P-256 (method 9), ECP-256": _ecdsa(DhGroup.ECP_256, AuthMethod.ECDSA_SHA256_P256),
    "IKEv1 PSK, MODP-2048": _ikev1(DhGroup.MODP_2048, "psk"),
    "IKEv1 PSK, ECP-256": _ikev1(DhGroup.ECP_256, "psk"),
    "IKEv1 ECDSA P-256 (method 9), ECP-256": _ikev1(DhGroup.ECP_256, "ecdsa"),
    "IKEv1 RSA-2048 (method 3), ECP-256": _ikev1(DhGroup.ECP_256, "rsa"),
    "IKEv1 RSA-2048 encryption (4), ECP-256": _ikev1(DhGroup.ECP_256, "rsa-encryption"),
    "IKEv1 RSA-2048 revised (5), ECP-256": _ikev1(DhGroup.ECP_256, "rsa-revised"),
}


def handshakes_per_second(factory: Factory, seconds: float) -> tuple[float, int]:
    initiator, responder = factory()
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        seed = int.from_bytes(os.urandom(4), "big")
        pair = IkePair(initiator, responder, seed=seed, version=initiator.version)
        pair.run(5)
        if not (pair.initiator.established and pair.responder.established):
            raise SystemExit("a handshake failed: the benchmark is broken")
        done += 1
    return done / (time.perf_counter() - start), done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="wall time per suite (max 10)")
    args = parser.parse_args(argv)
    seconds = min(max(args.seconds, 0.1), 10.0)
    print(f"{'suite':40} {'handshakes/s':>13} {'ms each':>9} {'count':>7}")
    for name, factory in SUITES.items():
        rate, count = handshakes_per_second(factory, seconds)
        print(f"{name:40} {rate:13.1f} {1000 / rate:9.2f} {count:7d}")


if __name__ == "__main__":
    main()
