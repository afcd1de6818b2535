"""Proposal encoding and the responder's choice (RFC 7296 sections 2.7 and 3.3.6)."""

from __future__ import annotations

import pytest

from kipsec_sidecar.core.errors import LocalProtocolError, RefusedAlgorithm, RemoteProtocolError
from kipsec_sidecar.core.ike.config import ChildProposal, Encryption, IkeProposal
from kipsec_sidecar.core.ike.constants import (
    DhGroup,
    EncrId,
    EsnId,
    IntegId,
    PrfId,
    ProtocolId,
    TransformType,
)
from kipsec_sidecar.core.ike.payloads import Proposal, SaPayload, Transform
from kipsec_sidecar.core.ike.proposals import (
    check_response,
    child_sa_payload,
    ike_sa_payload,
    select_child,
    select_ike,
)

GCM256 = Encryption(EncrId.AES_GCM_16, 256)
GCM128 = Encryption(EncrId.AES_GCM_16, 128)
CBC128 = Encryption(EncrId.AES_CBC, 128)
SHA256 = IntegId.HMAC_SHA2_256_128


def ike(*transforms: Transform, number: int = 1, spi: bytes = b"") -> Proposal:
    return Proposal(number, ProtocolId.IKE, spi, transforms)


def t(ttype: int, tid: int, key_length: int | None = None) -> Transform:
    return Transform(ttype, tid, key_length)


ENCR_GCM256 = t(TransformType.ENCR, EncrId.AES_GCM_16, 256)
PRF256 = t(TransformType.PRF, PrfId.HMAC_SHA2_256)
X25519 = t(TransformType.DH, DhGroup.CURVE25519)
P256 = t(TransformType.DH, DhGroup.ECP_256)


def test_ike_sa_payload_lists_every_configured_transform_with_key_lengths() -> None:
    payload = ike_sa_payload([IkeProposal()])
    assert payload.proposals == (ike(ENCR_GCM256, PRF256, X25519, P256),)


def test_chacha20_carries_no_key_length_attribute() -> None:
    proposal = IkeProposal(encryption=(Encryption(EncrId.CHACHA20_POLY1305),))
    encr = ike_sa_payload([proposal]).proposals[0].transforms[0]
    assert encr == t(TransformType.ENCR, EncrId.CHACHA20_POLY1305)


def test_responder_takes_the_first_initiator_proposal_it_accepts() -> None:
    offered = SaPayload(
        (
            ike(
                t(TransformType.ENCR, EncrId.AES_CBC, 256),
                PRF256,
                t(TransformType.INTEG, SHA256),
                X25519,
            ),
            ike(ENCR_GCM256, PRF256, X25519, number=2),
        )
    )
    chosen = select_ike(
        offered, [IkeProposal(), IkeProposal(encryption=(CBC128,), integrity=(SHA256,))]
    )
    assert chosen is not None
    assert (chosen.number, chosen.encr_id, chosen.encr_key_bits) == (2, EncrId.AES_GCM_16, 256)


def test_key_length_must_match_exactly() -> None:
    offered = SaPayload((ike(t(TransformType.ENCR, EncrId.AES_GCM_16, 128), PRF256, X25519),))
    assert select_ike(offered, [IkeProposal(encryption=(GCM256,))]) is None
    assert select_ike(offered, [IkeProposal(encryption=(GCM128,))]) is not None


def test_aes_without_key_length_attribute_never_matches() -> None:
    offered = SaPayload((ike(t(TransformType.ENCR, EncrId.AES_GCM_16), PRF256, X25519),))
    assert select_ike(offered, [IkeProposal()]) is None


def test_refused_algorithms_in_a_peer_proposal_simply_never_match() -> None:
    offered = SaPayload(
        (
            ike(
                t(TransformType.ENCR, EncrId.DES3),
                t(TransformType.PRF, PrfId.HMAC_MD5),
                t(TransformType.INTEG, IntegId.HMAC_MD5_96),
                X25519,
            ),
            ike(ENCR_GCM256, PRF256, X25519, number=2),
        )
    )
    chosen = select_ike(offered, [IkeProposal()])
    assert chosen is not None and chosen.number == 2


def test_configuration_refuses_3des_with_the_safe_alternative_named() -> None:
    with pytest.raises(LocalProtocolError, match="AES-GCM"):
        Encryption(EncrId.DES3, 192)


def test_unknown_transform_type_spoils_the_proposal() -> None:
    offered = SaPayload((ike(ENCR_GCM256, PRF256, X25519, t(77, 1)),))
    assert select_ike(offered, [IkeProposal()]) is None


def test_a_transform_with_an_unknown_attribute_is_unacceptable_but_its_siblings_count() -> None:
    # RFC 7296 section 3.3.6: such a transform is unacceptable; other transforms of the
    # same type are processed as usual.
    odd_x25519 = Transform(TransformType.DH, DhGroup.CURVE25519, None, bytes.fromhex("80070001"))
    offered = SaPayload((ike(ENCR_GCM256, PRF256, odd_x25519, P256),))
    chosen = select_ike(offered, [IkeProposal()])
    assert chosen is not None and chosen.dh_group == DhGroup.ECP_256


def test_a_proposal_whose_only_cipher_has_an_unknown_attribute_is_unacceptable() -> None:
    odd_gcm = Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256, bytes.fromhex("80070001"))
    offered = SaPayload((ike(odd_gcm, PRF256, X25519),))
    assert select_ike(offered, [IkeProposal()]) is None


def test_missing_dh_makes_an_ike_proposal_unacceptable() -> None:
    offered = SaPayload((ike(ENCR_GCM256, PRF256),))
    assert select_ike(offered, [IkeProposal()]) is None


