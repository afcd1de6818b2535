"""What an IKE SA reports to its owner: one small frozen dataclass per thing that happened.

The daemon drains them with ``IkeSa.next_event()`` and applies them to the datapath and
the metrics. Events that carry keys hide the key bytes from ``repr`` (and so from logs).
Times are on the engine's ``now`` scale (seconds, the caller's monotonic clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..traffic_selectors import TrafficSelector
from .config import Address, Mode


@dataclass(frozen=True, slots=True)
class IkeSaEstablished:
    """IKE_AUTH completed: both sides are authenticated and the IKE SA is usable."""

    spi_i: bytes  #: initiator's IKE SPI (8 bytes)
    spi_r: bytes  #: responder's IKE SPI (8 bytes)
    initiator: bool  #: True if this side initiated the IKE SA
    remote_addr: Address  #: where the peer's datagrams come from (post-NAT)
    local_id: str  #: our identity as sent in IDi/IDr, printable
    remote_id: str  #: the peer's authenticated identity, printable
    encr_id: int  #: IKE SA encryption transform
    encr_key_bits: int  #: its key size in bits
    integ_id: int | None  #: integrity transform, None with an AEAD cipher
    prf_id: int  #: pseudo-random function
    dh_group: int  #: Diffie-Hellman group of IKE_SA_INIT
    nat_local: bool  #: this side is behind a NAT (its address was translated)
    nat_remote: bool  #: the peer is behind a NAT
    fragmentation: bool  #: both sides support RFC 7383 fragmentation

    @property
    def nat_detected(self) -> bool:
        """A NAT is on the path: the daemon moves to port 4500 and UDP-encapsulated ESP."""
        return self.nat_local or self.nat_remote


@dataclass(frozen=True, slots=True)
class ChildSaEstablished:
    """A pair of ESP/AH SAs is negotiated and must be installed in the datapath.

    When ``replaces`` is set this child rekeys an older one (make-before-break): install
    this one first; the old one is reported by :class:`ChildSaDeleted` shortly after.
    Keys are raw keying material as RFC 7296 section 2.17 splits it (for AES-GCM and
    ChaCha20-Poly1305 the 4-byte salt is the tail of the encryption key).
    """

    name: str  #: the ChildConfig name
    protocol: int  #: ProtocolId.ESP or ProtocolId.AH
    mode: Mode  #: "tunnel" or "transport"
    spi_in: bytes  #: 4-byte SPI the peer puts on packets to us
    spi_out: bytes  #: 4-byte SPI we put on packets to the peer
    encr_id: int | None  #: encryption transform (None for AH)
    encr_key_bits: int  #: encryption key size in bits (0 for AH)
    integ_id: int | None  #: integrity transform, None with an AEAD cipher
    esn: bool  #: 64-bit extended sequence numbers negotiated
    local_ts: tuple[TrafficSelector, ...]  #: our side's selectors (after narrowing)
    remote_ts: tuple[TrafficSelector, ...]  #: the peer side's selectors (after narrowing)
    rekey_at: float | None  #: engine time of the soft lifetime (None = never)
    expire_at: float | None  #: engine time of the hard lifetime (None = never)
    initiator: bool  #: True if this side initiated the exchange that created it
    remote_addr: Address  #: the peer address the IKE SA talks to
    nat_detected: bool  #: UDP-encapsulate ESP (RFC 3948)
    replaces: bytes | None = None  #: spi_in of the child SA this one rekeys
    #: hard limit of bytes of each SA of the pair (None: unlimited): the ChildConfig's,
    #: or the shorter one IKEv1 negotiated; the datapath enforces it
    max_bytes: int | None = None
    #: Keep sending on ``replaces`` until it is deleted, as the responder of a rekey
    #: does: set by IKEv1, whose quick mode never says when the peer installed the SAs.
    defer_outbound: bool = False
    encr_key_in: bytes = field(default=b"", repr=False)  #: decrypts inbound packets
    integ_key_in: bytes = field(default=b"", repr=False)  #: verifies inbound packets
    encr_key_out: bytes = field(default=b"", repr=False)  #: encrypts outbound packets
    integ_key_out: bytes = field(default=b"", repr=False)  #: authenticates outbound packets


@dataclass(frozen=True, slots=True)
class ChildSaRekeyed:
    """The child SA ``old_spi_in`` was replaced by ``new_spi_in`` (both installed now)."""

    name: str  #: the ChildConfig name
    old_spi_in: bytes  #: inbound SPI of the replaced child SA
    new_spi_in: bytes  #: inbound SPI of its successor


@dataclass(frozen=True, slots=True)
class ChildSaDeleted:
    """A child SA is gone: remove both its SAs from the datapath.

    ``reason`` is one of ``deleted`` (we asked), ``deleted-by-peer``, ``rekeyed`` (old
    half of a rekey), ``redundant`` (loser of a rekey collision), ``expired`` (hard
    lifetime) or ``ike-deleted`` (its IKE SA went away).
    """

    name: str  #: the ChildConfig name
    protocol: int  #: ProtocolId.ESP or ProtocolId.AH
    spi_in: bytes  #: inbound SPI
    spi_out: bytes  #: outbound SPI
    reason: str  #: why, see above


@dataclass(frozen=True, slots=True)
class IkeSaRekeyed:
    """The IKE SA now uses new SPIs and keys; children and state moved over unchanged.

    The daemon routes datagrams for both SPI pairs to the same IkeSa until the old one's
    deletion completes (``IkeSa.local_spis()`` lists what to route).
    """

    old_spi_i: bytes  #: initiator SPI of the replaced IKE SA
    old_spi_r: bytes  #: responder SPI of the replaced IKE SA
    new_spi_i: bytes  #: initiator SPI of the new IKE SA (the rekey initiator's)
    new_spi_r: bytes  #: responder SPI of the new IKE SA


@dataclass(frozen=True, slots=True)
class IkeSaDeleted:
    """The IKE SA is finished; the IkeSa object will not do anything any more.

    ``reason``: ``deleted``, ``deleted-by-peer``, ``expired``, ``peer-dead``,
    ``authentication-failed``, ``negotiation-failed``.
    """

    spi_i: bytes  #: initiator SPI
    spi_r: bytes  #: responder SPI (zero bytes if IKE_SA_INIT never completed)
    reason: str  #: why, see above


@dataclass(frozen=True, slots=True)
class PeerDead:
    """A request went unanswered through the whole retransmission schedule."""

    remote_addr: Address  #: the silent peer
    exchange: int  #: ExchangeType of the unanswered request
    tries: int  #: transmissions sent, the first included


@dataclass(frozen=True, slots=True)
class AuthenticationFailedEvent:
    """Authentication failed; ``by_peer`` True means the peer rejected us.

    ``reason`` names the check: ``psk``, ``signature``, ``public-key`` (IKEv1
    public-key encryption), ``identity``, ``method`` or a certificate reason
    (``expired``, ``untrusted``, ``identity-mismatch`` …); when ``by_peer``, IKEv1 names
    the method we authenticated with, IKEv2 ``rejected by peer``.
    """

    remote_addr: Address  #: the peer
    reason: str  #: which check failed
    by_peer: bool  #: True if we received AUTHENTICATION_FAILED
    remote_id: str | None = None  #: the identity the peer claimed, when known


@dataclass(frozen=True, slots=True)
class NegotiationFailed:
    """An exchange could not agree: no proposal, unacceptable selectors, and so on.

    ``child`` is the child configuration concerned (None for the IKE SA itself);
    ``notify`` the error notify received or sent, when there was one.
    """

    exchange: int  #: ExchangeType where it failed
    reason: str  #: human-readable cause
    notify: int | None = None  #: NotifyType involved
    child: str | None = None  #: ChildConfig name, or None for the IKE SA
    by_peer: bool = False  #: True if the peer sent the error notify


@dataclass(frozen=True, slots=True)
class ProtocolErrorEvent:
    """Something from the peer was malformed, tampered or unexpected and was dropped."""

    reason: str  #: what was wrong
    remote_addr: Address | None = None  #: where it came from


Event = (
    IkeSaEstablished
    | ChildSaEstablished
    | ChildSaRekeyed
    | ChildSaDeleted
    | IkeSaRekeyed
    | IkeSaDeleted
    | PeerDead
    | AuthenticationFailedEvent
    | NegotiationFailed
    | ProtocolErrorEvent
)
