"""One endpoint for both protocols: datagrams go to the IKEv1 or IKEv2 engine by the
header's version byte, and a peer is answered only in the version it is configured for."""

from __future__ import annotations

from dataclasses import replace

from kipsec_sidecar.core.ike.config import Address, IkeConfig
from kipsec_sidecar.core.ike.engine import IkeSa
from kipsec_sidecar.core.ike.events import ChildSaEstablished
from kipsec_sidecar.core.ike_versions import VersionedEndpoint, ike_version
from kipsec_sidecar.core.ikev1.engine import IsakmpSa
from support.ike_pair import INITIATOR_ADDR, RESPONDER_ADDR, SeededRng, pair_configs


def v1_configs() -> tuple[IkeConfig, IkeConfig]:
    return pair_configs(version=1)


def v2_configs() -> tuple[IkeConfig, IkeConfig]:
    return pair_configs(version=2)


def run(a: VersionedEndpoint, b: VersionedEndpoint, a_addr: Address, b_addr: Address) -> None:
    """Pass datagrams both ways, following timers, until both ends fall silent."""
    now = 0.0
    for _ in range(200):
        moved = False
        for src, dst, src_addr in ((a, b, a_addr), (b, a, b_addr)):
            for data, _to in src.datagrams_to_send(now):
                moved = True
                dst.receive_datagram(data, (src_addr[0], 500), now)
        if not moved:
            timer = min((t for t in (a.get_timer(), b.get_timer()) if t is not None), default=None)
            if timer is None or timer > 30:
                return
            now = timer
            a.handle_timer(now)
            b.handle_timer(now)


def children(endpoint: VersionedEndpoint) -> list[ChildSaEstablished]:
    out = []
    while (item := endpoint.next_event()) is not None:
        if isinstance(item[1], ChildSaEstablished):
            out.append(item[1])
    return out


def test_each_peer_is_negotiated_in_its_configured_version() -> None:
    for make, kind in ((v1_configs, IsakmpSa), (v2_configs, IkeSa)):
        i_cfg, r_cfg = make()
        a = VersionedEndpoint(i_cfg, rng=SeededRng(1))
        b = VersionedEndpoint(r_cfg, rng=SeededRng(2))
        sa = a.initiate(i_cfg, RESPONDER_ADDR, 0.0)
        assert isinstance(sa, kind) and ike_version(sa) == i_cfg.version
        run(a, b, INITIATOR_ADDR, RESPONDER_ADDR)
        assert sa.established
        assert len(children(a)) == 1 and len(children(b)) == 1


def test_a_peer_configured_for_ikev2_is_not_answered_in_ikev1() -> None:
    i_cfg, r_cfg = v1_configs()
    v2_responder: IkeConfig = replace(r_cfg, version=2, proposals=v2_configs()[1].proposals)
    a = VersionedEndpoint(i_cfg, rng=SeededRng(1))
    b = VersionedEndpoint(v2_responder, rng=SeededRng(2))
    sa = a.initiate(i_cfg, RESPONDER_ADDR, 0.0)
    run(a, b, INITIATOR_ADDR, RESPONDER_ADDR)
    assert not sa.established
    assert b.refused["unknown_peer"] >= 1 and not b.v1.sas and not b.v2.sas


def test_a_datagram_of_another_version_is_dropped_and_counted() -> None:
    endpoint = VersionedEndpoint(v1_configs()[1], rng=SeededRng(2))
    datagram = bytearray(28)
    datagram[17] = 0x30
    endpoint.receive_datagram(bytes(datagram), INITIATOR_ADDR, 0.0)
    assert endpoint.unknown_version == 1 and endpoint.dropped == 1


def test_the_ikev1_endpoint_is_made_at_the_first_ikev1_datagram() -> None:
    # An IKEv2-only sidecar never loads the IKEv1 engine; its counters read as zeros
    # until then, every IKEv1 refusal reason included (the metric's label set).
    i_cfg, _ = v1_configs()
    _, v2_responder = v2_configs()
    a = VersionedEndpoint(i_cfg, rng=SeededRng(1))
    b = VersionedEndpoint(v2_responder, rng=SeededRng(2))
    assert b._v1 is None
    assert b.refused == dict.fromkeys(b.refused, 0)
    assert {"aggressive_mode", "half_open_limit", "unsupported_critical"} <= set(b.refused)
    b.handle_timer(1.0)
    assert b.get_timer() == b.v2.get_timer()
    assert (b.datagrams_to_send(1.0), b.next_event()) == ([], None)
    assert b._v1 is None and b.dropped == 0 and b.half_open_count == 0

    a.initiate(i_cfg, RESPONDER_ADDR, 0.0)  # the initiator needs its IKEv1 endpoint now
    assert a._v1 is not None
    run(a, b, INITIATOR_ADDR, RESPONDER_ADDR)
    assert b._v1 is not None and b.refused["unknown_peer"] >= 1
