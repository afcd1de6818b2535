"""Negotiating a child SA: the offer, the responder's choice, the initiator's check.

Shared by IKE_AUTH (the first child, no KE) and CREATE_CHILD_SA (more children and
rekeys, optional PFS). Traffic selectors are narrowed by the responder to its
configuration (RFC 7296 section 2.9; TS_UNACCEPTABLE when nothing is left); the mode
is transport only when the initiator asks (USE_TRANSPORT_MODE) and the responder's
configuration says transport too — a mode mismatch is NO_PROPOSAL_CHOSEN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import RemoteProtocolError
from ..traffic_selectors import TrafficSelector, narrow
from . import dh
from .child_sa import ChildSa
from .config import Address, ChildConfig, Lifetime, Mode
from .constants import NotifyType
from .events import ChildSaEstablished, ChildSaRekeyed, Event
from .keys import ChildKeys, derive_child_keys
from .message import Message
from .payloads import NotifyPayload, Payload, SaPayload, TsiPayload, TsrPayload
from .proposals import Selection, check_response, child_sa_payload, select_child

if TYPE_CHECKING:
    from .engine import IkeSa

STATUS_NOTIFY_MIN = 16384


@dataclass(slots=True, repr=False)
class ChildOffer:
    """What an initiator proposed for one child, kept to check the answer."""

    config: ChildConfig
    spi_in: bytes
    sa: SaPayload
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    nonce_i: bytes = b""
    ke: dh.KeyExchange | None = None
    rekey: ChildSa | None = None
    ke_retries: int = 0


@dataclass(frozen=True, slots=True)
class ChildChoice:
    """The responder's decision: which configuration, algorithms, selectors and mode."""

    config: ChildConfig
    selection: Selection
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    mode: Mode


def make_offer(
    sa: IkeSa,
    config: ChildConfig,
    pfs: bool,
    *,
    rekey: ChildSa | None = None,
    ke_group: int | None = None,
) -> ChildOffer:
    """A fresh offer with a new inbound SPI; ``pfs`` adds a KE for the first DH group."""
    spi_in = sa.random_spi(4)
    local_ts = rekey.local_ts if rekey is not None else config.local_ts
    remote_ts = rekey.remote_ts if rekey is not None else config.remote_ts
    offer = ChildOffer(
        config, spi_in, child_sa_payload(config.proposals, spi_in, pfs), local_ts, remote_ts
    )
    offer.rekey = rekey
    if pfs:
        group = ke_group
        if group is None:
            group = next((p.dh[0] for p in config.proposals if p.dh), None)
        if group is not None:
            offer.ke = dh.generate(group, sa.rng)
    return offer


def offer_payloads(offer: ChildOffer) -> list[Payload]:
    """USE_TRANSPORT_MODE (if configured), SA, TSi and TSr of an offer."""
    out: list[Payload] = []
    if offer.config.mode == "transport":
        out.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
    out += [offer.sa, TsiPayload(offer.local_ts), TsrPayload(offer.remote_ts)]
    return out


def first_error(msg: Message) -> NotifyPayload | None:
    """The first error notify (type below 16384) of a message, or None."""
    for n in msg.all(NotifyPayload):
        if n.notify_type < STATUS_NOTIFY_MIN:
            return n
    return None


def choose(
    msg: Message,
    configs: Sequence[ChildConfig],
    *,
    pfs: bool,
    ke_group: int | None,
) -> ChildChoice | NotifyPayload:
    """The responder's choice among ``configs`` for the child requested in ``msg``.

    Returns the error notify to answer with when nothing fits: TS_UNACCEPTABLE when no
    configuration's selectors overlap, NO_PROPOSAL_CHOSEN when some do but neither
    algorithms nor mode fit, INVALID_SYNTAX when SA/TSi/TSr are missing.
    """
    sa_payload = msg.get(SaPayload)
    tsi = msg.get(TsiPayload)
    tsr = msg.get(TsrPayload)
    if sa_payload is None or tsi is None or tsr is None:
        return NotifyPayload(NotifyType.INVALID_SYNTAX)
    transport = msg.notify(NotifyType.USE_TRANSPORT_MODE) is not None
    mode: Mode = "transport" if transport else "tunnel"
    error = NotifyType.TS_UNACCEPTABLE
    for cfg in configs:
        remote = narrow(list(tsi.selectors), list(cfg.remote_ts))
        local = narrow(list(tsr.selectors), list(cfg.local_ts))
        if not remote or not local:
            continue
        error = NotifyType.NO_PROPOSAL_CHOSEN
        if cfg.mode != mode:
            continue
        selection = select_child(sa_payload, cfg.proposals, ke_group, pfs)
        if selection is None:
            continue
        return ChildChoice(cfg, selection, tuple(local), tuple(remote), mode)
    return NotifyPayload(error)


