"""The snapshot (``sas --json``) shows the IKE SA that exists now, also after a rekey,
and an IKEv1 SA whose ISAKMP SA expired while its IPsec pair lives on as ``detached``.

An in-memory initiator/responder pair (:mod:`support.ike_pair`) negotiates and rekeys
for real; the view is built from each side's IkeSa the way the daemon builds it.
"""

from __future__ import annotations

from kipsec_sidecar.config import load_config_data, to_core
from kipsec_sidecar.core.ike.config import Lifetime
from kipsec_sidecar.core.ike.engine import IkeSa
from kipsec_sidecar.core.ike.events import ChildSaEstablished, IkeSaEstablished
from kipsec_sidecar.core.negotiated import sa_pair
from kipsec_sidecar.daemon.peers import InstalledChild, Peer, without_keys
from kipsec_sidecar.daemon.snapshot import ike_view, peer_view
from kipsec_sidecar.state import IkeSaView
from support.ike_pair import RESPONDER_ADDR, IkePair, pair_configs, psk_config


def _peer() -> Peer:
    document = {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {"addresses": ["10.0.0.1"], "auth": {"psk": {"value": "a test secret"}}},
        "peers": [{"name": "b", "address": "10.0.0.2"}],
    }
    (plan,) = to_core(load_config_data(document))
    return Peer(plan=plan)


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


def test_a_detached_ikev1_sa_is_shown_as_such_and_its_pair_keeps_the_peer_established() -> None:
    """The ISAKMP SA expired (no re-authentication) but the IPsec pair lives on: the
    view says ``detached`` on the IKE SA line, counts no IKE SA, and the peer stays
    ``established`` because its pair still carries traffic."""
    short = Lifetime(rekey_after=0, expire_after=60)
    pair = IkePair(*pair_configs(version=1, i_lifetime=short, r_lifetime=short), version=1)
    pair.run(100)
    sa = pair.initiator
    assert sa.detached and len(sa.children) == 1
    peer = _peer()
    peer.ike_sas.append(sa)
    peer.established[sa] = pair.i.of(IkeSaEstablished)[0]
    event = pair.i.of(ChildSaEstablished)[0]
    ipsec = sa_pair(event, "10.0.0.1", "10.0.0.2")
    peer.children.established(
        InstalledChild(
            event=without_keys(event),
            inbound=ipsec.inbound,
            outbound=ipsec.outbound,
            encapsulation="raw",
            installed_at=0.0,
            rekey_at=None,
            expire_at=None,
        )
    )
    view = peer_view(peer)
    assert view.ike_sa is not None and view.ike_sa.state == "detached"
    assert view.ike_sas == 0
    assert view.state == "established"
    assert [c.spi_in for c in view.children] == [event.spi_in.hex()]
