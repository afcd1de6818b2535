"""The IPsec Security Association the datapath holds (RFC 4301 section 4.4.2).

One :class:`IpsecSa` is one direction of one link: identified by (SPI, destination,
protocol), it carries the algorithms and their keyed transform objects, the outbound
sequence counter, the inbound anti-replay window, byte/packet counters and the byte and
packet lifetimes. Time lifetimes belong to the engine (the cores have no clock).

The constructor validates everything once: refused algorithms raise
:class:`~kipsec_sidecar.core.errors.RefusedAlgorithm` naming the safe alternative, key
lengths must match :mod:`~kipsec_sidecar.core.algorithms`, AH with UDP encapsulation is
refused (AH authenticates the addresses a NAT rewrites). After that the per-packet path
does no validation of the SA itself.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from . import algorithms
from .errors import LocalProtocolError, RefusedAlgorithm, SequenceExhausted
from .esp_ciphers import EspTransform, HmacIcv, make_esp_transform
from .ike.constants import EncrId, IntegId, ProtocolId
from .replay import DEFAULT_WINDOW_SIZE, ReplayWindow
from .traffic_selectors import IPAddress, TrafficSelector

SEQ_MAX_32 = 0xFFFFFFFF
SEQ_MAX_64 = 0xFFFFFFFFFFFFFFFF
# The sequence counter reports "rekey now" when this fraction of its space is left.
SEQ_SOFT_REMAINING_FRACTION = 16
MIN_SPI = 256  # SPIs 1-255 are reserved by IANA and 0 is never sent (RFC 4303 section 2.1)


class Mode(Enum):
    """Tunnel mode adds an outer IP header; transport mode keeps the original one."""

    TUNNEL = "tunnel"
    TRANSPORT = "transport"


class LifetimeState(Enum):
    """Where an SA stands against its byte, packet and sequence-number limits."""

    OK = "ok"
    SOFT = "soft"  # rekey now: a replacement SA should be negotiated
    HARD = "hard"  # the SA must no longer carry traffic


class LifetimeExpired(LocalProtocolError):
    """The SA reached a hard byte or packet limit and must be deleted, not used."""


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Byte and packet limits (None = unlimited).

    Soft limits ask for a rekey; hard limits stop the SA.
    """

    soft_bytes: int | None = None
    hard_bytes: int | None = None
    soft_packets: int | None = None
    hard_packets: int | None = None

    def __post_init__(self) -> None:
        for soft, hard, unit in (
            (self.soft_bytes, self.hard_bytes, "bytes"),
            (self.soft_packets, self.hard_packets, "packets"),
        ):
            for value in (soft, hard):
                if value is not None and value <= 0:
                    raise LocalProtocolError(f"lifetime in {unit} must be positive, got {value}")
            if soft is not None and hard is not None and soft > hard:
                raise LocalProtocolError(
                    f"soft lifetime {soft} {unit} exceeds the hard lifetime {hard} {unit}"
                )


