"""IKE_SA_INIT (RFC 7296 section 1.2): proposals, Diffie-Hellman, nonces, NAT detection.

Also the two retries an initiator may be asked for before the responder keeps state:
COOKIE (section 2.6: resend the same request with the cookie first) and
INVALID_KE_PAYLOAD (section 1.2: resend with a KE for the group the responder named;
the SPI and the nonce stay, as does any cookie). Notifies announced here:
NAT_DETECTION_SOURCE_IP / _DESTINATION_IP (section 2.23), IKEV2_FRAGMENTATION_SUPPORTED
(RFC 7383) and SIGNATURE_HASH_ALGORITHMS (RFC 7427).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from ..errors import KipsecError, RemoteProtocolError
from . import dh, ike_auth
from .config import Address
from .constants import ExchangeType, NotifyType
from .keys import IkeKeys, derive_ike_keys
from .message import Message
from .payloads import (
    CertReqPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
)
from .proposals import Selection, check_response, first_dh_group, ike_sa_payload, select_ike
from .sa_context import SaContext
from .sk import SkKeys

if TYPE_CHECKING:
    from .engine import IkeSa

ZERO_SPI = bytes(8)
MAX_COOKIE_RETRIES = 3
MAX_KE_RETRIES = 2
MAX_COOKIE_LEN = 64


@dataclass(slots=True, repr=False)
class InitState:
    """What IKE_SA_INIT leaves behind for IKE_AUTH (repr hides it all).

    ``init_i``/``init_r`` are the exact request and response bytes that the AUTH
    payloads sign (RFC 7296 section 2.15).
    """

    nonce_i: bytes = b""
    nonce_r: bytes = b""
    ke: dh.KeyExchange | None = None
    cookie: bytes | None = None
    sent_sa: SaPayload | None = None
    init_i: bytes = b""
    init_r: bytes = b""
    cookie_retries: int = 0
    ke_retries: int = 0
    dh_group: int = 0
    offered_groups: set[int] = field(default_factory=set)


def nat_hash(spi_i: bytes, spi_r: bytes, addr: Address) -> bytes:
    """SHA-1(SPIi | SPIr | IP | port), the NAT_DETECTION_*_IP data (RFC 7296 2.23)."""
    ip = _packed(addr[0])
    return hashlib.sha1(spi_i + spi_r + ip + addr[1].to_bytes(2, "big")).digest()  # noqa: S324


@lru_cache(maxsize=256)
def _packed(address: str) -> bytes:
    """The address's network bytes, cached: each handshake hashes the same two addresses
    four times, and parsing them was ~3 % of its CPU (ValueError if invalid)."""
    return ipaddress.ip_address(address).packed


def _nat_notifies(spi_i: bytes, spi_r: bytes, local: Address, remote: Address) -> list[Payload]:
    return [
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, data=nat_hash(spi_i, spi_r, local)),
        NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, data=nat_hash(spi_i, spi_r, remote)),
    ]


def _detect_nat(
    msg: Message, spi_r: bytes, local: Address, remote: Address
) -> tuple[bool, bool] | None:
    """(we are behind a NAT, the peer is) from the peer's notifies; None if it sent none."""
    sources = [
        n.data
        for n in msg.all(NotifyPayload)
        if n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP
    ]
    dest = msg.notify(NotifyType.NAT_DETECTION_DESTINATION_IP)
    if not sources or dest is None:
        return None
    expected_src = nat_hash(msg.spi_i, spi_r, remote)
    remote_nat = not any(hmac.compare_digest(s, expected_src) for s in sources)
    local_nat = not hmac.compare_digest(dest.data, nat_hash(msg.spi_i, spi_r, local))
    return local_nat, remote_nat


def _hash_algorithms_notify(sa: IkeSa) -> list[Payload]:
    if sa.config.auth.method != "signature":
        return []
    data = b"".join(h.to_bytes(2, "big") for h in sa.config.hash_algorithms)
    return [NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, data=data)]


def _peer_capabilities(sa: IkeSa, msg: Message) -> None:
    sa.peer_fragmentation = msg.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    hashes = msg.notify(NotifyType.SIGNATURE_HASH_ALGORITHMS)
    if hashes is not None:
        data = hashes.data
        sa.peer_hash_algorithms = {
            int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2)
        }
    sa.peer_certreq = bool(msg.all(CertReqPayload))


