"""The two-worker userspace datapath's pure parts: leases, the SA hand-over, readiness.

Its configuration is tested in ``test_sidecar_config.py``; the packet path (sequence
uniqueness, replay, rekey, a killed worker) across namespaces in
``tests/e2e/test_userspace_workers.py``.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import pytest

from kipsec_sidecar.core.errors import SequenceExhausted
from kipsec_sidecar.core.ike.constants import EncrId, ProtocolId
from kipsec_sidecar.core.ipsec_sa import IpsecSa, Lifetime, Mode
from kipsec_sidecar.datapath import worker_wire
from kipsec_sidecar.datapath.outbound_worker import LeasedSa
from kipsec_sidecar.datapath.split import SplitDatapath
from kipsec_sidecar.health import not_ready_reason
from kipsec_sidecar.state import SidecarSnapshot


def _sa(**kwargs: Any) -> IpsecSa:
    return IpsecSa(
        spi=0x1001,
        src="10.0.0.1",
        dst="10.0.0.2",
        protocol=ProtocolId.ESP,
        mode=Mode.TUNNEL,
        encr_id=EncrId.AES_GCM_16,
        encr_key=os.urandom(36),
        **kwargs,
    )


def test_a_leased_sa_stops_at_the_end_of_its_lease_and_goes_on_when_extended() -> None:
    leased = LeasedSa(lease_end=3, next_seq=2, **worker_wire.sa_fields(_sa()))
    assert [leased.next_sequence(), leased.next_sequence()] == [2, 3]
    with pytest.raises(SequenceExhausted):
        leased.next_sequence()
    leased.lease_end = 4
    assert leased.next_sequence() == 4


def test_a_lease_never_reaches_past_the_hard_packet_limit_or_the_sequence_space() -> None:
    assert SplitDatapath._lease_for(_sa(), 1) == worker_wire.LEASE
    limited = _sa(lifetime=Lifetime(hard_packets=100))
    limited.packets = 40
    assert SplitDatapath._lease_for(limited, 41) == 100
    assert SplitDatapath._lease_for(_sa(), 0xFFFFFFF0) == 0xFFFFFFFF


def test_the_sa_crosses_to_the_worker_with_its_keys() -> None:
    sa = _sa()
    copy = IpsecSa(**worker_wire.sa_fields(sa))
    assert copy.encr_key == sa.encr_key and copy.spi == sa.spi and copy.mode is sa.mode
    message = worker_wire.decode(pickle.dumps({"op": "x", "sa": sa.spi}))
    assert message == {"op": "x", "sa": 0x1001}


def test_a_failed_datapath_makes_the_sidecar_not_ready_and_says_why() -> None:
    snapshot = SidecarSnapshot(
        version="test",
        datapath="userspace",
        datapath_reason="configured",
        started_at=0.0,
        peers=(),
        datapath_failed=True,
    )
    assert not snapshot.ready
    assert "outbound worker" in not_ready_reason(snapshot)
