"""IKEv1 main mode (PSK) and quick mode through the engine, in memory with a fake clock:
the handshake, the keys both sides agree on, loss, duplication, tampering, a wrong PSK,
no proposal in phase 1 and phase 2, Delete, DPD, a phase 2 rekey and the lifetime a
responder imposes with RESPONDER-LIFETIME."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from kipsec_sidecar.core.errors import KipsecError
from kipsec_sidecar.core.ike.config import (
    ChildProposal,
    Encryption,
    Identity,
    IkeConfig,
    Lifetime,
)
from kipsec_sidecar.core.ike.constants import DhGroup, EncrId, IntegId
from kipsec_sidecar.core.ike.events import (
    AuthenticationFailedEvent,
    ChildSaDeleted,
    ChildSaEstablished,
    IkeSaDeleted,
    IkeSaEstablished,
    NegotiationFailed,
    PeerDead,
)
from kipsec_sidecar.core.ikev1 import main_mode, policy
from kipsec_sidecar.core.ikev1.constants import ExchangeType, Flag, NotifyType, ProtocolId
from kipsec_sidecar.core.ikev1.encryption import decrypt_message
from kipsec_sidecar.core.ikev1.engine import IsakmpSa
from kipsec_sidecar.core.ikev1.message import decode_header
from kipsec_sidecar.core.ikev1.payloads import DeletePayload, NotificationPayload, Payload
from kipsec_sidecar.core.ikev1.quick_mode import negotiated_lifetime
from kipsec_sidecar.handshake_failures import failure_reason
from support.ike_pair import ESP_CBC, I2R, R2I, V1_IKE_PROPOSALS, IkePair, pair_configs
from support.ikev1_public_key import ROOT as PK_ROOT
from support.ikev1_public_key import RSA_A, RSA_B, encrypting, public_key_pair
from support.ikev1_public_key import signing as support_signing
from support.pki import NOW, CertificateAuthority, Issued, KeyKind

V1_IKE = V1_IKE_PROPOSALS
ESP_CBC_PFS = replace(ESP_CBC, dh=(DhGroup.ECP_256,))


def configs(**kwargs: Any) -> tuple[IkeConfig, IkeConfig]:
    return pair_configs(version=1, **kwargs)


def pair(**kwargs: Any) -> IkePair:
    tap = kwargs.pop("tap", None)
    return IkePair(*configs(**kwargs), version=1, tap=tap)


def test_main_mode_and_quick_mode_establish_mirrored_esp_sas() -> None:
    p = pair()
    p.run(10)
    assert isinstance(p.initiator, IsakmpSa)
    assert p.initiator.established and p.responder.established
    (ei,) = p.i.of(IkeSaEstablished)
    assert (ei.local_id, ei.remote_id) == ("a.example", "b.example")
    (ci,) = p.i.of(ChildSaEstablished)
    (cr,) = p.r.of(ChildSaEstablished)
    assert (ci.spi_in, ci.spi_out) == (cr.spi_out, cr.spi_in)
    assert ci.encr_key_out == cr.encr_key_in and ci.encr_key_in == cr.encr_key_out
    assert ci.integ_key_out == cr.integ_key_in and ci.integ_key_in == cr.integ_key_out
    assert len(ci.encr_key_out) == 16 and len(ci.integ_key_out) == 32
    assert ci.encr_key_out != ci.encr_key_in
    assert (ci.encr_id, ci.integ_id) == (EncrId.AES_CBC, IntegId.HMAC_SHA2_256_128)
    assert ci.local_ts == cr.remote_ts and ci.remote_ts == cr.local_ts
    # Main mode is 3 round trips, quick mode 1.5: 3 + 2 from the initiator, 3 + 1 back.
    assert p.counts == {I2R: 5, R2I: 4}
    assert p.initiator.stats.internal_errors == 0 and p.responder.stats.internal_errors == 0


def test_quick_mode_with_pfs() -> None:
    p = pair(child=ESP_CBC_PFS)
    p.run(10)
    (ci,) = p.i.of(ChildSaEstablished)
    (cr,) = p.r.of(ChildSaEstablished)
    assert ci.encr_key_out == cr.encr_key_in
    no_pfs = pair()
    no_pfs.run(10)
    assert no_pfs.i.of(ChildSaEstablished)[0].encr_key_out != ci.encr_key_out


WRONG_PSK_FAILURE = {"authentication_failed"}


@pytest.mark.parametrize(
    ("r_psk", "tap"),
    [
        (b"another secret entirely", None),
        # every datagram twice: the initiator sees the undecryptable notification twice
        (b"another secret entirely", lambda direction, index, data: [data, data]),
    ],
    ids=["other-key", "duplicated"],
)
def test_a_wrong_psk_is_an_authentication_failure_on_both_sides(r_psk: bytes, tap: Any) -> None:
    """Neither side can open the other's message 5 nor the notification that answers it
    (no MAC in IKEv1: a wrong key decrypts to garbage or to a HASH that does not match).
    Under PSK that is what a wrong key looks like: each side reports
    ``authentication_failed`` (the responder at the peer's retransmission of message 5,
    the initiator when it gives up), with a reason that says so and names no key."""
    p = pair(r_psk=r_psk, tap=tap)
    p.run(60)
    assert not p.initiator.established and p.initiator.closed and p.responder.closed
    assert not p.i.of(ChildSaEstablished) and not p.r.of(ChildSaEstablished)
    for side, which in ((p.i, "HASH_R"), (p.r, "HASH_I")):
        (auth,) = side.of(AuthenticationFailedEvent)
        assert auth.reason == "psk" and not auth.by_peer
        (failed,) = side.of(NegotiationFailed)
        assert failed.notify == NotifyType.AUTHENTICATION_FAILED
        assert failed.reason.startswith(f"{which} mismatch or undecryptable ")
        assert failed.reason.endswith(": probably a wrong pre-shared key")
        assert {failure_reason(e) for e in side.events} - {None} == WRONG_PSK_FAILURE
        for secret in (r_psk, p.initiator.config.auth.psk):
            assert secret.decode() not in failed.reason + auth.reason
    assert not p.i.of(PeerDead)
    assert p.initiator.stats.internal_errors == 0 and p.responder.stats.internal_errors == 0


def test_no_phase_1_proposal_is_refused_with_a_notification() -> None:
    other = (replace(V1_IKE[0], dh=(DhGroup.ECP_256,)),)
    p = pair(r_proposals=other)
    p.run(30)
    assert p.initiator.closed
    (failed,) = p.i.of(NegotiationFailed)
    assert failed.by_peer and failed.notify == 14  # NO-PROPOSAL-CHOSEN


def test_no_phase_2_proposal_leaves_the_isakmp_sa_up() -> None:
    gcm = ChildProposal(encryption=(Encryption(EncrId.AES_GCM_16, 256),))
    p = pair(r_child=gcm)
    p.run(10)
    assert p.initiator.established and p.responder.established
    assert not p.i.of(ChildSaEstablished)
    assert any(e.notify == 14 for e in p.r.of(NegotiationFailed))


def test_lost_messages_are_retransmitted_and_duplicates_answered_from_cache() -> None:
    dropped: set[tuple[str, int]] = {(I2R, 0), (R2I, 1), (I2R, 3), (R2I, 4)}

    def tap(direction: str, index: int, data: bytes) -> list[bytes]:
        return [] if (direction, index) in dropped else [data]

    p = pair(tap=tap)
    p.run(30)
    assert p.initiator.established and p.responder.established
    assert p.i.of(ChildSaEstablished) and p.r.of(ChildSaEstablished)
    assert p.initiator.stats.retransmissions >= 2


def test_every_datagram_duplicated_still_gives_one_child_each() -> None:
    p = pair(tap=lambda direction, index, data: [data, data])
    p.run(10)
    assert len(p.i.of(ChildSaEstablished)) == 1 and len(p.r.of(ChildSaEstablished)) == 1
    assert p.responder.stats.answered_from_cache >= 1


def test_tampered_encrypted_messages_are_dropped() -> None:
    def tap(direction: str, index: int, data: bytes) -> list[bytes]:
        if direction == I2R and index == 2:  # message 5, encrypted: flip a ciphertext bit
            at = 28 + 3  # the first ciphertext block: garbles the ID payload
            return [data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]]
        return [data]

    p = pair(tap=tap)
    p.run(30)
    assert p.responder.stats.dropped_malformed + p.responder.stats.dropped_integrity >= 1
    assert p.initiator.established  # the retransmitted original got through


def test_aggressive_mode_is_refused() -> None:
    p = pair()
    msg = bytearray(p.wire[0][1])
    msg[18] = 4  # exchange type: aggressive
    p.wire.clear()
    p.endpoint.receive_datagram(bytes(msg), ("10.0.0.1", 500), 0.0)
    assert p.endpoint.refused["aggressive_mode"] == 1 and not p.endpoint.sas


def test_delete_from_the_initiator_removes_everything_on_both_sides() -> None:
    p = pair()
    p.run(10)
    p.initiator.delete(p.now)
    p.settle()
    assert p.initiator.closed and p.responder.closed
    assert p.r.of(ChildSaDeleted)[0].reason == "deleted-by-peer"  # its Delete came first
    assert p.r.of(IkeSaDeleted)[0].reason == "deleted-by-peer"


def test_delete_of_a_child_from_the_responder() -> None:
    p = pair()
    p.run(10)
    (cr,) = p.r.of(ChildSaEstablished)
    p.responder.delete_child(cr.spi_in, p.now)
    p.settle()
    (deleted,) = p.i.of(ChildSaDeleted)
    assert deleted.reason == "deleted-by-peer" and deleted.spi_out == cr.spi_in
    assert p.initiator.established


def test_dpd_detects_a_dead_peer_and_keeps_a_live_one() -> None:
    p = pair(i_liveness_interval=5.0, r_liveness_interval=5.0)
    p.run(30)
    assert p.initiator.established and p.responder.established
    assert not p.i.of(IkeSaDeleted)
    p.tap = lambda direction, index, data: [] if direction == R2I else [data]
    p.run(60)
    assert p.initiator.closed
    assert p.i.of(IkeSaDeleted)[-1].reason == "peer-dead"


def test_phase_2_rekey_is_make_before_break() -> None:
    p = pair()
    p.run(10)
    (old,) = p.i.of(ChildSaEstablished)
    p.initiator.rekey_child(old.spi_in, p.now)
    p.run(20)
    new = p.i.of(ChildSaEstablished)[-1]
    assert new.replaces == old.spi_in
    assert new.defer_outbound  # no commit bit: outbound moves when the old pair is deleted
    (gone,) = p.i.of(ChildSaDeleted)
    assert gone.spi_in == old.spi_in and gone.reason == "rekeyed"
    assert p.r.of(ChildSaDeleted)[0].spi_out == old.spi_in
    assert p.i.events.index(new) < p.i.events.index(gone)


def test_the_responder_installs_before_message_2_and_removes_the_pair_without_message_3() -> None:
    def tap(direction: str, index: int, data: bytes) -> list[bytes]:
        quick_mode_3 = direction == I2R and index >= 4  # every copy of message 3
        return [] if quick_mode_3 else [data]

    p = pair(tap=tap)
    p.run(2)
    (cr,) = p.r.of(ChildSaEstablished)  # before any message 3 arrived
    p.run(60)
    (gone,) = p.r.of(ChildSaDeleted)
    assert gone.spi_in == cr.spi_in and gone.reason == "deleted"
    assert p.responder.established and p.responder.stats.retransmissions >= 1


# --- signatures (RSA method 3, ECDSA methods 9/10, RFC 4754) ---------------------------

ROOT = CertificateAuthority.root("kipsec ikev1 test root")
EPOCH = NOW.timestamp()


def signing(config: IkeConfig, me: str, peer: str, leaf: Issued) -> IkeConfig:
    return support_signing(config, me, peer, leaf, ROOT)


def cert_pair(
    key_kind: KeyKind = "ec256", *, r_leaf: Issued | None = None, **kwargs: Any
) -> IkePair:
    i, r = configs(**kwargs)
    leaf_a = ROOT.issue("a", key_kind=key_kind, key_slot=70, dns=["a.example"])
    leaf_b = r_leaf or ROOT.issue("b", key_kind=key_kind, key_slot=71, dns=["b.example"])
    return IkePair(
        signing(i, "a.example", "b.example", leaf_a),
        signing(r, "b.example", "a.example", leaf_b),
        version=1,
    )


@pytest.mark.parametrize(
    ("key_kind", "method"), [("ec256", 9), ("ec384", 10), ("rsa", 3), ("dsa", 2), ("dsa1024", 2)]
)
def test_signature_main_mode(key_kind: KeyKind, method: int) -> None:
    p = cert_pair(key_kind)
    p.run(10)
    assert p.initiator.established and p.responder.established
    assert p.initiator.p1.choice.suite.auth_method == method
    (ci,) = p.i.of(ChildSaEstablished)
    (cr,) = p.r.of(ChildSaEstablished)
    assert ci.encr_key_out == cr.encr_key_in
    assert p.i.of(IkeSaEstablished)[0].remote_id == "b.example"


def test_a_certificate_from_an_untrusted_ca_is_rejected_and_the_initiator_told() -> None:
    other = CertificateAuthority.root("someone else's root")
    p = cert_pair(r_leaf=other.issue("b", key_slot=72, dns=["b.example"]))
    p.run(30)
    assert not p.initiator.established
    assert any(e.reason == "untrusted" for e in p.i.of(AuthenticationFailedEvent))


def refusals_of_message_6(p: IkePair, wire: Wire) -> list[Payload]:
    """The payloads of the initiator's informationals, each decrypted as the responder
    does: its IV derives from message 6's last block and its own message ID."""
    found: list[Payload] = []
    for direction, data in wire:
        header = decode_header(data)
        if direction != I2R or header.exchange != ExchangeType.INFORMATIONAL:
            continue
        assert header.flags & Flag.ENCRYPTION
        iv = main_mode.phase2_iv_for(p.responder, header.message_id)
        msg, _ = decrypt_message(data, p.responder.p1.enc_key, iv)
        found += msg.payloads[1:]  # after HASH(1)
    return found


