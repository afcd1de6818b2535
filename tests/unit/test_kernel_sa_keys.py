"""The SA keeps its raw keys for the kernel datapath, and never shows them."""

from __future__ import annotations

import ipaddress

from kipsec_sidecar.core.ike.constants import EncrId, IntegId, ProtocolId
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Mode
from kipsec_sidecar.datapath.xfrm_sa import REQID_RANGE, owner_mark, state_spec

A = ipaddress.ip_address("192.0.2.11")
B = ipaddress.ip_address("192.0.2.12")
GCM_KEY = bytes(range(1, 37))
CBC_KEY = bytes(range(40, 56))
HMAC_KEY = bytes(range(100, 132))


def gcm_sa() -> IpsecSa:
    return IpsecSa(
        spi=0x1234,
        src=A,
        dst=B,
        protocol=ProtocolId.ESP,
        mode=Mode.TUNNEL,
        encr_id=EncrId.AES_GCM_16,
        encr_key=GCM_KEY,
    )


def cbc_sa() -> IpsecSa:
    return IpsecSa(
        spi=0x1235,
        src=A,
        dst=B,
        protocol=ProtocolId.ESP,
        mode=Mode.TRANSPORT,
        encr_id=EncrId.AES_CBC,
        encr_key=CBC_KEY,
        integ_id=IntegId.HMAC_SHA2_256_128,
        integ_key=HMAC_KEY,
    )


def test_the_sa_keeps_the_raw_keys_it_was_built_with() -> None:
    sa = cbc_sa()
    assert (sa.encr_key, sa.integ_key) == (CBC_KEY, HMAC_KEY)
    assert gcm_sa().integ_key == b""


def test_repr_never_shows_a_key() -> None:
    for sa in (gcm_sa(), cbc_sa()):
        text = repr(sa)
        for key in (GCM_KEY, CBC_KEY, HMAC_KEY):
            assert key.hex() not in text and repr(key) not in text


def test_state_spec_takes_the_keys_from_the_sa_when_none_are_given() -> None:
    spec = state_spec(cbc_sa(), reqid=REQID_RANGE[0], mark=owner_mark())
    assert spec.crypt is not None and spec.crypt.key == CBC_KEY
    assert spec.auth is not None and spec.auth.key == HMAC_KEY
    aead = state_spec(gcm_sa(), reqid=REQID_RANGE[0], mark=owner_mark()).aead
    assert aead is not None and aead.key == GCM_KEY
