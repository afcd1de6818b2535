"""XFRM over netlink: the kernel's SA and policy database, on pyroute2's message framework.

pyroute2 has the ``NETLINK_XFRM`` family and the ``nlmsg``/``nla`` machinery but no XFRM
SA or policy classes; they are declared here field by field after linux/xfrm.h (x86-64
layout, explicit padding, sizes checked by the unit tests against the kernel's replies).

:class:`XfrmSocket` is a small blocking netlink socket that speaks these messages. It
is deliberately not pyroute2's ``NetlinkSocket``: in pyroute2 0.9 the synchronous
socket drives a private event loop and raises "This event loop is already running"
when called from the daemon's asyncio loop, while XFRM requests are microsecond-long
kernel calls that are fine to make synchronously from the loop. Every wait is bounded
by the socket timeout. For the multicast notifications (ACQUIRE, EXPIRE), open a
second socket with ``groups=`` and read it when its ``fileno()`` is readable
(``loop.add_reader``) with :meth:`XfrmSocket.read_events`.

Nothing here logs or reprs key material: decoded states expose algorithm names only.
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    nla,
    nlmsg,
)

from .base import IPAddress
from .netlink import (
    NETLINK_EXT_ACK,
    NETLINK_XFRM,
    SOL_NETLINK,
    NetlinkParseError,
    ack_message,
    netns_socket,
)
from .xfrm_sa import (
    XfrmAction,
    XfrmDir,
    XfrmMark,
    XfrmMode,
    XfrmPolicySpec,
    XfrmProto,
    XfrmSelector,
    XfrmStateSpec,
    XfrmTemplate,
    replay_bitmap_words,
)
from .xfrm_wire import DEFAULT_TIMEOUT, INFINITY, XfrmMsg, pack_address

RECV_SIZE = 1 << 16


class XfrmGroup(IntEnum):
    """Bits of the legacy ``bind()`` group mask (``XFRMGRP_*``)."""

    ACQUIRE = 1
    EXPIRE = 2
    SA = 4
    POLICY = 8


class XfrmError(OSError):
    """The kernel refused an XFRM request; ``errno`` is set, the message names the request
    and carries the kernel's extended-ack text when it gave one."""

    def __init__(self, code: int, operation: str, kernel_message: str | None) -> None:
        self.operation = operation
        self.kernel_message = kernel_message
        name = errno.errorcode.get(code, str(code))
        detail = kernel_message or _strerror(code)
        super().__init__(code, f"{operation}: {name} ({detail})")


def _strerror(code: int) -> str:
    import os

    return os.strerror(code)


# ---------------------------------------------------------------- field codecs


class Address:
    """``xfrm_address_t`` (16 bytes). Encodes an address given as str, ipaddress or bytes;
    decodes to the raw 16 bytes (the message's family field turns them into text)."""

    @staticmethod
    def decode_from(data: bytes, offset: int = 0) -> tuple[bytes, int]:
        return bytes(data[offset : offset + 16]), offset + 16

    @staticmethod
    def encode_into(data: bytearray, offset: int, value: Any) -> int:
        raw = pack_address(value)
        data.extend(b"\0" * 16)
        data[offset : offset + 16] = raw
        return offset + 16


def unpack_address(raw: bytes, family: int) -> str:
    """The text form of an ``xfrm_address_t`` of ``family`` ("" when the family is unset)."""
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return ""


def _selector(p: str) -> tuple[tuple[str, Any], ...]:
    return (
        (f"{p}daddr", Address),
        (f"{p}saddr", Address),
        (f"{p}dport", ">H"),
        (f"{p}dport_mask", ">H"),
        (f"{p}sport", ">H"),
        (f"{p}sport_mask", ">H"),
        (f"{p}family", "H"),
        (f"{p}prefixlen_d", "B"),
        (f"{p}prefixlen_s", "B"),
        (f"{p}proto", "B"),
        (f"__{p}pad", "3x"),
        (f"{p}ifindex", "i"),
        (f"{p}user", "I"),
    )  # struct xfrm_selector: 56 bytes


def _lifetime_cfg(p: str) -> tuple[tuple[str, str], ...]:
    names = (
        "soft_byte_limit",
        "hard_byte_limit",
        "soft_packet_limit",
        "hard_packet_limit",
        "soft_add_expires_seconds",
        "hard_add_expires_seconds",
        "soft_use_expires_seconds",
        "hard_use_expires_seconds",
    )
    return tuple((f"{p}{n}", "Q") for n in names)  # struct xfrm_lifetime_cfg: 64 bytes


