"""Quick mode (RFC 2409 section 5.5): three messages that make a pair of IPsec SAs.

    1  I -> R  HDR*, HASH(1), SA, Ni [, KE] [, IDci, IDcr]
    2  R -> I  HDR*, HASH(2), SA, Nr [, KE] [, IDci, IDcr]
    3  I -> R  HDR*, HASH(3)

Every quick mode has its own message ID and IV chain. The client IDs are the traffic
selectors (one each way: IKEv1 cannot carry a list), built from and checked against the
ChildConfig with :mod:`kipsec_sidecar.core.traffic_selectors`; a responder accepts a
proposal only if our configuration covers it (IKEv1 has no narrowing). A KE payload
(PFS) is sent when the first proposal names a Diffie-Hellman group. Each lifetime, in
seconds and in kilobytes (the child's byte limit), is the initiator's proposed one, or
the responder's when that is shorter (or the initiator proposed none): the responder
then sends RESPONDER-LIFETIME in message 2 and both use it (RFC 2407 section
4.6.3.1). A proposal is never refused for its lifetimes.

The SAs are reported with the IKEv2 engine's own
:func:`~kipsec_sidecar.core.ike.child_negotiation.install` (ChildSaEstablished,
with ``replaces`` on a rekey), so the datapaths install them
unchanged: the initiator installs on message 2 before message 3 leaves, the responder
before message 2 leaves (strongSwan sends on the new pair before its message 3). The
responder resends message 2 until message 3 arrives and removes the pair if it never
does; the initiator answers a repeated message 2 with the message 3 it sent.

A rekey is a new quick mode for the same ChildConfig. Without a commit bit neither side
knows when the other has installed the new pair, so both keep sending on the old pair
(``defer_outbound``) and delete it ``REKEY_DELETE_DELAY`` seconds later (whichever Delete
comes first): the daemon moves outbound traffic to the new pair when the old one goes,
and by then the peer holds the new inbound SA.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import IntegrityError, ParseError, RemoteProtocolError
from ..ike import dh
from ..ike.child_negotiation import ChildChoice, install
from ..ike.child_sa import ChildSa, ChildState
from ..ike.config import ChildConfig, Lifetime
from ..ike.events import NegotiationFailed
from ..ike.message import Header
from ..traffic_selectors import TrafficSelector
from . import informational, keys, negotiation, policy
from .constants import ExchangeType, NotifyType
from .identity import id_selector, selector_id
from .message import Message, encode_payloads
from .payloads import (
    HashPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotificationPayload,
    Payload,
    SaPayload,
)

if TYPE_CHECKING:
    from .engine import IsakmpSa

NONCE_LENGTH = 32
#: Seconds between a rekey's new SAs and the Delete of the old ones (in-flight packets).
REKEY_DELETE_DELAY = 5.0
#: Seconds between dropping the replaced pair and the Delete that makes the peer drop it.
DELETE_GRACE = 1.0


@dataclass(slots=True, repr=False)
class QuickExchange:
    """One quick mode in progress (either side); repr hides nonces and keys."""

    message_id: int
    initiator: bool
    config: ChildConfig
    spi_in: bytes
    nonce_i: bytes = b""
    nonce_r: bytes = b""
    ke: dh.KeyExchange | None = None
    shared: bytes | None = None
    sent_sa: SaPayload | None = None
    choice: negotiation.Phase2Choice | None = None
    local_ts: tuple[TrafficSelector, ...] = ()
    remote_ts: tuple[TrafficSelector, ...] = ()
    rekey: ChildSa | None = None
    lifetime: Lifetime | None = None  #: as negotiated, when shorter than the config's


def negotiated_lifetime(
    lifetime: Lifetime, seconds: int | None, kilobytes: int | None = None
) -> Lifetime:
    """``lifetime`` (a ChildConfig's) cut to the shorter limits the peer named (in its
    proposal, or in RESPONDER-LIFETIME): the hard limit in seconds, the soft one keeping
    its proportion, and the byte limit. Ours counts in the whole kilobytes we send
    (:func:`policy.in_kilobytes`), so both sides hold the same byte limit."""
    agreed = lifetime
    if seconds and not (lifetime.expire_after and seconds >= lifetime.expire_after):
        ratio = lifetime.rekey_after / lifetime.expire_after if lifetime.expire_after else 0.9
        rekey = min(lifetime.rekey_after, seconds * ratio) if lifetime.rekey_after else 0.0
        agreed = replace(lifetime, rekey_after=rekey, expire_after=float(seconds))
    kb = _shortest(_our_kilobytes(lifetime), kilobytes)
    if kb is not None and kb * policy.KILOBYTE != lifetime.max_bytes:
        agreed = replace(agreed, max_bytes=kb * policy.KILOBYTE)
    return agreed


def _our_kilobytes(lifetime: Lifetime) -> int | None:
    return policy.in_kilobytes(lifetime.max_bytes) if lifetime.max_bytes else None


def _shortest(*limits: int | None) -> int | None:
    """The lowest of the limits named (None and 0 name none)."""
    return min((x for x in limits if x), default=None)


def _if_shorter(ours: int | None, offered: int | None) -> int | None:
    """Our limit when the initiator must hear it: it proposed a longer one, or none."""
    return ours if ours and (offered is None or offered > ours) else None


def _responder_lifetime(
    protocol: int, spi: bytes, seconds: int | None, kilobytes: int | None
) -> NotificationPayload:
    """RESPONDER-LIFETIME (RFC 2407 section 4.6.3.1) for our inbound ``spi``."""
    return NotificationPayload(
        NotifyType.RESPONDER_LIFETIME,
        protocol=protocol,
        spi=spi,
        data=policy.responder_lifetime_data(seconds, kilobytes),
    )


def _hash_tail(payloads: list[Payload]) -> bytes:
    return encode_payloads(payloads)[1]


def _new_message_id(sa: IsakmpSa) -> int:
    while True:
        mid = int.from_bytes(sa.rng(4), "big")
        if mid and mid not in sa.quick:
            return mid


def _verify(expected: bytes, msg: Message, which: str) -> None:
    """The HASH payload that opens ``msg`` must be ``expected`` (IntegrityError: dropped)."""
    first = msg.payloads[0]
    assert isinstance(first, HashPayload)
    if not hmac.compare_digest(expected, first.data):
        raise IntegrityError(f"quick mode {which} does not match")


def _message(sa: IsakmpSa, mid: int, payloads: list[Payload]) -> Message:
    return Message(sa.cookie_i, sa.cookie_r, ExchangeType.QUICK, mid, tuple(payloads))


def _skeyid(sa: IsakmpSa) -> keys.Phase1Keys:
    assert sa.p1.keys is not None
    return sa.p1.keys


# ---------------------------------------------------------------------- initiator


def start(sa: IsakmpSa, cfg: ChildConfig, now: float, *, rekey: ChildSa | None = None) -> None:
    """Quick mode message 1 for ``cfg`` (a rekey of ``rekey`` when given)."""
    mid = _new_message_id(sa)
    spi_in = sa.random_spi(4)
    ex = QuickExchange(mid, True, cfg, spi_in, rekey=rekey)
    ex.local_ts, ex.remote_ts = cfg.local_ts[:1], cfg.remote_ts[:1]
    ex.sent_sa = negotiation.phase2_sa_payload(
        cfg.proposals, spi_in, mode=cfg.mode, udp=sa.nat_detected, lifetime=cfg.lifetime
    )
    ex.nonce_i = sa.rng(NONCE_LENGTH)
    group = next((g for p in cfg.proposals for g in p.dh), None)
    tail: list[Payload] = [ex.sent_sa, NoncePayload(ex.nonce_i)]
    if group is not None:
        ex.ke = dh.generate(group, sa.rng)
        tail.append(KePayload(ex.ke.public_bytes))
    tail += [selector_id(ex.local_ts[0]), selector_id(ex.remote_ts[0])]
    k = _skeyid(sa)
    hash1 = keys.quick_mode_hash1(
        sa.p1.prf_id, k.skeyid_a, mid, _hash_tail(tail), legacy_sha1=sa.p1.legacy_sha1
    )
    if rekey is not None:
        rekey.state = ChildState.REKEYING
    sa.quick[mid] = ex
    sa.send(
        _message(sa, mid, [HashPayload(hash1), *tail]),
        now,
        key=mid,
        encrypt=True,
        retransmit=True,
        on_timeout=lambda t: _timed_out(sa, ex, t),
    )


def _timed_out(sa: IsakmpSa, ex: QuickExchange, now: float) -> None:
    sa.quick.pop(ex.message_id, None)
    sa.forget_exchange(ex.message_id)
    if ex.initiator:
        if ex.rekey is not None and ex.rekey.state is ChildState.REKEYING:
            ex.rekey.state = ChildState.INSTALLED
        sa.peer_dead_in_quick_mode(now)
        return
    # Message 3 never came: the pair installed with message 2 goes, the old one stays.
    child = sa.children.get(ex.spi_in)
    if child is not None:
        sa.remove_child(child, "deleted")
    if ex.rekey is not None and ex.rekey.state is ChildState.REKEYED:
        ex.rekey.state = ChildState.INSTALLED


def handle(sa: IsakmpSa, header: Header, data: bytes, now: float) -> None:
    """A quick mode message: message 1 (new ID), 2 (ours) or 3 (answered by us)."""
    if not sa.keyed:
        sa.stats.dropped_unexpected += 1
        return
    mid = header.message_id
    msg = sa.open(data, header, mid)
    if not msg.payloads or not isinstance(msg.payloads[0], HashPayload):
        raise RemoteProtocolError("a quick mode message must start with HASH")
    ex = sa.quick.get(mid)
    if ex is None:
        _on_message_1(sa, msg, data, now)
    elif ex.initiator:
        _on_message_2(sa, ex, msg, data, now)
    else:
        _on_message_3(sa, ex, msg, data, now)


def _on_message_2(sa: IsakmpSa, ex: QuickExchange, msg: Message, data: bytes, now: float) -> None:
    k = _skeyid(sa)
    expected = keys.quick_mode_hash2(
        sa.p1.prf_id,
        k.skeyid_a,
        ex.message_id,
        ex.nonce_i,
        msg.raw_after(0),
        legacy_sha1=sa.p1.legacy_sha1,
    )
    _verify(expected, msg, "HASH(2)")
    sa.accept_iv()
    sa.received(ex.message_id, data)
    sa.touch(now)
    answer, nonce = msg.get(SaPayload), msg.get(NoncePayload)
    assert ex.sent_sa is not None
    if answer is None or nonce is None:
        _give_up(sa, ex, now, "message 2 without SA and Nonce")
        return
    try:
        choice = negotiation.check_phase2_answer(ex.sent_sa, answer)
    except RemoteProtocolError as exc:
        _give_up(sa, ex, now, f"unusable answer: {exc}")
        return
    ex.choice, ex.nonce_r = choice, nonce.data
    try:  # shorter lifetimes the responder chose: honoured (RFC 2407 4.6.3.1)
        told = [
            policy.responder_lifetime(n.data)
            for n in msg.all(NotificationPayload)
            if n.notify_type == NotifyType.RESPONDER_LIFETIME
        ]
    except ParseError as exc:
        _give_up(sa, ex, now, f"unusable RESPONDER-LIFETIME: {exc}")
        return
    ex.lifetime = negotiated_lifetime(
        ex.config.lifetime,
        _shortest(choice.suite.life_seconds, *(s for s, _ in told)),
        _shortest(choice.suite.life_kilobytes, *(kb for _, kb in told)),
    )
    if ex.ke is not None:
        ke = msg.get(KePayload)
        if ke is None:
            _give_up(sa, ex, now, "PFS asked and no KE in message 2")
            return
        ex.shared = ex.ke.shared_secret(ke.data)
    hash3 = _hash3(sa, k.skeyid_a, ex)
    _install(sa, ex, spi_out=choice.spi, now=now)
    sa.send(
        _message(sa, ex.message_id, [HashPayload(hash3)]),
        now,
        key=ex.message_id,
        encrypt=True,
        retransmit=False,
    )
    sa.quick.pop(ex.message_id, None)
    sa.forget_exchange(ex.message_id)


def _give_up(
    sa: IsakmpSa,
    ex: QuickExchange,
    now: float,
    reason: str,
    *,
    notify: int | None = None,
    by_peer: bool = False,
) -> None:
    sa.quick.pop(ex.message_id, None)
    sa.forget_exchange(ex.message_id)
    if ex.rekey is not None and ex.rekey.state is ChildState.REKEYING:
        ex.rekey.state = ChildState.INSTALLED
    sa.emit(
        NegotiationFailed(ExchangeType.QUICK, reason, notify, child=ex.config.name, by_peer=by_peer)
    )


# ---------------------------------------------------------------------- responder


def _on_message_1(sa: IsakmpSa, msg: Message, data: bytes, now: float) -> None:
    mid = msg.message_id
    k = _skeyid(sa)
    expected = keys.quick_mode_hash1(
        sa.p1.prf_id, k.skeyid_a, mid, msg.raw_after(0), legacy_sha1=sa.p1.legacy_sha1
    )
    _verify(expected, msg, "HASH(1)")
    sa.accept_iv()
    sa.received(mid, data)
    sa.touch(now)
    offer, nonce = msg.get(SaPayload), msg.get(NoncePayload)
    if offer is None or nonce is None:
        raise RemoteProtocolError("quick mode message 1 without SA and Nonce")
    ids = msg.all(IdPayload)
    if ids and len(ids) != 2:
        raise RemoteProtocolError("quick mode needs both client IDs or none")
    if ids:
        remote_ts = (id_selector(ids[0]),)
        local_ts = (id_selector(ids[1]),)
    else:  # no client IDs: the ISAKMP SA's own addresses (RFC 2409 section 5.5)
        local_ts = (TrafficSelector.host(sa.config.local_addr[0]),)
        remote_ts = (TrafficSelector.host(sa.peer_addr[0]),)
    found = _config_for(sa, local_ts, remote_ts)
    if found is None:
        _refuse(sa, offer, NotifyType.INVALID_ID_INFORMATION, now)
        sa.emit(NegotiationFailed(ExchangeType.QUICK, "client IDs not in any configuration"))
        sa.forget_exchange(mid)
        return
    choice = negotiation.select_phase2(offer, found.proposals, mode=found.mode, udp=sa.nat_detected)
    if choice is None:
        _refuse(sa, offer, NotifyType.NO_PROPOSAL_CHOSEN, now)
        sa.emit(
            NegotiationFailed(
                ExchangeType.QUICK,
                "no acceptable phase 2 proposal",
                NotifyType.NO_PROPOSAL_CHOSEN,
                child=found.name,
            )
        )
        sa.forget_exchange(mid)
        return
    ke = msg.get(KePayload)
    if choice.dh_group is not None and ke is None:
        raise RemoteProtocolError("a PFS proposal without a KE payload")
    ex = QuickExchange(mid, False, found, sa.random_spi(4), nonce_i=nonce.data)
    ex.choice, ex.local_ts, ex.remote_ts = choice, local_ts, remote_ts
    ex.nonce_r = sa.rng(NONCE_LENGTH)
    tail: list[Payload] = [choice.answer_with(ex.spi_in), NoncePayload(ex.nonce_r)]
    if choice.dh_group is not None and ke is not None:
        ex.ke = dh.generate(choice.dh_group, sa.rng)
        ex.shared = ex.ke.shared_secret(ke.data)
        tail.append(KePayload(ex.ke.public_bytes))
    tail += ids
    # The initiator's proposed lifetimes bind both sides unless ours is shorter (or it
    # proposed none of that kind): then we say so (RFC 2407 section 4.6.3.1) and both
    # use ours. Seconds and kilobytes each on their own.
    seconds, kb = choice.suite.life_seconds, choice.suite.life_kilobytes
    ex.lifetime = negotiated_lifetime(found.lifetime, seconds, kb)
    tell = (
        _if_shorter(int(found.lifetime.expire_after), seconds),
        _if_shorter(_our_kilobytes(found.lifetime), kb),
    )
    if any(tell):
        tail.append(_responder_lifetime(choice.proposal.protocol, ex.spi_in, *tell))
    hash2 = keys.quick_mode_hash2(
        sa.p1.prf_id, k.skeyid_a, mid, ex.nonce_i, _hash_tail(tail), legacy_sha1=sa.p1.legacy_sha1
    )
    sa.quick[mid] = ex
    # Installed now, before message 2 leaves: a strongSwan initiator sends on the new
    # pair as soon as it has message 2, before its message 3 (no commit bit).
    live = [c for c in sa.current().children.values() if c.state is ChildState.INSTALLED]
    ex.rekey = next((c for c in live if c.name == found.name), None)
    _install(sa, ex, spi_out=choice.spi, now=now)
    sa.send(
        _message(sa, mid, [HashPayload(hash2), *tail]),
        now,
        key=mid,
        encrypt=True,
        retransmit=True,
        on_timeout=lambda t: _timed_out(sa, ex, t),
    )


def _hash3(sa: IsakmpSa, skeyid_a: bytes, ex: QuickExchange) -> bytes:
    """HASH(3), sent by the initiator and checked by the responder."""
    return keys.quick_mode_hash3(
        sa.p1.prf_id,
        skeyid_a,
        ex.message_id,
        ex.nonce_i,
        ex.nonce_r,
        legacy_sha1=sa.p1.legacy_sha1,
    )


def _on_message_3(sa: IsakmpSa, ex: QuickExchange, msg: Message, data: bytes, now: float) -> None:
    k = _skeyid(sa)
    expected = _hash3(sa, k.skeyid_a, ex)
    _verify(expected, msg, "HASH(3)")
    sa.received(ex.message_id, data)
    sa.touch(now)
    sa.quick.pop(ex.message_id, None)
    sa.forget_exchange(ex.message_id)


def _refuse(sa: IsakmpSa, offer: SaPayload, notify: int, now: float) -> None:
    first = offer.proposals[0] if offer.proposals else None
    protocol = first.protocol if first is not None else 0
    informational.send_notification(
        sa, notify, now, protocol=protocol, spi=first.spi if first is not None else b""
    )


def refused_by_peer(sa: IsakmpSa, spi: bytes, notify: int, now: float) -> None:
    """An authenticated error notification: it ends our quick mode that offered ``spi``
    (all of ours when the SPI names none of them, as some peers send none)."""
    ours = [ex for ex in sa.quick.values() if ex.initiator]
    named = [ex for ex in ours if ex.spi_in == spi]
    for ex in named or ours:
        _give_up(sa, ex, now, f"refused by the peer ({notify})", notify=notify, by_peer=True)


def _config_for(
    sa: IsakmpSa, local_ts: tuple[TrafficSelector, ...], remote_ts: tuple[TrafficSelector, ...]
) -> ChildConfig | None:
    for cfg in sa.config.children:
        if any(a.covers(local_ts[0]) for a in cfg.local_ts) and any(
            a.covers(remote_ts[0]) for a in cfg.remote_ts
        ):
            return cfg
    return None


# ---------------------------------------------------------------------- both


def _install(sa: IsakmpSa, ex: QuickExchange, *, spi_out: bytes, now: float) -> None:
    choice = ex.choice
    assert choice is not None
    selection = choice.selection
    k = _skeyid(sa)
    spi_i, spi_r = (ex.spi_in, spi_out) if ex.initiator else (spi_out, ex.spi_in)
    child_keys = keys.quick_mode_child_keys(
        sa.p1.prf_id,
        k.skeyid_d,
        selection.protocol,
        spi_i,
        spi_r,
        ex.nonce_i,
        ex.nonce_r,
        selection.encr_keymat_len,
        selection.integ_key_len,
        ex.shared,
        legacy_sha1=sa.p1.legacy_sha1,
    )
    child_choice = ChildChoice(ex.config, selection, ex.local_ts, ex.remote_ts, ex.config.mode)
    install(
        sa,
        child_choice,
        spi_in=ex.spi_in,
        spi_out=spi_out,
        keys=child_keys,
        initiator=ex.initiator,
        now=now,
        replaces=ex.rekey,
        defer_outbound=True,
        lifetime=ex.lifetime,
    )
    old = ex.rekey
    if old is not None:
        old.state = ChildState.REKEYED
        old.rekey_at = None
        new = ex.spi_in
        sa.schedule(now + REKEY_DELETE_DELAY, lambda t: _delete_rekeyed(sa, old, new, t))


def _delete_rekeyed(sa: IsakmpSa, old: ChildSa, new: bytes, now: float) -> None:
    """Stop using the replaced pair now (the daemon moves outbound to ``new``), and tell
    the peer ``DELETE_GRACE`` seconds later, so our last packets on it still arrive.
    Both go through the ISAKMP SA that holds the pair then (a re-authentication may
    have moved it)."""
    holder = sa.current()
    if old.spi_in in holder.children and new in holder.children:
        holder.remove_child(old, "rekeyed")
        holder.schedule(
            now + DELETE_GRACE,
            lambda t: informational.send_delete_child(holder.current(), old, t),
        )


__all__ = ["QuickExchange", "handle", "refused_by_peer", "start"]
