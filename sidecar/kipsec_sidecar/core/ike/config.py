"""Plain, validated configuration of one IKEv2 peer: proposals, authentication, children.

These frozen dataclasses are what the engine reads; the sidecar's document model maps
onto them. Each one validates itself on construction and raises
:class:`~kipsec_sidecar.core.errors.LocalProtocolError` naming the bad field, so a
configuration mistake is reported once, at load time, never in the middle of a handshake.
Refused algorithms (DES, 3DES, MD5, ESP without integrity) are rejected here with the
message from :mod:`kipsec_sidecar.core.algorithms`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

from .. import algorithms
from ..errors import KipsecError, LocalProtocolError
from ..traffic_selectors import TrafficSelector
from .constants import AuthMethod, DhGroup, EncrId, EsnId, IdType, IntegId, PrfId, ProtocolId

Mode = Literal["tunnel", "transport"]
Address = tuple[str, int]

#: RFC 7296 section 2.10: nonces are at least 128 bits and at least half the PRF key size.
NONCE_LENGTH = 32


def _fail(field_name: str, message: str) -> LocalProtocolError:
    return LocalProtocolError(f"{field_name}: {message}")


def _check_algorithms(field_name: str, check: Any) -> None:
    try:
        check()
    except KipsecError as exc:
        raise _fail(field_name, str(exc)) from exc


@dataclass(frozen=True, slots=True)
class Encryption:
    """One encryption transform: identifier and key size in bits (RFC 7296 section 3.3.5)."""

    encr_id: int
    key_bits: int = 0  # 0 = the algorithm's default key size

    def __post_init__(self) -> None:
        _check_algorithms("encryption", lambda: algorithms.encryption(self.encr_id))
        spec = algorithms.encryption(self.encr_id)
        bits = self.key_bits or spec.default_key_len * 8
        if bits // 8 not in spec.key_lens or bits % 8:
            raise _fail("encryption.key_bits", f"{spec.name} does not take {bits}-bit keys")
        object.__setattr__(self, "key_bits", bits)

    @property
    def aead(self) -> bool:
        return algorithms.encryption(self.encr_id).aead


@dataclass(frozen=True, slots=True)
class IkeProposal:
    """The algorithms offered (or accepted) for the IKE SA itself.

    AEAD ciphers and non-AEAD ciphers may not be mixed in one proposal: put them in two.
    ``integrity`` must be empty when the ciphers are AEAD.
    ``legacy_sha1`` admits HMAC-SHA1 (integrity and PRF): the opt-in of an IKEv1 peer
    that named SHA-1 explicitly (RFC 9395 deprecates it); IkeConfig refuses it for IKEv2.
    """

    encryption: tuple[Encryption, ...] = (Encryption(EncrId.AES_GCM_16, 256),)
    integrity: tuple[int, ...] = ()
    prf: tuple[int, ...] = (PrfId.HMAC_SHA2_256,)
    dh: tuple[int, ...] = (DhGroup.CURVE25519, DhGroup.ECP_256)
    legacy_sha1: bool = False

    def __post_init__(self) -> None:
        if not self.encryption:
            raise _fail("ike_proposal.encryption", "at least one cipher is required")
        aead = {e.aead for e in self.encryption}
        if len(aead) != 1:
            raise _fail("ike_proposal.encryption", "AEAD and non-AEAD ciphers in one proposal")
        if aead == {True} and self.integrity:
            raise _fail("ike_proposal.integrity", "must be empty with an AEAD cipher")
        if aead == {False} and not self.integrity:
            raise _fail("ike_proposal.integrity", "a non-AEAD cipher needs an integrity algorithm")
        for integ in self.integrity:
            if self.legacy_sha1 and integ == IntegId.HMAC_SHA1_96:
                continue  # IKEv1 only: the phase 1 hash, never an ESP/AH integrity
            _check_algorithms("ike_proposal.integrity", lambda i=integ: algorithms.integrity(i))
        if not self.prf:
            raise _fail("ike_proposal.prf", "at least one PRF is required")
        for p in self.prf:
            _check_algorithms(
                "ike_proposal.prf",
                lambda p=p, legacy=self.legacy_sha1: algorithms.prf(p, legacy_sha1=legacy),
            )
        if not self.dh:
            raise _fail("ike_proposal.dh", "at least one Diffie-Hellman group is required")
        _check_groups("ike_proposal.dh", self.dh)


def _check_groups(field_name: str, groups: tuple[int, ...]) -> None:
    from . import dh  # late: the crypto module is written in parallel

    for group in groups:
        if group not in dh.SUPPORTED_GROUPS:
            raise _fail(field_name, f"Diffie-Hellman group {group} is not supported")


@dataclass(frozen=True, slots=True)
class ChildProposal:
    """The algorithms offered (or accepted) for a child SA.

    ``dh`` non-empty means perfect forward secrecy: CREATE_CHILD_SA exchanges carry a KE
    payload (the child created inside IKE_AUTH never does, RFC 7296 section 1.2).
    ``protocol`` AH takes only integrity; ESP must have integrity or an AEAD cipher.
    """

    protocol: int = ProtocolId.ESP
    encryption: tuple[Encryption, ...] = (Encryption(EncrId.AES_GCM_16, 256),)
    integrity: tuple[int, ...] = ()
    dh: tuple[int, ...] = ()
    esn: tuple[int, ...] = (EsnId.NO_ESN,)

    def __post_init__(self) -> None:
        if self.protocol not in (ProtocolId.ESP, ProtocolId.AH):
            raise _fail("child_proposal.protocol", "must be ESP or AH")
        if self.protocol == ProtocolId.AH:
            if self.encryption:
                raise _fail("child_proposal.encryption", "AH takes no encryption")
            if not self.integrity:
                raise _fail("child_proposal.integrity", "AH needs an integrity algorithm")
        else:
            if not self.encryption:
                raise _fail("child_proposal.encryption", "ESP needs at least one cipher")
            aead = {e.aead for e in self.encryption}
            if len(aead) != 1:
                raise _fail("child_proposal.encryption", "AEAD and non-AEAD mixed")
            integ = self.integrity[0] if self.integrity else None
            for e in self.encryption:
                _check_algorithms(
                    "child_proposal.integrity", lambda e=e: algorithms.check_suite(e.encr_id, integ)
                )
        for i in self.integrity:
            _check_algorithms("child_proposal.integrity", lambda i=i: algorithms.integrity(i))
        _check_groups("child_proposal.dh", self.dh)
        if not self.esn or any(e not in (EsnId.NO_ESN, EsnId.ESN) for e in self.esn):
            raise _fail("child_proposal.esn", "must list NO_ESN (0) and/or ESN (1)")


@dataclass(frozen=True, slots=True)
class Lifetime:
    """When an SA is rekeyed (soft) and when it dies if the rekey did not happen (hard).

    Seconds. The soft time is lowered by a random fraction up to ``jitter`` (from the
    injected rng) so that two peers with the same configuration do not rekey at once.
    ``rekey_after`` 0 disables rekeying; ``expire_after`` 0 disables the hard limit.
    ``max_bytes`` (child SAs only) is the hard limit of bytes a child SA carries (None:
    unlimited): the datapath counts them and asks for the rekey at 90 %; the engine only
    reports it, as IKEv1 negotiates it (in kilobytes, RFC 2407 section 4.5).
    """

    rekey_after: float = 3600.0
    expire_after: float = 3960.0
    jitter: float = 0.1
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.rekey_after < 0:
            raise _fail("lifetime.rekey_after", "must not be negative")
        if self.expire_after < 0:
            raise _fail("lifetime.expire_after", "must not be negative")
        if self.expire_after and self.rekey_after and self.expire_after <= self.rekey_after:
            raise _fail("lifetime.expire_after", "must be later than rekey_after")
        if not 0 <= self.jitter < 1:
            raise _fail("lifetime.jitter", "must be a fraction in [0, 1)")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise _fail("lifetime.max_bytes", "must be positive")


@dataclass(frozen=True, slots=True)
class Retransmission:
    """Request retransmission schedule (strongSwan-like defaults).

    Try *n* (0-based) waits ``initial_timeout * factor**n`` seconds; after ``max_tries``
    retransmissions with no answer the peer is declared dead.
    """

    initial_timeout: float = 4.0
    factor: float = 1.8
    max_tries: int = 5

    def __post_init__(self) -> None:
        if self.initial_timeout <= 0:
            raise _fail("retransmission.initial_timeout", "must be positive")
        if self.factor < 1:
            raise _fail("retransmission.factor", "must be at least 1")
        if self.max_tries < 0:
            raise _fail("retransmission.max_tries", "must not be negative")

    def timeout(self, tries: int) -> float:
        """Seconds to wait after the transmission numbered ``tries`` (0 = the first)."""
        return float(self.initial_timeout * self.factor**tries)


@dataclass(frozen=True, slots=True)
class Identity:
    """An IKE identity (RFC 7296 section 3.5): type and the identification data bytes."""

    id_type: int
    data: bytes

    def __post_init__(self) -> None:
        if self.id_type not in set(IdType):
            raise _fail("identity.id_type", f"unknown identification type {self.id_type}")
        if not self.data:
            raise _fail("identity.data", "must not be empty")

    @classmethod
    def fqdn(cls, name: str) -> Identity:
        return cls(IdType.ID_FQDN, name.encode("ascii"))

    @classmethod
    def address(cls, address: str) -> Identity:
        addr = ipaddress.ip_address(address)
        kind = IdType.ID_IPV4_ADDR if addr.version == 4 else IdType.ID_IPV6_ADDR
        return cls(kind, addr.packed)

    def __str__(self) -> str:
        return f"{IdType(self.id_type).name}:{self.data!r}"


@dataclass(eq=False, slots=True)
class RetiredKey:
    """Our private key that a renewal replaced, kept to *decrypt* for a while.

    Under IKEv1 public-key encryption (methods 4 and 5) a peer encrypts its nonce and
    identity to our public key as its own configuration knows it; after our certificate
    is renewed (a new key) the peers still encrypt to the old one until their documents
    carry the new certificate. Main mode tries this key on message 3 / 4 when what the
    current one opens does not name the peer (:mod:`kipsec_sidecar.core.ikev1.main_mode`),
    and only before ``until`` (the engine's clock); it never signs, encrypts nor derives
    anything we send. It is shared by every configuration (and SA) made from the renewed plan, so
    :meth:`drop` (the daemon calls it when the grace ends or the peer is replaced)
    forgets the key everywhere at once. The repr never shows the key.
    """

    private_key: Any
    until: float

    def usable(self, now: float) -> Any:
        """The key while ``now`` is before ``until``; None (and the key dropped) after."""
        if now >= self.until:
            self.drop()
        return self.private_key

    def drop(self) -> None:
        self.private_key = None

    def __repr__(self) -> str:
        return f"RetiredKey(until={self.until}, dropped={self.private_key is None})"


@dataclass(frozen=True, slots=True, repr=False)
class AuthConfig:
    """How this side proves who it is and how it checks the peer.

    ``method`` ``psk``: ``psk`` is the shared secret (both directions). ``signature``:
    ``private_key`` (a cryptography private key object) signs our AUTH, ``certificates``
    is our chain as DER (end entity first), ``trust_anchors`` (DER) validate the peer's
    chain, ``signature_method`` optionally forces an AUTH method (e.g. 1 or 14) and
    ``rsa_pss`` makes an RSA key sign with RSASSA-PSS under method 14.
    ``public_key_encryption`` (IKEv1 only, with ``signature``'s key and certificates):
    4 (RSA encryption) or 5 (revised) authenticates by encrypting to
    ``peer_certificate`` (DER, RSA), the peer's certificate known in advance (RFC 2409
    sections 5.2 / 5.3); both sides need RSA keys. ``retired_key`` (public-key
    encryption only): the key a renewal replaced, to decrypt what peers still encrypt
    to it during a grace (:class:`RetiredKey`).
    ``local_id`` defaults to the certificate subject (signatures) and must be given for
    PSK. ``remote_id`` None accepts any identity that authenticates (certificates must
    still name it). The repr never shows the PSK or the key.
    """

    method: Literal["psk", "signature"]
    local_id: Identity | None = None
    remote_id: Identity | None = None
    psk: bytes = b""
    private_key: Any = None
    certificates: tuple[bytes, ...] = ()
    trust_anchors: tuple[bytes, ...] = ()
    signature_method: int | None = None
    rsa_pss: bool = False
    send_certreq: bool = True
    public_key_encryption: int | None = None
    peer_certificate: bytes = b""
    retired_key: RetiredKey | None = None

    def __post_init__(self) -> None:
        if self.public_key_encryption is not None:
            _check_public_key_encryption(self)
        elif self.retired_key is not None:
            raise _fail("auth.retired_key", "only public-key encryption decrypts with it")
        if self.method == "psk":
            if len(self.psk) < 8:
                raise _fail("auth.psk", "a pre-shared key needs at least 8 bytes")
            if self.local_id is None:
                raise _fail("auth.local_id", "PSK authentication needs a local identity")
        elif self.method == "signature":
            if self.private_key is None:
                raise _fail("auth.private_key", "signature authentication needs a private key")
            if not self.certificates:
                raise _fail("auth.certificates", "signature authentication needs a certificate")
            if not self.trust_anchors:
                raise _fail("auth.trust_anchors", "signature authentication needs trust anchors")
            if self.signature_method is not None and self.signature_method not in set(AuthMethod):
                raise _fail("auth.signature_method", f"unknown method {self.signature_method}")
        else:
            raise _fail("auth.method", "must be 'psk' or 'signature'")

    def __repr__(self) -> str:
        return (
            f"AuthConfig(method={self.method!r}, local_id={self.local_id}, "
            f"remote_id={self.remote_id})"
        )


def _check_public_key_encryption(auth: AuthConfig) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    if auth.public_key_encryption not in (4, 5):
        raise _fail("auth.public_key_encryption", "must be 4 (RSA encryption) or 5 (revised)")
    if auth.method != "signature":
        raise _fail("auth.method", "public-key encryption uses a private key and certificates")
    if not isinstance(auth.private_key, rsa.RSAPrivateKey):
        raise _fail("auth.private_key", "public-key encryption needs an RSA private key")
    retired = auth.retired_key
    if retired is not None and not isinstance(retired.private_key, rsa.RSAPrivateKey | None):
        raise _fail("auth.retired_key", "public-key encryption needs an RSA private key")
    try:
        peer_key = x509.load_der_x509_certificate(auth.peer_certificate).public_key()
    except ValueError as exc:
        raise _fail("auth.peer_certificate", "not a DER X.509 certificate") from exc
    if not isinstance(peer_key, rsa.RSAPublicKey):
        raise _fail("auth.peer_certificate", "public-key encryption needs the peer's RSA key")


@dataclass(frozen=True, slots=True)
class ChildConfig:
    """One child SA (a pair of ESP/AH SAs) this peer wants or accepts.

    ``local_ts``/``remote_ts`` are the traffic selectors of this side and of the peer;
    the responder narrows what the initiator proposes to them (RFC 7296 section 2.9).
    ``start`` False: an initiator does not create it with the IKE SA, only when asked
    (``IkeSa.initiate_child``); a responder accepts it either way.
    """

    name: str
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    proposals: tuple[ChildProposal, ...] = (ChildProposal(),)
    mode: Mode = "tunnel"
    lifetime: Lifetime = Lifetime()
    start: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            raise _fail("child.name", "must not be empty")
        if not self.local_ts:
            raise _fail(f"child[{self.name}].local_ts", "at least one selector is required")
        if not self.remote_ts:
            raise _fail(f"child[{self.name}].remote_ts", "at least one selector is required")
        if not self.proposals:
            raise _fail(f"child[{self.name}].proposals", "at least one proposal is required")
        if self.mode not in ("tunnel", "transport"):
            raise _fail(f"child[{self.name}].mode", "must be 'tunnel' or 'transport'")


@dataclass(frozen=True, slots=True)
class IkeConfig:
    """Everything one IKE SA needs to know about this side and the peer.

    ``local_addr`` is our (pre-NAT) address, used for NAT detection.
    ``wall_clock_epoch`` maps the engine's monotonic ``now`` to wall time for certificate
    validity (wall = epoch + now, seconds since 1970) — the engine never reads a clock.
    ``max_datagram`` is the size above which an encrypted message is fragmented
    (RFC 7383) when both sides announced IKEV2_FRAGMENTATION_SUPPORTED.
    ``children`` is what an initiator establishes (of those with ``start``, the first
    inside IKE_AUTH, the others by CREATE_CHILD_SA right after) and what a responder
    accepts.
    """

    auth: AuthConfig
    children: tuple[ChildConfig, ...]
    local_addr: Address = ("0.0.0.0", 500)  # noqa: S104 - an address tuple, not a bind
    proposals: tuple[IkeProposal, ...] = (IkeProposal(),)
    lifetime: Lifetime = Lifetime(rekey_after=14400.0, expire_after=15840.0)
    retransmission: Retransmission = Retransmission()
    fragmentation: bool = True
    max_datagram: int = 1280
    wall_clock_epoch: float = 0.0
    liveness_interval: float = 0.0  # 0 = no periodic liveness checks
    temporary_failure_retry: float = 2.0
    nonce_length: int = NONCE_LENGTH
    hash_algorithms: tuple[int, ...] = field(default=(2, 3, 4, 5))
    version: Literal[1, 2] = 2  #: 1 runs the IKEv1 engine (``core.ikev1``) for this peer

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise _fail("ike.version", f"must be 1 or 2, not {self.version!r}")
        if self.version == 1:
            _check_ikev1(self)
        elif any(p.legacy_sha1 for p in self.proposals):
            raise _fail("ike.proposals", "SHA-1 is admitted for IKEv1 legacy peers only")
        elif self.auth.public_key_encryption is not None:
            raise _fail("auth.public_key_encryption", "public-key encryption is IKEv1 only")
        if not self.proposals:
            raise _fail("ike.proposals", "at least one proposal is required")
        names = [c.name for c in self.children]
        if len(set(names)) != len(names):
            raise _fail("ike.children", "child names must be unique")
        if not 576 <= self.max_datagram <= 65535:
            raise _fail("ike.max_datagram", "must be between 576 and 65535 bytes")
        if not 16 <= self.nonce_length <= 256:
            raise _fail("ike.nonce_length", "must be between 16 and 256 bytes")
        try:
            ipaddress.ip_address(self.local_addr[0])
        except ValueError as exc:
            raise _fail("ike.local_addr", f"not an IP address: {self.local_addr[0]!r}") from exc
        if self.liveness_interval < 0:
            raise _fail("ike.liveness_interval", "must not be negative")

    @property
    def started_children(self) -> tuple[ChildConfig, ...]:
        """The children an initiator establishes with the IKE SA, in order."""
        return tuple(c for c in self.children if c.start)

    def child(self, name: str) -> ChildConfig:
        """The child configuration called ``name``; LocalProtocolError if there is none."""
        for c in self.children:
            if c.name == name:
                return c
        raise _fail("child", f"no child configuration named {name!r}")


IKEV1_AEAD_MESSAGE = (
    "IKEv1 has no AEAD cipher for the ISAKMP SA: use a CBC cipher with an "
    "integrity algorithm (e.g. aes256-sha256-modp2048)"
)
IKEV1_EDDSA_MESSAGE = (
    "EdDSA (Ed25519/Ed448) signatures exist only in IKEv2 (RFC 8420); IKEv1 signs "
    "with RSA or ECDSA keys"
)


def ikev1_proposal_problem(proposal: IkeProposal) -> str | None:
    """Why `proposal` cannot protect an IKEv1 ISAKMP SA, or None: the one check the
    sidecar's load and the operator's Tunnel validation share."""
    if any(e.aead for e in proposal.encryption):
        return IKEV1_AEAD_MESSAGE
    return None


def _check_ikev1(config: IkeConfig) -> None:
    """Refuse what IKEv1 cannot express, naming the field, at load time.

    Phase 1 of IKEv1 (RFC 2409) has no AEAD cipher: the ISAKMP SA is encrypted with a
    block cipher in CBC mode and authenticated by the negotiated hash. Its signature
    methods are DSS, RSA and ECDSA (RFC 4754); EdDSA exists only in IKEv2 (RFC 8420).
    """
    for index, proposal in enumerate(config.proposals):
        problem = ikev1_proposal_problem(proposal)
        if problem is not None:
            raise _fail(f"ike.proposals[{index}].encryption", problem)
    key = config.auth.private_key
    if config.auth.method == "signature" and isinstance(
        key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
    ):
        raise _fail("auth.private_key", IKEV1_EDDSA_MESSAGE)


__all__ = [
    "IKEV1_AEAD_MESSAGE",
    "IKEV1_EDDSA_MESSAGE",
    "NONCE_LENGTH",
    "Address",
    "AuthConfig",
    "ChildConfig",
    "ChildProposal",
    "Encryption",
    "Identity",
    "IkeConfig",
    "IkeProposal",
    "Lifetime",
    "Mode",
    "RetiredKey",
    "Retransmission",
    "ikev1_proposal_problem",
]