def _lifetime_cur(p: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{p}{n}", "Q") for n in ("bytes", "packets", "add_time", "use_time"))


_XFRM_ID = (
    ("id_daddr", Address),
    ("id_spi", ">I"),
    ("id_proto", "B"),
    ("__id_pad", "3x"),
)  # struct xfrm_id: 24 bytes

_USERSA_INFO: tuple[tuple[str, Any], ...] = (
    *_selector("sel_"),
    *_XFRM_ID,
    ("saddr", Address),
    *_lifetime_cfg("lft_"),
    *_lifetime_cur("curlft_"),
    ("stats_replay_window", "I"),
    ("stats_replay", "I"),
    ("stats_integrity_failed", "I"),
    ("seq", "I"),
    ("reqid", "I"),
    ("family", "H"),
    ("mode", "B"),
    ("replay_window", "B"),
    ("flags", "B"),
    ("__sa_pad", "7x"),
)  # struct xfrm_usersa_info: 224 bytes

_USERPOLICY_INFO: tuple[tuple[str, Any], ...] = (
    *_selector("sel_"),
    *_lifetime_cfg("lft_"),
    *_lifetime_cur("curlft_"),
    ("priority", "I"),
    ("index", "I"),
    ("dir", "B"),
    ("action", "B"),
    ("flags", "B"),
    ("share", "B"),
    ("__pol_pad", "4x"),
)  # struct xfrm_userpolicy_info: 168 bytes


def _prefixed(p: str, fields: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    return tuple((f"__{p}{n[2:]}" if n.startswith("__") else f"{p}{n}", f) for n, f in fields)


# ---------------------------------------------------------------- attributes


class _variable_tail_nla(nla):  # type: ignore[misc]  # pyroute2 is untyped
    """An NLA whose struct ends in a variable byte array (``alg_key[]``, ``bmp[]``).

    ``fields`` hold the fixed part; the tail is the ``tail_name`` key, bytes.
    """

    tail_name: ClassVar[str] = "tail"

    def ft_encode(self, offset: int) -> tuple[int, int]:
        offset, _ = super().ft_encode(offset)
        tail = bytes(self.get(self.tail_name) or b"")
        self.data.extend(tail)
        offset += len(tail)
        pad = -len(tail) % 4
        self.data.extend(b"\0" * pad)
        return offset + pad, pad

    def ft_decode(self, offset: int) -> None:
        super().ft_decode(offset)
        fixed = struct.calcsize("=" + "".join(f for _, f in self.fields))
        self[self.tail_name] = bytes(self.data[offset + fixed : self.offset + self.length])


class _xfrm_attrs(nlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """The XFRMA_* attribute table shared by every XFRM message."""

    nla_map = (
        (0, "XFRMA_UNSPEC", "none"),
        (1, "XFRMA_ALG_AUTH", "xfrm_algo"),
        (2, "XFRMA_ALG_CRYPT", "xfrm_algo"),
        (3, "XFRMA_ALG_COMP", "xfrm_algo"),
        (4, "XFRMA_ENCAP", "xfrm_encap_tmpl"),
        (5, "XFRMA_TMPL", "xfrm_user_tmpl"),
        (6, "XFRMA_SA", "hex"),
        (7, "XFRMA_POLICY", "hex"),
        (8, "XFRMA_SEC_CTX", "hex"),
        (9, "XFRMA_LTIME_VAL", "xfrm_lifetime_cur"),
        (10, "XFRMA_REPLAY_VAL", "xfrm_replay_state"),
        (11, "XFRMA_REPLAY_THRESH", "uint32"),
        (12, "XFRMA_ETIMER_THRESH", "uint32"),
        (13, "XFRMA_SRCADDR", "xfrm_address"),
        (14, "XFRMA_COADDR", "xfrm_address"),
        (15, "XFRMA_LASTUSED", "uint64"),
        (16, "XFRMA_POLICY_TYPE", "hex"),
        (17, "XFRMA_MIGRATE", "hex"),
        (18, "XFRMA_ALG_AEAD", "xfrm_algo_aead"),
        (19, "XFRMA_KMADDRESS", "hex"),
        (20, "XFRMA_ALG_AUTH_TRUNC", "xfrm_algo_auth"),
        (21, "XFRMA_MARK", "xfrm_mark"),
        (22, "XFRMA_TFCPAD", "uint32"),
        (23, "XFRMA_REPLAY_ESN_VAL", "xfrm_replay_state_esn"),
        (24, "XFRMA_SA_EXTRA_FLAGS", "uint32"),
        (25, "XFRMA_PROTO", "uint8"),
        (26, "XFRMA_ADDRESS_FILTER", "hex"),
        (27, "XFRMA_PAD", "hex"),
        (28, "XFRMA_OFFLOAD_DEV", "hex"),
        (29, "XFRMA_SET_MARK", "uint32"),
        (30, "XFRMA_SET_MARK_MASK", "uint32"),
        (31, "XFRMA_IF_ID", "uint32"),
        (32, "XFRMA_MTIMER_THRESH", "uint32"),
        (33, "XFRMA_SA_DIR", "uint8"),
    )

    class xfrm_algo(_variable_tail_nla):
        tail_name = "alg_key"
        fields = (("alg_name", "64s"), ("alg_key_len", "I"))

    class xfrm_algo_auth(_variable_tail_nla):
        tail_name = "alg_key"
        fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_trunc_len", "I"))

    class xfrm_algo_aead(_variable_tail_nla):
        tail_name = "alg_key"
        fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_icv_len", "I"))

    class xfrm_replay_state_esn(_variable_tail_nla):
        tail_name = "bmp"
        fields = (
            ("bmp_len", "I"),
            ("oseq", "I"),
            ("seq", "I"),
            ("oseq_hi", "I"),
            ("seq_hi", "I"),
            ("replay_window", "I"),
        )

    class xfrm_encap_tmpl(nla):  # type: ignore[misc]  # pyroute2 is untyped
        fields = (
            ("encap_type", "H"),
            ("encap_sport", ">H"),
            ("encap_dport", ">H"),
            ("__pad", "2x"),
            ("encap_oa", Address),
        )

    class xfrm_user_tmpl(nla):  # type: ignore[misc]  # pyroute2 is untyped
        # One template per attribute; the kernel accepts an array, kipsec sends one.
        fields = (
            *_XFRM_ID,
            ("family", "H"),
            ("__pad1", "2x"),
            ("saddr", Address),
            ("reqid", "I"),
            ("mode", "B"),
            ("share", "B"),
            ("optional", "B"),
            ("__pad2", "x"),
            ("aalgos", "I"),
            ("ealgos", "I"),
            ("calgos", "I"),
        )

    class xfrm_lifetime_cur(nla):  # type: ignore[misc]  # pyroute2 is untyped
        fields = _lifetime_cur("")

    class xfrm_replay_state(nla):  # type: ignore[misc]  # pyroute2 is untyped
        fields = (("oseq", "I"), ("seq", "I"), ("bitmap", "I"))

    class xfrm_address(nla):  # type: ignore[misc]  # pyroute2 is untyped
        fields = (("addr", "16s"),)

    class xfrm_mark(nla):  # type: ignore[misc]  # pyroute2 is untyped
        fields = (("v", "I"), ("m", "I"))


class _xfrm_msg(_xfrm_attrs):
    """An XFRM message: turns raw addresses into text after decoding, by family."""

    address_fields: ClassVar[tuple[tuple[str, str], ...]] = ()

    def decode(self) -> None:
        super().decode()
        for name, family_field in self.address_fields:
            raw = self.get(name)
            if isinstance(raw, bytes):
                self[name] = unpack_address(raw, self.get(family_field) or 0)


_SA_ADDRESSES = (
    ("sel_daddr", "sel_family"),
    ("sel_saddr", "sel_family"),
    ("id_daddr", "family"),
    ("saddr", "family"),
)
_POLICY_ADDRESSES = (("sel_daddr", "sel_family"), ("sel_saddr", "sel_family"))


class xfrm_usersa_info(_xfrm_msg):
    """NEWSA / UPDSA requests and the kernel's state replies and notifications."""

    fields = _USERSA_INFO
    address_fields = _SA_ADDRESSES


class xfrm_usersa_id(_xfrm_msg):
    """DELSA / GETSA: a state's key (destination, SPI, family, protocol)."""

    fields = (
        ("daddr", Address),
        ("spi", ">I"),
        ("family", "H"),
        ("proto", "B"),
        ("__pad", "x"),
    )  # 24 bytes
    address_fields = (("daddr", "family"),)


class xfrm_userspi_info(_xfrm_msg):
    """ALLOCSPI: a larval state's parameters and the SPI range to pick from."""

    fields = (*_USERSA_INFO, ("min", "I"), ("max", "I"))  # 232 bytes
    address_fields = _SA_ADDRESSES


class xfrm_userpolicy_info(_xfrm_msg):
    """NEWPOLICY / UPDPOLICY requests and the kernel's policy replies."""

    fields = _USERPOLICY_INFO
    address_fields = _POLICY_ADDRESSES


class xfrm_userpolicy_id(_xfrm_msg):
    """DELPOLICY / GETPOLICY: a policy's key (selector and direction, or index)."""

    fields = (*_selector("sel_"), ("index", "I"), ("dir", "B"), ("__pad", "3x"))  # 64
    address_fields = _POLICY_ADDRESSES


class xfrm_user_acquire(_xfrm_msg):
    """ACQUIRE: traffic hit a policy whose template has no state (start IKE)."""

    fields = (
        *_XFRM_ID,
        ("saddr", Address),
        *_selector("sel_"),
        *_prefixed("pol_", _USERPOLICY_INFO),
        ("aalgos", "I"),
        ("ealgos", "I"),
        ("calgos", "I"),
        ("seq", "I"),
    )  # 280 bytes
    address_fields = (
        ("id_daddr", "sel_family"),
        ("saddr", "sel_family"),
        ("sel_daddr", "sel_family"),
        ("sel_saddr", "sel_family"),
        ("pol_sel_daddr", "pol_sel_family"),
        ("pol_sel_saddr", "pol_sel_family"),
    )


class xfrm_user_expire(_xfrm_msg):
    """EXPIRE: a state reached its soft (rekey) or hard (deleted) lifetime."""

    fields = (*_USERSA_INFO, ("hard", "B"), ("__exp_pad", "7x"))  # 232 bytes
    address_fields = _SA_ADDRESSES


class xfrm_user_polexpire(_xfrm_msg):
    """POLEXPIRE: a policy reached its lifetime (kipsec sets none, but decodes it)."""

    fields = (*_USERPOLICY_INFO, ("hard", "B"), ("__exp_pad", "7x"))  # 176 bytes
    address_fields = _POLICY_ADDRESSES


class xfrm_dump(_xfrm_msg):
    """GETSA / GETPOLICY with NLM_F_DUMP: no body, optional filter attributes."""

    fields = ()


#: How each message type the kernel sends is decoded.
MESSAGE_CLASSES: dict[int, type[_xfrm_msg]] = {
    XfrmMsg.NEWSA: xfrm_usersa_info,
    XfrmMsg.UPDSA: xfrm_usersa_info,
    XfrmMsg.DELSA: xfrm_usersa_id,
    XfrmMsg.NEWPOLICY: xfrm_userpolicy_info,
    XfrmMsg.UPDPOLICY: xfrm_userpolicy_info,
    XfrmMsg.DELPOLICY: xfrm_userpolicy_id,
    XfrmMsg.ACQUIRE: xfrm_user_acquire,
    XfrmMsg.EXPIRE: xfrm_user_expire,
    XfrmMsg.POLEXPIRE: xfrm_user_polexpire,
}


# ---------------------------------------------------------------- spec -> message


def _selector_values(sel: XfrmSelector, prefix: str = "sel_") -> dict[str, Any]:
    return {
        f"{prefix}daddr": sel.dst.network_address,
        f"{prefix}saddr": sel.src.network_address,
        f"{prefix}dport": sel.dport,
        f"{prefix}dport_mask": sel.dport_mask,
        f"{prefix}sport": sel.sport,
        f"{prefix}sport_mask": sel.sport_mask,
        f"{prefix}family": sel.family,
        f"{prefix}prefixlen_d": sel.dst.prefixlen,
        f"{prefix}prefixlen_s": sel.src.prefixlen,
        f"{prefix}proto": sel.proto,
    }


def _limit(value: int) -> int:
    return value if value else INFINITY


def _mark_attr(mark: XfrmMark | None) -> list[list[Any]]:
    return [] if mark is None else [["XFRMA_MARK", {"v": mark.value, "m": mark.mask}]]


def state_message(spec: XfrmStateSpec, cls: type[_xfrm_msg] = xfrm_usersa_info) -> _xfrm_msg:
    """A NEWSA/UPDSA body (or the start of ALLOCSPI's) for ``spec``, not yet encoded."""
    msg = cls()
    msg.update(_selector_values(spec.selector))
    lt = spec.lifetime
    msg.update(
        {
            "id_daddr": spec.dst,
            "id_spi": spec.spi,
            "id_proto": int(spec.proto),
            "saddr": spec.src,
            "lft_soft_byte_limit": _limit(lt.soft_bytes),
            "lft_hard_byte_limit": _limit(lt.hard_bytes),
            "lft_soft_packet_limit": _limit(lt.soft_packets),
            "lft_hard_packet_limit": _limit(lt.hard_packets),
            "lft_soft_add_expires_seconds": lt.soft_add_seconds,
            "lft_hard_add_expires_seconds": lt.hard_add_seconds,
            "reqid": spec.reqid,
            "family": spec.family,
            "mode": int(spec.mode),
            "replay_window": 0,
            "flags": spec.flags,
        }
    )
    attrs: list[list[Any]] = []
    if spec.aead is not None:
        attrs.append(
            [
                "XFRMA_ALG_AEAD",
                _alg(spec.aead.name, spec.aead.key, "alg_icv_len", spec.aead.icv_bits),
            ]
        )
    if spec.crypt is not None:
        attrs.append(["XFRMA_ALG_CRYPT", _alg(spec.crypt.name, spec.crypt.key)])
    if spec.auth is not None:
        attrs.append(
            [
                "XFRMA_ALG_AUTH_TRUNC",
                _alg(spec.auth.name, spec.auth.key, "alg_trunc_len", spec.auth.icv_bits),
            ]
        )
    if spec.encap is not None:
        attrs.append(
            [
                "XFRMA_ENCAP",
                {
                    "encap_type": spec.encap.type,
                    "encap_sport": spec.encap.sport,
                    "encap_dport": spec.encap.dport,
                    "encap_oa": None,
                },
            ]
        )
    if spec.replay_window or spec.esn:
        words = replay_bitmap_words(spec.replay_window)
        attrs.append(
            [
                "XFRMA_REPLAY_ESN_VAL",
                {
                    "bmp_len": words,
                    "oseq": 0,
                    "seq": 0,
                    "oseq_hi": 0,
                    "seq_hi": 0,
                    "replay_window": spec.replay_window,
                    "bmp": b"\0" * (4 * words),
                },
            ]
        )
    attrs.extend(_mark_attr(spec.mark))
    msg["attrs"] = attrs
    return msg


def _alg(name: str, key: bytes, extra: str | None = None, extra_value: int = 0) -> dict[str, Any]:
    value: dict[str, Any] = {"alg_name": name.encode(), "alg_key_len": len(key) * 8, "alg_key": key}
    if extra is not None:
        value[extra] = extra_value
    return value


def _template_value(t: XfrmTemplate) -> dict[str, Any]:
    return {
        "id_daddr": t.dst,
        "id_spi": t.spi,
        "id_proto": int(t.proto),
        "family": t.family,
        "saddr": t.src,
        "reqid": t.reqid,
        "mode": int(t.mode),
        "share": 0,
        "optional": 0,
        "aalgos": 0xFFFFFFFF,
        "ealgos": 0xFFFFFFFF,
        "calgos": 0xFFFFFFFF,
    }


def policy_message(spec: XfrmPolicySpec) -> xfrm_userpolicy_info:
    """A NEWPOLICY/UPDPOLICY body for ``spec``, not yet encoded."""
    msg = xfrm_userpolicy_info()
    msg.update(_selector_values(spec.selector))
    msg.update(
        {
            f"lft_{n}": INFINITY
            for n in (
                "soft_byte_limit",
                "hard_byte_limit",
                "soft_packet_limit",
                "hard_packet_limit",
            )
        }
    )
    msg.update(
        {
            "priority": spec.priority,
            "index": 0,
            "dir": int(spec.direction),
            "action": int(spec.action),
            "flags": 0,
            "share": 0,
        }
    )
    attrs: list[list[Any]] = [["XFRMA_TMPL", _template_value(t)] for t in spec.templates]
    attrs.extend(_mark_attr(spec.mark))
    msg["attrs"] = attrs
    return msg


def policy_id_message(
    selector: XfrmSelector, direction: XfrmDir, mark: XfrmMark | None
) -> xfrm_userpolicy_id:
    """A DELPOLICY/GETPOLICY body: the kernel matches selector, direction and exact mark."""
    msg = xfrm_userpolicy_id()
    msg.update(_selector_values(selector))
    msg.update({"index": 0, "dir": int(direction)})
    msg["attrs"] = _mark_attr(mark)
    return msg


def sa_id_message(
    dst: IPAddress | str, spi: int, proto: XfrmProto, mark: XfrmMark | None
) -> xfrm_usersa_id:
    """A DELSA/GETSA body: the state's (destination, SPI, protocol) and its mark."""
    address = ipaddress.ip_address(dst)
    msg = xfrm_usersa_id()
    msg.update(
        {
            "daddr": address,
            "spi": spi,
            "family": socket.AF_INET if address.version == 4 else socket.AF_INET6,
            "proto": int(proto),
        }
    )
    msg["attrs"] = _mark_attr(mark)
    return msg


def encode(msg: nlmsg, msg_type: int, flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    """The wire bytes of ``msg`` with a netlink header (port id 0 = "fill in for me")."""
    msg["header"] = {"type": msg_type, "flags": flags, "sequence_number": seq, "pid": 0}
    msg.encode()
    return bytes(msg.data)


def decode(data: bytes) -> list[_xfrm_msg]:
    """Every XFRM message in a netlink datagram, by type (errors and DONE are skipped)."""
    out: list[_xfrm_msg] = []
    for msg_type, offset, _ in _walk(data):
        cls = MESSAGE_CLASSES.get(msg_type)
        if cls is not None:
            msg = cls(data, offset=offset)
            msg.decode()
            out.append(msg)
    return out


def decode_error(data: bytes, operation: str) -> XfrmError | None:
    """The first refusal (NLMSG_ERROR with a non-zero code) in a datagram, or None.

    ACKs (code 0) are not errors. The kernel's extended-ack text, when it sent one, is
    the error's ``kernel_message``.
    """
    for msg_type, offset, length in _walk(data):
        if msg_type in (NLMSG_ERROR, NLMSG_DONE):
            code = _error_code(data, offset, length, msg_type)
            if code:
                return XfrmError(code, operation, _ext_ack_message(data, offset, length))
    return None


def _walk(data: bytes) -> Iterable[tuple[int, int, int]]:
    """(type, offset, length) of each netlink message in a datagram."""
    offset = 0
    while offset + 16 <= len(data):
        length, msg_type = struct.unpack_from("=IH", data, offset)
        if length < 16 or offset + length > len(data):
            break
        yield msg_type, offset, length
        offset += (length + 3) & ~3


# ---------------------------------------------------------------- decoded views


@dataclass(frozen=True, slots=True)
class XfrmState:
    """A state as the kernel reports it (no keys: algorithm names only)."""

    src: str
    dst: str
    spi: int
    proto: int
    mode: int
    reqid: int
    family: int
    mark: XfrmMark | None
    algorithms: tuple[str, ...]
    encap: tuple[int, int, int] | None  #: (type, sport, dport)
    replay_window: int
    esn: bool
    bytes: int
    packets: int
    replay_errors: int
    integrity_errors: int
    replay_window_errors: int  #: packets outside the window


@dataclass(frozen=True, slots=True)
class XfrmPolicy:
    """A policy as the kernel reports it."""

    src: str  #: "addr/prefixlen"
    dst: str
    proto: int
    direction: int
    action: int
    priority: int
    index: int
    mark: XfrmMark | None
    templates: tuple[tuple[str, str, int, int, int], ...]  #: (src, dst, proto, mode, reqid)
    selector: XfrmSelector | None = None  #: the whole selector, ports included


@dataclass(frozen=True, slots=True)
class XfrmAcquire:
    """ACQUIRE: traffic needs a state for this template; IKE should negotiate one."""

    src: str  #: template source (our endpoint)
    dst: str  #: template destination (the peer)
    proto: int
    selector_src: str
    selector_dst: str
    policy_index: int
    mark: XfrmMark | None


@dataclass(frozen=True, slots=True)
class XfrmExpire:
    """EXPIRE: soft (``hard`` False: rekey now) or hard (the kernel deleted the state)."""

    dst: str
    spi: int
    proto: int
    reqid: int
    hard: bool
    mark: XfrmMark | None


XfrmEvent = XfrmAcquire | XfrmExpire


def _mark_of(msg: nlmsg) -> XfrmMark | None:
    mark = msg.get_attr("XFRMA_MARK")
    return None if mark is None else XfrmMark(mark["v"], mark["m"])


def state_view(msg: _xfrm_msg) -> XfrmState:
    """The :class:`XfrmState` of a decoded NEWSA/UPDSA message."""
    # The kernel reports an HMAC both as XFRMA_ALG_AUTH and XFRMA_ALG_AUTH_TRUNC: one name.
    algs: list[str] = []
    for attr in ("XFRMA_ALG_AEAD", "XFRMA_ALG_CRYPT", "XFRMA_ALG_AUTH_TRUNC", "XFRMA_ALG_AUTH"):
        value = msg.get_attr(attr)
        if value is not None:
            name = value["alg_name"].rstrip(b"\0").decode()
            if attr != "XFRMA_ALG_AUTH" or not msg.get_attr("XFRMA_ALG_AUTH_TRUNC"):
                algs.append(name)
    encap = msg.get_attr("XFRMA_ENCAP")
    esn = msg.get_attr("XFRMA_REPLAY_ESN_VAL")
    return XfrmState(
        src=msg["saddr"],
        dst=msg["id_daddr"],
        spi=msg["id_spi"],
        proto=msg["id_proto"],
        mode=msg["mode"],
        reqid=msg["reqid"],
        family=msg["family"],
        mark=_mark_of(msg),
        algorithms=tuple(algs),
        encap=None
        if encap is None
        else (encap["encap_type"], encap["encap_sport"], encap["encap_dport"]),
        replay_window=esn["replay_window"] if esn is not None else msg["replay_window"],
        esn=bool(msg["flags"] & 128),
        bytes=msg["curlft_bytes"],
        packets=msg["curlft_packets"],
        replay_errors=msg["stats_replay"],
        integrity_errors=msg["stats_integrity_failed"],
        replay_window_errors=msg["stats_replay_window"],
    )


def policy_view(msg: _xfrm_msg) -> XfrmPolicy:
    """The :class:`XfrmPolicy` of a decoded NEWPOLICY/UPDPOLICY message."""
    templates = tuple(
        (
            unpack_address(t["saddr"], t["family"]),
            unpack_address(t["id_daddr"], t["family"]),
            t["id_proto"],
            t["mode"],
            t["reqid"],
        )
        for t in msg.get_attrs("XFRMA_TMPL")
    )
    return XfrmPolicy(
        src=f"{msg['sel_saddr']}/{msg['sel_prefixlen_s']}",
        dst=f"{msg['sel_daddr']}/{msg['sel_prefixlen_d']}",
        proto=msg["sel_proto"],
        direction=msg["dir"],
        action=msg["action"],
        priority=msg["priority"],
        index=msg["index"],
        mark=_mark_of(msg),
        templates=templates,
        selector=XfrmSelector(
            ipaddress.ip_network(f"{msg['sel_saddr']}/{msg['sel_prefixlen_s']}", strict=False),
            ipaddress.ip_network(f"{msg['sel_daddr']}/{msg['sel_prefixlen_d']}", strict=False),
            msg["sel_proto"],
            msg["sel_sport"],
            msg["sel_sport_mask"],
            msg["sel_dport"],
            msg["sel_dport_mask"],
        ),
    )


def event_view(msg: _xfrm_msg, msg_type: int) -> XfrmEvent | None:
    """The event of a multicast notification kipsec acts on, or None for other types."""
    if msg_type == XfrmMsg.ACQUIRE:
        family = msg["sel_family"]
        tmpl = msg.get_attr("XFRMA_TMPL")
        src = unpack_address(tmpl["saddr"], tmpl["family"]) if tmpl is not None else msg["saddr"]
        return (
            XfrmAcquire(
                src=src,
                dst=msg["id_daddr"],
                proto=msg["id_proto"],
                selector_src=f"{msg['sel_saddr']}/{msg['sel_prefixlen_s']}",
                selector_dst=f"{msg['sel_daddr']}/{msg['sel_prefixlen_d']}",
                policy_index=msg["pol_index"],
                mark=_mark_of(msg),
            )
            if family
            else None
        )
    if msg_type == XfrmMsg.EXPIRE:
        return XfrmExpire(
            dst=msg["id_daddr"],
            spi=msg["id_spi"],
            proto=msg["id_proto"],
            reqid=msg["reqid"],
            hard=bool(msg["hard"]),
            mark=_mark_of(msg),
        )
    return None


# ---------------------------------------------------------------- the socket


class XfrmSocket:
    """A NETLINK_XFRM socket: blocking requests with a timeout, or multicast events.

    ``netns`` opens the socket inside a named network namespace (``ip netns``); the
    sidecar itself runs in the pod's namespace and passes None. ``groups`` is an
    :class:`XfrmGroup` bit mask; a socket with groups receives notifications and should
    not be used for requests (replies and events would interleave).
    """

    def __init__(
        self,
        *,
        netns: str | None = None,
        groups: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
        recorder: Callable[[bytes], None] | None = None,
    ) -> None:
        #: Called with every datagram received (tests record kernel replies with it).
        self.recorder = recorder
        # A missing namespace is an error (never created: probing or configuring an
        # empty namespace would hide the mistake).
        if netns is None:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
        else:
            self._sock = netns_socket(netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self._sock.bind((0, groups))
        except OSError:
            self._sock.close()
            raise
        self._sock.settimeout(timeout)
        self._timeout = timeout
        self._seq = int(time.monotonic() * 1000) & 0xFFFFFF

    def fileno(self) -> int:
        return int(self._sock.fileno())

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> XfrmSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests

    def request(
        self, msg: nlmsg, msg_type: int, flags: int, operation: str
    ) -> list[tuple[int, _xfrm_msg]]:
        """Send one request and collect its replies until the ACK, error or DONE.

        Raises :class:`XfrmError` when the kernel refuses, TimeoutError past the timeout.
        """
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        # NLM_F_DUMP is two bits (ROOT|MATCH) and MATCH is also NLM_F_EXCL: compare whole.
        dump = flags & NLM_F_DUMP == NLM_F_DUMP
        self._sock.send(
            encode(msg, msg_type, NLM_F_REQUEST | flags | (0 if dump else NLM_F_ACK), seq)
        )
        replies: list[tuple[int, _xfrm_msg]] = []
        deadline = time.monotonic() + self._timeout
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{operation}: no answer from the kernel in {self._timeout}s")
            data = self._sock.recv(RECV_SIZE)
            if self.recorder is not None:
                self.recorder(data)
            for reply_type, offset, length in _walk(data):
                (reply_seq,) = struct.unpack_from("=I", data, offset + 8)
                if reply_seq != seq:
                    continue
                if reply_type in (NLMSG_ERROR, NLMSG_DONE):
                    code = _error_code(data, offset, length, reply_type)
                    if code:
                        raise XfrmError(code, operation, _ext_ack_message(data, offset, length))
                    if reply_type == NLMSG_ERROR or dump:
                        return replies
                    continue
                cls = MESSAGE_CLASSES.get(reply_type)
                if cls is None:
                    continue
                reply = cls(data, offset=offset)
                reply.decode()
                replies.append((reply_type, reply))

    def new_sa(self, spec: XfrmStateSpec) -> None:
        """Add a state; EEXIST if (SPI, destination, protocol) is taken."""
        self.request(
            state_message(spec),
            XfrmMsg.NEWSA,
            NLM_F_CREATE | NLM_F_EXCL,
            f"add SA {spec.spi:#010x}",
        )

    def update_sa(self, spec: XfrmStateSpec) -> None:
        """Complete a larval state from :meth:`allocspi` (or replace a state's parameters)."""
        self.request(state_message(spec), XfrmMsg.UPDSA, 0, f"update SA {spec.spi:#010x}")

    def delete_sa(
        self, dst: IPAddress | str, spi: int, proto: XfrmProto, mark: XfrmMark | None = None
    ) -> None:
        self.request(
            sa_id_message(dst, spi, proto, mark), XfrmMsg.DELSA, 0, f"delete SA {spi:#010x}"
        )

    def get_sa(
        self, dst: IPAddress | str, spi: int, proto: XfrmProto, mark: XfrmMark | None = None
    ) -> XfrmState:
        """The state with its counters (bytes, packets, replay and integrity errors)."""
        replies = self.request(
            sa_id_message(dst, spi, proto, mark), XfrmMsg.GETSA, 0, f"get SA {spi:#010x}"
        )
        for msg_type, msg in replies:
            if msg_type == XfrmMsg.NEWSA:
                return state_view(msg)
        raise XfrmError(errno.ENOENT, f"get SA {spi:#010x}", "no state in the reply")

    def allocspi(
        self,
        spec: XfrmStateSpec,
        spi_min: int = 0x100,
        spi_max: int = 0xFFFFFFFF,
    ) -> int:
        """Reserve an unused SPI as a larval state (the kernel drops it after 30 s unless
        :meth:`update_sa` completes it); ``spec.spi`` is ignored."""
        msg = state_message(spec, xfrm_userspi_info)
        msg["min"], msg["max"] = spi_min, spi_max
        msg["id_spi"] = 0
        msg["attrs"] = _mark_attr(spec.mark)
        replies = self.request(msg, XfrmMsg.ALLOCSPI, 0, "allocate SPI")
        for msg_type, reply in replies:
            if msg_type == XfrmMsg.NEWSA:
                return int(reply["id_spi"])
        raise XfrmError(errno.ENOENT, "allocate SPI", "no state in the reply")

    def states(self) -> list[XfrmState]:
        """Every state in the namespace (the caller filters what it owns)."""
        return [state_view(m) for _, m in self._dump(XfrmMsg.GETSA, "list SAs")]

    def new_policy(self, spec: XfrmPolicySpec) -> None:
        self.request(
            policy_message(spec),
            XfrmMsg.NEWPOLICY,
            NLM_F_CREATE | NLM_F_EXCL,
            _policy_op("add", spec),
        )

    def update_policy(self, spec: XfrmPolicySpec) -> None:
        """Add or replace the policy with this selector, direction and mark."""
        self.request(policy_message(spec), XfrmMsg.UPDPOLICY, 0, _policy_op("update", spec))

    def delete_policy(
        self, selector: XfrmSelector, direction: XfrmDir, mark: XfrmMark | None = None
    ) -> None:
        self.request(
            policy_id_message(selector, direction, mark),
            XfrmMsg.DELPOLICY,
            0,
            f"delete {direction.name.lower()} policy {selector.src}->{selector.dst}",
        )

    def get_policy(
        self, selector: XfrmSelector, direction: XfrmDir, mark: XfrmMark | None = None
    ) -> XfrmPolicy:
        replies = self.request(
            policy_id_message(selector, direction, mark),
            XfrmMsg.GETPOLICY,
            0,
            f"get {direction.name.lower()} policy {selector.src}->{selector.dst}",
        )
        for msg_type, msg in replies:
            if msg_type == XfrmMsg.NEWPOLICY:
                return policy_view(msg)
        raise XfrmError(errno.ENOENT, "get policy", "no policy in the reply")

    def policies(self) -> list[XfrmPolicy]:
        """Every policy in the namespace (main type, all directions including sockets')."""
        return [policy_view(m) for _, m in self._dump(XfrmMsg.GETPOLICY, "list policies")]

    def flush_owned(
        self,
        owner_mask: int,
        reqids: range,
        *,
        states: bool = True,
        policies: bool = True,
        keep: Callable[[XfrmPolicy], bool] | None = None,
    ) -> tuple[int, int]:
        """Delete the states and policies kipsec owns; return how many of each.

        Owned means: the XFRM mark's mask has ``owner_mask`` set with value 0, or (for a
        state, or a policy's template) the reqid is in ``reqids``. The kernel's own
        FLUSHSA/FLUSHPOLICY cannot be scoped, so this lists and deletes one by one.
        Entries that vanish meanwhile (ESRCH/ENOENT) are not errors. Larval states
        (SPI 0, made by the kernel for an ACQUIRE) are left to expire: the kernel offers
        no way to delete one without flushing every state of the protocol.
        ``states``/``policies`` choose what is deleted; owned policies for which ``keep``
        is true are left.
        """

        def owned_mark(mark: XfrmMark | None) -> bool:
            return mark is not None and mark.value == 0 and bool(mark.mask & owner_mask)

        n_policies = 0
        for pol in self.policies() if policies else []:
            if keep is not None and keep(pol):
                continue
            if owned_mark(pol.mark) or any(t[4] in reqids for t in pol.templates):
                src, dst = ipaddress.ip_network(pol.src), ipaddress.ip_network(pol.dst)
                sel = XfrmSelector(src, dst, pol.proto)
                try:
                    self._delete_policy_exact(sel, pol)
                    n_policies += 1
                except XfrmError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ESRCH):
                        raise
        n_states = 0
        for state in self.states() if states else []:
            if state.spi == 0:
                # A larval state the kernel made for an ACQUIRE: DELSA cannot address it
                # (states are found by SPI); it holds no keys and expires by itself.
                continue
            if owned_mark(state.mark) or state.reqid in reqids:
                try:
                    self.delete_sa(state.dst, state.spi, XfrmProto(state.proto), state.mark)
                    n_states += 1
                except XfrmError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ESRCH):
                        raise
        return n_states, n_policies

    def _delete_policy_exact(self, sel: XfrmSelector, pol: XfrmPolicy) -> None:
        # Delete by index: the selector of a dumped policy may carry ports we did not
        # reconstruct, the index is unique.
        msg = xfrm_userpolicy_id()
        msg.update(_selector_values(sel))
        msg.update({"index": pol.index, "dir": pol.direction})
        msg["attrs"] = _mark_attr(pol.mark)
        self.request(msg, XfrmMsg.DELPOLICY, 0, f"delete policy index {pol.index}")

    def _dump(self, msg_type: int, operation: str) -> list[tuple[int, _xfrm_msg]]:
        msg = xfrm_dump()
        msg["attrs"] = []
        return self.request(msg, msg_type, NLM_F_DUMP, operation)

    # -- notifications

    def read_events(self, timeout: float = 0.0) -> list[XfrmEvent]:
        """The ACQUIRE/EXPIRE notifications waiting on a ``groups=`` socket.

        Waits at most ``timeout`` seconds for the first datagram (0 = only what is
        already queued), then drains without blocking.
        """
        events: list[XfrmEvent] = []
        wait = timeout
        while True:
            ready, _, _ = select.select([self._sock], [], [], wait)
            if not ready:
                return events
            data = self._sock.recv(RECV_SIZE)
            if self.recorder is not None:
                self.recorder(data)
            for msg_type, offset, _ in _walk(data):
                cls = MESSAGE_CLASSES.get(msg_type)
                if cls is None:
                    continue
                msg = cls(data, offset=offset)
                msg.decode()
                event = event_view(msg, msg_type)
                if event is not None:
                    events.append(event)
            wait = 0.0


def _policy_op(verb: str, spec: XfrmPolicySpec) -> str:
    sel = spec.selector
    return f"{verb} {spec.direction.name.lower()} policy {sel.src}->{sel.dst}"


def _error_code(data: bytes, offset: int, length: int, msg_type: int) -> int:
    if length < 20:
        return 0
    (code,) = struct.unpack_from("=i", data, offset + 16)
    return -code if code < 0 else 0


def _ext_ack_message(data: bytes, offset: int, length: int) -> str | None:
    """NLMSGERR_ATTR_MSG of an error with extended ack TLVs (the kernel's explanation)."""
    (flags,) = struct.unpack_from("=H", data, offset + 6)
    try:
        return ack_message(flags, memoryview(data)[offset + 16 : offset + length])
    except NetlinkParseError:
        return None  # a malformed explanation is no reason to lose the errno


__all__ = [
    "MESSAGE_CLASSES",
    "XfrmAcquire",
    "XfrmAction",
    "XfrmError",
    "XfrmEvent",
    "XfrmExpire",
    "XfrmGroup",
    "XfrmMode",
    "XfrmMsg",
    "XfrmPolicy",
    "XfrmSocket",
    "XfrmState",
    "decode",
    "decode_error",
    "encode",
    "policy_message",
    "sa_id_message",
    "state_message",
]
