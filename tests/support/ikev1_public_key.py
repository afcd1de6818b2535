"""IKEv1 configurations that authenticate by public-key encryption (methods 4 and 5):
two RSA leaves of one root, each side knowing the other's certificate in advance."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kipsec_sidecar.core.ike.config import AuthConfig, Identity, IkeConfig
from support.ike_pair import IkePair, pair_configs
from support.pki import NOW, CertificateAuthority, Issued

ROOT = CertificateAuthority.root("kipsec ikev1 public-key encryption root")
RSA_A = ROOT.issue("a", key_kind="rsa", key_slot=80, dns=["a.example"])
RSA_B = ROOT.issue("b", key_kind="rsa", key_slot=81, dns=["b.example"])


def signing(
    config: IkeConfig, me: str, peer: str, leaf: Issued, anchor: CertificateAuthority = ROOT
) -> IkeConfig:
    """``config`` authenticating as ``me`` by signatures with ``leaf``, trusting ``anchor``."""
    auth = AuthConfig(
        "signature",
        local_id=Identity.fqdn(me),
        remote_id=Identity.fqdn(peer),
        private_key=leaf.key,
        certificates=(leaf.der,),
        trust_anchors=(anchor.der,),
    )
    return replace(config, auth=auth, wall_clock_epoch=NOW.timestamp())


def encrypting(
    config: IkeConfig, me: str, peer: str, leaf: Issued, peer_der: bytes, method: int
) -> IkeConfig:
    """As :func:`signing`, but authenticating by public-key encryption to ``peer_der``."""
    signed = signing(config, me, peer, leaf)
    auth = replace(signed.auth, public_key_encryption=method, peer_certificate=peer_der)
    return replace(signed, auth=auth)


def public_key_pair(
    method: int, *, i_peer: bytes | None = None, tap: Any = None, **kwargs: Any
) -> IkePair:
    """An in-memory pair a.example / b.example; ``i_peer`` replaces the certificate the
    initiator encrypts to (a wrong key)."""
    i, r = pair_configs(version=1, **kwargs)
    return IkePair(
        encrypting(i, "a.example", "b.example", RSA_A, i_peer or RSA_B.der, method),
        encrypting(r, "b.example", "a.example", RSA_B, RSA_A.der, method),
        version=1,
        tap=tap,
    )
