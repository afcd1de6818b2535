"""The probe's XFRM messages, packed with ``struct``, are pyroute2's to the byte.

:mod:`kipsec_sidecar.datapath.xfrm_wire` packs NEWSA and DELSA itself so that the
capability probe never imports pyroute2; :mod:`kipsec_sidecar.datapath.xfrm` (the kernel
datapath's codec, on pyroute2) stays the reference: for the probe's own states, and for
states using every field the packer knows, both must give the same datagram. The
acknowledgement side is checked against a refusal a real kernel sent (the codec's
fixture) and in both of netlink's layouts (the refused request copied, or capped).
"""

from __future__ import annotations

import errno
import ipaddress
import struct
from pathlib import Path

import pytest

from kipsec_sidecar.datapath import netlink, xfrm
from kipsec_sidecar.datapath.probe import _probe_states
from kipsec_sidecar.datapath.xfrm_sa import (
    DEFAULT_OWNER_MASK,
    REQID_RANGE,
    XfrmAlgorithm,
    XfrmEncap,
    XfrmLifetime,
    XfrmMode,
    XfrmProto,
    XfrmSelector,
    XfrmStateSpec,
    owner_mark,
)
from kipsec_sidecar.datapath.xfrm_wire import XfrmMsg, delsa_payload, newsa_payload

DATA = Path(__file__).parent / "data" / "xfrm"
NEWSA_FLAGS = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK | netlink.NLM_F_CREATE | netlink.NLM_F_EXCL
DELSA_FLAGS = netlink.NLM_F_REQUEST | netlink.NLM_F_ACK
SEQ = 0x01020304


def pyroute2_newsa(spec: XfrmStateSpec) -> bytes:
    return xfrm.encode(xfrm.state_message(spec), XfrmMsg.NEWSA, NEWSA_FLAGS, SEQ)


def wire_newsa(spec: XfrmStateSpec) -> bytes:
    return netlink.frame(XfrmMsg.NEWSA, NEWSA_FLAGS, SEQ, newsa_payload(spec))


@pytest.mark.parametrize("index", [0, 1], ids=["cbc-hmac", "gcm"])
def test_the_probe_states_encode_as_pyroute2_encodes_them(index: int) -> None:
    spec = _probe_states(DEFAULT_OWNER_MASK)[index]
    data = wire_newsa(spec)
    assert data == pyroute2_newsa(spec)
    assert len(data) == struct.unpack_from("=I", data)[0]


@pytest.mark.parametrize("index", [0, 1], ids=["cbc-hmac", "gcm"])
def test_the_probe_deletes_encode_as_pyroute2_encodes_them(index: int) -> None:
    spec = _probe_states(DEFAULT_OWNER_MASK)[index]
    mine = netlink.frame(
        XfrmMsg.DELSA, DELSA_FLAGS, SEQ, delsa_payload(spec.dst, spec.spi, spec.proto, spec.mark)
    )
    reference = xfrm.sa_id_message(spec.dst, spec.spi, spec.proto, spec.mark)
    assert mine == xfrm.encode(reference, XfrmMsg.DELSA, DELSA_FLAGS, SEQ)


def every_field() -> list[XfrmStateSpec]:
    """States using every field ``newsa_payload`` packs, IPv4 and IPv6, odd key sizes."""
    a6, b6 = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::2")
    selector = XfrmSelector(
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("10.2.3.0/24"),
        proto=6,
        sport=1234,
        sport_mask=0xFFFF,
        dport=443,
        dport_mask=0xFF00,
    )
    base = XfrmStateSpec(
        src=ipaddress.ip_address("192.0.2.11"),
        dst=ipaddress.ip_address("192.0.2.12"),
        spi=0xC0FFEE01,
        proto=XfrmProto.ESP,
        mode=XfrmMode.TUNNEL,
        reqid=REQID_RANGE[3],
        mark=owner_mark(),
        selector=selector,
        crypt=XfrmAlgorithm("cbc(aes)", bytes(range(24))),
        auth=XfrmAlgorithm("hmac(sha1)", bytes(range(20)), 96),
        encap=XfrmEncap(4500, 61234),
        replay_window=1024,
        esn=True,
        lifetime=XfrmLifetime(1000, 2000, 30, 60, 90, 120),
        flags=128,
    )
    return [
        base,
        XfrmStateSpec(
            src=a6,
            dst=b6,
            spi=0x100,
            proto=XfrmProto.AH,
            mode=XfrmMode.TRANSPORT,
            reqid=7,
            mark=None,
            selector=XfrmSelector.any(6),
            auth=XfrmAlgorithm("hmac(sha512)", bytes(64), 256),
            replay_window=33,
        ),
        XfrmStateSpec(
            src=a6,
            dst=b6,
            spi=0xFFFFFFFF,
            proto=XfrmProto.ESP,
            mode=XfrmMode.TUNNEL,
            reqid=REQID_RANGE[-1],
            mark=owner_mark(0x10),
            selector=selector,  # 4-in-6: the selector's family is the inner one
            aead=XfrmAlgorithm("rfc7539esp(chacha20,poly1305)", bytes(range(36)), 128),
            esn=True,
        ),
    ]