STRANGER = CertificateAuthority.root("someone else's root")


@pytest.mark.parametrize(
    "r_leaf",
    [
        STRANGER.issue("b", key_slot=72, dns=["b.example"]),
        ROOT.issue("c", key_slot=73, dns=["c.example"]),
    ],
    ids=["untrusted-ca", "other-identity"],
)
def test_the_refusal_of_message_6_is_told_and_the_isakmp_sa_deleted(r_leaf: Issued) -> None:
    """The initiator refuses the responder's certificate in message 6. The responder
    took main mode as done on sending it, so the initiator tells it AUTHENTICATION-FAILED
    and then deletes that ISAKMP SA, each in its own encrypted informational (strongSwan
    reads only the first of a notification and a Delete in one message, and keeps an
    established SA on a notification alone): the responder drops it on the Delete."""
    p = cert_pair(r_leaf=r_leaf)
    wire = logged(p)
    p.run(30)
    assert p.initiator.closed and not p.i.of(ChildSaEstablished)
    note, delete = refusals_of_message_6(p, wire)
    assert isinstance(note, NotificationPayload)
    assert note.notify_type == NotifyType.AUTHENTICATION_FAILED
    assert isinstance(delete, DeletePayload) and delete.protocol == ProtocolId.ISAKMP
    assert delete.spis == (p.responder.cookie_i + p.responder.cookie_r,)
    assert p.r.of(IkeSaEstablished) and p.responder.closed
    assert p.r.of(IkeSaDeleted)[-1].reason == "deleted-by-peer"
    assert p.initiator.stats.internal_errors == 0 and p.responder.stats.internal_errors == 0


