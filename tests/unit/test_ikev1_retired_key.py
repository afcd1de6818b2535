"""IKEv1 public-key encryption across a certificate renewal, in memory with a fake clock.

Under methods 4 and 5 a peer encrypts its nonce and identity to our public key as its
document names it (``peerCertFile``); after our renewal (a new key) it keeps encrypting
to the old key until its document carries the new certificate. The renewed side keeps
the replaced key, to decrypt only, for :data:`~kipsec_sidecar.daemon.reload.RETIRED_KEY_GRACE`
(:func:`~kipsec_sidecar.daemon.reload.retire_key`, what the daemon's credentials-only
refresh applies): a main mode encrypted to the old key succeeds within the grace, as
responder and as initiator, and fails (cleanly) after it.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from kipsec_sidecar.core.errors import KipsecError
from kipsec_sidecar.core.ike.config import IkeConfig, RetiredKey
from kipsec_sidecar.core.ike.events import (
    AuthenticationFailedEvent,
    ChildSaEstablished,
    IkeSaEstablished,
)
from kipsec_sidecar.daemon.reload import RETIRED_KEY_GRACE, retire_key
from support.ike_pair import IkePair, pair_configs
from support.ikev1_public_key import (
    RENEWAL,
    RSA_A,
    RSA_A_NEW,
    RSA_B,
    Renewed,
    encrypting,
    renewed_pair,
    signing,
)

DELIVERY = 10.0  #: how long after it the peer starts a main mode, still on the old document


def no_internal_error(p: IkePair) -> bool:
    return bool(p.initiator.stats.internal_errors == 0 == p.responder.stats.internal_errors)


@pytest.mark.parametrize("renewed", ["responder", "initiator"])
@pytest.mark.parametrize("method", [4, 5])
def test_a_main_mode_encrypted_to_the_replaced_key_succeeds_within_the_grace(
    method: int, renewed: Renewed
) -> None:
    p, retired = renewed_pair(method, renewed, start=RENEWAL + DELIVERY)
    p.run(10)
    assert p.initiator.established and p.responder.established
    assert len(p.i.of(ChildSaEstablished)) == 1 and len(p.r.of(ChildSaEstablished)) == 1
    assert p.i.of(IkeSaEstablished)[0].remote_id == "b.example"
    assert p.r.of(IkeSaEstablished)[0].remote_id == "a.example"
    assert not p.i.of(AuthenticationFailedEvent) and not p.r.of(AuthenticationFailedEvent)
    assert no_internal_error(p)
    assert retired is not None and retired.private_key is not None  # still in its grace


@pytest.mark.parametrize("renewed", ["responder", "initiator"])
@pytest.mark.parametrize("method", [4, 5])
def test_a_main_mode_encrypted_to_the_replaced_key_fails_after_the_grace(
    method: int, renewed: Renewed
) -> None:
    p, retired = renewed_pair(method, renewed, start=RENEWAL + RETIRED_KEY_GRACE + 1)
    p.run(120)
    assert not p.initiator.established and not p.responder.established
    assert not p.i.of(ChildSaEstablished) and not p.r.of(ChildSaEstablished)
    assert p.initiator.closed
    assert p.i.of(AuthenticationFailedEvent) or p.r.of(AuthenticationFailedEvent)
    assert no_internal_error(p)
    assert retired is not None and retired.private_key is None  # dropped once looked at


@pytest.mark.parametrize("method", [4, 5])
def test_a_peer_that_knows_the_new_certificate_still_gets_through_during_the_grace(
    method: int,
) -> None:
    """The current key is tried first and the retired one does not get in its way."""
    p, _ = renewed_pair(method, "responder", start=RENEWAL + DELIVERY, peer_knows_new=True)
    p.run(10)
    assert p.initiator.established and p.responder.established
    assert no_internal_error(p)


def test_a_dropped_retired_key_no_longer_decrypts() -> None:
    """The daemon drops the key at the end of the grace (or when the peer is replaced):
    a main mode started before that time but after the drop fails like after it."""
    p, retired = renewed_pair(4, "responder", start=RENEWAL + DELIVERY)
    assert retired is not None
    retired.drop()
    p.run(120)
    assert not p.initiator.established and no_internal_error(p)


# --- the daemon's side: what a credentials-only refresh keeps ------------------------------


def configs() -> tuple[IkeConfig, IkeConfig]:
    i, _ = pair_configs(version=1)
    return (
        encrypting(i, "a.example", "b.example", RSA_A, RSA_B.der, 4),
        encrypting(i, "a.example", "b.example", RSA_A_NEW, RSA_B.der, 4),
    )


def test_a_renewal_retires_the_replaced_key_for_the_grace() -> None:
    old, new = configs()
    refreshed = retire_key(old, new, 50.0)
    retired = refreshed.auth.retired_key
    assert retired is not None
    assert retired.private_key is RSA_A.key and retired.until == 50.0 + RETIRED_KEY_GRACE
    assert refreshed.auth.private_key is RSA_A_NEW.key  # what signs and is sent: the new one
    assert "RSA" not in repr(retired) and "until=" in repr(retired)
    assert retired.usable(50.0 + RETIRED_KEY_GRACE - 1) is RSA_A.key
    assert retired.usable(50.0 + RETIRED_KEY_GRACE) is None and retired.private_key is None


def test_a_refresh_that_keeps_the_key_keeps_the_grace_of_the_last_renewal() -> None:
    old, new = configs()
    renewed = retire_key(old, new, 50.0)
    rotated = retire_key(renewed, replace(new, auth=replace(new.auth)), 80.0)  # CA rotation
    retired = rotated.auth.retired_key
    assert retired is renewed.auth.retired_key
    assert retired is not None and retired.until == 50.0 + RETIRED_KEY_GRACE
    assert retire_key(old, old, 80.0).auth.retired_key is None


def test_the_grace_ends_when_the_replaced_certificate_expires_if_that_is_sooner() -> None:
    """Past its notAfter no peer accepts the old certificate, whatever we decrypt."""
    old, new = configs()
    expiry = RSA_A.cert.not_valid_after_utc.timestamp() - old.wall_clock_epoch
    retired = retire_key(old, new, expiry - 60.0).auth.retired_key
    assert retired is not None and retired.until == expiry
    assert retire_key(old, new, expiry + 1.0).auth.retired_key is None


def test_signatures_keep_no_retired_key() -> None:
    i, _ = pair_configs(version=1)
    old = signing(i, "a.example", "b.example", RSA_A)
    new = signing(i, "a.example", "b.example", RSA_A_NEW)
    assert retire_key(old, new, 0.0).auth.retired_key is None
    with pytest.raises(KipsecError, match=r"auth\.retired_key"):
        replace(new.auth, retired_key=RetiredKey(RSA_A.key, 10.0))