@pytest.mark.parametrize("spec", every_field(), ids=["v4-cbc-encap-esn", "v6-ah", "4in6-chacha"])
def test_every_field_encodes_as_pyroute2_encodes_it(spec: XfrmStateSpec) -> None:
    assert wire_newsa(spec) == pyroute2_newsa(spec)


def test_a_deleted_ipv6_state_without_mark_encodes_as_pyroute2_encodes_it() -> None:
    dst = ipaddress.ip_address("2001:db8::2")
    mine = netlink.frame(
        XfrmMsg.DELSA, DELSA_FLAGS, SEQ, delsa_payload(dst, 0x1234, XfrmProto.AH, None)
    )
    reference = xfrm.sa_id_message(dst, 0x1234, XfrmProto.AH, None)
    assert mine == xfrm.encode(reference, XfrmMsg.DELSA, DELSA_FLAGS, SEQ)


def test_a_kernel_refusal_reads_as_the_xfrm_codec_reads_it() -> None:
    # Recorded from a real kernel (Debian 6.1): the refused request copied, then the TLVs.
    (data,) = [bytes.fromhex(line) for line in (DATA / "error_ext_ack.hex").read_text().split()]
    reference = xfrm.decode_error(data, "add SA")
    assert reference is not None
    (message,) = netlink.parse_messages(data)
    assert (message.error, message.ack_message) == (reference.errno, reference.kernel_message)
    assert message.ack_message == "Requested CRYPT algorithm not found"


def error_datagram(capped: bool, text: bytes | None) -> bytes:
    """An NLMSG_ERROR refusing a NEWSA with EPROTONOSUPPORT, as the kernel frames it."""
    request = wire_newsa(_probe_states(DEFAULT_OWNER_MASK)[0])
    flags = 0
    body = struct.pack("=i", -errno.EPROTONOSUPPORT)
    body += request[:16] if capped else request
    if capped:
        flags |= netlink.NLM_F_CAPPED
    if text is not None:
        flags |= netlink.NLM_F_ACK_TLVS
        body += netlink.attr(netlink.NLMSGERR_ATTR_MSG, text + b"\0")
    return netlink.frame(netlink.NLMSG_ERROR, flags, SEQ, body)


@pytest.mark.parametrize("capped", [True, False], ids=["capped", "copied"])
@pytest.mark.parametrize("text", [b"Requested type not found", None], ids=["text", "none"])
def test_extended_ack_text_is_found_after_the_refused_request(
    capped: bool, text: bytes | None
) -> None:
    data = error_datagram(capped, text)
    (message,) = netlink.parse_messages(data)
    reference = xfrm.decode_error(data, "add SA")
    assert reference is not None
    assert message.error == reference.errno == errno.EPROTONOSUPPORT
    assert message.ack_message == reference.kernel_message
    assert message.ack_message == (None if text is None else text.decode())


def test_an_acknowledgement_carries_no_error_and_no_text() -> None:
    data = netlink.frame(netlink.NLMSG_ERROR, 0, SEQ, struct.pack("=i", 0) + bytes(16))
    (message,) = netlink.parse_messages(data)
    assert (message.error, message.ack_message) == (0, None)


def test_an_error_too_short_for_its_copied_request_has_no_text() -> None:
    # NLM_F_ACK_TLVS set, not capped, but no room for the copied request's header.
    body = struct.pack("=i", -errno.EINVAL) + bytes(8)
    data = netlink.frame(netlink.NLMSG_ERROR, netlink.NLM_F_ACK_TLVS, SEQ, body)
    (message,) = netlink.parse_messages(data)
    assert (message.error, message.ack_message) == (errno.EINVAL, None)
