"""What the kernel must be told for one kipsec SA or peer policy: pure values, no netlink.

This module maps the cores' :class:`~kipsec_sidecar.core.ipsec_sa.IpsecSa` and the
daemon's :class:`~kipsec_sidecar.datapath.base.PeerPolicy` to the field values of XFRM
states and policies (``struct xfrm_usersa_info`` + attributes, ``struct
xfrm_userpolicy_info`` + templates). :mod:`.xfrm` turns these values into netlink
messages; keeping the mapping here means it is tested without a kernel, and the netlink
codec knows nothing about IKE transform identifiers.

Ownership: every state and policy kipsec installs carries the XFRM mark
``(0, owner_mask)`` and, for states and templates, a reqid inside :data:`REQID_RANGE`.
A mark with value 0 still matches every packet whose skb mark does not have the
``owner_mask`` bit set (the kernel compares ``skb_mark & mask == value``), so the mark
changes no traffic while letting a restarted sidecar find and remove exactly what an
earlier run left behind, and nothing else.

The raw keys come from the IpsecSa itself (:attr:`IpsecSa.encr_key`/``integ_key``);
:class:`SaKeys` can still be passed beside it to override them (tests). Never log them.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

from ..core.ike.constants import EncrId, IntegId, ProtocolId
from ..core.ipsec_sa import IpsecSa, Mode
from ..core.traffic_selectors import TrafficSelector
from .base import IPAddress, PeerPolicy

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The bit kipsec sets in the mask of the XFRM mark of everything it installs.
DEFAULT_OWNER_MASK = 0x00800000
#: reqids kipsec allocates from (one per peer and traffic-selector pair); "KP" in hex.
REQID_RANGE = range(0x4B500000, 0x4B510000)
#: UDP_ENCAP_ESPINUDP from linux/udp.h (RFC 3948 ESP-in-UDP, no non-IKE marker).
UDP_ENCAP_ESPINUDP = 2
#: The kernel's limit for the replay window of a non-ESN SA in ``xfrm_usersa_info``.
MAX_LEGACY_REPLAY_WINDOW = 255
#: Priority of kipsec's protect policies (lower number = preferred by the kernel).
PROTECT_PRIORITY = 0x3000
#: The kernel's safety-net hard time limit exceeds the engine's by this fraction of it,
#: and by at least :data:`SAFETY_NET_MIN_SECONDS` (see :func:`safety_net_seconds`).
SAFETY_NET_FRACTION = 0.1
SAFETY_NET_MIN_SECONDS = 5.0


class XfrmProto(IntEnum):
    """IP protocol numbers of the two IPsec protocols."""

    ESP = socket.IPPROTO_ESP
    AH = socket.IPPROTO_AH


class XfrmMode(IntEnum):
    """``XFRM_MODE_*`` from linux/xfrm.h."""

    TRANSPORT = 0
    TUNNEL = 1


class XfrmDir(IntEnum):
    """``XFRM_POLICY_IN/OUT/FWD``: which packets a policy is consulted for."""

    IN = 0
    OUT = 1
    FWD = 2


class XfrmAction(IntEnum):
    """``XFRM_POLICY_ALLOW/BLOCK``."""

    ALLOW = 0
    BLOCK = 1


class XfrmStateFlag(IntEnum):
    """``XFRM_STATE_*`` flags of ``xfrm_usersa_info.flags`` that kipsec uses."""

    NOECN = 1
    DECAP_DSCP = 2
    NOPMTUDISC = 4
    WILDRECV = 8
    ICMP = 16
    AF_UNSPEC = 32
    ALIGN4 = 64
    ESN = 128


class XfrmMappingError(ValueError):
    """An SA or policy cannot be expressed for the kernel; the message names the field."""


@dataclass(frozen=True, slots=True)
class SaKeys:
    """The raw key material of one SA direction (never logged; repr hides it).

    ``encr_key`` includes the 4-byte salt for AES-GCM and ChaCha20-Poly1305, exactly as
    :class:`IpsecSa` takes it; ``integ_key`` is the HMAC key (AES-CBC and AH).
    """

    encr_key: bytes = field(default=b"", repr=False)
    integ_key: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class XfrmAlgorithm:
    """One ``xfrm_algo``/``xfrm_algo_auth``/``xfrm_algo_aead``.

    ``name`` is the kernel crypto API name; ``key_bits`` is ``8 * len(key)`` (for AEAD
    it includes the salt, as the kernel expects); ``icv_bits`` is the AEAD ICV length or
    the truncation length of an HMAC (0 for a plain cipher).
    """

    name: str
    key: bytes = field(repr=False)
    icv_bits: int = 0

    @property
    def key_bits(self) -> int:
        return len(self.key) * 8


@dataclass(frozen=True, slots=True)
class XfrmMark:
    """An XFRM mark: matches packets whose ``skb_mark & mask == value``."""

    value: int
    mask: int


@dataclass(frozen=True, slots=True)
class XfrmEncap:
    """``xfrm_encap_tmpl``: ESP in UDP between two ports (host byte order here)."""

    sport: int
    dport: int
    type: int = UDP_ENCAP_ESPINUDP


@dataclass(frozen=True, slots=True)
class XfrmLifetime:
    """``xfrm_lifetime_cfg`` limits; 0 means "no limit" exactly as in the kernel."""

    soft_bytes: int = 0
    hard_bytes: int = 0
    soft_packets: int = 0
    hard_packets: int = 0
    soft_add_seconds: int = 0
    hard_add_seconds: int = 0


@dataclass(frozen=True, slots=True)
class XfrmSelector:
    """``xfrm_selector``: prefixes, one protocol and port/mask pairs (0/0 = any)."""

    src: IPNetwork
    dst: IPNetwork
    proto: int = 0
    sport: int = 0
    sport_mask: int = 0
    dport: int = 0
    dport_mask: int = 0

    @property
    def family(self) -> int:
        return socket.AF_INET if self.src.version == 4 else socket.AF_INET6

    @classmethod
    def any(cls, version: int) -> XfrmSelector:
        """The selector matching every packet of one address family."""
        net = ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")
        return cls(net, net)


@dataclass(frozen=True, slots=True)
class XfrmStateSpec:
    """Everything one XFRM state (SA) carries: the values of NEWSA/UPDSA."""

    src: IPAddress
    dst: IPAddress
    spi: int
    proto: XfrmProto
    mode: XfrmMode
    reqid: int
    mark: XfrmMark | None
    selector: XfrmSelector
    aead: XfrmAlgorithm | None = None
    crypt: XfrmAlgorithm | None = None
    auth: XfrmAlgorithm | None = None  #: sent as XFRMA_ALG_AUTH_TRUNC
    encap: XfrmEncap | None = None
    replay_window: int = 0  #: bits; sent as XFRMA_REPLAY_ESN_VAL
    esn: bool = False
    lifetime: XfrmLifetime = XfrmLifetime()
    flags: int = 0

    @property
    def family(self) -> int:
        return socket.AF_INET if self.dst.version == 4 else socket.AF_INET6


@dataclass(frozen=True, slots=True)
class XfrmTemplate:
    """``xfrm_user_tmpl``: the SA a policy requires (found by addresses, proto, reqid)."""

    src: IPAddress
    dst: IPAddress
    proto: XfrmProto
    mode: XfrmMode
    reqid: int
    spi: int = 0

    @property
    def family(self) -> int:
        return socket.AF_INET if self.dst.version == 4 else socket.AF_INET6


@dataclass(frozen=True, slots=True)
class XfrmPolicySpec:
    """One XFRM policy: the values of NEWPOLICY/UPDPOLICY (and DELPOLICY's key)."""

    selector: XfrmSelector
    direction: XfrmDir
    action: XfrmAction
    priority: int
    mark: XfrmMark | None
    templates: tuple[XfrmTemplate, ...] = ()


# The kernel crypto API names (net/xfrm/xfrm_algo.c) and ICV/truncation lengths in bits.
_AEAD_NAMES: dict[int, str] = {
    EncrId.AES_GCM_16: "rfc4106(gcm(aes))",
    EncrId.CHACHA20_POLY1305: "rfc7539esp(chacha20,poly1305)",
}
_CRYPT_NAMES: dict[int, str] = {EncrId.AES_CBC: "cbc(aes)"}
_AUTH_NAMES: dict[int, tuple[str, int]] = {
    IntegId.HMAC_SHA2_256_128: ("hmac(sha256)", 128),
    IntegId.HMAC_SHA2_384_192: ("hmac(sha384)", 192),
    IntegId.HMAC_SHA2_512_256: ("hmac(sha512)", 256),
}
_AEAD_ICV_BITS = 128


def owner_mark(owner_mask: int = DEFAULT_OWNER_MASK) -> XfrmMark:
    """The mark of everything kipsec owns: value 0, so it matches ordinary packets."""
    if owner_mask == 0 or owner_mask > 0xFFFFFFFF:
        raise XfrmMappingError(f"owner_mask {owner_mask:#x} must be a non-zero 32-bit mask")
    return XfrmMark(0, owner_mask)


def sa_keys(sa: IpsecSa) -> SaKeys:
    """The raw keys ``sa`` was built with."""
    return SaKeys(encr_key=sa.encr_key, integ_key=sa.integ_key)


def algorithms_for(sa: IpsecSa, keys: SaKeys | None = None) -> dict[str, XfrmAlgorithm]:
    """The XFRM algorithm attributes of ``sa``: keys ``aead``, ``crypt``, ``auth``.

    ``keys`` defaults to the SA's own (:func:`sa_keys`)."""
    if keys is None:
        keys = sa_keys(sa)
    if sa.protocol == ProtocolId.AH:
        return {"auth": _auth(sa.integ_id, keys.integ_key)}
    if sa.encr_id in _AEAD_NAMES:
        return {"aead": XfrmAlgorithm(_AEAD_NAMES[sa.encr_id], keys.encr_key, _AEAD_ICV_BITS)}
    if sa.encr_id in _CRYPT_NAMES:
        return {
            "crypt": XfrmAlgorithm(_CRYPT_NAMES[sa.encr_id], keys.encr_key),
            "auth": _auth(sa.integ_id, keys.integ_key),
        }
    raise XfrmMappingError(f"encr_id {sa.encr_id!r} has no kernel XFRM algorithm in kipsec")


def _auth(integ_id: IntegId | None, key: bytes) -> XfrmAlgorithm:
    if integ_id not in _AUTH_NAMES:
        raise XfrmMappingError(f"integ_id {integ_id!r} has no kernel XFRM algorithm in kipsec")
    name, trunc = _AUTH_NAMES[integ_id]
    return XfrmAlgorithm(name, key, trunc)


def _check_keys(sa: IpsecSa, algs: dict[str, XfrmAlgorithm]) -> None:
    """Catch keys that do not belong to ``sa`` before the kernel does, naming the field."""
    aead = algs.get("aead")
    if aead is not None and sa.encr_key_bits is not None:
        expected = sa.encr_key_bits + 32  # the 4-byte salt
        if aead.key_bits != expected:
            raise XfrmMappingError(
                f"encr_key is {aead.key_bits} bits but SA {sa.spi:#010x} needs {expected} "
                "(key and 32-bit salt)"
            )
    crypt = algs.get("crypt")
    if crypt is not None and sa.encr_key_bits is not None and crypt.key_bits != sa.encr_key_bits:
        raise XfrmMappingError(
            f"encr_key is {crypt.key_bits} bits but SA {sa.spi:#010x} uses {sa.encr_key_bits}"
        )
    auth = algs.get("auth")
    if auth is not None and not auth.key:
        raise XfrmMappingError(f"integ_key is empty for SA {sa.spi:#010x}")


def state_spec(
    sa: IpsecSa,
    keys: SaKeys | None = None,
    *,
    reqid: int,
    mark: XfrmMark | None,
    encap: XfrmEncap | None = None,
    selector: XfrmSelector | None = None,
    lifetime_seconds: tuple[int, int] | None = None,
) -> XfrmStateSpec:
    """The XFRM state for one direction of ``sa`` (keys: the SA's own unless given).

    ``encap`` must be given when ``sa.udp_encap`` is set (the ports are the daemon's,
    not the SA's); ``selector`` defaults to "any" of the SA's family (the policies do
    the selecting); ``lifetime_seconds`` = (soft, hard) add-expire times so the kernel
    itself sends soft and hard EXPIRE. The replay window goes in XFRMA_REPLAY_ESN_VAL,
    which the kernel takes with or without ESN and for windows above 255.
    """
    if sa.udp_encap and encap is None:
        raise XfrmMappingError(f"SA {sa.spi:#010x} is UDP-encapsulated but encap ports are unset")
    if not sa.udp_encap and encap is not None:
        raise XfrmMappingError(f"SA {sa.spi:#010x} is not UDP-encapsulated but encap was given")
    if reqid not in REQID_RANGE and reqid != 0:
        raise XfrmMappingError(f"reqid {reqid:#x} is outside kipsec's range {REQID_RANGE}")
    algs = algorithms_for(sa, keys)
    _check_keys(sa, algs)
    lt = sa.lifetime
    soft_s, hard_s = lifetime_seconds or (0, 0)
    lifetime = XfrmLifetime(
        soft_bytes=lt.soft_bytes or 0,
        hard_bytes=lt.hard_bytes or 0,
        soft_packets=lt.soft_packets or 0,
        hard_packets=lt.hard_packets or 0,
        soft_add_seconds=soft_s,
        hard_add_seconds=hard_s,
    )
    return XfrmStateSpec(
        src=sa.src,
        dst=sa.dst,
        spi=sa.spi,
        proto=XfrmProto.ESP if sa.protocol == ProtocolId.ESP else XfrmProto.AH,
        mode=XfrmMode.TUNNEL if sa.mode == Mode.TUNNEL else XfrmMode.TRANSPORT,
        reqid=reqid,
        mark=mark,
        selector=selector or XfrmSelector.any(sa.dst.version),
        aead=algs.get("aead"),
        crypt=algs.get("crypt"),
        auth=algs.get("auth"),
        encap=encap,
        replay_window=sa.replay.size,
        esn=sa.esn,
        lifetime=lifetime,
        flags=state_flags(sa),
    )


def state_flags(sa: IpsecSa) -> int:
    """``xfrm_usersa_info.flags`` for ``sa``: ESN, and ALIGN4 for AH over IPv4.

    RFC 4302 section 3.3.3.2.1 pads AH's ICV to a multiple of 32 bits over IPv4 (64 over
    IPv6). Linux's ``ah4`` pads to 64 bits unless the state carries
    ``XFRM_STATE_ALIGN4`` (``flag align4`` in ``ip xfrm state``), and checks an inbound
    AH header's length against its own padding: without the flag, an IPv4 AH state
    drops every packet of an RFC-conforming peer (strongSwan sets the flag, as does the
    userspace datapath's :mod:`~kipsec_sidecar.core.ah`) and sends packets those peers
    drop. ``ah6`` always pads to 64 bits and ignores the flag. The outer family is the
    state's (``sa.dst``), whatever the inner one in tunnel mode.
    """
    flags = XfrmStateFlag.ESN if sa.esn else 0
    if sa.protocol == ProtocolId.AH and sa.dst.version == 4:
        flags |= XfrmStateFlag.ALIGN4
    return flags


def safety_net_seconds(child_lifetime: float | None) -> int:
    """The hard add-time limit (whole seconds, 0 = none) for the kernel state of a child
    SA the IKE engine deletes after ``child_lifetime`` seconds.

    Longer than the engine's, so the engine always deletes (and tells the peer) first
    while the daemon runs; when the daemon has died, the kernel removes the SA itself a
    little later instead of keeping it until the next start.
    """
    if child_lifetime is None or child_lifetime <= 0:
        return 0
    margin = max(SAFETY_NET_MIN_SECONDS, child_lifetime * SAFETY_NET_FRACTION)
    return math.ceil(child_lifetime + margin)


def replay_bitmap_words(window: int) -> int:
    """``bmp_len`` of ``xfrm_replay_state_esn``: 32-bit words holding ``window`` bits."""
    return max(1, math.ceil(window / 32))


def ranges_to_networks(start: IPAddress, end: IPAddress) -> list[IPNetwork]:
    """The CIDR blocks covering an inclusive address range (XFRM selectors are prefixes)."""
    if isinstance(start, ipaddress.IPv4Address) and isinstance(end, ipaddress.IPv4Address):
        return list(ipaddress.summarize_address_range(start, end))
    if isinstance(start, ipaddress.IPv6Address) and isinstance(end, ipaddress.IPv6Address):
        return list(ipaddress.summarize_address_range(start, end))
    raise XfrmMappingError(f"address range {start}-{end} mixes IPv4 and IPv6")


def port_masks(start: int, end: int) -> list[tuple[int, int]]:
    """(port, mask) pairs covering an inclusive port range; (0, 0) for "any port".

    XFRM selectors match ``port & mask``; a range is split into aligned power-of-two
    blocks, the way address ranges become prefixes.
    """
    if start == 0 and end == 0xFFFF:
        return [(0, 0)]
    blocks: list[tuple[int, int]] = []
    port = start
    while port <= end:
        size = port & -port if port else 0x10000
        while size > end - port + 1:
            size //= 2
        blocks.append((port, 0xFFFF & ~(size - 1)))
        port += size
    return blocks


def selectors(src_ts: TrafficSelector, dst_ts: TrafficSelector) -> Iterator[XfrmSelector]:
    """The XFRM selectors covering traffic from ``src_ts`` to ``dst_ts``.

    Both selectors' protocols must agree (or one be "any"); a protocol-specific port
    range on either side is expressed as port/mask blocks.
    """
    if src_ts.version != dst_ts.version:
        raise XfrmMappingError(f"traffic selectors {src_ts} and {dst_ts} mix IPv4 and IPv6")
    if src_ts.protocol and dst_ts.protocol and src_ts.protocol != dst_ts.protocol:
        raise XfrmMappingError(
            f"traffic selector protocols differ: {src_ts.protocol} and {dst_ts.protocol}"
        )
    proto = src_ts.protocol or dst_ts.protocol
    sports = port_masks(src_ts.start_port, src_ts.end_port)
    dports = port_masks(dst_ts.start_port, dst_ts.end_port)
    for src in ranges_to_networks(src_ts.start_addr, src_ts.end_addr):
        for dst in ranges_to_networks(dst_ts.start_addr, dst_ts.end_addr):
            for sport, smask in sports:
                for dport, dmask in dports:
                    yield XfrmSelector(src, dst, proto, sport, smask, dport, dmask)


def state_selector(sa: IpsecSa, policy: PeerPolicy, *, inbound: bool) -> XfrmSelector | None:
    """The selector of ``sa``'s state: the traffic the SA was negotiated for.

    The kernel checks a decrypted packet against its state's selector (a mismatch is
    dropped and counted as XfrmInStateMismatch) and sends through a state only what its
    selector matches, so a state carrying the negotiated traffic selectors enforces
    them when the peer narrowed what the policies (the configured selectors) cover
    (RFC 4301 section 5.2). When the negotiated selectors take more than one XFRM
    selector (several ranges, a port range split into blocks) the state gets "any" of
    the inner family and the policies do the selecting; None when the family is mixed.
    """
    local, remote = sa.local_ts, sa.remote_ts
    if len(local) == 1 and len(remote) == 1:
        src, dst = (remote[0], local[0]) if inbound else (local[0], remote[0])
        try:
            found = list(selectors(src, dst))
        except XfrmMappingError:
            found = []
        if len(found) == 1:
            return found[0]
    # The state's selector family is its inner family: 4-in-6 needs an IPv4 one.
    inner = {ts.version for ts in (remote or policy.remote_ts)}
    return XfrmSelector.any(inner.pop()) if len(inner) == 1 else None


def peer_policies(
    policy: PeerPolicy,
    *,
    local_addr: IPAddress | None,
    reqid: int,
    mark: XfrmMark | None,
    forward: bool = False,
) -> list[XfrmPolicySpec]:
    """The XFRM policies that protect one peer's traffic, fail-closed.

    For every pair of local and remote traffic selectors: an ``out`` policy requiring an
    SA to ``policy.remote_addr``, an ``in`` policy requiring one from it, and (with
    ``forward``, for a gateway whose protected hosts sit behind it) a ``fwd`` policy.
    The policies fail closed by themselves: without an SA matching the template the
    kernel drops the packet and sends an ACQUIRE; it never sends it unprotected. (A
    second BLOCK policy with the same selector is impossible: the kernel keys policies
    by selector, direction and mark, not priority.)

    ``local_addr`` is the template's source (None lets the kernel pick by route, which
    only tunnel mode allows).
    """
    remote = policy.remote_addr
    local: IPAddress = local_addr if local_addr is not None else _unspecified(remote.version)
    proto = XfrmProto.ESP if policy.protocol == ProtocolId.ESP else XfrmProto.AH
    mode = XfrmMode.TUNNEL if policy.mode == "tunnel" else XfrmMode.TRANSPORT
    if mode == XfrmMode.TRANSPORT and local_addr is None:
        raise XfrmMappingError(f"peer {policy.peer!r}: transport mode needs local_addr")
    if proto == XfrmProto.AH and policy.encapsulation == "udp":
        raise XfrmMappingError(
            f"peer {policy.peer!r}: AH cannot be UDP-encapsulated; use encapsulation raw"
        )
    out_tmpl = XfrmTemplate(local, remote, proto, mode, reqid)
    in_tmpl = XfrmTemplate(remote, local, proto, mode, reqid)
    specs: list[XfrmPolicySpec] = []
    for lts in policy.local_ts:
        for rts in policy.remote_ts:
            for sel in selectors(lts, rts):
                specs.append(
                    XfrmPolicySpec(
                        sel, XfrmDir.OUT, XfrmAction.ALLOW, PROTECT_PRIORITY, mark, (out_tmpl,)
                    )
                )
            for sel in selectors(rts, lts):
                specs.append(
                    XfrmPolicySpec(
                        sel, XfrmDir.IN, XfrmAction.ALLOW, PROTECT_PRIORITY, mark, (in_tmpl,)
                    )
                )
                if forward:
                    specs.append(
                        XfrmPolicySpec(
                            sel, XfrmDir.FWD, XfrmAction.ALLOW, PROTECT_PRIORITY, mark, (in_tmpl,)
                        )
                    )
    return specs


def _unspecified(version: int) -> IPAddress:
    return ipaddress.IPv4Address(0) if version == 4 else ipaddress.IPv6Address(0)
