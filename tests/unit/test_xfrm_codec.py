"""The XFRM netlink codec: struct layouts, round trips, and replies a real kernel sent.

The ``data/xfrm/*.hex`` fixtures are datagrams recorded from Debian's 6.1 kernel inside
the test VM (``KIPSEC_SAVE_XFRM_FIXTURES=1 pytest -m vm tests/vm``), one datagram per
line: the codec must decode what the kernel really says, not only what it encodes.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from pathlib import Path

import pytest

from kipsec_sidecar.datapath import xfrm
from kipsec_sidecar.datapath.xfrm_sa import (
    REQID_RANGE,
    XfrmAction,
    XfrmAlgorithm,
    XfrmDir,
    XfrmEncap,
    XfrmLifetime,
    XfrmMode,
    XfrmPolicySpec,
    XfrmProto,
    XfrmSelector,
    XfrmStateSpec,
    XfrmTemplate,
    owner_mark,
)

DATA = Path(__file__).parent / "data" / "xfrm"
A = ipaddress.ip_address("192.0.2.11")
B = ipaddress.ip_address("192.0.2.12")
A6 = ipaddress.ip_address("2001:db8::11")
B6 = ipaddress.ip_address("2001:db8::12")
OWNER = owner_mark()


def datagrams(name: str) -> list[bytes]:
    return [bytes.fromhex(line) for line in (DATA / f"{name}.hex").read_text().split()]


def body_size(cls: type[xfrm._xfrm_msg]) -> int:
    msg = cls()
    msg["attrs"] = []
    return len(xfrm.encode(msg, 0)) - 16


@pytest.mark.parametrize(
    ("cls", "size"),
    [
        (xfrm.xfrm_usersa_info, 224),
        (xfrm.xfrm_usersa_id, 24),
        (xfrm.xfrm_userspi_info, 232),
        (xfrm.xfrm_userpolicy_info, 168),
        (xfrm.xfrm_userpolicy_id, 64),
        (xfrm.xfrm_user_acquire, 280),
        (xfrm.xfrm_user_expire, 232),
        (xfrm.xfrm_user_polexpire, 176),
        (xfrm.xfrm_dump, 0),
    ],
)
def test_message_bodies_have_the_kernel_struct_sizes(cls: type[xfrm._xfrm_msg], size: int) -> None:
    assert body_size(cls) == size


def gcm_state(**changes: object) -> XfrmStateSpec:
    values: dict[str, object] = {
        "src": A,
        "dst": B,
        "spi": 0xC0FFEE01,
        "proto": XfrmProto.ESP,
        "mode": XfrmMode.TUNNEL,
        "reqid": REQID_RANGE[3],
        "mark": OWNER,
        "selector": XfrmSelector.any(4),
        "aead": XfrmAlgorithm("rfc4106(gcm(aes))", bytes(range(36)), 128),
        "replay_window": 1024,
    }
    values.update(changes)
    return XfrmStateSpec(**values)  # type: ignore[arg-type]


def roundtrip(msg: xfrm._xfrm_msg, msg_type: int) -> xfrm._xfrm_msg:
    (decoded,) = xfrm.decode(xfrm.encode(msg, msg_type))
    return decoded


def test_aead_state_round_trips_with_key_salt_icv_and_replay_window() -> None:
    msg = roundtrip(xfrm.state_message(gcm_state()), xfrm.XfrmMsg.NEWSA)
    aead = msg.get_attr("XFRMA_ALG_AEAD")
    assert aead["alg_name"].rstrip(b"\0") == b"rfc4106(gcm(aes))"
    assert aead["alg_key"] == bytes(range(36))
    assert (aead["alg_key_len"], aead["alg_icv_len"]) == (288, 128)
    esn = msg.get_attr("XFRMA_REPLAY_ESN_VAL")
    assert (esn["replay_window"], esn["bmp_len"], len(esn["bmp"])) == (1024, 32, 128)
    assert msg["replay_window"] == 0  # the kernel refuses both forms at once
    view = xfrm.state_view(msg)
    assert (view.src, view.dst, view.spi, view.mode) == ("192.0.2.11", "192.0.2.12", 0xC0FFEE01, 1)
    assert view.mark == OWNER and view.reqid == REQID_RANGE[3]
    assert view.algorithms == ("rfc4106(gcm(aes))",)


def test_cbc_hmac_state_with_udp_encap_esn_and_lifetimes_round_trips() -> None:
    spec = gcm_state(
        aead=None,
        crypt=XfrmAlgorithm("cbc(aes)", b"k" * 16),
        auth=XfrmAlgorithm("hmac(sha256)", b"h" * 32, 128),
        encap=XfrmEncap(4500, 4501),
        esn=True,
        flags=128,
        lifetime=XfrmLifetime(
            soft_bytes=1000, hard_bytes=2000, soft_add_seconds=30, hard_add_seconds=60
        ),
    )
    msg = roundtrip(xfrm.state_message(spec), xfrm.XfrmMsg.NEWSA)
    auth = msg.get_attr("XFRMA_ALG_AUTH_TRUNC")
    assert (auth["alg_trunc_len"], auth["alg_key_len"], auth["alg_key"]) == (128, 256, b"h" * 32)
    assert msg.get_attr("XFRMA_ALG_CRYPT")["alg_key"] == b"k" * 16
    assert (msg["lft_soft_byte_limit"], msg["lft_hard_byte_limit"]) == (1000, 2000)
    assert msg["lft_soft_packet_limit"] == 2**64 - 1  # "no limit" is XFRM_INF, not 0
    assert (msg["lft_soft_add_expires_seconds"], msg["lft_hard_add_expires_seconds"]) == (30, 60)
    view = xfrm.state_view(msg)
    assert view.encap == (2, 4500, 4501) and view.esn
    assert view.algorithms == ("cbc(aes)", "hmac(sha256)")


def test_state_addresses_and_ports_use_network_byte_order_on_the_wire() -> None:
    data = xfrm.encode(xfrm.state_message(gcm_state(encap=XfrmEncap(4500, 4501))), 0x10)
    body = data[16:]
    assert body[56:60] == B.packed  # id.daddr
    assert struct.unpack_from(">I", body, 72)[0] == 0xC0FFEE01  # id.spi, big-endian
    assert body[80:84] == A.packed  # saddr
    assert bytes.fromhex("11941195") in data  # encap sport 4500, dport 4501, big-endian


def test_ipv6_state_round_trips() -> None:
    spec = gcm_state(src=A6, dst=B6, selector=XfrmSelector.any(6))
    view = xfrm.state_view(roundtrip(xfrm.state_message(spec), xfrm.XfrmMsg.NEWSA))
    assert (view.src, view.dst, view.family) == ("2001:db8::11", "2001:db8::12", socket.AF_INET6)


def test_policy_round_trips_with_template_ports_and_mark() -> None:
    sel = XfrmSelector(
        ipaddress.ip_network("10.10.1.0/24"),
        ipaddress.ip_network("10.10.2.0/24"),
        6,
        0,
        0,
        443,
        0xFFFF,
    )
    tmpl = XfrmTemplate(A, B, XfrmProto.ESP, XfrmMode.TUNNEL, REQID_RANGE[9])
    spec = XfrmPolicySpec(sel, XfrmDir.OUT, XfrmAction.ALLOW, 0x3000, OWNER, (tmpl,))
    msg = roundtrip(xfrm.policy_message(spec), xfrm.XfrmMsg.NEWPOLICY)
    assert (msg["sel_dport"], msg["sel_dport_mask"]) == (443, 0xFFFF)
    view = xfrm.policy_view(msg)
    assert (view.src, view.dst, view.proto) == ("10.10.1.0/24", "10.10.2.0/24", 6)
    assert (view.direction, view.action, view.priority, view.mark) == (1, 0, 0x3000, OWNER)
    assert view.templates == (("192.0.2.11", "192.0.2.12", 50, 1, REQID_RANGE[9]),)


def test_block_policy_without_template_round_trips() -> None:
    spec = XfrmPolicySpec(XfrmSelector.any(4), XfrmDir.FWD, XfrmAction.BLOCK, 7, None)
    view = xfrm.policy_view(roundtrip(xfrm.policy_message(spec), xfrm.XfrmMsg.NEWPOLICY))
    assert (view.direction, view.action, view.templates, view.mark) == (2, 1, (), None)


def test_sa_id_round_trips() -> None:
    msg = roundtrip(xfrm.sa_id_message(B6, 0x1234, XfrmProto.AH, OWNER), xfrm.XfrmMsg.DELSA)
    assert (msg["daddr"], msg["spi"], msg["proto"], msg["family"]) == (
        "2001:db8::12",
        0x1234,
        51,
        socket.AF_INET6,
    )
    assert msg.get_attr("XFRMA_MARK")["m"] == OWNER.mask


def test_policy_id_round_trips() -> None:
    sel = XfrmSelector(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("10.1.0.0/16"))
    msg = roundtrip(xfrm.policy_id_message(sel, XfrmDir.IN, None), xfrm.XfrmMsg.DELPOLICY)
    assert (msg["sel_saddr"], msg["sel_prefixlen_s"], msg["sel_daddr"], msg["sel_prefixlen_d"]) == (
        "10.0.0.0",
        8,
        "10.1.0.0",
        16,
    )
    assert msg["dir"] == 0 and msg.get_attr("XFRMA_MARK") is None


def test_acquire_expire_and_polexpire_round_trip() -> None:
    acq = xfrm.xfrm_user_acquire()
    acq.update({"id_daddr": B, "id_proto": 50, "saddr": A, "sel_family": socket.AF_INET})
    acq.update({"sel_saddr": A, "sel_daddr": B, "sel_prefixlen_s": 32, "sel_prefixlen_d": 32})
    acq.update({"pol_index": 17, "pol_dir": 1, "pol_sel_family": socket.AF_INET, "seq": 9})
    acq["attrs"] = [["XFRMA_MARK", {"v": 0, "m": OWNER.mask}]]
    event = xfrm.event_view(roundtrip(acq, xfrm.XfrmMsg.ACQUIRE), xfrm.XfrmMsg.ACQUIRE)
    assert event == xfrm.XfrmAcquire(
        "192.0.2.11", "192.0.2.12", 50, "192.0.2.11/32", "192.0.2.12/32", 17, OWNER
    )
    exp = xfrm.state_message(gcm_state(), xfrm.xfrm_user_expire)
    exp["hard"] = 1
    event = xfrm.event_view(roundtrip(exp, xfrm.XfrmMsg.EXPIRE), xfrm.XfrmMsg.EXPIRE)
    assert event == xfrm.XfrmExpire("192.0.2.12", 0xC0FFEE01, 50, REQID_RANGE[3], True, OWNER)
    pol = xfrm.xfrm_user_polexpire()
    pol.update({"priority": 5, "hard": 1})
    pol["attrs"] = []
    decoded = roundtrip(pol, xfrm.XfrmMsg.POLEXPIRE)
    assert (decoded["priority"], decoded["hard"]) == (5, 1)


def test_allocspi_carries_the_range_after_the_state() -> None:
    msg = xfrm.state_message(gcm_state(), xfrm.xfrm_userspi_info)
    msg["min"], msg["max"] = 0xC0000000, 0xC0FFFFFF
    data = xfrm.encode(msg, xfrm.XfrmMsg.ALLOCSPI)
    assert struct.unpack_from("=II", data, 16 + 224) == (0xC0000000, 0xC0FFFFFF)


def test_decoded_states_never_show_keys() -> None:
    view = xfrm.state_view(roundtrip(xfrm.state_message(gcm_state()), xfrm.XfrmMsg.NEWSA))
    assert bytes(range(36)).hex() not in repr(view)
    assert "alg_key" not in repr(gcm_state().aead)


# ------------------------------------------------------------ replies of a real kernel


def test_kernel_state_dump_decodes_cbc_hmac_udp_encap_esn_and_a_larval_state() -> None:
    first, done = datagrams("dump_states")
    states = [xfrm.state_view(m) for m in xfrm.decode(first)]
    full, larval = states
    assert full.algorithms == ("cbc(aes)", "hmac(sha256)")
    assert full.encap == (2, 4500, 4501) and full.esn and full.replay_window == 1024
    assert full.mark == OWNER and full.reqid == REQID_RANGE[80] and full.mode == 1
    assert (full.src, full.dst, full.spi) == ("192.0.2.11", "192.0.2.12", 0x0C0C0001)
    assert larval.spi == 0 and larval.algorithms == ()  # made by the kernel for an ACQUIRE
    assert xfrm.decode(done) == [] and xfrm.decode_error(done, "dump") is None


def test_kernel_state_reencodes_to_the_same_bytes() -> None:
    data = datagrams("getsa_reply")[0]
    (msg,) = xfrm.decode(data)
    length = struct.unpack_from("=I", data)[0]
    header = msg["header"]
    again = xfrm.xfrm_usersa_info()
    again.update({k: v for k, v in msg.items() if k not in ("header", "attrs")})
    again["attrs"] = [[name, value] for name, value in msg["attrs"]]
    encoded = xfrm.encode(again, header["type"], header["flags"], header["sequence_number"])
    assert encoded[16:] == data[16:length]


def test_kernel_getsa_reply_decodes_then_acks() -> None:
    reply, ack = datagrams("getsa_reply")
    (view,) = (xfrm.state_view(m) for m in xfrm.decode(reply))
    assert view.algorithms == ("rfc4106(gcm(aes))",) and view.reqid == REQID_RANGE[70]
    assert 0xC0000000 <= view.spi <= 0xC0FFFFFF  # from ALLOCSPI's range
    assert xfrm.decode_error(ack, "get SA") is None


def test_kernel_policy_dump_decodes_templates_and_marks() -> None:
    first, _done = datagrams("dump_policies")
    policies = sorted((xfrm.policy_view(m) for m in xfrm.decode(first)), key=lambda p: p.direction)
    inbound, outbound = policies
    assert (outbound.src, outbound.dst, outbound.proto) == ("10.10.1.0/24", "10.10.2.0/24", 6)
    assert outbound.templates == (("192.0.2.11", "192.0.2.12", 50, 1, REQID_RANGE[80]),)
    assert inbound.templates == (("192.0.2.12", "192.0.2.11", 50, 1, REQID_RANGE[80]),)
    assert inbound.mark == outbound.mark == OWNER


def test_kernel_acquire_names_the_template_and_the_packet() -> None:
    (data,) = datagrams("acquire")
    (msg,) = xfrm.decode(data)
    event = xfrm.event_view(msg, xfrm.XfrmMsg.ACQUIRE)
    assert isinstance(event, xfrm.XfrmAcquire)
    assert (event.src, event.dst, event.proto) == ("192.0.2.11", "192.0.2.12", 50)
    assert (event.selector_src, event.selector_dst) == ("192.0.2.11/32", "192.0.2.12/32")
    assert event.mark == OWNER


def test_kernel_expires_come_soft_then_hard() -> None:
    events = [
        xfrm.event_view(m, xfrm.XfrmMsg.EXPIRE) for d in datagrams("expire") for m in xfrm.decode(d)
    ]
    assert [(e.spi, e.hard) for e in events if isinstance(e, xfrm.XfrmExpire)] == [
        (0x7E570001, False),
        (0x7E570001, True),
    ]


def test_kernel_refusal_carries_errno_and_extended_ack_text() -> None:
    (data,) = datagrams("error_ext_ack")
    error = xfrm.decode_error(data, "add SA 0x0c0c0002")
    assert error is not None
    assert error.errno == errno.ENOSYS
    assert error.kernel_message == "Requested CRYPT algorithm not found"
    assert (
        str(error) == "[Errno 38] add SA 0x0c0c0002: ENOSYS (Requested CRYPT algorithm not found)"
    )


def test_a_truncated_datagram_decodes_to_nothing_rather_than_garbage() -> None:
    data = datagrams("getsa_reply")[0]
    assert xfrm.decode(data[:100]) == []