def answer_payloads(choice: ChildChoice, spi_in: bytes) -> list[Payload]:
    """The responder's USE_TRANSPORT_MODE, SA (with our SPI), TSi and TSr."""
    out: list[Payload] = []
    if choice.mode == "transport":
        out.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
    out += [
        choice.selection.to_sa_payload(spi_in),
        TsiPayload(choice.remote_ts),
        TsrPayload(choice.local_ts),
    ]
    return out


def check_answer(offer: ChildOffer, msg: Message) -> ChildChoice:
    """The initiator's check of the responder's child payloads; RemoteProtocolError if bad."""
    sa_payload = msg.get(SaPayload)
    tsi = msg.get(TsiPayload)
    tsr = msg.get(TsrPayload)
    if sa_payload is None or tsi is None or tsr is None:
        raise RemoteProtocolError("child SA answer without SA, TSi or TSr")
    selection = check_response(offer.sa, sa_payload, spi_len=4)
    if not tsi.selectors or not tsr.selectors:
        raise RemoteProtocolError("child SA answer with empty traffic selectors")
    for ts in tsi.selectors:
        if not any(o.covers(ts) for o in offer.local_ts):
            raise RemoteProtocolError(f"TSi {ts} is wider than what we proposed")
    for ts in tsr.selectors:
        if not any(o.covers(ts) for o in offer.remote_ts):
            raise RemoteProtocolError(f"TSr {ts} is wider than what we proposed")
    transport = msg.notify(NotifyType.USE_TRANSPORT_MODE) is not None
    mode: Mode = "transport" if transport else "tunnel"
    if mode != offer.config.mode:
        raise RemoteProtocolError(f"the responder chose {mode} mode, we need {offer.config.mode}")
    return ChildChoice(offer.config, selection, tsi.selectors, tsr.selectors, mode)


def child_keys(
    sa: IkeSa, selection: Selection, nonce_i: bytes, nonce_r: bytes, shared: bytes | None
) -> ChildKeys:
    """KEYMAT for a child (RFC 7296 2.17), from the current IKE SA's SK_d."""
    ctx = sa.current
    assert ctx.keys is not None
    return derive_child_keys(
        ctx.prf_id,
        ctx.keys.sk_d,
        nonce_i,
        nonce_r,
        selection.encr_keymat_len,
        selection.integ_key_len,
        shared,
    )


class ChildHost(Protocol):
    """What :func:`install` needs from the SA that negotiated the child: the IKEv2
    :class:`~.engine.IkeSa` and the IKEv1 ``IsakmpSa`` both are one."""

    children: dict[bytes, ChildSa]
    peer_addr: Address

    @property
    def nat_detected(self) -> bool: ...

    def emit(self, event: Event) -> None: ...

    def lifetimes(self, lifetime: Lifetime, now: float) -> tuple[float | None, float | None]: ...


def install(
    sa: ChildHost,
    choice: ChildChoice,
    *,
    spi_in: bytes,
    spi_out: bytes,
    keys: ChildKeys,
    initiator: bool,
    now: float,
    replaces: ChildSa | None = None,
    defer_outbound: bool = False,
    lifetime: Lifetime | None = None,
) -> ChildSa:
    """Record a new child SA and report it (ChildSaEstablished, then ChildSaRekeyed).

    ``lifetime``: the one negotiated when it differs from the ChildConfig's (IKEv1
    carries lifetimes, seconds and kilobytes, in quick mode and RESPONDER-LIFETIME)."""
    agreed = lifetime or choice.config.lifetime
    rekey_at, expire_at = sa.lifetimes(agreed, now)
    child = ChildSa(
        config=choice.config,
        protocol=choice.selection.protocol,
        mode=choice.mode,
        spi_in=spi_in,
        spi_out=spi_out,
        selection=choice.selection,
        keys=keys,
        initiator=initiator,
        local_ts=choice.local_ts,
        remote_ts=choice.remote_ts,
        rekey_at=rekey_at,
        expire_at=expire_at,
        replaces=replaces.spi_in if replaces is not None else None,
    )
    sa.children[spi_in] = child
    sel = choice.selection
    sa.emit(
        ChildSaEstablished(
            name=child.name,
            protocol=child.protocol,
            mode=child.mode,
            spi_in=spi_in,
            spi_out=spi_out,
            encr_id=sel.encr_id,
            encr_key_bits=sel.encr_key_bits,
            integ_id=sel.integ_id,
            esn=sel.esn,
            local_ts=child.local_ts,
            remote_ts=child.remote_ts,
            rekey_at=rekey_at,
            expire_at=expire_at,
            initiator=initiator,
            remote_addr=sa.peer_addr,
            nat_detected=sa.nat_detected,
            replaces=child.replaces,
            max_bytes=agreed.max_bytes,
            defer_outbound=defer_outbound,
            encr_key_in=child.encr_key_in,
            integ_key_in=child.integ_key_in,
            encr_key_out=child.encr_key_out,
            integ_key_out=child.integ_key_out,
        )
    )
    if replaces is not None:
        sa.emit(ChildSaRekeyed(child.name, replaces.spi_in, spi_in))
    return child
