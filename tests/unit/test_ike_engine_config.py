"""Engine configuration: validated on construction, errors name the field, secrets hidden."""

from __future__ import annotations

import pytest

from kipsec_sidecar.core.errors import LocalProtocolError
from kipsec_sidecar.core.ike.config import (
    AuthConfig,
    ChildConfig,
    ChildProposal,
    Encryption,
    Identity,
    IkeConfig,
    IkeProposal,
    Lifetime,
    Retransmission,
)
from kipsec_sidecar.core.ike.constants import DhGroup, EncrId, IdType, IntegId, ProtocolId
from kipsec_sidecar.core.traffic_selectors import TrafficSelector
from support.ike_pair import child_config, psk_config

PSK = AuthConfig("psk", local_id=Identity.fqdn("a.example"), psk=b"0123456789")


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Encryption(EncrId.AES_GCM_16, 100), "encryption.key_bits"),
        (lambda: Encryption(EncrId.DES, 64), "encryption"),
        (lambda: IkeProposal(integrity=(IntegId.HMAC_SHA2_256_128,)), "ike_proposal.integrity"),
        (
            lambda: IkeProposal(encryption=(Encryption(EncrId.AES_CBC, 128),)),
            "ike_proposal.integrity",
        ),
        (lambda: IkeProposal(dh=(DhGroup.MODP_1024,)), "ike_proposal.dh"),
        (lambda: IkeProposal(dh=()), "ike_proposal.dh"),
        (lambda: ChildProposal(protocol=ProtocolId.IKE), "child_proposal.protocol"),
        (lambda: ChildProposal(esn=(7,)), "child_proposal.esn"),
        (lambda: Lifetime(rekey_after=100, expire_after=50), "lifetime.expire_after"),
        (lambda: Lifetime(jitter=1.5), "lifetime.jitter"),
        (lambda: Retransmission(initial_timeout=0), "retransmission.initial_timeout"),
        (lambda: Identity(IdType.ID_FQDN, b""), "identity.data"),
        (lambda: AuthConfig("psk", local_id=Identity.fqdn("a"), psk=b"short"), "auth.psk"),
        (lambda: AuthConfig("psk", psk=b"0123456789"), "auth.local_id"),
        (lambda: AuthConfig("signature", private_key=object()), "auth.certificates"),
        (lambda: ChildConfig("c", (), (TrafficSelector.from_network("10.0.0.0/8"),)), "local_ts"),
        (lambda: IkeConfig(auth=PSK, children=(), max_datagram=100), "ike.max_datagram"),
        (lambda: IkeConfig(auth=PSK, children=(), local_addr=("nope", 500)), "ike.local_addr"),
        (
            lambda: IkeConfig(auth=PSK, children=(child_config(), child_config())),
            "ike.children",
        ),
    ],
)
def test_bad_configuration_is_refused_naming_the_field(build: object, field: str) -> None:
    with pytest.raises(LocalProtocolError, match=field.replace(".", r"\.")):
        build()  # type: ignore[operator]


def test_default_key_size_is_filled_in() -> None:
    assert Encryption(EncrId.AES_CBC).key_bits == 128
    assert Encryption(EncrId.CHACHA20_POLY1305).key_bits == 256


def test_repr_of_the_configuration_never_shows_the_psk() -> None:
    config = psk_config("a.example", "b.example", psk=b"super secret value")
    assert "super secret" not in repr(config)
    assert "super secret" not in repr(config.auth)


def test_unknown_child_name_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="nope"):
        psk_config("a", "b").child("nope")
