"""The daemon computes its peers' reload fingerprints when a reload first compares them,
not at start (100 peers cost 26 ms of CPU there), and a reload still tells an unchanged
peer from a changed one exactly as when they were computed at start.

A real :class:`Sidecar` reloading documents from files, off the network (a recording
datapath, no sockets).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from kipsec_sidecar.config.load import load_config_data
from kipsec_sidecar.config.to_core import to_core
from kipsec_sidecar.daemon.peers import Peer
from kipsec_sidecar.daemon.reload import fingerprint
from kipsec_sidecar.daemon.sidecar import Sidecar
from support.recording_datapath import offline_sidecar


def document(*addresses: str) -> dict[str, Any]:
    """Peers pb, pc, ... at ``addresses``, onDemand, one PSK."""
    peers = [
        {"name": f"p{chr(ord('b') + n)}", "address": address, "start": "onDemand"}
        for n, address in enumerate(addresses)
    ]
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {
            "addresses": ["10.79.0.1"],
            "identity": {"fqdn": "pa.test"},
            "auth": {"psk": {"value": "kipsec lazy fingerprint key 0123456789"}},
        },
        "peers": peers,
    }


def test_a_start_computes_no_fingerprint_and_reloads_compare_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(document("10.79.0.2", "10.79.0.3")))

    async def main() -> None:
        car: Sidecar = offline_sidecar(path, monkeypatch)
        await car.start()
        assert [peer.known_fingerprint for peer in car.peers.values()] == [None, None]
        pb = car.peers["pb"]

        assert await car.reload() == []  # the same document: no peer touched
        assert car.peers["pb"] is pb
        assert pb.known_fingerprint == fingerprint(pb.plan)

        path.write_text(json.dumps(document("10.79.0.2", "10.79.0.4")))
        assert await car.reload() == ["replaced peer pc (configuration changed)"]
        assert car.peers["pb"] is pb
        # the replacement took the fingerprint the reload computed for its plan
        assert car.peers["pc"].known_fingerprint == fingerprint(car.peers["pc"].plan)

        car.hurry()
        await car.stop()

    asyncio.run(main())


def test_a_peer_computes_its_fingerprint_once_and_forgets_it_with_its_plan() -> None:
    (one,) = to_core(load_config_data(document("10.79.0.2")))
    (other,) = to_core(load_config_data(document("10.79.0.5")))
    peer = Peer(plan=one)
    assert peer.fingerprint == fingerprint(one)
    assert peer.known_fingerprint == fingerprint(one)
    peer.use(other)
    assert peer.known_fingerprint is None
    assert peer.fingerprint == fingerprint(other) != fingerprint(one)
    peer.use(one, "given")  # a fingerprint the caller computed is taken as it is
    assert peer.fingerprint == "given"