def test_a_psk_identity_refused_in_message_6_is_told_and_the_isakmp_sa_deleted() -> None:
    i, r = configs()
    i = replace(i, auth=replace(i.auth, remote_id=Identity.fqdn("c.example")))
    p = IkePair(i, r, version=1)
    wire = logged(p)
    p.run(30)
    note, delete = refusals_of_message_6(p, wire)
    assert isinstance(note, NotificationPayload)
    assert note.notify_type == NotifyType.INVALID_ID_INFORMATION
    assert isinstance(delete, DeletePayload)
    assert p.responder.closed and p.r.of(IkeSaDeleted)[-1].reason == "deleted-by-peer"


def test_a_refusal_by_the_peer_names_the_authentication_method_configured() -> None:
    """The peer's AUTHENTICATION-FAILED is reported with the method we authenticated
    with (the reason of the daemon's "authentication failed" line), not always ``psk``."""
    i, r = configs()
    untrusted_a = STRANGER.issue("a", key_slot=74, dns=["a.example"])
    signed = IkePair(
        signing(i, "a.example", "b.example", untrusted_a),
        signing(r, "b.example", "a.example", ROOT.issue("b", key_slot=71, dns=["b.example"])),
        version=1,
    )
    stranger = PK_ROOT.issue("b", key_kind="rsa", key_slot=82, dns=["b.example"])
    sealed = public_key_pair(4, i_peer=stranger.der)  # the responder cannot open message 3
    for p, method in ((signed, "signature"), (sealed, "public-key")):
        p.run(60)
        (refused,) = p.i.of(AuthenticationFailedEvent)
        assert refused.by_peer and refused.reason == method


