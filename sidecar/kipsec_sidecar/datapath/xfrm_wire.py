"""XFRM state messages packed with ``struct``: what the capability probe sends.

The probe (:mod:`.probe`) runs at every ``datapath: auto`` start, and on a node whose
kernel lacks ESP — where the userspace datapath runs — it is the only XFRM request the
sidecar ever makes. Speaking it through :mod:`.xfrm` would import pyroute2 (~226
modules, ~13 MiB held for the sidecar's whole life, ~0.2 s of CPU) for two states.
So this module packs XFRM_MSG_NEWSA (``struct xfrm_usersa_info`` + attributes) and
XFRM_MSG_DELSA (``struct xfrm_usersa_id`` + mark) itself and sends them with
:mod:`.netlink`. The kernel datapath keeps :mod:`.xfrm` (dumps, policies, ACQUIRE/EXPIRE
decoding); a differential test (``tests/unit/test_xfrm_wire.py``) checks that these bytes
equal pyroute2's encoding of :func:`.xfrm.state_message` / :func:`.xfrm.sa_id_message`.

Layouts from linux/xfrm.h (x86-64; no implicit padding: ``=`` and explicit pad bytes).
Ports and SPIs are in network byte order, everything else in host order. Keys are
packed into the message and never logged.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from enum import IntEnum
from typing import Any

from .base import IPAddress
from .netlink import NETLINK_XFRM, NLM_F_CREATE, NLM_F_EXCL, NetlinkSocket, Request, attr
from .xfrm_sa import XfrmAlgorithm, XfrmMark, XfrmProto, XfrmStateSpec, replay_bitmap_words


class XfrmMsg(IntEnum):
    """``XFRM_MSG_*`` message types."""

    NEWSA = 0x10
    DELSA = 0x11
    GETSA = 0x12
    NEWPOLICY = 0x13
    DELPOLICY = 0x14
    GETPOLICY = 0x15
    ALLOCSPI = 0x16
    ACQUIRE = 0x17
    EXPIRE = 0x18
    UPDPOLICY = 0x19
    UPDSA = 0x1A
    POLEXPIRE = 0x1B
    FLUSHSA = 0x1C
    FLUSHPOLICY = 0x1D


# XFRMA_* attribute types
XFRMA_ALG_CRYPT = 2
XFRMA_ENCAP = 4
XFRMA_ALG_AEAD = 18
XFRMA_ALG_AUTH_TRUNC = 20
XFRMA_MARK = 21
XFRMA_REPLAY_ESN_VAL = 23

#: Seconds a request may take. XFRM calls are normally sub-millisecond, but the first
#: state using an algorithm makes the kernel load and self-test its crypto modules,
#: which takes seconds (5-6 s under software emulation).
DEFAULT_TIMEOUT = 15.0
#: XFRM_INF: "no limit" in ``xfrm_lifetime_cfg``.
INFINITY = 0xFFFFFFFFFFFFFFFF

# struct xfrm_selector (56): daddr, saddr, 8 bytes of ports (network order), family,
# prefixlen_d, prefixlen_s, proto, 3 pad, ifindex, user.
_SELECTOR = struct.Struct("=16s16s8sHBBB3xiI")
_PORTS = struct.Struct(">HHHH")  # dport, dport_mask, sport, sport_mask
_SPI = struct.Struct(">I")
# struct xfrm_usersa_info (224): selector, xfrm_id (daddr, spi, proto, 3 pad), saddr,
# xfrm_lifetime_cfg (8 u64), xfrm_lifetime_cur (4 u64), xfrm_stats (3 u32), seq, reqid,
# family, mode, replay_window, flags, 7 pad.
_USERSA_INFO = struct.Struct("=56s16s4sB3x16s8Q4Q3III HBBB7x".replace(" ", ""))
# struct xfrm_usersa_id (24): daddr, spi, family, proto, 1 pad.
_USERSA_ID = struct.Struct("=16s4sHBx")
_ALGO = struct.Struct("=64sI")  # xfrm_algo: name, key bits (key follows)
_ALGO_EXTRA = struct.Struct("=64sII")  # xfrm_algo_auth/_aead: + trunc/ICV bits
_ENCAP = struct.Struct("=H4s2x16s")  # xfrm_encap_tmpl: type, ports (network order), oa
_REPLAY_ESN = struct.Struct("=6I")  # bmp_len, oseq, seq, oseq_hi, seq_hi, window (bmp follows)
_MARK = struct.Struct("=II")


def pack_address(value: Any) -> bytes:
    """16 bytes of ``xfrm_address_t`` for an address (IPv4 in the first 4 bytes)."""
    if value is None or value == 0 or value == "":
        return b"\0" * 16
    if isinstance(value, bytes | bytearray):
        return bytes(value).ljust(16, b"\0")[:16]
    return ipaddress.ip_address(value).packed.ljust(16, b"\0")


def _limit(value: int) -> int:
    return value if value else INFINITY


def _algorithm(kind: int, alg: XfrmAlgorithm, *, extra: bool) -> bytes:
    name = alg.name.encode()
    if extra:
        return attr(kind, _ALGO_EXTRA.pack(name, alg.key_bits, alg.icv_bits) + alg.key)
    return attr(kind, _ALGO.pack(name, alg.key_bits) + alg.key)


def mark_attr(mark: XfrmMark | None) -> bytes:
    """XFRMA_MARK (nothing without a mark)."""
    return b"" if mark is None else attr(XFRMA_MARK, _MARK.pack(mark.value, mark.mask))


def newsa_payload(spec: XfrmStateSpec) -> bytes:
    """The body of an XFRM_MSG_NEWSA/UPDSA for ``spec``: ``xfrm_usersa_info`` and the
    algorithm, encapsulation, replay and mark attributes (the order and values of
    :func:`.xfrm.state_message`)."""
    sel = spec.selector
    selector = _SELECTOR.pack(
        pack_address(sel.dst.network_address),
        pack_address(sel.src.network_address),
        _PORTS.pack(sel.dport, sel.dport_mask, sel.sport, sel.sport_mask),
        sel.family,
        sel.dst.prefixlen,
        sel.src.prefixlen,
        sel.proto,
        0,
        0,
    )
    lt = spec.lifetime
    body = _USERSA_INFO.pack(
        selector,
        pack_address(spec.dst),
        _SPI.pack(spec.spi),
        int(spec.proto),
        pack_address(spec.src),
        _limit(lt.soft_bytes),
        _limit(lt.hard_bytes),
        _limit(lt.soft_packets),
        _limit(lt.hard_packets),
        lt.soft_add_seconds,
        lt.hard_add_seconds,
        0,
        0,
        *(0,) * 4,  # xfrm_lifetime_cur
        *(0,) * 3,  # xfrm_stats
        0,  # seq
        spec.reqid,
        spec.family,
        int(spec.mode),
        0,  # replay_window: XFRMA_REPLAY_ESN_VAL carries it
        spec.flags,
    )
    if spec.aead is not None:
        body += _algorithm(XFRMA_ALG_AEAD, spec.aead, extra=True)
    if spec.crypt is not None:
        body += _algorithm(XFRMA_ALG_CRYPT, spec.crypt, extra=False)
    if spec.auth is not None:
        body += _algorithm(XFRMA_ALG_AUTH_TRUNC, spec.auth, extra=True)
    if spec.encap is not None:
        encap = spec.encap
        ports = struct.pack(">HH", encap.sport, encap.dport)
        body += attr(XFRMA_ENCAP, _ENCAP.pack(encap.type, ports, bytes(16)))
    if spec.replay_window or spec.esn:
        words = replay_bitmap_words(spec.replay_window)
        esn = _REPLAY_ESN.pack(words, 0, 0, 0, 0, spec.replay_window) + bytes(4 * words)
        body += attr(XFRMA_REPLAY_ESN_VAL, esn)
    return body + mark_attr(spec.mark)


def delsa_payload(dst: IPAddress | str, spi: int, proto: XfrmProto, mark: XfrmMark | None) -> bytes:
    """The body of an XFRM_MSG_DELSA/GETSA: ``xfrm_usersa_id`` (destination, SPI,
    protocol) and the state's mark (the kernel matches it exactly)."""
    address = ipaddress.ip_address(dst)
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    return _USERSA_ID.pack(pack_address(address), _SPI.pack(spi), family, int(proto)) + (
        mark_attr(mark)
    )


