"""The snapshot (``sas --json``) shows the IKE SA that exists now, also after a rekey.

An in-memory initiator/responder pair (:mod:`support.ike_pair`) negotiates and rekeys
for real; the view is built from each side's IkeSa the way the daemon builds it.
"""

from __future__ import annotations

from kipsec_sidecar.config import load_config_data, to_core
from kipsec_sidecar.core.ike.engine import IkeSa
from kipsec_sidecar.core.ike.events import IkeSaEstablished
from kipsec_sidecar.daemon.peers import Peer
from kipsec_sidecar.daemon.snapshot import ike_view
from kipsec_sidecar.state import IkeSaView
from support.ike_pair import RESPONDER_ADDR, IkePair, psk_config


def _peer() -> Peer:
    document = {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {"addresses": ["10.0.0.1"], "auth": {"psk": {"value": "a test secret"}}},
        "peers": [{"name": "b", "address": "10.0.0.2"}],
    }
    (plan,) = to_core(load_config_data(document))
    return Peer(plan=plan, fingerprint="")


def _view(pair: IkePair, sa: IkeSa) -> IkeSaView:
    """The view of ``sa`` with the IkeSaEstablished its side emitted, as the daemon keeps it."""
    peer = _peer()
    side = pair.i if sa is pair.initiator else pair.r
    peer.established[sa] = side.of(IkeSaEstablished)[0]
    return ike_view(peer, sa)


def _established() -> IkePair:
    pair = IkePair(
        psk_config("a.example", "b.example"),
        psk_config("b.example", "a.example", local_addr=RESPONDER_ADDR),
    )
    pair.run(5)
    assert pair.initiator.established and pair.responder.established
    return pair


def _ours(view: IkeSaView) -> str:
    return view.spi_i if view.initiator else view.spi_r


def test_the_views_say_who_initiated_the_ike_sa() -> None:
    pair = _established()
    assert _view(pair, pair.initiator).initiator
    assert not _view(pair, pair.responder).initiator


def test_after_a_rekey_by_the_original_responder_it_is_the_initiator() -> None:
    pair = _established()
    pair.responder.rekey_ike(pair.now)
    pair.run(5)
    rekeyer, other = _view(pair, pair.responder), _view(pair, pair.initiator)
    assert rekeyer.initiator and not other.initiator
    assert (rekeyer.spi_i, rekeyer.spi_r) == (
        pair.responder.spi_i.hex(),
        pair.responder.spi_r.hex(),
    )
    assert bytes.fromhex(_ours(rekeyer)) in pair.responder.local_spis()
    assert bytes.fromhex(_ours(other)) in pair.initiator.local_spis()
    assert rekeyer.encryption == other.encryption != ""
    assert rekeyer.dh_group == other.dh_group != ""