def sk_keys(selection: Selection, keys: IkeKeys, original_initiator: bool) -> tuple[SkKeys, SkKeys]:
    """(inbound, outbound) SK keys of a context; the original initiator sends with SK_ei."""
    assert selection.encr_id is not None
    i = SkKeys(selection.encr_id, keys.sk_ei, selection.integ_id, keys.sk_ai)
    r = SkKeys(selection.encr_id, keys.sk_er, selection.integ_id, keys.sk_ar)
    return (r, i) if original_initiator else (i, r)


def install_keys(ctx: SaContext, selection: Selection, keys: IkeKeys) -> None:
    ctx.selection = selection
    ctx.keys = keys
    ctx.sk_in, ctx.sk_out = sk_keys(selection, keys, ctx.original_initiator)


# ---------------------------------------------------------------------- initiator


def start(sa: IkeSa, now: float) -> None:
    """Send (or resend, after COOKIE or INVALID_KE) the IKE_SA_INIT request."""
    st = sa.init
    if not st.nonce_i:
        st.nonce_i = sa.rng(sa.config.nonce_length)
    if st.ke is None:
        group = first_dh_group(sa.config.proposals)
        assert group is not None
        st.ke = dh.generate(group, sa.rng)
    st.offered_groups = {g for p in sa.config.proposals for g in p.dh}
    st.sent_sa = ike_sa_payload(sa.config.proposals)
    ctx = sa.current
    payloads: list[Payload] = []
    if st.cookie is not None:
        payloads.append(NotifyPayload(NotifyType.COOKIE, data=st.cookie))
    payloads += [
        st.sent_sa,
        KePayload(st.ke.group, st.ke.public_bytes),
        NoncePayload(st.nonce_i),
        *_nat_notifies(ctx.spi_i, ZERO_SPI, sa.config.local_addr, sa.peer_addr),
    ]
    if sa.config.fragmentation:
        payloads.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
    payloads += _hash_algorithms_notify(sa)
    ctx.next_mid = 0
    datagrams = sa.send_request(
        ctx,
        ExchangeType.IKE_SA_INIT,
        payloads,
        lambda m, t: on_response(sa, m, t),
        now,
        kind="init",
        encrypt=False,
    )
    st.init_i = datagrams[0]


def _fail(sa: IkeSa, reason: str, now: float, notify: int | None = None) -> None:
    from .events import NegotiationFailed

    sa.emit(NegotiationFailed(ExchangeType.IKE_SA_INIT, reason, notify, None, notify is not None))
    sa.close("negotiation-failed", now)


def on_response(sa: IkeSa, msg: Message, now: float) -> None:
    st = sa.init
    cookie = msg.notify(NotifyType.COOKIE)
    if cookie is not None:
        if st.cookie_retries >= MAX_COOKIE_RETRIES or not 1 <= len(cookie.data) <= MAX_COOKIE_LEN:
            _fail(sa, "the responder keeps asking for a cookie", now, NotifyType.COOKIE)
            return
        st.cookie_retries += 1
        st.cookie = cookie.data
        start(sa, now)
        return
    invalid_ke = msg.notify(NotifyType.INVALID_KE_PAYLOAD)
    if invalid_ke is not None:
        group = int.from_bytes(invalid_ke.data, "big") if len(invalid_ke.data) == 2 else -1
        assert st.ke is not None
        if (
            group not in st.offered_groups
            or group == st.ke.group
            or st.ke_retries >= MAX_KE_RETRIES
        ):
            _fail(sa, f"the responder wants DH group {group}", now, NotifyType.INVALID_KE_PAYLOAD)
            return
        st.ke_retries += 1
        st.ke = dh.generate(group, sa.rng)
        start(sa, now)
        return
    for n in msg.all(NotifyPayload):
        if n.notify_type < 16384:
            _fail(sa, f"the responder answered {_notify_name(n.notify_type)}", now, n.notify_type)
            return
    # Validate everything before touching state: an unauthenticated bad answer is dropped.
    sa_payload = msg.get(SaPayload)
    ke = msg.get(KePayload)
    nonce = msg.get(NoncePayload)
    if sa_payload is None or ke is None or nonce is None or msg.spi_r == ZERO_SPI:
        raise RemoteProtocolError("IKE_SA_INIT response without SA, KE, Nonce or SPI")
    assert st.sent_sa is not None and st.ke is not None
    selection = check_response(st.sent_sa, sa_payload, spi_len=0)
    if selection.dh_group != st.ke.group or ke.group != st.ke.group:
        raise RemoteProtocolError("IKE_SA_INIT response: DH group differs from our KE")
    shared = st.ke.shared_secret(ke.data)
    ctx = sa.current
    assert selection.prf_id is not None and selection.encr_id is not None
    _, keys = derive_ike_keys(
        selection.prf_id,
        selection.encr_id,
        selection.encr_key_bits,
        selection.integ_id,
        shared,
        st.nonce_i,
        nonce.data,
        ctx.spi_i,
        msg.spi_r,
    )
    ctx.spi_r = msg.spi_r
    install_keys(ctx, selection, keys)
    st.nonce_r = nonce.data
    st.dh_group = ke.group
    st.ke = None
    nat = _detect_nat(msg, msg.spi_r, sa.config.local_addr, sa.peer_addr)
    if nat is not None:
        sa.nat_local, sa.nat_remote = nat
        if sa.nat_detected:
            sa.enable_natt()
    _peer_capabilities(sa, msg)
    ctx.next_mid = 1
    try:
        ike_auth.start(sa, now)
    except KipsecError as exc:  # our side cannot authenticate (e.g. no usable method)
        from .events import NegotiationFailed

        sa.emit(NegotiationFailed(ExchangeType.IKE_AUTH, f"cannot authenticate: {exc}"))
        sa.close("negotiation-failed", now)