class XfrmNetlink(NetlinkSocket):
    """A ``NETLINK_XFRM`` socket for adding and deleting states, without pyroute2.

    A refusal is a :class:`~.netlink.NetlinkError` carrying the errno and the kernel's
    extended-ack text (``kernel_message``); no answer within ``timeout`` is a
    :class:`~.netlink.NetlinkTimeout` (a TimeoutError).
    """

    def __init__(self, *, netns: str | None = None, timeout: float) -> None:
        super().__init__(NETLINK_XFRM, netns=netns, timeout=timeout)

    def new_sa(self, spec: XfrmStateSpec) -> None:
        """Add a state; EEXIST if (SPI, destination, protocol) is taken."""
        self.call(Request(XfrmMsg.NEWSA, NLM_F_CREATE | NLM_F_EXCL, newsa_payload(spec)))

    def delete_sa(
        self, dst: IPAddress | str, spi: int, proto: XfrmProto, mark: XfrmMark | None = None
    ) -> None:
        self.call(Request(XfrmMsg.DELSA, 0, delsa_payload(dst, spi, proto, mark)))


__all__ = [
    "DEFAULT_TIMEOUT",
    "INFINITY",
    "XfrmMsg",
    "XfrmNetlink",
    "delsa_payload",
    "mark_attr",
    "newsa_payload",
    "pack_address",
]
