"""Hypothesis strategies for every ISAKMP payload and message (kipsec_sidecar.core.ikev1).

Each strategy draws only values the encoder accepts, so ``decode(encode(x)) == x`` must
hold for everything drawn.
"""

from __future__ import annotations

from hypothesis import strategies as st

from kipsec_sidecar.core.ike.payloads import CertPayload, CertReqPayload, VendorIdPayload
from kipsec_sidecar.core.ikev1.constants import ExchangeType, IdType
from kipsec_sidecar.core.ikev1.message import Message
from kipsec_sidecar.core.ikev1.payloads import (
    DELETE_SPI_SIZE,
    NOTIFY_SPI_SIZES,
    PROPOSAL_SPI_SIZES,
    Attribute,
    DeletePayload,
    HashPayload,
    IdPayload,
    KePayload,
    NatDPayload,
    NatOaPayload,
    NoncePayload,
    NotificationPayload,
    Payload,
    Proposal,
    SaPayload,
    SigPayload,
    Transform,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
blob = st.binary(min_size=1, max_size=64)

attributes = st.builds(Attribute, st.integers(0, 0x7FFF), u16 | st.binary(max_size=12))
transforms = st.builds(Transform, u8, u8, st.lists(attributes, max_size=5).map(tuple))


@st.composite
def proposals(draw: st.DrawFn, number: int) -> Proposal:
    protocol = draw(st.sampled_from(sorted(PROPOSAL_SPI_SIZES)))
    spi = draw(
        st.binary(min_size=0, max_size=16).filter(lambda b: len(b) in PROPOSAL_SPI_SIZES[protocol])
    )
    return Proposal(
        number, protocol, spi, tuple(draw(st.lists(transforms, min_size=1, max_size=3)))
    )


@st.composite
def sa_payloads(draw: st.DrawFn) -> SaPayload:
    numbers = sorted(draw(st.lists(st.integers(1, 255), min_size=1, max_size=3)))
    return SaPayload(tuple(draw(proposals(n)) for n in numbers))


@st.composite
def notifications(draw: st.DrawFn) -> NotificationPayload:
    protocol = draw(st.sampled_from(sorted(NOTIFY_SPI_SIZES)))
    size = draw(st.sampled_from(NOTIFY_SPI_SIZES[protocol]))
    return NotificationPayload(
        draw(u16),
        protocol,
        draw(st.binary(min_size=size, max_size=size)),
        draw(st.binary(max_size=16)),
        draw(u32),
    )


@st.composite
def deletes(draw: st.DrawFn) -> DeletePayload:
    protocol = draw(st.sampled_from(sorted(DELETE_SPI_SIZE)))
    size = DELETE_SPI_SIZE[protocol]
    spis = draw(st.lists(st.binary(min_size=size, max_size=size), min_size=1, max_size=3))
    return DeletePayload(protocol, tuple(spis), draw(u32))


nat_oa = st.one_of(
    st.builds(NatOaPayload, st.just(IdType.IPV4_ADDR), st.binary(min_size=4, max_size=4)),
    st.builds(NatOaPayload, st.just(IdType.IPV6_ADDR), st.binary(min_size=16, max_size=16)),
)

payloads: st.SearchStrategy[Payload] = st.one_of(
    sa_payloads(),
    st.builds(KePayload, blob),
    st.builds(IdPayload, u8, st.binary(max_size=32), u8, u16),
    st.builds(CertPayload, u8, st.binary(max_size=32)),
    st.builds(CertReqPayload, u8, st.binary(max_size=32)),
    st.builds(HashPayload, blob),
    st.builds(SigPayload, blob),
    st.builds(NoncePayload, st.binary(min_size=8, max_size=256)),
    notifications(),
    deletes(),
    st.builds(VendorIdPayload, st.binary(max_size=32)),
    st.builds(NatDPayload, blob),
    nat_oa,
)

messages = st.builds(
    Message,
    st.binary(min_size=8, max_size=8).filter(any),
    st.binary(min_size=8, max_size=8),
    st.sampled_from([int(e) for e in ExchangeType]),
    u32,
    st.lists(payloads, max_size=5).map(tuple),
    st.sampled_from([0, 2, 4, 6]),
)
