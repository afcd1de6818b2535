"""INFORMATIONAL (RFC 7296 section 1.4): Delete, liveness checks and error notifies.

Deleting a child: our Delete names our inbound SPIs, the answer names the peer's
(section 1.4.1); a child both sides delete at once is simply gone. Deleting the IKE SA
takes every child with it. An empty request is a liveness check; one that is never
answered through the retransmission schedule makes the peer dead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .child_sa import ChildSa, ChildState
from .config import Address
from .constants import ExchangeType, NotifyType, ProtocolId
from .events import AuthenticationFailedEvent
from .message import Message
from .payloads import DeletePayload, Payload
from .sa_context import SaContext

if TYPE_CHECKING:
    from .engine import IkeSa

Action = Callable[[float], None]


def start_liveness(sa: IkeSa, now: float) -> None:
    """Send an empty INFORMATIONAL request; no answer at all means PeerDead."""
    sa.send_request(
        sa.current, ExchangeType.INFORMATIONAL, [], lambda m, t: None, now, kind="liveness"
    )


def start_delete_children(
    sa: IkeSa, children: Sequence[ChildSa], reason: str, now: float, *, remove_now: bool = False
) -> None:
    """Delete ``children`` (ChildSaDeleted with ``reason`` once the peer answers).

    ``remove_now`` reports them deleted at once (hard expiry: the keys must go now).
    """
    live = [
        c for c in children if sa.children.get(c.spi_in) is c and c.state is not ChildState.DELETING
    ]
    if not live:
        return
    by_protocol: dict[int, list[bytes]] = {}
    for child in live:
        by_protocol.setdefault(child.protocol, []).append(child.spi_in)
        child.state = ChildState.DELETING
        child.rekey_at = None
        if remove_now:
            sa.remove_child(child, reason)
    payloads: list[Payload] = [DeletePayload(p, tuple(spis)) for p, spis in by_protocol.items()]

    def done(msg: Message, t: float) -> None:
        for child in live:
            sa.remove_child(child, reason)

    sa.send_request(
        sa.current, ExchangeType.INFORMATIONAL, payloads, done, now, kind="delete-child"
    )


def start_delete_ike(
    sa: IkeSa, reason: str, now: float, *, child_reason: str = "ike-deleted"
) -> None:
    """Delete the IKE SA; closes when the peer answers or the retransmissions run out."""
    sa.closing = (reason, child_reason)
    sa.send_request(
        sa.current,
        ExchangeType.INFORMATIONAL,
        [DeletePayload(ProtocolId.IKE, ())],
        lambda m, t: sa.close(reason, t, child_reason),
        now,
        kind="delete-ike",
        on_timeout=lambda t: sa.close(reason, t, child_reason),
    )


def start_delete_context(sa: IkeSa, ctx: SaContext, now: float) -> None:
    """Delete an old or redundant IKE SA context after a rekey (children are not touched)."""

    def done(t: float) -> None:
        ctx.deleted = True
        sa.drop_context(ctx)

    sa.send_request(
        ctx,
        ExchangeType.INFORMATIONAL,
        [DeletePayload(ProtocolId.IKE, ())],
        lambda m, t: done(t),
        now,
        kind="delete-old-ike",
        on_timeout=done,
    )


def handle_request(
    sa: IkeSa, ctx: SaContext, msg: Message, data: bytes, addr: Address, now: float
) -> None:
    """Answer an INFORMATIONAL request: deletes, AUTHENTICATION_FAILED, liveness."""
    deletes = msg.all(DeletePayload)
    ike_delete = any(d.protocol == ProtocolId.IKE for d in deletes)
    if ctx is not sa.current:
        sa.respond(ctx, msg, [], addr)
        if ike_delete:
            ctx.deleted = True
            ctx.pending = None  # the peer dropped this IKE SA: nothing will answer
        return
    if ike_delete and sa.ike_rekey_candidate is not None:
        # The peer finished its rekey of this IKE SA (we answered it while ours was out)
        # and deletes the old one: move to the peer's new IKE SA (RFC 7296 2.8.2).
        sa.respond(ctx, msg, [], addr)
        candidate, sa.ike_rekey_candidate = sa.ike_rekey_candidate, None
        from .create_child import adopt

        adopt(sa, candidate.ctx, now)
        ctx.deleted = True
        ctx.pending = None  # our own rekey request on it will never be answered now
        return
    if ike_delete:
        sa.respond(ctx, msg, [], addr)
        # Both sides deleting at once (same hard lifetime): each keeps its own reason.
        reason, child_reason = sa.closing or ("deleted-by-peer", "ike-deleted")
        sa.close(reason, now, child_reason)
        return
    if msg.notify(NotifyType.AUTHENTICATION_FAILED) is not None:
        sa.respond(ctx, msg, [], addr)
        sa.emit(AuthenticationFailedEvent(addr, "rejected by peer", by_peer=True))
        sa.close("authentication-failed", now)
        return
    answer: list[Payload] = []
    for d in deletes:
        ours: list[bytes] = []
        for spi in d.spis:
            child = next(
                (c for c in sa.children.values() if c.spi_out == spi and c.protocol == d.protocol),
                None,
            )
            if child is None:
                continue
            if child.state is not ChildState.DELETING:
                ours.append(child.spi_in)
            sa.remove_child(child, _delete_reason(child))
        if ours:
            answer.append(DeletePayload(d.protocol, tuple(ours)))
    sa.respond(ctx, msg, answer, addr)


def _delete_reason(child: ChildSa) -> str:
    if child.state is ChildState.REKEYED:
        return "rekeyed"
    if child.redundant:
        return "redundant"
    if child.state is ChildState.DELETING:
        return "deleted"
    return "deleted-by-peer"