def _notify_name(notify_type: int) -> str:
    try:
        return NotifyType(notify_type).name
    except ValueError:
        return str(notify_type)


# ---------------------------------------------------------------------- responder


def send_error(sa: IkeSa, request: Message, notify: NotifyPayload, addr: Address) -> None:
    """A stateless IKE_SA_INIT answer carrying only ``notify`` (SPIr zero)."""
    sa.send_plain(
        Message(request.spi_i, ZERO_SPI, ExchangeType.IKE_SA_INIT, 0, True, False, (notify,)),
        addr,
    )


def handle_request(
    sa: IkeSa, ctx: SaContext, msg: Message, data: bytes, addr: Address, now: float
) -> None:
    """Answer an IKE_SA_INIT request (the Endpoint already checked any cookie)."""
    from .events import NegotiationFailed

    sa_payload = msg.get(SaPayload)
    ke = msg.get(KePayload)
    nonce = msg.get(NoncePayload)
    if sa_payload is None or ke is None or nonce is None:
        raise RemoteProtocolError("IKE_SA_INIT request without SA, KE or Nonce")
    selection = select_ike(sa_payload, sa.config.proposals, ke.group)
    if selection is None:
        send_error(sa, msg, NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN), addr)
        sa.emit(
            NegotiationFailed(
                ExchangeType.IKE_SA_INIT,
                "no IKE proposal acceptable",
                NotifyType.NO_PROPOSAL_CHOSEN,
            )
        )
        sa.discard()
        return
    assert selection.dh_group is not None
    if ke.group != selection.dh_group:
        group = selection.dh_group.to_bytes(2, "big")
        send_error(sa, msg, NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, data=group), addr)
        sa.discard()
        return
    ours = dh.generate(selection.dh_group, sa.rng)
    shared = ours.shared_secret(ke.data)
    st = sa.init
    st.nonce_i = nonce.data
    st.nonce_r = sa.rng(sa.config.nonce_length)
    st.dh_group = selection.dh_group
    st.init_i = data
    assert selection.prf_id is not None and selection.encr_id is not None
    _, keys = derive_ike_keys(
        selection.prf_id,
        selection.encr_id,
        selection.encr_key_bits,
        selection.integ_id,
        shared,
        st.nonce_i,
        st.nonce_r,
        ctx.spi_i,
        ctx.spi_r,
    )
    install_keys(ctx, selection, keys)
    nat = _detect_nat(msg, ZERO_SPI, sa.config.local_addr, addr)
    if nat is not None:
        sa.nat_local, sa.nat_remote = nat
    _peer_capabilities(sa, msg)
    sa.peer_addr = addr
    payloads: list[Payload] = [
        selection.to_sa_payload(b""),
        KePayload(ours.group, ours.public_bytes),
        NoncePayload(st.nonce_r),
    ]
    if nat is not None:
        payloads += _nat_notifies(ctx.spi_i, ctx.spi_r, sa.config.local_addr, addr)
    if sa.config.fragmentation and sa.peer_fragmentation:
        payloads.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
    payloads += _hash_algorithms_notify(sa)
    payloads += ike_auth.certreq_payloads(sa)
    from .engine import IkeState

    st.init_r = sa.respond(ctx, msg, payloads, addr, encrypt=False)[0]
    sa.state = IkeState.INIT_DONE
