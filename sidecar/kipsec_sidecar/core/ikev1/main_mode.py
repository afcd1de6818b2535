"""Main mode (RFC 2409 section 5): six messages that make the ISAKMP SA.

    1  I -> R  HDR, SA                  (+ Vendor IDs: RFC 3947 NAT-T, RFC 3706 DPD)
    2  R -> I  HDR, SA                  (+ Vendor IDs)
    3  I -> R  HDR, KE, Ni              (+ NAT-D, NAT-D)
    4  R -> I  HDR, KE, Nr              (+ NAT-D, NAT-D)
    5  I -> R  HDR*, IDii, HASH_I       (encrypted; on port 4500 if a NAT was seen)
    6  R -> I  HDR*, IDir, HASH_R

Authentication is by pre-shared key (method 1: SKEYID = prf(PSK, Ni_b | Nr_b)), by
signatures (2, 3, 9-11: CERT and SIG join messages 5 and 6) or by public-key encryption
(RFC 2409 sections 5.2 / 5.3), where each side knows the other's RSA certificate in
advance and messages 3-6 become:

    3  I -> R  HDR, KE, <IDii_b>PubKey_r, <Ni_b>PubKey_r                (method 4)
               HDR, <Ni_b>PubKey_r, <KE_b>Ke_i, <IDii_b>Ke_i            (method 5)
    4  R -> I  HDR, KE, <IDir_b>PubKey_i, <Nr_b>PubKey_i                (method 4)
               HDR, <Nr_b>PubKey_i, <KE_b>Ke_r, <IDir_b>Ke_r            (method 5)
    5  I -> R  HDR*, HASH_I
    6  R -> I  HDR*, HASH_R

with SKEYID = prf(hash(Ni_b | Nr_b), CKY-I | CKY-R). The optional HASH(1) is not sent
(each side has one key; after a renewal it also decrypts with the one it replaced, for
a grace, and the opened ID tells which key the peer used: :func:`_open_exchange`). A
sealed payload that does not open counts as a HASH_I / HASH_R mismatch: with OpenSSL's
implicit rejection a wrong key often opens to garbage and only the HASH check (or the
decryption of message 5 / 6) shows it, so both paths end the same way.
The key derivations, HASH_I / HASH_R and the IVs are the wire layer's
(:mod:`.keys`, :mod:`.encryption`); this module only orders the messages, checks what
arrives and decides. Aggressive mode is never offered nor answered.

A message that does not fit (a wrong proposal, a bad KE, a HASH_I that does not match)
ends main mode: the responder answers NO-PROPOSAL-CHOSEN / AUTHENTICATION-FAILED in an
informational exchange (in clear before keys exist, as strongSwan does), both sides
report the failure and close. An initiator refusing message 6 (a certificate, an
identity, HASH_R) tells the responder, which already took main mode as done, and then
deletes that ISAKMP SA (:func:`_fail`).

A wrong pre-shared key shows as a message 5 / 6 that does not decrypt (or decrypts to a
HASH that does not match), and as a notification answering it that does not decrypt
either: IKEv1 has no MAC to tell it from a damaged datagram. Seen twice, or once before
main mode times out, it is reported as an authentication failure (``psk``) whose reason
names the HASH and the likely cause, never the key (:func:`unreadable`, :func:`timed_out`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import rsa

from ..errors import AuthenticationFailed, IntegrityError, ParseError, RemoteProtocolError
from ..ike import dh, ike_auth
from ..ike.config import Address
from ..ike.constants import CertEncoding
from ..ike.events import AuthenticationFailedEvent, IkeSaEstablished, NegotiationFailed
from ..ike.message import Header
from ..ike.payloads import CertPayload, CertReqPayload, VendorIdPayload
from . import informational, keys, negotiation, pubkey, signature
from .constants import AuthMethod, ExchangeType, Flag, NotifyType, PayloadType, ProtocolId
from .message import Message
from .natt import nat_d_hash
from .payloads import (
    HashPayload,
    IdPayload,
    KePayload,
    NatDPayload,
    NoncePayload,
    NotificationPayload,
    Payload,
    SaPayload,
    SealedPayload,
    SigPayload,
)

if TYPE_CHECKING:
    from cryptography import x509

    from .engine import IsakmpSa

#: RFC 3947 section 3.1: MD5("RFC 3947"); RFC 3706 section 7: the DPD vendor ID.
NATT_VENDOR_ID = bytes.fromhex("4a131c81070358455c5728f20e95452f")
DPD_VENDOR_ID = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")
NONCE_LENGTH = 32


@dataclass(slots=True, repr=False)
class Phase1:
    """What main mode negotiates and derives; the repr shows nothing (keys)."""

    sent_sa: SaPayload | None = None
    sa_i_b: bytes = b""  #: the initiator's SA payload body, as sent (HASH_I / HASH_R)
    choice: negotiation.Phase1Choice | None = None
    ke: dh.KeyExchange | None = None
    ke_i: bytes = b""
    ke_r: bytes = b""
    nonce_i: bytes = b""
    nonce_r: bytes = b""
    shared: bytes = b""
    keys: keys.Phase1Keys | None = None
    enc_key: bytes = b""
    ivs: dict[int, bytes] = field(default_factory=dict)
    last_phase1_iv: bytes = b""
    local_id: IdPayload | None = None
    peer_id: IdPayload | None = None  #: public-key encryption: the ID of message 3 / 4
    hash_mismatches: int = 0
    mismatch: str = ""  #: what did not match last: HASH_I, HASH_R or a sealed payload

    @property
    def prf_id(self) -> int:
        assert self.choice is not None
        return self.choice.prf_id

    @property
    def legacy_sha1(self) -> bool:
        """Whether the agreed phase 1 hash is SHA-1 (admitted only for a peer whose
        proposals name it): every prf of this SA passes it to the registry."""
        return self.choice is not None and self.choice.legacy_sha1


def phase2_iv_for(sa: IsakmpSa, message_id: int) -> bytes:
    """The first IV of a quick mode or informational exchange (RFC 2409 Appendix B);
    in main mode, before any encrypted message, hash(g^xi | g^xr)."""
    from .encryption import phase1_iv, phase2_iv

    p1 = sa.p1
    if not p1.last_phase1_iv:
        return phase1_iv(p1.prf_id, p1.ke_i, p1.ke_r, legacy_sha1=sa.p1.legacy_sha1)
    return phase2_iv(p1.prf_id, p1.last_phase1_iv, message_id, legacy_sha1=sa.p1.legacy_sha1)


def _vendor_ids() -> list[Payload]:
    return [VendorIdPayload(NATT_VENDOR_ID), VendorIdPayload(DPD_VENDOR_ID)]


def _note_vendor_ids(sa: IsakmpSa, msg: Message) -> None:
    for vid in msg.all(VendorIdPayload):
        if vid.data == NATT_VENDOR_ID:
            sa.peer_natt = True
        elif vid.data == DPD_VENDOR_ID:
            sa.peer_dpd = True


def _message(sa: IsakmpSa, payloads: list[Payload]) -> Message:
    return Message(sa.cookie_i, sa.cookie_r, ExchangeType.MAIN, 0, tuple(payloads))


# ---------------------------------------------------------------------- initiator


def start(sa: IsakmpSa, now: float) -> None:
    """Message 1: our phase 1 proposals and vendor IDs."""
    from .engine import MAIN_MODE_KEY

    sent = negotiation.phase1_sa_payload(sa.config)
    sa.p1.sent_sa = sent
    msg = _message(sa, [sent, *_vendor_ids()])
    sa.p1.sa_i_b = msg.raw_body(0)
    sa.send(msg, now, key=MAIN_MODE_KEY, encrypt=False, retransmit=True)


def handle(sa: IsakmpSa, header: Header, data: bytes, addr: Address, now: float) -> None:
    """Route a main mode message by our state; anything out of turn is dropped."""
    from .engine import MAIN_MODE_KEY, Phase1State

    state = sa.state
    if state in (Phase1State.ESTABLISHED, Phase1State.REPLACED, Phase1State.CLOSED):
        sa.stats.dropped_unexpected += 1
        return
    # messages 3 and 4 carry sealed bodies under public-key encryption
    sealed = (
        _sealed_types(sa) if state in (Phase1State.MM_ANSWERED_SA, Phase1State.MM_SENT_KE) else ()
    )
    try:
        msg = sa.open(data, header, MAIN_MODE_KEY, sealed)
    except ParseError as exc:
        if not header.flags & Flag.ENCRYPTION:
            raise
        unreadable(sa, exc, now)
        return
    handler = {
        Phase1State.MM_SENT_SA: _on_message_2,
        Phase1State.MM_SENT_KE: _on_message_4,
        Phase1State.MM_SENT_ID: _on_message_6,
        Phase1State.RESPONDER_NEW: _on_message_1,
        Phase1State.MM_ANSWERED_SA: _on_message_3,
        Phase1State.MM_ANSWERED_KE: _on_message_5,
    }[state]
    handler(sa, header, msg, data, addr, now)


def _fail(sa: IsakmpSa, now: float, reason: str, notify: int, *, notify_peer: bool) -> None:
    """End main mode: ``notify`` told to the peer if ``notify_peer``, the failure reported.

    An initiator refusing message 6 also deletes the ISAKMP SA: the responder took main
    mode as done when it sent message 6, and an error notification does not undo that
    (RFC 2408 section 5.14 leaves the action to the receiver; strongSwan acts on one only
    during main mode). A Delete of the ISAKMP SA (RFC 2408 sections 3.15 and 5.15, the
    cookie pair as SPI) does; strongSwan, initiating, sends exactly that when it refuses
    message 6. It goes in an informational of its own after the notification, as RFC
    2408 section 4.8 has one N or D per message (strongSwan reads only the first)."""
    from .engine import Phase1State

    if notify_peer:
        if sa.p1.enc_key:
            # The peer's message 5 / 6 reached us (its HASH or certificate is what we
            # refuse, or it did not decrypt): its last ciphertext block is the last
            # phase 1 IV for the peer too, and the notification's IV derives from it
            # (RFC 2409 Appendix B).
            sa.accept_iv()
        informational.send_notification(sa, notify, now)
        if sa.is_initiator and sa.state is Phase1State.MM_SENT_ID:
            informational.send_delete_isakmp(sa, now)
    sa.emit(NegotiationFailed(ExchangeType.MAIN, reason, notify))
    sa.close("negotiation-failed", now)


def _on_message_2(
    sa: IsakmpSa, header: Header, msg: Message, data: bytes, addr: Address, now: float
) -> None:
    from .engine import MAIN_MODE_KEY, Phase1State

    error = _error_notification(msg)
    if error is not None:
        sa.emit(NegotiationFailed(ExchangeType.MAIN, "refused by the peer", error, by_peer=True))
        sa.close("negotiation-failed", now)
        return
    answer = msg.get(SaPayload)
    if answer is None:
        raise RemoteProtocolError("main mode message 2 without an SA payload")
    choice = negotiation.check_phase1_answer(sa.config, answer)  # RemoteProtocolError if not ours
    sa.cookie_r = header.spi_r
    sa.received(MAIN_MODE_KEY, data)
    _note_vendor_ids(sa, msg)
    sa.p1.choice = choice
    sa.p1.ke = dh.generate(choice.dh_group, sa.rng)
    sa.p1.ke_i = sa.p1.ke.public_bytes
    sa.p1.nonce_i = sa.rng(NONCE_LENGTH)
    payloads: list[Payload] = [KePayload(sa.p1.ke_i), NoncePayload(sa.p1.nonce_i)]
    if _public_key_method(sa):
        sa.p1.local_id = _local_id(sa)
        payloads = _sealed_exchange(sa, sa.p1.ke_i, sa.p1.nonce_i, sa.cookie_i)
    payloads += _certreq(sa) + _nat_d(sa, sa.peer_addr)
    sa.state = Phase1State.MM_SENT_KE
    sa.send(_message(sa, payloads), now, key=MAIN_MODE_KEY, encrypt=False, retransmit=True)


def _on_message_4(
    sa: IsakmpSa, header: Header, msg: Message, data: bytes, addr: Address, now: float
) -> None:
    from .engine import MAIN_MODE_KEY, Phase1State

    opened = _open_exchange(sa, msg, sa.cookie_r, now, message=4)
    if opened is None:
        return
    ke, nonce, peer_id = opened
    p1 = sa.p1
    assert p1.ke is not None and p1.choice is not None
    shared = p1.ke.shared_secret(ke.data)  # InvalidKeyExchange: dropped, we retransmit
    if peer_id is not None and not _peer_id_accepted(sa, peer_id, now):
        return
    sa.received(MAIN_MODE_KEY, data)
    p1.ke_r, p1.nonce_r, p1.shared, p1.peer_id = ke.data, nonce.data, shared, peer_id
    _check_nat(sa, msg, addr)
    _derive(sa)
    if sa.nat_detected and sa.peer_natt:
        sa.enable_natt()
    if p1.local_id is None:
        p1.local_id = _local_id(sa)
    assert p1.keys is not None
    hash_i = keys.hash_i(
        p1.prf_id,
        p1.keys.skeyid,
        p1.ke_i,
        p1.ke_r,
        sa.cookie_i,
        sa.cookie_r,
        p1.sa_i_b,
        p1.local_id.body(),
        legacy_sha1=sa.p1.legacy_sha1,
    )
    sa.state = Phase1State.MM_SENT_ID
    payloads: list[Payload] = [*_id_payload(sa), *_auth_payloads(sa, hash_i)]
    if sa.reauth_of is None:  # a re-authentication keeps the peer's SAs: none
        payloads.append(_initial_contact(sa))
    sa.send(_message(sa, payloads), now, key=MAIN_MODE_KEY, encrypt=True, retransmit=True)


def _on_message_6(
    sa: IsakmpSa, header: Header, msg: Message, data: bytes, addr: Address, now: float
) -> None:
    from .engine import MAIN_MODE_KEY

    id_r = _check_peer(sa, msg, now, responder=True)
    if id_r is None:
        return
    sa.accept_iv()
    sa.received(MAIN_MODE_KEY, data)
    _established(sa, id_r, msg, addr, now)


# ---------------------------------------------------------------------- responder


def _on_message_1(
    sa: IsakmpSa, header: Header, msg: Message, data: bytes, addr: Address, now: float
) -> None:
    from .engine import MAIN_MODE_KEY, Phase1State

    offer = msg.get(SaPayload)
    if offer is None:
        raise RemoteProtocolError("main mode message 1 without an SA payload")
    sa.received(MAIN_MODE_KEY, data)
    _note_vendor_ids(sa, msg)
    choice = negotiation.select_phase1(offer, sa.config)
    if choice is None:
        _fail(
            sa,
            now,
            "no acceptable phase 1 proposal",
            NotifyType.NO_PROPOSAL_CHOSEN,
            notify_peer=True,
        )
        return
    sa.p1.choice = choice
    sa.p1.sa_i_b = msg.raw_body(msg.payloads.index(offer))
    sa.state = Phase1State.MM_ANSWERED_SA
    payloads: list[Payload] = [choice.answer, *_vendor_ids()]
    sa.send(_message(sa, payloads), now, key=MAIN_MODE_KEY, encrypt=False, retransmit=False)


def _on_message_3(
    sa: IsakmpSa, header: Header, msg: Message, data: bytes, addr: Address, now: float
) -> None:
    from .engine import MAIN_MODE_KEY, Phase1State

    opened = _open_exchange(sa, msg, sa.cookie_i, now, message=3)
    if opened is None:
        return
    ke, nonce, peer_id = opened
    p1 = sa.p1
    assert p1.choice is not None
    p1.ke = dh.generate(p1.choice.dh_group, sa.rng)
    p1.shared = p1.ke.shared_secret(ke.data)
    if peer_id is not None and not _peer_id_accepted(sa, peer_id, now):
        return
    sa.received(MAIN_MODE_KEY, data)
    p1.ke_i, p1.ke_r, p1.peer_id = ke.data, p1.ke.public_bytes, peer_id
    p1.nonce_i, p1.nonce_r = nonce.data, sa.rng(NONCE_LENGTH)
    _check_nat(sa, msg, addr)
    _derive(sa)
    payloads: list[Payload] = [KePayload(p1.ke_r), NoncePayload(p1.nonce_r)]
    if _public_key_method(sa):
        p1.local_id = _local_id(sa)
        payloads = _sealed_exchange(sa, p1.ke_r, p1.nonce_r, sa.cookie_r)
    payloads += _certreq(sa) + _nat_d(sa, addr)
    sa.state = Phase1State.MM_ANSWERED_KE
    sa.send(_message(sa, payloads), now, key=MAIN_MODE_KEY, encrypt=False, retransmit=False)


def _on_message_5(
    sa: IsakmpSa, header: Header, msg: Message, data: bytes, addr: Address, now: float
) -> None:
    from .engine import MAIN_MODE_KEY

    id_i = _check_peer(sa, msg, now, responder=False)
    if id_i is None:
        return
    p1 = sa.p1
    assert p1.keys is not None
    sa.accept_iv()
    sa.received(MAIN_MODE_KEY, data)
    if p1.local_id is None:
        p1.local_id = _local_id(sa)
    hash_r = keys.hash_r(
        p1.prf_id,
        p1.keys.skeyid,
        p1.ke_i,
        p1.ke_r,
        sa.cookie_i,
        sa.cookie_r,
        p1.sa_i_b,
        p1.local_id.body(),
        legacy_sha1=sa.p1.legacy_sha1,
    )
    sa.send(
        _message(sa, [*_id_payload(sa), *_auth_payloads(sa, hash_r)]),
        now,
        key=MAIN_MODE_KEY,
        encrypt=True,
        retransmit=False,
    )
    _established(sa, id_i, msg, addr, now)


# ---------------------------------------------------------------------- shared


def _check_peer(sa: IsakmpSa, msg: Message, now: float, *, responder: bool) -> IdPayload | None:
    """Message 5 (``responder`` False: the initiator's) or 6: its ID and HASH checked.

    Returns the peer's ID payload, or None when main mode failed (events sent)."""
    p1 = sa.p1
    assert p1.keys is not None
    peer_id = p1.peer_id if _public_key_method(sa) else msg.get(IdPayload)
    which = "HASH_R" if responder else "HASH_I"
    if peer_id is None:
        raise RemoteProtocolError(f"main mode message {6 if responder else 5} without ID")
    compute = keys.hash_r if responder else keys.hash_i
    expected = compute(
        p1.prf_id,
        p1.keys.skeyid,
        p1.ke_i,
        p1.ke_r,
        sa.cookie_i,
        sa.cookie_r,
        p1.sa_i_b,
        peer_id.body() if p1.peer_id is not None else msg.raw_body(msg.payloads.index(peer_id)),
        legacy_sha1=p1.legacy_sha1,
    )
    if p1.peer_id is not None:  # public-key encryption: checked when it arrived
        return _check_hash(sa, msg, peer_id, expected, now, which)
    if sa.config.auth.method == "signature":
        return peer_id if _check_signature(sa, msg, peer_id, expected, now) else None
    if _check_hash(sa, msg, peer_id, expected, now, which) is None:
        return None
    if not _identity_allowed(sa, peer_id):
        sa.emit(AuthenticationFailedEvent(sa.peer_addr, "identity", False, _printable(peer_id)))
        _fail(sa, now, "unexpected identity", NotifyType.INVALID_ID_INFORMATION, notify_peer=True)
        return None
    return peer_id


def _check_hash(
    sa: IsakmpSa, msg: Message, peer_id: IdPayload, expected: bytes, now: float, which: str
) -> IdPayload | None:
    """The peer's HASH_I / HASH_R against ``expected`` (PSK, public-key encryption)."""
    peer_hash = msg.get(HashPayload)
    if peer_hash is None:
        raise RemoteProtocolError(f"main mode message without {which}")
    if not hmac.compare_digest(expected, peer_hash.data):
        # message 5 / 6 opened: the peer holds keys it can read our refusal with
        _hash_mismatch(sa, peer_id, now, which, notify_peer=True)
        return None
    return peer_id


# ------------------------------------------------------------ public-key encryption


def _public_key_method(sa: IsakmpSa) -> int | None:
    """4 or 5 when main mode authenticates by public-key encryption, else None."""
    choice = sa.p1.choice
    if choice is None or choice.suite.auth_method not in _PUBLIC_KEY_METHODS:
        return None
    return choice.suite.auth_method


_PUBLIC_KEY_METHODS = (AuthMethod.RSA_ENCRYPTION, AuthMethod.RSA_REVISED_ENCRYPTION)


def _sealed_types(sa: IsakmpSa) -> tuple[int, ...]:
    method = _public_key_method(sa)
    if method == AuthMethod.RSA_ENCRYPTION:
        return (PayloadType.ID, PayloadType.NONCE)
    if method == AuthMethod.RSA_REVISED_ENCRYPTION:
        return (PayloadType.NONCE, PayloadType.KE, PayloadType.ID, PayloadType.CERT)
    return ()


def _peer_public_key(sa: IsakmpSa) -> rsa.RSAPublicKey:
    from cryptography import x509  # only public-key encryption peers: see ike_auth

    key = x509.load_der_x509_certificate(sa.config.auth.peer_certificate).public_key()
    assert isinstance(key, rsa.RSAPublicKey)  # AuthConfig checked it
    return key


def _revised_key(sa: IsakmpSa, nonce: bytes, cookie: bytes) -> bytes:
    assert sa.p1.choice is not None
    return pubkey.revised_key(
        sa.p1.prf_id, nonce, cookie, sa.p1.choice.encryption_key_len, legacy_sha1=sa.p1.legacy_sha1
    )


def _sealed_exchange(sa: IsakmpSa, ke: bytes, nonce: bytes, cookie: bytes) -> list[Payload]:
    """Message 3 or 4 under public-key encryption: our KE, ID and nonce, sealed."""
    assert sa.p1.local_id is not None
    peer_key = _peer_public_key(sa)
    sealed_nonce = pubkey.seal_rsa(NoncePayload(nonce), peer_key)
    if _public_key_method(sa) == AuthMethod.RSA_ENCRYPTION:
        return [KePayload(ke), pubkey.seal_rsa(sa.p1.local_id, peer_key), sealed_nonce]
    ke_key = _revised_key(sa, nonce, cookie)
    return [
        sealed_nonce,
        pubkey.seal_symmetric(KePayload(ke), ke_key),
        pubkey.seal_symmetric(sa.p1.local_id, ke_key),
    ]


def _open_exchange(
    sa: IsakmpSa, msg: Message, cookie: bytes, now: float, *, message: int
) -> tuple[KePayload, NoncePayload, IdPayload | None] | None:
    """KE, nonce (and, under public-key encryption, the peer's ID) of message 3 / 4.

    A sealed payload that does not open is a mismatch (see the module docstring);
    None when that ended main mode. After a renewal the peer may still encrypt to our
    retired key (:func:`_decryption_keys`): the key whose opening names the peer's
    configured certificate is the one it used (:func:`_names_peer`)."""
    method = _public_key_method(sa)
    if method is None:
        ke, nonce = msg.get(KePayload), msg.get(NoncePayload)
        if ke is None or nonce is None:
            raise RemoteProtocolError(f"main mode message {message} without KE and Nonce")
        return ke, nonce, None
    sealed = {p.payload_type: p for p in msg.all(SealedPayload)}
    if PayloadType.NONCE not in sealed or PayloadType.ID not in sealed:
        raise RemoteProtocolError(f"main mode message {message} without sealed Nonce and ID")
    if method == AuthMethod.RSA_REVISED_ENCRYPTION and PayloadType.KE not in sealed:
        raise RemoteProtocolError(f"main mode message {message} without sealed KE")
    candidates = _decryption_keys(sa, now)
    first = None
    for own_key in candidates:
        opened = _open_sealed(sa, msg, sealed, own_key, cookie)
        if opened is not None and (len(candidates) == 1 or _names_peer(sa, opened[2])):
            return opened
        first = first or opened
    if first is not None:  # opened, naming someone else: _peer_id_accepted refuses it
        return first
    _hash_mismatch(sa, None, now, "a sealed payload", notify_peer=not sa.is_initiator)
    return None


def _decryption_keys(sa: IsakmpSa, now: float) -> list[rsa.RSAPrivateKey]:
    """Our current private key, then the one a renewal retired while its grace lasts
    (:class:`~kipsec_sidecar.core.ike.config.RetiredKey`; used to decrypt only)."""
    auth = sa.config.auth
    retired = auth.retired_key.usable(now) if auth.retired_key is not None else None
    return [auth.private_key] if retired is None else [auth.private_key, retired]


def _open_sealed(
    sa: IsakmpSa,
    msg: Message,
    sealed: dict[int, SealedPayload],
    own_key: rsa.RSAPrivateKey,
    cookie: bytes,
) -> tuple[KePayload, NoncePayload, IdPayload] | None:
    """Message 3 / 4's KE, nonce and ID opened with ``own_key``; None if any does not.

    Under method 5 the key only opens the nonce: Ke_i / Ke_r derive from the nonce and
    the sender's cookie, so the KE and ID open or not with the nonce."""
    opened: list[Payload | None]
    try:
        opened_nonce = pubkey.open_rsa(sealed[PayloadType.NONCE], own_key)
        if _public_key_method(sa) == AuthMethod.RSA_ENCRYPTION:
            opened = [
                msg.get(KePayload),
                opened_nonce,
                pubkey.open_rsa(sealed[PayloadType.ID], own_key),
            ]
        elif isinstance(opened_nonce, NoncePayload):
            ke_key = _revised_key(sa, opened_nonce.data, cookie)
            opened = [
                pubkey.open_symmetric(sealed[PayloadType.KE], ke_key),
                opened_nonce,
                pubkey.open_symmetric(sealed[PayloadType.ID], ke_key),
            ]
        else:
            opened = []
    except AuthenticationFailed:
        return None
    match opened:
        case [KePayload() as ke, NoncePayload() as nonce, IdPayload() as peer_id]:
            return ke, nonce, peer_id
    return None


def _names_peer(sa: IsakmpSa, peer_id: IdPayload) -> bool:
    """Whether ``peer_id`` names the peer's configured certificate. A key the peer did
    not encrypt to opens its sealed payloads to random bytes (OpenSSL's implicit
    rejection of bad PKCS#1 v1.5 padding), which name no one: this is how main mode
    tells which of our keys the peer used without the optional HASH(1)."""
    from cryptography import x509  # only public-key encryption peers: see ike_auth

    from ..ike import certs

    configured = x509.load_der_x509_certificate(sa.config.auth.peer_certificate)
    return certs.identity_matches(configured, peer_id.id_type, peer_id.data)


def _peer_id_accepted(sa: IsakmpSa, peer_id: IdPayload, now: float) -> bool:
    """Public-key encryption: the ID must name the peer's configured certificate (whose
    chain the trust anchors still validate) and the identity we expect, if any."""
    configured = CertPayload(CertEncoding.X509_SIGNATURE, sa.config.auth.peer_certificate)
    return _certificate_accepted(sa, [configured], peer_id, now)


def _certificate_accepted(
    sa: IsakmpSa,
    certificates: list[CertPayload],
    peer_id: IdPayload,
    now: float,
    check: Callable[[x509.Certificate], None] | None = None,
) -> bool:
    """The peer's chain and identity (and ``check`` on its certificate, a signature);
    False, the peer told and main mode failed, when any of them is wrong."""
    try:
        cert = ike_auth.peer_certificate(
            sa.config.auth, certificates, peer_id.id_type, peer_id.data, sa.wall_clock(now)
        )
        if check is not None:
            check(cert)
    except AuthenticationFailed as exc:
        reason = str(getattr(exc, "reason", "signature"))
        sa.emit(AuthenticationFailedEvent(sa.peer_addr, reason, False, _printable(peer_id)))
        _fail(sa, now, str(exc), NotifyType.AUTHENTICATION_FAILED, notify_peer=True)
        return False
    return True


def _id_payload(sa: IsakmpSa) -> list[Payload]:
    """Our ID in message 5 / 6, unless public-key encryption sent it in 3 / 4."""
    assert sa.p1.local_id is not None
    return [] if _public_key_method(sa) else [sa.p1.local_id]


def _check_signature(
    sa: IsakmpSa, msg: Message, peer_id: IdPayload, expected: bytes, now: float
) -> bool:
    """The peer's certificate (chain, identity) and its SIG over HASH_I / HASH_R."""
    sig = msg.get(SigPayload)
    if sig is None:
        raise RemoteProtocolError("a signature method and no SIG payload")
    assert sa.p1.choice is not None
    method = sa.p1.choice.suite.auth_method

    def verify(cert: x509.Certificate) -> None:
        signature.verify_hash(cert.public_key(), method, expected, sig.data)

    return _certificate_accepted(sa, msg.all(CertPayload), peer_id, now, verify)


def _auth_payloads(sa: IsakmpSa, own_hash: bytes) -> list[Payload]:
    """HASH_I / HASH_R itself (PSK), or our certificates and the SIG over it."""
    cfg = sa.config.auth
    if cfg.method == "psk" or _public_key_method(sa):
        return [HashPayload(own_hash)]
    assert sa.p1.choice is not None
    certificates: list[Payload] = [
        CertPayload(CertEncoding.X509_SIGNATURE, der) for der in cfg.certificates
    ]
    method = sa.p1.choice.suite.auth_method
    return [*certificates, SigPayload(signature.sign_hash(cfg.private_key, method, own_hash))]


def _initial_contact(sa: IsakmpSa) -> NotificationPayload:
    """INITIAL-CONTACT in message 5 (RFC 2407 section 4.6.3.3): a peer that still holds
    SAs from an earlier run of ours (a restarted sidecar) may drop them."""
    return NotificationPayload(
        NotifyType.INITIAL_CONTACT, protocol=ProtocolId.ISAKMP, spi=sa.cookie_i + sa.cookie_r
    )


def _certreq(sa: IsakmpSa) -> list[Payload]:
    """An empty CERTREQ (any CA) with signatures, so a peer that sends its certificate
    only when asked (strongSwan's default) sends it."""
    if sa.config.auth.method != "signature" or _public_key_method(sa):
        return []
    return [CertReqPayload(CertEncoding.X509_SIGNATURE, b"")]


#: HASH_I / HASH_R mismatches before main mode fails. Without a MAC, one mismatch may be
#: a datagram damaged or forged on the way (the peer's retransmission then succeeds);
#: the same mismatch again is a wrong pre-shared key. Under PSK a message 5 / 6 (or the
#: peer's notification answering ours) that does not decrypt counts the same.
HASH_MISMATCHES_ALLOWED = 1


def unreadable(sa: IsakmpSa, exc: RemoteProtocolError, now: float) -> None:
    """An encrypted message from the peer did not open (``exc``: it decrypted to no
    payload chain, or its HASH(1) did not match).

    While main mode waits for message 5 / 6 under PSK, that is how a wrong pre-shared
    key shows: both sides derive their keys from it and IKEv1 has no MAC to tell a
    wrong key from a damaged datagram. It counts as a HASH_I / HASH_R mismatch (the
    first dropped, the second ends main mode as an authentication failure). The
    responder tells the initiator (as strongSwan does), though only a peer with our key
    could read it; the initiator does not. Otherwise ``exc`` is raised: the message is
    dropped as malformed."""
    from .engine import Phase1State

    waiting = sa.state in (Phase1State.MM_ANSWERED_KE, Phase1State.MM_SENT_ID)
    if not waiting or auth_check(sa) != "psk":
        raise exc
    _hash_mismatch(
        sa, None, now, _peer_hash_name(sa), notify_peer=not sa.is_initiator, seen=str(exc)
    )


def timed_out(sa: IsakmpSa, now: float) -> bool:
    """Main mode ran out of time (retransmissions, or the half-open limit). If it saw a
    HASH mismatch (or, under PSK, a message it could not open) the peer is not silent
    and the key is the likely cause: authentication failed is reported and the SA
    closed (True). False: nothing of the kind was seen, the caller reports the time-out."""
    if not sa.p1.hash_mismatches:
        return False
    _authentication_failed(sa, None, now, sa.p1.mismatch, notify_peer=False)
    return True


def _peer_hash_name(sa: IsakmpSa) -> str:
    return "HASH_R" if sa.is_initiator else "HASH_I"


def _hash_mismatch(
    sa: IsakmpSa,
    payload: IdPayload | None,
    now: float,
    which: str,
    *,
    notify_peer: bool,
    seen: str = "",
) -> None:
    sa.p1.hash_mismatches += 1
    sa.p1.mismatch = which
    if sa.p1.hash_mismatches <= HASH_MISMATCHES_ALLOWED:
        what = f"undecryptable ({seen})" if seen else f"{which} does not match"
        raise IntegrityError(f"{what} (dropped; waiting for a retransmission)")
    _authentication_failed(sa, payload, now, which, notify_peer=notify_peer)


def _authentication_failed(
    sa: IsakmpSa, payload: IdPayload | None, now: float, which: str, *, notify_peer: bool
) -> None:
    """The peer's HASH (or a sealed payload, or under PSK its encrypted message) did not
    match twice: authentication failed. The reason names what was seen and, under PSK,
    the likely cause; never any key material."""
    claimed = None if payload is None else _printable(payload)
    sa.emit(AuthenticationFailedEvent(sa.peer_addr, auth_check(sa), False, claimed))
    reason = f"{which} does not match"
    if auth_check(sa) == "psk":
        seen = "answer to message 5" if sa.is_initiator else "message 5"
        reason = f"{which} mismatch or undecryptable {seen}: probably a wrong pre-shared key"
    _fail(sa, now, reason, NotifyType.AUTHENTICATION_FAILED, notify_peer=notify_peer)


def auth_check(sa: IsakmpSa) -> str:
    """The authentication this side is configured for, as the ``reason`` of an
    :class:`AuthenticationFailedEvent` names it: ``psk``, ``signature`` or
    ``public-key`` (encryption, methods 4 / 5). The configuration decides, not the
    negotiation: a refusal may come before message 2 chose a method."""
    auth = sa.config.auth
    if auth.method == "psk":
        return "psk"
    return "signature" if auth.public_key_encryption is None else "public-key"


def _derive(sa: IsakmpSa) -> None:
    p1 = sa.p1
    assert p1.choice is not None
    if _public_key_method(sa):
        skeyid = keys.skeyid_public_key(
            p1.prf_id,
            p1.nonce_i,
            p1.nonce_r,
            sa.cookie_i,
            sa.cookie_r,
            legacy_sha1=sa.p1.legacy_sha1,
        )
    elif sa.config.auth.method == "signature":
        skeyid = keys.skeyid_signature(
            p1.prf_id, p1.nonce_i, p1.nonce_r, p1.shared, legacy_sha1=sa.p1.legacy_sha1
        )
    else:
        skeyid = keys.skeyid_psk(
            p1.prf_id, sa.config.auth.psk, p1.nonce_i, p1.nonce_r, legacy_sha1=sa.p1.legacy_sha1
        )
    p1.keys = keys.derive_phase1_keys(
        p1.prf_id,
        skeyid,
        p1.shared,
        sa.cookie_i,
        sa.cookie_r,
        p1.choice.encryption_key_len,
        legacy_sha1=sa.p1.legacy_sha1,
    )
    p1.enc_key = p1.keys.encryption_key


def _local_id(sa: IsakmpSa) -> IdPayload:
    if sa.config.auth.method == "signature":
        own = ike_auth.configured_identity(sa.config.auth)
        return IdPayload(own.id_type, own.data)
    identity = sa.config.auth.local_id
    if identity is None:
        identity_type, data = negotiation.address_identity(sa.config.local_addr[0])
        return IdPayload(identity_type, data)
    return IdPayload(identity.id_type, identity.data)  # IKEv1 and IKEv2 share the numbers


def _identity_allowed(sa: IsakmpSa, payload: IdPayload) -> bool:
    wanted = sa.config.auth.remote_id
    if wanted is None:
        return True
    return wanted.id_type == payload.id_type and wanted.data == payload.data


def _printable(payload: IdPayload) -> str:
    return ike_auth.printable_identity(payload.id_type, payload.data)


def _error_notification(msg: Message) -> int | None:
    for n in msg.all(NotificationPayload):
        if n.notify_type < 8192:
            return n.notify_type
    return None


def _nat_d(sa: IsakmpSa, remote: Address) -> list[Payload]:
    """NAT-D of the peer's address, then ours (RFC 3947 section 3.2), if it speaks NAT-T."""
    if not sa.peer_natt:
        return []
    prf_id = sa.p1.prf_id
    return [
        NatDPayload(
            nat_d_hash(prf_id, sa.cookie_i, sa.cookie_r, *remote, legacy_sha1=sa.p1.legacy_sha1)
        ),
        NatDPayload(
            nat_d_hash(
                prf_id,
                sa.cookie_i,
                sa.cookie_r,
                *sa.local_addr,
                legacy_sha1=sa.p1.legacy_sha1,
            )
        ),
    ]


def _check_nat(sa: IsakmpSa, msg: Message, addr: Address) -> None:
    """RFC 3947 section 3.2: the first NAT-D is of the receiver, the others of the sender."""
    hashes = [p.data for p in msg.all(NatDPayload)]
    if not hashes or not sa.peer_natt:
        return
    prf_id = sa.p1.prf_id
    mine = nat_d_hash(
        prf_id, sa.cookie_i, sa.cookie_r, *sa.local_addr, legacy_sha1=sa.p1.legacy_sha1
    )
    theirs = nat_d_hash(prf_id, sa.cookie_i, sa.cookie_r, *addr, legacy_sha1=sa.p1.legacy_sha1)
    sa.nat_local = not hmac.compare_digest(hashes[0], mine)
    sa.nat_remote = not any(hmac.compare_digest(h, theirs) for h in hashes[1:])


def _established(sa: IsakmpSa, remote: IdPayload, msg: Message, addr: Address, now: float) -> None:
    p1 = sa.p1
    assert p1.choice is not None and p1.local_id is not None
    sa.remote_identity = _printable(remote)
    sa.initial_contact = any(
        n.notify_type == NotifyType.INITIAL_CONTACT for n in msg.all(NotificationPayload)
    )
    sa.set_established(now)
    sa.touch(now)
    sa.emit(
        IkeSaEstablished(
            spi_i=sa.cookie_i,
            spi_r=sa.cookie_r,
            initiator=sa.is_initiator,
            remote_addr=sa.peer_addr,
            local_id=_printable(p1.local_id),
            remote_id=sa.remote_identity,
            encr_id=p1.choice.encr_id,
            encr_key_bits=p1.choice.encr_key_bits,
            integ_id=p1.choice.integ_id,
            prf_id=p1.choice.prf_id,
            dh_group=p1.choice.dh_group,
            nat_local=sa.nat_local,
            nat_remote=sa.nat_remote,
            fragmentation=False,
        )
    )
    sa.take_over(now)
    if sa.is_initiator and sa.established:  # not when a crossing one won (take_over)
        adopted = {child.name for child in sa.children.values()}
        for child in sa.config.started_children:
            if child.name not in adopted:
                sa.initiate_child(child.name, now)


__all__ = [
    "DPD_VENDOR_ID",
    "NATT_VENDOR_ID",
    "Phase1",
    "auth_check",
    "handle",
    "start",
    "timed_out",
    "unreadable",
]
