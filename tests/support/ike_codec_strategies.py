"""Hypothesis strategies for every IKEv2 payload and message, shared by unit and fuzz tests.

Each strategy draws only values the encoder accepts, so ``decode(encode(x)) == x`` must
hold for everything drawn.
"""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from kipsec_sidecar.core.ike.constants import PayloadType, ProtocolId
from kipsec_sidecar.core.ike.message import Message
from kipsec_sidecar.core.ike.payloads import (
    NOTIFY_SPI_SIZES,
    PROPOSAL_SPI_SIZES,
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    EncryptedFragment,
    EncryptedPayload,
    IdiPayload,
    IdrPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    Transform,
    TsiPayload,
    TsrPayload,
    UnknownPayload,
    VendorIdPayload,
)
from kipsec_sidecar.core.traffic_selectors import TrafficSelector

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
small_bytes = st.binary(max_size=48)

transforms = st.builds(Transform, u8, u16, st.none() | u16)


@st.composite
def proposals(draw: st.DrawFn, number: int) -> Proposal:
    protocol = draw(st.sampled_from(sorted(PROPOSAL_SPI_SIZES)))
    spi_len = draw(st.sampled_from(PROPOSAL_SPI_SIZES[protocol]))
    spi = draw(st.binary(min_size=spi_len, max_size=spi_len))
    return Proposal(number, protocol, spi, tuple(draw(st.lists(transforms, max_size=5))))


@st.composite
def sa_payloads(draw: st.DrawFn) -> SaPayload:
    count = draw(st.integers(1, 4))
    first = draw(st.integers(1, 255 - count + 1))
    return SaPayload(tuple(draw(proposals(first + i)) for i in range(count)))


@st.composite
def notify_payloads(draw: st.DrawFn) -> NotifyPayload:
    protocol = draw(st.sampled_from(sorted(NOTIFY_SPI_SIZES)))
    spi_len = draw(st.sampled_from(NOTIFY_SPI_SIZES[protocol]))
    spi = draw(st.binary(min_size=spi_len, max_size=spi_len))
    return NotifyPayload(draw(u16), protocol, spi, draw(small_bytes))


@st.composite
def delete_payloads(draw: st.DrawFn) -> DeletePayload:
    protocol = draw(st.sampled_from([ProtocolId.IKE, ProtocolId.ESP, ProtocolId.AH]))
    if protocol == ProtocolId.IKE:
        return DeletePayload(protocol, ())
    spis = draw(st.lists(st.binary(min_size=4, max_size=4), max_size=6))
    return DeletePayload(protocol, tuple(spis))


@st.composite
def traffic_selectors(draw: st.DrawFn) -> TrafficSelector:
    version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    a, b = sorted(draw(st.lists(st.integers(0, 2**bits - 1), min_size=2, max_size=2)))
    p, q = sorted(draw(st.lists(u16, min_size=2, max_size=2)))
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    return TrafficSelector(make(a), make(b), draw(u8), p, q)


selector_tuples = st.lists(traffic_selectors(), max_size=4).map(tuple)

_KNOWN = {int(t) for t in PayloadType}
unknown_types = st.integers(1, 255).filter(lambda t: t not in _KNOWN)

# One strategy per payload class: the round-trip tests are parametrized over this table.
PAYLOAD_STRATEGIES: dict[str, st.SearchStrategy[Payload]] = {
    "SA": sa_payloads(),
    "KE": st.builds(KePayload, u16, st.binary(max_size=96)),
    "IDi": st.builds(IdiPayload, u8, small_bytes),
    "IDr": st.builds(IdrPayload, u8, small_bytes),
    "CERT": st.builds(CertPayload, u8, small_bytes),
    "CERTREQ": st.builds(
        CertReqPayload, u8, st.lists(st.binary(min_size=20, max_size=20), max_size=3).map(b"".join)
    ),
    "AUTH": st.builds(AuthPayload, u8, small_bytes),
    "Nonce": st.builds(NoncePayload, st.binary(min_size=16, max_size=256)),
    "Notify": notify_payloads(),
    "Delete": delete_payloads(),
    "VendorID": st.builds(VendorIdPayload, small_bytes),
    "TSi": st.builds(TsiPayload, selector_tuples),
    "TSr": st.builds(TsrPayload, selector_tuples),
    "CP": st.builds(
        CpPayload,
        u8,
        st.lists(st.tuples(st.integers(0, 0x7FFF), small_bytes), max_size=4).map(tuple),
    ),
    "Unknown": st.builds(UnknownPayload, unknown_types, st.just(False), small_bytes),
}

any_plain_payload: st.SearchStrategy[Payload] = st.one_of(*PAYLOAD_STRATEGIES.values())

sealed_payloads: st.SearchStrategy[Payload] = st.one_of(
    st.builds(EncryptedPayload, u8, small_bytes),
    st.builds(
        EncryptedFragment,
        st.integers(1, 20),
        st.just(20),
        u8,
        small_bytes,
    ),
)


@st.composite
def payload_chains(draw: st.DrawFn, sealed: bool = True) -> tuple[Payload, ...]:
    """Plain payloads, optionally ending with a sealed SK or SKF payload."""
    chain = draw(st.lists(any_plain_payload, max_size=5))
    if sealed and draw(st.booleans()):
        chain.append(draw(sealed_payloads))
    return tuple(chain)


spis = st.binary(min_size=8, max_size=8)
nonzero_spis = spis.filter(lambda s: s != bytes(8))


@st.composite
def messages(draw: st.DrawFn, sealed: bool = True) -> Message:
    return Message(
        spi_i=draw(nonzero_spis),
        spi_r=draw(spis),
        exchange=draw(u8),
        message_id=draw(st.integers(0, 0xFFFFFFFF)),
        is_response=draw(st.booleans()),
        is_initiator=draw(st.booleans()),
        payloads=draw(payload_chains(sealed)),
    )
