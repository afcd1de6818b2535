"""IKEv1 configurations that authenticate by public-key encryption (methods 4 and 5):
two RSA leaves of one root, each side knowing the other's certificate in advance."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from kipsec_sidecar.core.ike.config import AuthConfig, Identity, IkeConfig, RetiredKey
from kipsec_sidecar.daemon.reload import retire_key
from support.ike_pair import IkePair, pair_configs
from support.pki import NOW, CertificateAuthority, Issued

ROOT = CertificateAuthority.root("kipsec ikev1 public-key encryption root")
RSA_A = ROOT.issue("a", key_kind="rsa", key_slot=80, dns=["a.example"])
RSA_B = ROOT.issue("b", key_kind="rsa", key_slot=81, dns=["b.example"])
#: a.example's and b.example's certificates after a renewal (same names, new keys)
RSA_A_NEW = ROOT.issue("a", key_kind="rsa", key_slot=85, dns=["a.example"])
RSA_B_NEW = ROOT.issue("b", key_kind="rsa", key_slot=86, dns=["b.example"])
#: when the renewed side reloaded, on the engine's clock (:func:`renewed_pair`)
RENEWAL = 100.0

Renewed = Literal["responder", "initiator"]


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


def renewed_pair(
    method: int,
    renewed: Renewed,
    *,
    start: float,
    peer_knows_new: bool = False,
    tap: Any = None,
) -> tuple[IkePair, RetiredKey | None]:
    """As :func:`public_key_pair`, but the ``renewed`` side got a new key at RENEWAL and
    went through the daemon's credentials-only refresh (:func:`retire_key`), while the
    other side encrypts to its old certificate (its new one if ``peer_knows_new``).
    The initiator starts at ``start``; also returns the renewed side's retired key."""
    i, r = pair_configs(version=1)
    a_to_b = RSA_B_NEW.der if renewed == "responder" and peer_knows_new else RSA_B.der
    b_to_a = RSA_A_NEW.der if renewed == "initiator" and peer_knows_new else RSA_A.der
    a = encrypting(i, "a.example", "b.example", RSA_A, a_to_b, method)
    b = encrypting(r, "b.example", "a.example", RSA_B, b_to_a, method)
    if renewed == "responder":
        b_new = encrypting(r, "b.example", "a.example", RSA_B_NEW, b_to_a, method)
        b = retire_key(b, b_new, RENEWAL)
        retired = b.auth.retired_key
    else:
        a_new = encrypting(i, "a.example", "b.example", RSA_A_NEW, a_to_b, method)
        a = retire_key(a, a_new, RENEWAL)
        retired = a.auth.retired_key
    pair = IkePair(a, b, version=1, tap=tap, start=False)
    pair.now = start
    pair.start()
    return pair, retired