def test_a_certificate_for_another_identity_is_rejected() -> None:
    p = cert_pair(r_leaf=ROOT.issue("c", key_slot=73, dns=["c.example"]))
    p.run(30)
    assert not p.initiator.established
    assert any(e.reason == "identity-mismatch" for e in p.i.of(AuthenticationFailedEvent))


def test_the_isakmp_sa_expires_at_its_hard_lifetime_and_the_peer_is_told() -> None:
    """The initiator's ISAKMP SA expires (no re-authentication: ``rekey_after`` 0) and
    its Delete makes the responder's go too; the IPsec pair outlives both, detached
    (``test_ikev1_reauth.py`` follows it to its rekey and its own hard lifetime)."""
    p = pair(
        i_lifetime=Lifetime(rekey_after=0, expire_after=60),
        r_lifetime=Lifetime(rekey_after=0, expire_after=600),
    )
    p.run(10)
    assert p.initiator.established
    spis = set(p.initiator.children)
    p.run(120)
    assert p.initiator.detached and p.responder.detached  # the responder by the Delete
    assert set(p.initiator.children) == spis and len(p.responder.children) == 1
    assert not p.i.of(IkeSaDeleted) and not p.r.of(IkeSaDeleted)
    assert not p.i.of(ChildSaDeleted) and not p.r.of(ChildSaDeleted)