def test_responder_prefers_the_group_of_the_initiators_ke() -> None:
    offered = SaPayload((ike(ENCR_GCM256, PRF256, X25519, P256),))
    chosen = select_ike(offered, [IkeProposal()], ke_group=DhGroup.ECP_256)
    assert chosen is not None and chosen.dh_group == DhGroup.ECP_256
    chosen = select_ike(offered, [IkeProposal()], ke_group=DhGroup.MODP_2048)
    assert chosen is not None and chosen.dh_group == DhGroup.CURVE25519


def test_non_aead_cipher_needs_integrity_from_the_peer() -> None:
    ours = IkeProposal(encryption=(CBC128,), integrity=(SHA256,))
    without = SaPayload((ike(t(TransformType.ENCR, EncrId.AES_CBC, 128), PRF256, X25519),))
    with_integ = SaPayload(
        (
            ike(
                t(TransformType.ENCR, EncrId.AES_CBC, 128),
                PRF256,
                t(TransformType.INTEG, SHA256),
                X25519,
            ),
        )
    )
    assert select_ike(without, [ours]) is None
    chosen = select_ike(with_integ, [ours])
    assert chosen is not None and chosen.integ_id == SHA256


def test_selection_answers_with_one_transform_of_each_type() -> None:
    offered = SaPayload(
        (ike(ENCR_GCM256, t(TransformType.ENCR, EncrId.AES_GCM_16, 128), PRF256, X25519, P256),)
    )
    chosen = select_ike(offered, [IkeProposal()])
    assert chosen is not None
    answer = chosen.to_sa_payload(b"")
    assert answer.proposals[0].transforms == (ENCR_GCM256, PRF256, X25519)


def test_check_response_accepts_a_subset_of_what_was_sent() -> None:
    sent = ike_sa_payload([IkeProposal()])
    answer = SaPayload((ike(ENCR_GCM256, PRF256, P256),))
    selection = check_response(sent, answer, spi_len=0)
    assert (selection.dh_group, selection.prf_id) == (DhGroup.ECP_256, PrfId.HMAC_SHA2_256)


@pytest.mark.parametrize(
    "answer",
    [
        SaPayload((ike(ENCR_GCM256, PRF256, X25519), ike(ENCR_GCM256, PRF256, X25519, number=2))),
        SaPayload((ike(t(TransformType.ENCR, EncrId.AES_GCM_16, 128), PRF256, X25519),)),
        SaPayload((ike(ENCR_GCM256, PRF256, X25519, P256),)),
        SaPayload((ike(ENCR_GCM256, PRF256, X25519, number=2),)),
        SaPayload((ike(ENCR_GCM256, X25519),)),
    ],
    ids=["two-proposals", "not-offered", "two-of-a-type", "wrong-number", "no-prf"],
)
def test_check_response_rejects_answers_we_did_not_offer(answer: SaPayload) -> None:
    sent = ike_sa_payload([IkeProposal()])
    with pytest.raises(RemoteProtocolError):
        check_response(sent, answer, spi_len=0)


def test_child_payload_leaves_dh_out_without_pfs() -> None:
    proposal = ChildProposal(dh=(DhGroup.CURVE25519,))
    without = child_sa_payload([proposal], b"\x00\x00\x00\x01", pfs=False)
    with_pfs = child_sa_payload([proposal], b"\x00\x00\x00\x01", pfs=True)
    assert all(tr.type != TransformType.DH for tr in without.proposals[0].transforms)
    assert t(TransformType.DH, DhGroup.CURVE25519) in with_pfs.proposals[0].transforms


def test_child_selection_ignores_dh_in_ike_auth() -> None:
    offered = child_sa_payload([ChildProposal(dh=(DhGroup.CURVE25519,))], b"abcd", pfs=True)
    chosen = select_child(offered, [ChildProposal()], pfs=False)
    assert chosen is not None and chosen.dh_group is None and chosen.spi == b"abcd"


def test_child_pfs_is_required_when_configured() -> None:
    offered = child_sa_payload([ChildProposal()], b"abcd", pfs=True)
    assert select_child(offered, [ChildProposal(dh=(DhGroup.CURVE25519,))], pfs=True) is None


def test_child_pfs_the_peer_insists_on_is_refused_without_configuration() -> None:
    offered = child_sa_payload([ChildProposal(dh=(DhGroup.CURVE25519,))], b"abcd", pfs=True)
    assert select_child(offered, [ChildProposal()], pfs=True) is None


def test_esn_choice_follows_the_peer_order() -> None:
    offered = child_sa_payload([ChildProposal(esn=(EsnId.ESN, EsnId.NO_ESN))], b"abcd", pfs=False)
    chosen = select_child(offered, [ChildProposal(esn=(EsnId.NO_ESN, EsnId.ESN))])
    assert chosen is not None and chosen.esn


def test_ah_proposal_matches_only_ah() -> None:
    ah = ChildProposal(protocol=ProtocolId.AH, encryption=(), integrity=(SHA256,))
    offered = child_sa_payload([ah], b"abcd", pfs=False)
    assert select_child(offered, [ChildProposal()]) is None
    chosen = select_child(offered, [ah])
    assert chosen is not None and chosen.protocol == ProtocolId.AH and chosen.encr_id is None


def test_esp_without_integrity_is_refused_in_configuration() -> None:
    with pytest.raises(LocalProtocolError, match="integrity"):
        ChildProposal(encryption=(CBC128,), integrity=())


def test_refused_algorithm_error_names_an_alternative() -> None:
    with pytest.raises(LocalProtocolError) as info:
        IkeProposal(prf=(PrfId.HMAC_MD5,))
    assert isinstance(info.value.__cause__, RefusedAlgorithm)
