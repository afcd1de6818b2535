"""Informational exchanges (RFC 2408 section 4.8, RFC 2409 section 5.7): Delete,
notifications and dead peer detection (RFC 3706).

Each informational exchange is one message with its own message ID. Once the ISAKMP SA
has keys it is encrypted and starts with HASH(1) = prf(SKEYID_a, M-ID | N/D); before
that (a main mode refused early) it goes in clear, as strongSwan sends and expects. An
unauthenticated notification is only believed while main mode is still running, and
only to end it: it cannot delete anything established.

DPD: when nothing arrived for ``liveness_interval`` seconds, an R-U-THERE with a
sequence number is sent and resent on the retransmission schedule; the matching
R-U-THERE-ACK (any authentic message, in fact) clears it, silence makes the peer dead.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from ..errors import IntegrityError, ParseError
from ..ike.child_sa import ChildSa
from ..ike.events import AuthenticationFailedEvent, NegotiationFailed, PeerDead
from ..ike.message import Header
from . import keys, main_mode, quick_mode
from .constants import ExchangeType, Flag, NotifyType, ProtocolId
from .message import Message, encode_payloads
from .payloads import DeletePayload, HashPayload, NotificationPayload, Payload

if TYPE_CHECKING:
    from .engine import IsakmpSa


def _new_message_id(sa: IsakmpSa) -> int:
    while True:
        mid = int.from_bytes(sa.rng(4), "big")
        if mid and mid not in sa.quick:
            return mid


def _send(sa: IsakmpSa, payloads: list[Payload], now: float, *, retransmit: bool = False) -> int:
    """One informational message; encrypted with HASH(1) once keys exist (from main
    mode message 3 / 4 on: strongSwan drops a clear one then)."""
    if sa.p1.keys is None or not sa.p1.enc_key:  # main mode refused early: in clear
        mid = 0
        msg = Message(sa.cookie_i, sa.cookie_r, ExchangeType.INFORMATIONAL, 0, tuple(payloads))
        sa.send(msg, now, key=mid, encrypt=False, retransmit=False)
        return mid
    mid = _new_message_id(sa)
    tail = encode_payloads(payloads)[1]
    hash1 = keys.informational_hash(
        sa.p1.prf_id, sa.p1.keys.skeyid_a, mid, tail, legacy_sha1=sa.p1.legacy_sha1
    )
    msg = Message(
        sa.cookie_i,
        sa.cookie_r,
        ExchangeType.INFORMATIONAL,
        mid,
        (HashPayload(hash1), *payloads),
    )
    sa.send(
        msg,
        now,
        key=mid,
        encrypt=True,
        retransmit=retransmit,
        on_timeout=(lambda t: _dpd_timed_out(sa, t)) if retransmit else None,
    )
    if not retransmit:
        sa.forget_exchange(mid)
    return mid


def send_notification(
    sa: IsakmpSa, notify_type: int, now: float, *, protocol: int = 0, spi: bytes = b""
) -> None:
    """Tell the peer why we stop (NO-PROPOSAL-CHOSEN, AUTHENTICATION-FAILED, ...): for
    the ISAKMP SA by default, for a quick mode with its ``protocol`` and offered ``spi``."""
    if not protocol:
        protocol, spi = ProtocolId.ISAKMP, sa.cookie_i + sa.cookie_r
    _send(sa, [NotificationPayload(notify_type, protocol=protocol, spi=spi)], now)


def send_delete_child(sa: IsakmpSa, child: ChildSa, now: float) -> None:
    """Delete for the inbound SPI of ``child`` (the peer removes its outbound SA)."""
    _send(sa, [DeletePayload(child.protocol, (child.spi_in,))], now)


def send_delete_isakmp(sa: IsakmpSa, now: float) -> None:
    """Delete for the ISAKMP SA itself (its cookie pair)."""
    _send(sa, [DeletePayload(ProtocolId.ISAKMP, (sa.cookie_i + sa.cookie_r,))], now)


def send_dpd(sa: IsakmpSa, now: float) -> None:
    """R-U-THERE with the next sequence number (RFC 3706 section 5.3)."""
    sa.dpd_seq = (sa.dpd_seq + 1) & 0xFFFFFFFF
    payload = NotificationPayload(
        NotifyType.R_U_THERE, spi=sa.cookie_i + sa.cookie_r, data=sa.dpd_seq.to_bytes(4, "big")
    )
    sa.dpd_outstanding = _send(sa, [payload], now, retransmit=True)


def _dpd_timed_out(sa: IsakmpSa, now: float) -> None:
    sa.emit(
        PeerDead(sa.peer_addr, ExchangeType.INFORMATIONAL, sa.config.retransmission.max_tries + 1)
    )
    sa.close("peer-dead", now)


def handle(sa: IsakmpSa, header: Header, data: bytes, now: float) -> None:
    """One informational message from the peer."""
    if not header.flags & Flag.ENCRYPTION:
        _clear_notification(sa, data, now)
        return
    mid = header.message_id
    try:
        msg = _open(sa, header, data)
    except (ParseError, IntegrityError) as exc:
        # during main mode, under PSK, what a wrong key looks like (else raised again)
        main_mode.unreadable(sa, exc, now)
        return
    sa.received(mid, data)
    sa.forget_exchange(mid)
    if sa.keyed:
        sa.touch(now)
    for payload in msg.payloads[1:]:
        if isinstance(payload, DeletePayload):
            _on_delete(sa, payload, now)
        elif isinstance(payload, NotificationPayload):
            _on_notification(sa, payload, now)
        if sa.closed:
            return


def _open(sa: IsakmpSa, header: Header, data: bytes) -> Message:
    """Decrypt an informational and check its HASH(1); ParseError / IntegrityError if
    it does not open. Once decrypted its exchange is over (one message)."""
    mid = header.message_id
    msg = sa.open(data, header, mid)
    sa.forget_exchange(mid)
    first = msg.payloads[0] if msg.payloads else None
    if not isinstance(first, HashPayload):
        raise IntegrityError("an encrypted informational message without HASH(1)")
    assert sa.p1.keys is not None
    expected = keys.informational_hash(
        sa.p1.prf_id, sa.p1.keys.skeyid_a, mid, msg.raw_after(0), legacy_sha1=sa.p1.legacy_sha1
    )
    if not hmac.compare_digest(expected, first.data):
        raise IntegrityError("informational HASH(1) does not match")
    return msg


def _on_delete(sa: IsakmpSa, payload: DeletePayload, now: float) -> None:
    if payload.protocol == ProtocolId.ISAKMP:
        if sa.cookie_i + sa.cookie_r in payload.spis:
            # A peer that wants the IPsec SAs gone deletes them too (as we do).
            sa.end_isakmp_sa("deleted-by-peer", now)
        return
    owner = sa.current()  # after a re-authentication the successor holds them
    for spi in payload.spis:
        for child in list(owner.children.values()):
            if child.spi_out == spi and child.protocol == payload.protocol:
                owner.remove_child(child, "deleted-by-peer")


def _on_notification(sa: IsakmpSa, payload: NotificationPayload, now: float) -> None:
    kind = payload.notify_type
    if kind == NotifyType.R_U_THERE:
        ack = NotificationPayload(NotifyType.R_U_THERE_ACK, spi=payload.spi, data=payload.data)
        _send(sa, [ack], now)
    elif kind == NotifyType.R_U_THERE_ACK:
        outstanding = sa.dpd_outstanding
        if outstanding is not None and payload.data == sa.dpd_seq.to_bytes(4, "big"):
            sa.forget_exchange(outstanding)
            sa.dpd_outstanding = None
    elif kind < 8192 and not sa.keyed:
        _main_mode_refused(sa, kind, now)
    elif kind < 8192:
        quick_mode.refused_by_peer(sa, payload.spi, kind, now)


def _clear_notification(sa: IsakmpSa, data: bytes, now: float) -> None:
    """An informational in clear: believed only to end a main mode still running."""
    from .message import decode_message

    msg = decode_message(data)
    if sa.keyed:
        sa.stats.dropped_unexpected += 1
        return
    for payload in msg.all(NotificationPayload):
        if payload.notify_type < 8192:
            _main_mode_refused(sa, payload.notify_type, now)
            return


def _main_mode_refused(sa: IsakmpSa, kind: int, now: float) -> None:
    if kind == NotifyType.AUTHENTICATION_FAILED:
        # the peer refused what we authenticated with
        sa.emit(AuthenticationFailedEvent(sa.peer_addr, main_mode.auth_check(sa), True))
        sa.close("authentication-failed", now)
        return
    sa.emit(NegotiationFailed(ExchangeType.MAIN, "refused by the peer", kind, by_peer=True))
    sa.close("negotiation-failed", now)


__all__ = [
    "handle",
    "send_delete_child",
    "send_delete_isakmp",
    "send_dpd",
    "send_notification",
]