# --- public-key encryption (RFC 2409 sections 5.2 / 5.3, methods 4 and 5) -------------


@pytest.mark.parametrize("method", [4, 5])
def test_public_key_encryption_main_mode(method: int) -> None:
    seen: list[bytes] = []

    def record(direction: str, index: int, data: bytes) -> list[bytes]:
        seen.append(data)
        return [data]

    p = public_key_pair(method, tap=record)
    p.run(10)
    assert p.initiator.established and p.responder.established
    assert p.initiator.p1.choice.suite.auth_method == method
    assert p.responder.p1.choice.suite.auth_method == method
    assert p.i.of(IkeSaEstablished)[0].remote_id == "b.example"
    assert p.r.of(IkeSaEstablished)[0].remote_id == "a.example"
    (ci,) = p.i.of(ChildSaEstablished)
    (cr,) = p.r.of(ChildSaEstablished)
    assert ci.encr_key_out == cr.encr_key_in and ci.encr_key_in == cr.encr_key_out
    assert p.counts == {I2R: 5, R2I: 4}
    # the nonces and identities never cross in clear
    for data in seen:
        assert b"a.example" not in data and b"b.example" not in data
        assert p.initiator.p1.nonce_i not in data and p.initiator.p1.nonce_r not in data
    assert p.initiator.stats.internal_errors == 0 and p.responder.stats.internal_errors == 0