def as_address(value: str | IPAddress) -> IPAddress:
    """``value`` as an address object (as is when it is one); LocalProtocolError if not
    an IP address. :func:`~.negotiated.sa_pair` parses its two endpoints once with it
    for both directions."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    try:
        return ipaddress.ip_address(value)
    except ValueError as exc:
        raise LocalProtocolError(f"not an IP address: {value!r}") from exc


class IpsecSa:
    """One direction of an ESP or AH SA, with its keyed transforms built in.

    Keys: for ESP, ``encr_key`` is the whole keying material of the cipher (for AES-GCM
    and ChaCha20-Poly1305 that includes the 4-byte salt at the end, RFC 4106 / RFC
    7634); ``integ_key`` is the HMAC key (ESP with AES-CBC, and AH). ``encr_key_bits``
    (the IKE Key Length attribute) is checked against ``encr_key`` when given.

    The raw keys stay readable as :attr:`encr_key` and :attr:`integ_key` because a
    kernel datapath must hand them to the kernel; they are kept out of ``repr`` and
    must never be logged.
    """

    __slots__ = (
        "_encr_key",
        "_integ_key",
        "ah_icv",
        "bytes",
        "dst",
        "dst_packed",
        "encr_id",
        "encr_key_bits",
        "esn",
        "integ_id",
        "lifetime",
        "local_ts",
        "mode",
        "next_seq",
        "packets",
        "protocol",
        "remote_ts",
        "replay",
        "spi",
        "src",
        "src_packed",
        "transform",
        "udp_encap",
    )

    def __init__(
        self,
        *,
        spi: int,
        src: str | IPAddress,
        dst: str | IPAddress,
        protocol: ProtocolId,
        mode: Mode,
        encr_id: EncrId | None = None,
        encr_key: bytes = b"",
        encr_key_bits: int | None = None,
        integ_id: IntegId | None = None,
        integ_key: bytes = b"",
        esn: bool = False,
        replay_window: int = DEFAULT_WINDOW_SIZE,
        lifetime: Lifetime | None = None,
        udp_encap: bool = False,
        local_ts: tuple[TrafficSelector, ...] = (),
        remote_ts: tuple[TrafficSelector, ...] = (),
    ) -> None:
        if not MIN_SPI <= spi <= 0xFFFFFFFF:
            raise LocalProtocolError(f"SPI {spi:#x} is reserved or out of range")
        self.spi = spi
        self.src = as_address(src)
        self.dst = as_address(dst)
        if self.src.version != self.dst.version:
            raise LocalProtocolError("SA source and destination mix IPv4 and IPv6")
        self.src_packed = self.src.packed  # for the tunnel-mode outer header, per packet
        self.dst_packed = self.dst.packed
        self.protocol = ProtocolId(protocol)
        self.mode = mode
        self.esn = esn
        self.udp_encap = udp_encap
        #: the selectors negotiated for this SA, this side's and the peer's (the same on
        #: both directions of a child SA); empty when unknown (manual keys): a datapath
        #: then checks what comes out of the SA against the peer's configured selectors
        self.local_ts = local_ts
        self.remote_ts = remote_ts
        self.lifetime = lifetime or Lifetime()
        self.encr_id = encr_id
        self.integ_id = integ_id
        self.encr_key_bits = encr_key_bits
        self._encr_key = bytes(encr_key)
        self._integ_key = bytes(integ_key)
        self.transform: EspTransform | None = None
        self.ah_icv: HmacIcv | None = None
        if self.protocol == ProtocolId.ESP:
            self.transform = self._esp_transform(encr_key, integ_key)
        elif self.protocol == ProtocolId.AH:
            self.ah_icv = self._ah_icv(integ_key)
        else:
            raise LocalProtocolError(f"protocol {self.protocol.name} is not ESP or AH")
        self.next_seq = 1
        self.replay = ReplayWindow(replay_window, esn=esn)
        self.bytes = 0
        self.packets = 0

    def _esp_transform(self, encr_key: bytes, integ_key: bytes) -> EspTransform:
        if self.encr_id is None:
            raise RefusedAlgorithm("ESP without encryption", algorithms.SAFE_ENCRYPTION)
        encr, integ = algorithms.check_suite(self.encr_id, self.integ_id)
        key_len = len(encr_key) - encr.salt_len
        if self.encr_key_bits is not None and self.encr_key_bits != key_len * 8:
            raise LocalProtocolError(
                f"{encr.name} key is {key_len * 8} bits but the SA says {self.encr_key_bits}"
            )
        self.encr_key_bits = key_len * 8
        return make_esp_transform(self.encr_id, encr, encr_key, integ, integ_key)

    def _ah_icv(self, integ_key: bytes) -> HmacIcv:
        if self.udp_encap:
            raise LocalProtocolError(
                "AH cannot be UDP-encapsulated: it authenticates the IP addresses a NAT "
                "rewrites; use ESP for NAT traversal"
            )
        if self.encr_id is not None:
            raise LocalProtocolError("AH takes no encryption transform; use ESP to encrypt")
        if self.integ_id in (None, IntegId.NONE):
            raise RefusedAlgorithm("AH without integrity", algorithms.SAFE_INTEGRITY)
        assert self.integ_id is not None
        return HmacIcv(algorithms.integrity(self.integ_id), integ_key)

    @property
    def encr_key(self) -> bytes:
        """The cipher's whole keying material (with the salt for AEADs); never log it."""
        return self._encr_key

    @property
    def integ_key(self) -> bytes:
        """The HMAC key (ESP with AES-CBC, and AH; empty for AEADs); never log it."""
        return self._integ_key

    @property
    def key(self) -> tuple[int, IPAddress, ProtocolId]:
        """The SAD key: (SPI, destination address, protocol)."""
        return (self.spi, self.dst, self.protocol)

    @property
    def seq_max(self) -> int:
        return SEQ_MAX_64 if self.esn else SEQ_MAX_32

    def next_sequence(self) -> int:
        """Take the next outbound sequence number (full 64 bits with ESN).

        Raises SequenceExhausted once the counter would wrap (RFC 4303 section 3.3.3:
        the SA must be replaced, never cycled) and LifetimeExpired past a hard limit.
        """
        seq = self.next_seq
        if seq > self.seq_max:
            raise SequenceExhausted(
                f"SA {self.spi:#010x} used all {self.seq_max} sequence numbers; rekey"
            )
        if self.hard_limit_reached:
            raise LifetimeExpired(f"SA {self.spi:#010x} reached its hard lifetime")
        self.next_seq = seq + 1
        return seq

    def ensure_usable(self) -> None:
        """Raise LifetimeExpired when a hard limit was reached (checked on input too)."""
        if self.hard_limit_reached:
            raise LifetimeExpired(f"SA {self.spi:#010x} reached its hard lifetime")

    def count(self, nbytes: int) -> None:
        """Account one packet of ``nbytes`` payload bytes against counters and lifetimes."""
        self.bytes += nbytes
        self.packets += 1

    @property
    def sequence_soft_limit_reached(self) -> bool:
        """Fewer than 1/16 of the sequence numbers are left: rekey well before the wrap."""
        return self.seq_max - self.next_seq < self.seq_max // SEQ_SOFT_REMAINING_FRACTION

    @property
    def soft_limit_reached(self) -> bool:
        """Time to rekey: a soft byte/packet limit or the sequence soft limit was reached."""
        lt = self.lifetime
        return (
            (lt.soft_bytes is not None and self.bytes >= lt.soft_bytes)
            or (lt.soft_packets is not None and self.packets >= lt.soft_packets)
            or self.sequence_soft_limit_reached
            or self.hard_limit_reached
        )

    @property
    def hard_limit_reached(self) -> bool:
        """The SA must stop: a hard byte/packet limit was reached or the sequence space is spent."""
        lt = self.lifetime
        return (
            (lt.hard_bytes is not None and self.bytes >= lt.hard_bytes)
            or (lt.hard_packets is not None and self.packets >= lt.hard_packets)
            or self.next_seq > self.seq_max
        )

    @property
    def lifetime_state(self) -> LifetimeState:
        if self.hard_limit_reached:
            return LifetimeState.HARD
        if self.soft_limit_reached:
            return LifetimeState.SOFT
        return LifetimeState.OK

    def __repr__(self) -> str:
        # Never include keys.
        return (
            f"IpsecSa(spi={self.spi:#010x}, {self.src}->{self.dst}, {self.protocol.name}, "
            f"{self.mode.value}, encr={self.encr_id!r}, integ={self.integ_id!r}, esn={self.esn})"
        )
