"""CREATE_CHILD_SA (RFC 7296 sections 1.3 and 2.8): more children, child rekeys, IKE rekeys.

Child rekey is make-before-break: the successor is reported (ChildSaEstablished with
``replaces``, then ChildSaRekeyed) before the rekey initiator deletes the old child.
IKE SA rekey switches the IkeSa to a new context (new SPIs, keys from the old SK_d,
message IDs from 0); the children stay; the rekey initiator deletes the old IKE SA.

Collisions (section 2.8.1): when both sides rekey the same SA at once, each answers
the other's request as usual; once its own exchange completes, a side compares the
four nonces: if the lowest is in its own exchange, its new SA is redundant and it
deletes that; otherwise it deletes the old SA. TEMPORARY_FAILURE answers a child
request during our IKE rekey and an IKE rekey during our child exchange (2.25); the
refused side retries after a random delay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import KipsecError, RemoteProtocolError
from . import dh, informational
from .child_negotiation import (
    ChildOffer,
    answer_payloads,
    check_answer,
    child_keys,
    choose,
    first_error,
    install,
    make_offer,
)
from .child_sa import ChildSa, ChildState, RekeyCollision
from .config import Address, ChildConfig
from .constants import ExchangeType, NotifyType, ProtocolId
from .events import IkeSaRekeyed, NegotiationFailed
from .ike_sa_init import install_keys
from .keys import derive_rekeyed_ike_keys
from .message import Message
from .payloads import (
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    TsiPayload,
    TsrPayload,
)
from .proposals import check_response, first_dh_group, ike_sa_payload, select_ike
from .sa_context import SaContext

if TYPE_CHECKING:
    from .engine import IkeSa

MAX_KE_RETRIES = 1


@dataclass(slots=True, repr=False)
class IkeRekeyCandidate:
    """A new IKE SA we created as responder while our own IKE rekey was outstanding."""

    ctx: SaContext
    nonces: tuple[bytes, bytes]


def _retry_later(sa: IkeSa, action: informational.Action, now: float) -> None:
    delay = sa.config.temporary_failure_retry * (1 + sa.random_fraction())
    sa.schedule(now + delay, action)


def _redundant_is_ours(ours: tuple[bytes, bytes], theirs: tuple[bytes, bytes]) -> bool:
    """RFC 7296 2.8.1: the exchange holding the lowest of the four nonces is redundant."""
    return min(ours) < min(theirs)


# ---------------------------------------------------------------------- child initiator


def start_child(sa: IkeSa, config: ChildConfig, now: float, ke_group: int | None = None) -> None:
    """Request a new child SA for ``config`` (with a KE if its proposals ask for PFS)."""
    offer = make_offer(sa, config, pfs=True, ke_group=ke_group)
    _send_child(sa, offer, now)


def start_child_rekey(sa: IkeSa, child: ChildSa, now: float, ke_group: int | None = None) -> None:
    """Rekey ``child`` unless it went away or another rekey/delete got there first."""
    if sa.children.get(child.spi_in) is not child or child.state is not ChildState.INSTALLED:
        return
    offer = make_offer(sa, child.config, pfs=True, rekey=child, ke_group=ke_group)
    child.state = ChildState.REKEYING
    _send_child(sa, offer, now)


def _send_child(sa: IkeSa, offer: ChildOffer, now: float) -> None:
    offer.nonce_i = sa.rng(sa.config.nonce_length)
    payloads: list[Payload] = []
    if offer.rekey is not None:
        payloads.append(
            NotifyPayload(NotifyType.REKEY_SA, offer.rekey.protocol, offer.rekey.spi_in)
        )
    if offer.config.mode == "transport":
        payloads.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
    payloads += [offer.sa, NoncePayload(offer.nonce_i)]
    if offer.ke is not None:
        payloads.append(KePayload(offer.ke.group, offer.ke.public_bytes))
    payloads += [TsiPayload(offer.local_ts), TsrPayload(offer.remote_ts)]
    sa.send_request(
        sa.current,
        ExchangeType.CREATE_CHILD_SA,
        payloads,
        lambda m, t: _on_child_response(sa, offer, m, t),
        now,
        kind="rekey-child" if offer.rekey is not None else "child",
    )


def _restart(sa: IkeSa, offer: ChildOffer, now: float, ke_group: int | None = None) -> None:
    action: informational.Action
    if offer.rekey is not None:
        offer.rekey.state = ChildState.INSTALLED
        child = offer.rekey
        action = lambda t: start_child_rekey(sa, child, t, ke_group)  # noqa: E731
    else:
        config = offer.config
        action = lambda t: start_child(sa, config, t, ke_group)  # noqa: E731
    _retry_action(sa, action, now, ke_group)


def _retry_action(
    sa: IkeSa, action: informational.Action, now: float, ke_group: int | None
) -> None:
    if ke_group is not None:
        sa.enqueue(action, first=True)
    else:
        _retry_later(sa, action, now)


def _on_child_response(sa: IkeSa, offer: ChildOffer, msg: Message, now: float) -> None:
    old = offer.rekey
    if old is not None and sa.children.get(old.spi_in) is not old:
        old = None  # the old child was deleted meanwhile (the peer won a collision)
        if first_error(msg) is not None:
            return
    error = first_error(msg)
    if error is not None:
        _child_refused(sa, offer, old, error, now)
        return
    try:
        choice = check_answer(offer, msg)
        nonce = msg.get(NoncePayload)
        if nonce is None:
            raise RemoteProtocolError("CREATE_CHILD_SA answer without a nonce")
        shared = _peer_ke(offer.ke, choice.selection.dh_group, msg.get(KePayload))
    except KipsecError as exc:
        sa.emit(NegotiationFailed(ExchangeType.CREATE_CHILD_SA, str(exc), None, offer.config.name))
        if old is not None:
            old.state = ChildState.INSTALLED
        return
    keys = child_keys(sa, choice.selection, offer.nonce_i, nonce.data, shared)
    new = install(
        sa,
        choice,
        spi_in=offer.spi_in,
        spi_out=choice.selection.spi,
        keys=keys,
        initiator=True,
        now=now,
        replaces=old,
    )
    if old is not None:
        _finish_rekey(sa, old, new, (offer.nonce_i, nonce.data), now)


def _peer_ke(ours: dh.KeyExchange | None, group: int | None, ke: KePayload | None) -> bytes | None:
    if group is None:
        return None
    if ours is None or ke is None or ke.group != group or ours.group != group:
        raise RemoteProtocolError("the answer's Diffie-Hellman group does not match our KE")
    return ours.shared_secret(ke.data)


def _child_refused(
    sa: IkeSa, offer: ChildOffer, old: ChildSa | None, error: NotifyPayload, now: float
) -> None:
    kind = error.notify_type
    if kind == NotifyType.TEMPORARY_FAILURE:
        _restart(sa, offer, now)
        return
    if kind == NotifyType.INVALID_KE_PAYLOAD and len(error.data) == 2:
        group = int.from_bytes(error.data, "big")
        allowed = {g for p in offer.config.proposals for g in p.dh}
        if group in allowed and offer.ke is not None and group != offer.ke.group:
            _restart(sa, offer, now, ke_group=group)
            return
    if kind == NotifyType.CHILD_SA_NOT_FOUND and old is not None:
        if old.collision is not None:  # the peer's rekey won; it deletes the old child
            old.state = ChildState.REKEYED
            old.successor = old.collision.successor
        else:
            sa.remove_child(old, "deleted-by-peer")
        return
    if old is not None:
        old.state = ChildState.INSTALLED
    sa.emit(
        NegotiationFailed(
            ExchangeType.CREATE_CHILD_SA,
            f"the peer refused the child SA ({_name(kind)})",
            kind,
            offer.config.name,
            True,
        )
    )


def _name(notify_type: int) -> str:
    try:
        return NotifyType(notify_type).name
    except ValueError:
        return str(notify_type)


def _finish_rekey(
    sa: IkeSa, old: ChildSa, new: ChildSa, nonces: tuple[bytes, bytes], now: float
) -> None:
    old.state = ChildState.REKEYED
    collision = old.collision
    if collision is not None and _redundant_is_ours(nonces, collision.nonces):
        old.successor = collision.successor
        new.redundant = True
        new.rekey_at = None
        sa.enqueue(
            lambda t: informational.start_delete_children(sa, [new], "redundant", t), first=True
        )
        return
    old.successor = new.spi_in
    if collision is not None:
        loser = sa.children.get(collision.successor)
        if loser is not None:
            loser.redundant = True
            loser.rekey_at = None
    sa.enqueue(lambda t: informational.start_delete_children(sa, [old], "rekeyed", t), first=True)


# ---------------------------------------------------------------------- IKE rekey initiator


def start_ike_rekey(sa: IkeSa, now: float, ke_group: int | None = None) -> None:
    """Propose a new IKE SA (new SPI, nonce and KE) to replace the current one."""
    new_spi = sa.random_spi(8)
    nonce_i = sa.rng(sa.config.nonce_length)
    groups = {g for p in sa.config.proposals for g in p.dh}
    group = ke_group or (sa.init.dh_group if sa.init.dh_group in groups else None)
    group = group or first_dh_group(sa.config.proposals)
    assert group is not None
    ke = dh.generate(group, sa.rng)
    sent = ike_sa_payload(sa.config.proposals, spi=new_spi)
    old = sa.current
    sa.send_request(
        old,
        ExchangeType.CREATE_CHILD_SA,
        [sent, NoncePayload(nonce_i), KePayload(ke.group, ke.public_bytes)],
        lambda m, t: _on_ike_rekey_response(sa, old, sent, new_spi, nonce_i, ke, m, t),
        now,
        kind="rekey-ike",
    )


def _on_ike_rekey_response(
    sa: IkeSa,
    old: SaContext,
    sent: SaPayload,
    new_spi: bytes,
    nonce_i: bytes,
    ke: dh.KeyExchange,
    msg: Message,
    now: float,
) -> None:
    error = first_error(msg)
    superseded = old is not sa.current  # the peer's colliding rekey already replaced it
    if error is not None:
        kind = error.notify_type
        candidate, sa.ike_rekey_candidate = sa.ike_rekey_candidate, None
        if superseded:
            return
        if candidate is not None:  # refused late in a collision: the peer's new SA stands
            adopt(sa, candidate.ctx, now)
        elif kind == NotifyType.TEMPORARY_FAILURE:
            _retry_later(sa, lambda t: start_ike_rekey(sa, t), now)
        elif kind == NotifyType.INVALID_KE_PAYLOAD and len(error.data) == 2:
            group = int.from_bytes(error.data, "big")
            if group != ke.group and any(group in p.dh for p in sa.config.proposals):
                sa.enqueue(lambda t: start_ike_rekey(sa, t, group), first=True)
        else:
            sa.emit(
                NegotiationFailed(
                    ExchangeType.CREATE_CHILD_SA,
                    f"IKE SA rekey refused ({_name(kind)})",
                    kind,
                    None,
                    True,
                )
            )
        return
    sa_payload = msg.get(SaPayload)
    nonce = msg.get(NoncePayload)
    ke_payload = msg.get(KePayload)
    try:
        if sa_payload is None or nonce is None or ke_payload is None:
            raise RemoteProtocolError("IKE rekey answer without SA, Nonce or KE")
        selection = check_response(sent, sa_payload, spi_len=8)
        if selection.dh_group != ke.group or ke_payload.group != ke.group:
            raise RemoteProtocolError("IKE rekey answer: DH group differs from our KE")
        shared = ke.shared_secret(ke_payload.data)
    except KipsecError as exc:
        sa.emit(NegotiationFailed(ExchangeType.CREATE_CHILD_SA, str(exc)))
        candidate, sa.ike_rekey_candidate = sa.ike_rekey_candidate, None
        if candidate is not None and not superseded:
            adopt(sa, candidate.ctx, now)
        return
    assert old.keys is not None and selection.prf_id is not None and selection.encr_id is not None
    _, keys = derive_rekeyed_ike_keys(
        old.prf_id,
        old.keys.sk_d,
        selection.prf_id,
        selection.encr_id,
        selection.encr_key_bits,
        selection.integ_id,
        shared,
        nonce_i,
        nonce.data,
        new_spi,
        selection.spi,
    )
    new = SaContext(new_spi, selection.spi, original_initiator=True)
    install_keys(new, selection, keys)
    if superseded:  # a third IKE SA nobody needs: delete it right away
        sa.add_draining(new, now)
        informational.start_delete_context(sa, new, now)
        return
    sa.init.dh_group = ke.group
    candidate, sa.ike_rekey_candidate = sa.ike_rekey_candidate, None
    if candidate is not None and _redundant_is_ours((nonce_i, nonce.data), candidate.nonces):
        adopt(sa, candidate.ctx, now)
        sa.add_draining(new, now)
        informational.start_delete_context(sa, new, now)
        return
    adopt(sa, new, now)
    if candidate is not None:
        sa.add_draining(candidate.ctx, now)  # the peer deletes its redundant IKE SA
    informational.start_delete_context(sa, old, now)


def adopt(sa: IkeSa, new: SaContext, now: float) -> None:
    """Make ``new`` the IKE SA; report the switch; restart the IKE SA lifetimes."""
    old = sa.switch_context(new, now)
    sa.set_ike_lifetimes(now)
    sa.emit(IkeSaRekeyed(old.spi_i, old.spi_r, new.spi_i, new.spi_r))


# ---------------------------------------------------------------------- responder


def handle_request(
    sa: IkeSa, ctx: SaContext, msg: Message, data: bytes, addr: Address, now: float
) -> None:
    """Answer a CREATE_CHILD_SA request: IKE rekey, child rekey or new child."""
    if ctx is not sa.current:  # this IKE SA was just replaced and is being deleted
        sa.respond(ctx, msg, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)], addr)
        return
    sa_payload = msg.get(SaPayload)
    nonce = msg.get(NoncePayload)
    if sa_payload is None or nonce is None or not sa_payload.proposals:
        sa.respond(ctx, msg, [NotifyPayload(NotifyType.INVALID_SYNTAX)], addr)
        return
    if sa_payload.proposals[0].protocol == ProtocolId.IKE:
        _answer_ike_rekey(sa, ctx, msg, sa_payload, nonce.data, addr, now)
    else:
        _answer_child(sa, ctx, msg, nonce.data, addr, now)


def _answer_child(
    sa: IkeSa, ctx: SaContext, msg: Message, nonce_i: bytes, addr: Address, now: float
) -> None:
    if sa.pending_kind() == "rekey-ike" or sa.pending_kind() == "delete-ike":
        sa.respond(ctx, msg, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)], addr)
        return
    old: ChildSa | None = None
    rekey = msg.notify(NotifyType.REKEY_SA)
    if rekey is not None:
        old = next(
            (
                c
                for c in sa.children.values()
                if c.spi_out == rekey.spi and c.protocol == rekey.protocol
            ),
            None,
        )
        if old is None or old.state in (ChildState.DELETING, ChildState.REKEYED):
            notify = NotifyPayload(NotifyType.CHILD_SA_NOT_FOUND, rekey.protocol, rekey.spi)
            sa.respond(ctx, msg, [notify], addr)
            return
    configs = [old.config] if old is not None else list(sa.config.children)
    ke = msg.get(KePayload)
    choice = choose(msg, configs, pfs=True, ke_group=ke.group if ke is not None else None)
    if isinstance(choice, NotifyPayload):
        sa.respond(ctx, msg, [choice], addr)
        sa.emit(
            NegotiationFailed(
                ExchangeType.CREATE_CHILD_SA,
                "refused the peer's child SA",
                choice.notify_type,
                old.name if old is not None else None,
            )
        )
        return
    selection = choice.selection
    shared = None
    ours = None
    if selection.dh_group is not None:
        if ke is None or ke.group != selection.dh_group:
            group = selection.dh_group.to_bytes(2, "big")
            sa.respond(ctx, msg, [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, data=group)], addr)
            return
        ours = dh.generate(selection.dh_group, sa.rng)
        shared = ours.shared_secret(ke.data)
    nonce_r = sa.rng(sa.config.nonce_length)
    spi_in = sa.random_spi(4)
    answer = answer_payloads(choice, spi_in)
    payloads: list[Payload] = [*answer[:-2], NoncePayload(nonce_r)]
    if ours is not None:
        payloads.append(KePayload(ours.group, ours.public_bytes))
    payloads += answer[-2:]
    sa.respond(ctx, msg, payloads, addr)
    keys = child_keys(sa, selection, nonce_i, nonce_r, shared)
    new = install(
        sa,
        choice,
        spi_in=spi_in,
        spi_out=selection.spi,
        keys=keys,
        initiator=False,
        now=now,
        replaces=old,
    )
    if old is not None:
        if old.state is ChildState.REKEYING:
            old.collision = RekeyCollision(new.spi_in, (nonce_i, nonce_r))
        else:
            old.state = ChildState.REKEYED
            old.successor = new.spi_in


def _answer_ike_rekey(
    sa: IkeSa,
    ctx: SaContext,
    msg: Message,
    sa_payload: SaPayload,
    nonce_i: bytes,
    addr: Address,
    now: float,
) -> None:
    if sa.pending_kind() in ("child", "rekey-child", "delete-ike"):
        sa.respond(ctx, msg, [NotifyPayload(NotifyType.TEMPORARY_FAILURE)], addr)
        return
    ke = msg.get(KePayload)
    if ke is None:
        sa.respond(ctx, msg, [NotifyPayload(NotifyType.INVALID_SYNTAX)], addr)
        return
    selection = select_ike(sa_payload, sa.config.proposals, ke.group)
    if selection is None or len(selection.spi) != 8:
        sa.respond(ctx, msg, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)], addr)
        return
    assert selection.dh_group is not None
    if ke.group != selection.dh_group:
        group = selection.dh_group.to_bytes(2, "big")
        sa.respond(ctx, msg, [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, data=group)], addr)
        return
    ours = dh.generate(selection.dh_group, sa.rng)
    shared = ours.shared_secret(ke.data)
    nonce_r = sa.rng(sa.config.nonce_length)
    new_spi_r = sa.random_spi(8)
    assert ctx.keys is not None and selection.prf_id is not None and selection.encr_id is not None
    _, keys = derive_rekeyed_ike_keys(
        ctx.prf_id,
        ctx.keys.sk_d,
        selection.prf_id,
        selection.encr_id,
        selection.encr_key_bits,
        selection.integ_id,
        shared,
        nonce_i,
        nonce_r,
        selection.spi,
        new_spi_r,
    )
    sa.respond(
        ctx,
        msg,
        [
            selection.to_sa_payload(new_spi_r),
            NoncePayload(nonce_r),
            KePayload(ours.group, ours.public_bytes),
        ],
        addr,
    )
    new = SaContext(selection.spi, new_spi_r, original_initiator=False)
    install_keys(new, selection, keys)
    sa.init.dh_group = selection.dh_group
    if sa.pending_kind() == "rekey-ike":
        sa.ike_rekey_candidate = IkeRekeyCandidate(new, (nonce_i, nonce_r))
        return
    adopt(sa, new, now)