@pytest.mark.parametrize("method", [4, 5])
def test_public_key_encryption_to_the_wrong_peer_key_fails_on_both_sides(method: int) -> None:
    stranger = PK_ROOT.issue("b", key_kind="rsa", key_slot=82, dns=["b.example"])
    p = public_key_pair(method, i_peer=stranger.der)
    p.run(120)
    assert not p.initiator.established and not p.responder.established
    assert not p.i.of(ChildSaEstablished) and not p.r.of(ChildSaEstablished)
    assert p.initiator.closed
    assert p.initiator.stats.internal_errors == 0 and p.responder.stats.internal_errors == 0


@pytest.mark.parametrize("method", [4, 5])
def test_public_key_encryption_survives_loss_duplication_and_a_tampered_message_5(
    method: int,
) -> None:
    dropped = {(I2R, 0), (R2I, 1), (I2R, 3)}

    def lossy(direction: str, index: int, data: bytes) -> list[bytes]:
        return [] if (direction, index) in dropped else [data, data]

    p = public_key_pair(method, tap=lossy)
    p.run(30)
    assert p.initiator.established and p.responder.established
    assert len(p.i.of(ChildSaEstablished)) == 1 and len(p.r.of(ChildSaEstablished)) == 1

    def tamper(direction: str, index: int, data: bytes) -> list[bytes]:
        if direction == I2R and index == 2:  # message 5: HASH_I only, encrypted
            at = 28 + 3
            return [data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]]
        return [data]

    t = public_key_pair(method, tap=tamper)
    t.run(30)
    assert t.responder.stats.dropped_malformed + t.responder.stats.dropped_integrity >= 1
    assert t.initiator.established and t.responder.established


def test_a_peer_certificate_for_another_identity_is_refused() -> None:
    p = public_key_pair(
        4, i_peer=PK_ROOT.issue("c", key_kind="rsa", key_slot=83, dns=["c.example"]).der
    )
    p.run(60)
    assert not p.initiator.established


def test_public_key_encryption_configuration_errors_name_the_field() -> None:
    i, _ = configs()
    with pytest.raises(KipsecError, match=r"auth\.private_key"):
        encrypting(
            i,
            "a.example",
            "b.example",
            PK_ROOT.issue("e", key_slot=84, dns=["a.example"]),
            RSA_B.der,
            4,
        )
    with pytest.raises(KipsecError, match=r"auth\.public_key_encryption"):
        encrypting(i, "a.example", "b.example", RSA_A, RSA_B.der, 3)
    with pytest.raises(KipsecError, match=r"auth\.public_key_encryption"):
        replace(encrypting(i, "a.example", "b.example", RSA_A, RSA_B.der, 4), version=2)


# --- RESPONDER-LIFETIME (RFC 2407 section 4.6.3.1) --------------------------------------


def child_lifetimes(i_life: Lifetime | None, r_life: Lifetime | None) -> IkePair:
    """A pair whose ChildConfigs have the given lifetimes (None: the default)."""
    i, r = configs()
    if i_life is not None:
        i = replace(i, children=(replace(i.children[0], lifetime=i_life),))
    if r_life is not None:
        r = replace(r, children=(replace(r.children[0], lifetime=r_life),))
    return IkePair(i, r, version=1)


Wire = list[tuple[str, bytes]]


