"""IKE_AUTH (RFC 7296 sections 1.2 and 2.15): identities, certificates, AUTH, first child.

The AUTH payload covers each side's IKE_SA_INIT message, the peer's nonce and a MAC of
its own ID payload (:func:`~.auth.signed_octets`). Pre-shared keys authenticate both
ways; signatures are checked against the peer's certificate after its chain has been
validated against the configured trust anchors at the engine's wall time
(``IkeConfig.wall_clock_epoch + now``) and its identity matched. The first child SA
rides along; if it fails (NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE) the IKE SA still stands.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache, partial
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import AuthenticationFailed, CertificateError, KipsecError, RemoteProtocolError
from . import auth, child_negotiation, create_child
from .config import Address, AuthConfig, Identity
from .constants import AuthMethod, CertEncoding, ExchangeType, IdType, NotifyType
from .events import AuthenticationFailedEvent, IkeSaEstablished, NegotiationFailed
from .message import Message
from .payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    IdiPayload,
    IdrPayload,
    NotifyPayload,
    Payload,
    SaPayload,
)
from .sa_context import SaContext

if TYPE_CHECKING:
    from cryptography import x509

    from .engine import IkeSa


@lru_cache(maxsize=256)
def _certificate(der: bytes) -> x509.Certificate:
    """Parsed certificate, cached: configured certificates are parsed once, not per SA."""
    # certs (and with it cryptography.x509, ~2 MiB) loads on the first certificate:
    # a PSK-only sidecar never needs it.
    from . import certs

    return certs.load_certificate(der)


def local_identity(sa: IkeSa) -> Identity:
    """Our identity: configured, or the subject of our certificate."""
    return configured_identity(sa.config.auth)


def configured_identity(cfg: AuthConfig) -> Identity:
    """``cfg.local_id``, or the subject of our certificate (IKEv1 shares this)."""
    if cfg.local_id is not None:
        return cfg.local_id
    from . import certs

    id_type, data = certs.identity_for_certificate(_certificate(cfg.certificates[0]))
    return Identity(id_type, data)


def printable_identity(id_type: int, data: bytes) -> str:
    """An identity for events and logs: names as text, addresses as text, the rest hex."""
    if id_type in (IdType.ID_FQDN, IdType.ID_RFC822_ADDR):
        return data.decode("ascii", "replace")
    if id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR) and len(data) in (4, 16):
        return str(ipaddress.ip_address(data))
    return f"{id_type}:{data.hex()}"


def certreq_payloads(sa: IkeSa) -> list[Payload]:
    """CERTREQ naming our trust anchors (SHA-1 of each SubjectPublicKeyInfo, RFC 7296 3.7)."""
    cfg = sa.config.auth
    if cfg.method != "signature" or not cfg.send_certreq:
        return []
    hashes = b"".join(_spki_hash(der) for der in cfg.trust_anchors)
    return [CertReqPayload(CertEncoding.X509_SIGNATURE, hashes)]


@lru_cache(maxsize=256)
def _spki_hash(der: bytes) -> bytes:
    spki = (
        _certificate(der).public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    return hashlib.sha1(spki).digest()  # noqa: S324 - RFC 7296 3.7 names SHA-1


def _auth_payload(sa: IkeSa, octets: bytes) -> AuthPayload:
    cfg = sa.config.auth
    ctx = sa.current
    if cfg.method == "psk":
        return AuthPayload(
            AuthMethod.SHARED_KEY_MIC, auth.psk_auth_data(ctx.prf_id, cfg.psk, octets)
        )
    signer = auth.Signer(cfg.private_key, cfg.signature_method, rsa_pss=cfg.rsa_pss)
    method, hash_alg = signer.choose(sa.peer_hash_algorithms)
    return AuthPayload(method, signer.sign(octets, method, hash_alg))


def _cert_payloads(sa: IkeSa) -> list[Payload]:
    cfg = sa.config.auth
    if cfg.method != "signature":
        return []
    return [CertPayload(CertEncoding.X509_SIGNATURE, der) for der in cfg.certificates]


def verify_peer(
    sa: IkeSa, peer_id: IdiPayload | IdrPayload, msg: Message, octets: bytes, now: float
) -> str:
    """Check the peer's AUTH (and certificate chain); returns its printable identity.

    Raises AuthenticationFailed (CertificateError for chain and identity problems);
    ``reason`` attributes are set on the exceptions for the event.
    """
    cfg = sa.config.auth
    auth_payload = msg.get(AuthPayload)
    if auth_payload is None:
        raise _failure("missing", "no AUTH payload")
    name = printable_identity(peer_id.id_type, peer_id.data)
    remote = cfg.remote_id
    if auth_payload.method == AuthMethod.SHARED_KEY_MIC:
        if cfg.method != "psk":
            raise _failure("method", "the peer used a pre-shared key, we require signatures")
        if remote is not None and (remote.id_type, remote.data) != (peer_id.id_type, peer_id.data):
            raise _failure("identity", f"the peer is {name}, we expect {remote}")
        try:
            auth.verify_psk(sa.current.prf_id, cfg.psk, octets, auth_payload.data)
        except AuthenticationFailed as exc:
            raise _failure("psk", str(exc)) from exc
        return name
    if cfg.method != "signature":
        raise _failure("method", "the peer used a signature, we require a pre-shared key")
    end_entity = peer_certificate(
        cfg, msg.all(CertPayload), peer_id.id_type, peer_id.data, sa.wall_clock(now)
    )
    try:
        auth.verify_signature(
            auth_payload.method, end_entity.public_key(), octets, auth_payload.data
        )
    except AuthenticationFailed as exc:
        raise _failure("signature", str(exc)) from exc
    return name


def peer_certificate(
    cfg: AuthConfig,
    cert_payloads: Sequence[CertPayload],
    id_type: int,
    id_data: bytes,
    wall: datetime,
) -> x509.Certificate:
    """The peer's end-entity certificate, its chain validated against our trust anchors
    at ``wall`` and naming the identity it claimed (and the one we require, if any).

    AuthenticationFailed with ``reason`` set (``certificate``, a certificate reason,
    ``identity-mismatch``) otherwise. IKEv1's main mode shares this.
    """
    from . import certs

    x509_payloads = [c for c in cert_payloads if c.encoding == CertEncoding.X509_SIGNATURE]
    if not x509_payloads:
        raise _failure("certificate", "no X.509 certificate from the peer")
    try:
        end_entity = certs.load_certificate(x509_payloads[0].data)
        intermediates = [certs.load_certificate(c.data) for c in x509_payloads[1:]]
        anchors = [_certificate(der) for der in cfg.trust_anchors]
        certs.validate_chain(end_entity, intermediates, anchors, wall)
    except CertificateError as exc:
        raise _failure(exc.reason, str(exc)) from exc
    name = printable_identity(id_type, id_data)
    if not certs.identity_matches(end_entity, id_type, id_data):
        raise _failure("identity-mismatch", f"the certificate does not name {name}")
    remote = cfg.remote_id
    if remote is not None and not certs.identity_matches(end_entity, remote.id_type, remote.data):
        raise _failure("identity-mismatch", f"the certificate does not name {remote}")
    return end_entity


def _failure(reason: str, detail: str) -> AuthenticationFailed:
    exc = AuthenticationFailed(f"{reason}: {detail}")
    exc.reason = reason  # type: ignore[attr-defined]
    return exc


def _reason(exc: KipsecError) -> str:
    return str(getattr(exc, "reason", "signature"))


def _established(sa: IkeSa, local: Identity, now: float) -> None:
    from .engine import IkeState

    ctx = sa.current
    sel = ctx.selection
    assert sel is not None and sel.encr_id is not None and sel.prf_id is not None
    sa.state = IkeState.ESTABLISHED
    sa.set_ike_lifetimes(now)
    sa.emit(
        IkeSaEstablished(
            spi_i=ctx.spi_i,
            spi_r=ctx.spi_r,
            initiator=sa.is_initiator,
            remote_addr=sa.peer_addr,
            local_id=printable_identity(local.id_type, local.data),
            remote_id=sa.remote_identity or "",
            encr_id=sel.encr_id,
            encr_key_bits=sel.encr_key_bits,
            integ_id=sel.integ_id,
            prf_id=sel.prf_id,
            dh_group=sa.init.dh_group,
            nat_local=sa.nat_local,
            nat_remote=sa.nat_remote,
            fragmentation=sa.fragmentation,
        )
    )


# ---------------------------------------------------------------------- initiator


def start(sa: IkeSa, now: float) -> None:
    """Send the IKE_AUTH request, with the first configured child SA."""
    from .engine import IkeState

    ctx = sa.current
    st = sa.init
    assert ctx.keys is not None
    local = local_identity(sa)
    idi = IdiPayload(local.id_type, local.data)
    octets = auth.signed_octets(st.init_i, st.nonce_r, ctx.prf_id, ctx.keys.sk_pi, idi.body())
    payloads: list[Payload] = [idi, *_cert_payloads(sa), *certreq_payloads(sa)]
    remote = sa.config.auth.remote_id
    if remote is not None:
        payloads.append(IdrPayload(remote.id_type, remote.data))
    payloads.append(_auth_payload(sa, octets))
    offer = None
    if sa.config.started_children:
        offer = child_negotiation.make_offer(sa, sa.config.started_children[0], pfs=False)
        payloads += child_negotiation.offer_payloads(offer)
    sa.state = IkeState.AUTH_SENT
    sa.send_request(
        ctx,
        ExchangeType.IKE_AUTH,
        payloads,
        lambda m, t: on_response(sa, m, t, local, offer),
        now,
        kind="auth",
    )


def on_response(
    sa: IkeSa,
    msg: Message,
    now: float,
    local: Identity,
    offer: child_negotiation.ChildOffer | None,
) -> None:
    ctx = sa.current
    st = sa.init
    assert ctx.keys is not None
    if msg.notify(NotifyType.AUTHENTICATION_FAILED) is not None:
        sa.emit(AuthenticationFailedEvent(sa.peer_addr, "rejected by peer", by_peer=True))
        sa.close("authentication-failed", now)
        return
    idr = msg.get(IdrPayload)
    if idr is None or msg.get(AuthPayload) is None:
        error = child_negotiation.first_error(msg)
        notify = error.notify_type if error is not None else None
        sa.emit(
            NegotiationFailed(
                ExchangeType.IKE_AUTH, "IKE_AUTH answer without IDr or AUTH", notify, None, True
            )
        )
        sa.close("negotiation-failed", now)
        return
    octets = auth.signed_octets(st.init_r, st.nonce_i, ctx.prf_id, ctx.keys.sk_pr, idr.body())
    try:
        sa.remote_identity = verify_peer(sa, idr, msg, octets, now)
    except AuthenticationFailed as exc:
        sa.emit(
            AuthenticationFailedEvent(
                sa.peer_addr, _reason(exc), False, printable_identity(idr.id_type, idr.data)
            )
        )
        sa.send_request(
            ctx,
            ExchangeType.INFORMATIONAL,
            [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)],
            lambda m, t: None,
            now,
            kind="auth-failed",
        )
        sa.close("authentication-failed", now)
        return
    _established(sa, local, now)
    if offer is not None:
        _finish_first_child(sa, msg, offer, now)
    for cfg in sa.config.started_children[1:]:
        sa.enqueue(partial(create_child.start_child, sa, cfg))


def _finish_first_child(
    sa: IkeSa, msg: Message, offer: child_negotiation.ChildOffer, now: float
) -> None:
    error = child_negotiation.first_error(msg)
    if error is not None or msg.get(SaPayload) is None:
        notify = error.notify_type if error is not None else None
        sa.emit(
            NegotiationFailed(
                ExchangeType.IKE_AUTH,
                "the responder refused the child SA",
                notify,
                offer.config.name,
                True,
            )
        )
        return
    try:
        choice = child_negotiation.check_answer(offer, msg)
    except RemoteProtocolError as exc:
        sa.emit(NegotiationFailed(ExchangeType.IKE_AUTH, str(exc), None, offer.config.name))
        return
    keys = child_negotiation.child_keys(
        sa, choice.selection, sa.init.nonce_i, sa.init.nonce_r, None
    )
    child_negotiation.install(
        sa,
        choice,
        spi_in=offer.spi_in,
        spi_out=choice.selection.spi,
        keys=keys,
        initiator=True,
        now=now,
    )


# ---------------------------------------------------------------------- responder


def handle_request(
    sa: IkeSa, ctx: SaContext, msg: Message, data: bytes, addr: Address, now: float
) -> None:
    """Authenticate the initiator, authenticate ourselves, answer the first child."""
    st = sa.init
    assert ctx.keys is not None
    idi = msg.get(IdiPayload)
    if idi is None:
        raise RemoteProtocolError("IKE_AUTH request without IDi")
    octets = auth.signed_octets(st.init_i, st.nonce_r, ctx.prf_id, ctx.keys.sk_pi, idi.body())
    peer_name = printable_identity(idi.id_type, idi.data)
    try:
        sa.remote_identity = verify_peer(sa, idi, msg, octets, now)
    except AuthenticationFailed as exc:
        sa.respond(ctx, msg, [NotifyPayload(NotifyType.AUTHENTICATION_FAILED)], addr)
        sa.emit(AuthenticationFailedEvent(addr, _reason(exc), False, peer_name))
        sa.close("authentication-failed", now)
        return
    local = local_identity(sa)
    idr = IdrPayload(local.id_type, local.data)
    our_octets = auth.signed_octets(st.init_r, st.nonce_i, ctx.prf_id, ctx.keys.sk_pr, idr.body())
    payloads: list[Payload] = [idr, *_cert_payloads(sa), _auth_payload(sa, our_octets)]
    install = None
    if msg.get(SaPayload) is not None:
        choice = child_negotiation.choose(msg, sa.config.children, pfs=False, ke_group=None)
        if isinstance(choice, NotifyPayload):
            payloads.append(choice)
        else:
            spi_in = sa.random_spi(4)
            payloads += child_negotiation.answer_payloads(choice, spi_in)
            install = (choice, spi_in)
    sa.respond(ctx, msg, payloads, addr)
    _established(sa, local, now)
    if install is not None:
        choice, spi_in = install
        keys = child_negotiation.child_keys(sa, choice.selection, st.nonce_i, st.nonce_r, None)
        child_negotiation.install(
            sa,
            choice,
            spi_in=spi_in,
            spi_out=choice.selection.spi,
            keys=keys,
            initiator=False,
            now=now,
        )
    elif msg.get(SaPayload) is not None:
        refused = [p for p in payloads if isinstance(p, NotifyPayload)]
        sa.emit(
            NegotiationFailed(
                ExchangeType.IKE_AUTH,
                "no child configuration accepts the initiator's child SA",
                refused[-1].notify_type if refused else None,
            )
        )