def sent_responder_lifetime(p: IkePair, wire: Wire) -> list[NotificationPayload]:
    """The RESPONDER-LIFETIME notifications in quick mode message 2, decrypted with the
    responder's keys along each quick mode's IV chain (RFC 2409 Appendix B)."""
    found: list[NotificationPayload] = []
    responder = p.responder
    ivs: dict[int, bytes] = {}
    for direction, data in wire:
        header = decode_header(data)
        if header.exchange != ExchangeType.QUICK:
            continue
        mid = header.message_id
        iv = ivs.get(mid) or main_mode.phase2_iv_for(responder, mid)
        msg, ivs[mid] = decrypt_message(data, responder.p1.enc_key, iv)
        if direction == R2I:
            notes = msg.all(NotificationPayload)
            found += [n for n in notes if n.notify_type == NotifyType.RESPONDER_LIFETIME]
    return found


def logged(p: IkePair) -> Wire:
    """Every datagram of ``p`` from now on, in order."""
    wire: Wire = []

    def tap(direction: str, index: int, data: bytes) -> list[bytes]:
        wire.append((direction, data))
        return [data]

    p.tap = tap
    return wire


def test_a_shorter_responder_lifetime_is_sent_and_honoured() -> None:
    p = child_lifetimes(None, Lifetime(rekey_after=500, expire_after=600))
    wire = logged(p)
    p.run(10)
    (ci,) = p.i.of(ChildSaEstablished)
    (cr,) = p.r.of(ChildSaEstablished)
    (note,) = sent_responder_lifetime(p, wire)
    assert note.protocol == ci.protocol and note.spi == cr.spi_in
    assert policy.responder_lifetime(note.data) == (600, None)
    # The initiator proposed 3960 s and uses the responder's 600 s, with its own soft
    # limit in proportion (3600 / 3960 of it, less the jitter).
    assert ci.expire_at is not None and ci.expire_at <= 600 + 1
    assert ci.rekey_at is not None and ci.rekey_at <= 600 * 3600 / 3960 + 1
    assert cr.expire_at is not None and cr.expire_at <= 600 + 1
    p.run(700)  # rekeyed before it expired, on both sides
    assert not [e for e in p.i.of(ChildSaDeleted) if e.reason == "expired"]
    assert len(p.i.of(ChildSaEstablished)) >= 2


def test_a_shorter_proposed_lifetime_binds_the_responder_and_needs_no_notification() -> None:
    p = child_lifetimes(Lifetime(rekey_after=500, expire_after=600), None)
    wire = logged(p)
    p.run(10)
    (cr,) = p.r.of(ChildSaEstablished)
    assert cr.expire_at is not None and cr.expire_at <= 600 + 1
    assert cr.rekey_at is not None and cr.rekey_at < 600
    assert not sent_responder_lifetime(p, wire)


def test_equal_lifetimes_change_nothing() -> None:
    p = child_lifetimes(None, None)
    wire = logged(p)
    p.run(10)
    assert not sent_responder_lifetime(p, wire)
    (ci,) = p.i.of(ChildSaEstablished)
    assert ci.expire_at is not None and ci.expire_at >= Lifetime().expire_after


def test_negotiated_lifetime_keeps_the_soft_limit_in_proportion() -> None:
    ours = Lifetime(rekey_after=3600, expire_after=3960)
    assert negotiated_lifetime(ours, None) is ours
    assert negotiated_lifetime(ours, 7200) is ours
    cut = negotiated_lifetime(ours, 396)
    assert (cut.rekey_after, cut.expire_after) == pytest.approx((360, 396))
    assert negotiated_lifetime(Lifetime(0, 0), 100) == Lifetime(0, 100, ours.jitter)
    unlimited = negotiated_lifetime(Lifetime(rekey_after=1000, expire_after=0), 100)
    assert unlimited.expire_after == 100 and unlimited.rekey_after == pytest.approx(90)


# --- Lifetimes in kilobytes (RFC 2407 sections 4.5 and 4.6.3.1) --------------------------

#: Cisco IOS's default IPsec SA lifetime: 4,608,000 kilobytes.
CISCO_KB = 4_608_000
MB = 1_000_000  # 976 whole kilobytes


def byte_limits(i_bytes: int | None, r_bytes: int | None) -> IkePair:
    """A pair whose children have the default lifetime in seconds and these byte limits."""
    return child_lifetimes(Lifetime(max_bytes=i_bytes), Lifetime(max_bytes=r_bytes))


def test_a_kilobyte_lifetime_proposed_is_accepted_by_a_responder_without_a_byte_limit() -> None:
    """What a legacy appliance proposes (Cisco: 4,608,000 KB) is never refused, and a
    responder with no byte limit takes it: both sides hold the same byte limit."""
    p = byte_limits(CISCO_KB * policy.KILOBYTE, None)
    wire = logged(p)
    p.run(10)
    (ci,) = p.i.of(ChildSaEstablished)
    (cr,) = p.r.of(ChildSaEstablished)
    assert ci.max_bytes == cr.max_bytes == CISCO_KB * 1024
    assert not sent_responder_lifetime(p, wire)
    assert not p.i.of(NegotiationFailed) and not p.r.of(NegotiationFailed)


def test_a_shorter_proposed_byte_limit_binds_the_responder() -> None:
    p = byte_limits(MB, 10 * MB)
    wire = logged(p)
    p.run(10)
    (ci,) = p.i.of(ChildSaEstablished)
    (cr,) = p.r.of(ChildSaEstablished)
    assert ci.max_bytes == cr.max_bytes == 976 * 1024  # whole kilobytes, rounded down
    assert not sent_responder_lifetime(p, wire)


@pytest.mark.parametrize("i_bytes", [None, 10 * MB])
def test_a_shorter_responder_byte_limit_is_sent_in_kilobytes_and_honoured(
    i_bytes: int | None,
) -> None:
    """The initiator proposed no byte limit, or a longer one: the responder's goes in
    RESPONDER-LIFETIME (kilobytes only, the seconds being equal) and both use it."""
    p = byte_limits(i_bytes, MB)
    wire = logged(p)
    p.run(10)
    (ci,) = p.i.of(ChildSaEstablished)
    (cr,) = p.r.of(ChildSaEstablished)
    (note,) = sent_responder_lifetime(p, wire)
    assert policy.responder_lifetime(note.data) == (None, 976)
    assert ci.max_bytes == cr.max_bytes == 976 * 1024
    assert ci.expire_at is not None and ci.expire_at >= Lifetime().expire_after


def test_responder_lifetime_names_seconds_and_kilobytes_when_both_are_shorter() -> None:
    p = child_lifetimes(
        replace(Lifetime(), max_bytes=10 * MB),
        Lifetime(rekey_after=500, expire_after=600, max_bytes=MB),
    )
    wire = logged(p)
    p.run(10)
    (note,) = sent_responder_lifetime(p, wire)
    assert policy.responder_lifetime(note.data) == (600, 976)
    (ci,) = p.i.of(ChildSaEstablished)
    assert ci.max_bytes == 976 * 1024
    assert ci.expire_at is not None and ci.expire_at <= 600 + 1


def test_negotiated_lifetime_takes_the_shorter_byte_limit_in_whole_kilobytes() -> None:
    ours = Lifetime(rekey_after=3600, expire_after=3960, max_bytes=MB)
    assert negotiated_lifetime(ours, None, None).max_bytes == 976 * 1024
    assert negotiated_lifetime(ours, None, 2000).max_bytes == 976 * 1024
    assert negotiated_lifetime(ours, None, 500).max_bytes == 500 * 1024
    unlimited = Lifetime()
    assert negotiated_lifetime(unlimited, None, None) is unlimited
    assert negotiated_lifetime(unlimited, None, CISCO_KB).max_bytes == CISCO_KB * 1024
    both = negotiated_lifetime(ours, 396, 100)
    assert (both.expire_after, both.max_bytes) == (396, 100 * 1024)
    assert negotiated_lifetime(replace(unlimited, max_bytes=1), None, None).max_bytes == 1024
