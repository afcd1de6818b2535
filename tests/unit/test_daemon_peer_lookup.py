"""Which configured peer an IKE datagram's source address belongs to.

Every IKE_SA_INIT and the first event of each responder SA ask it; parsed addresses
are cached (``sidecar._ip``), so the answer must not depend on how an address is
written, and must follow a reload that moves a peer.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from kipsec_sidecar.daemon.sidecar import Sidecar
from support.recording_datapath import offline_sidecar


def document(v4: str) -> dict[str, Any]:
    peers = {"v4": v4, "v6": "2001:DB8:0::0:7", "other": "10.78.0.3"}
    return {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {
            "addresses": ["10.78.0.1", "2001:db8::1"],
            "auth": {"psk": {"value": "kipsec peer lookup key 0123456789"}},
        },
        "peers": [
            {"name": name, "address": address, "start": "onDemand"}
            for name, address in peers.items()
        ],
    }


def test_a_source_address_finds_its_peer_however_either_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(document("10.78.0.2")))

    async def main() -> None:
        car: Sidecar = offline_sidecar(path, monkeypatch)
        await car.start()
        for _ in range(2):  # the second round is answered from the cache
            assert car._peer_by_address("10.78.0.2") is car.peers["v4"]
            assert car._peer_by_address("2001:db8::7") is car.peers["v6"]
            assert car._peer_by_address("2001:0db8:0000::0007") is car.peers["v6"]
            assert car._peer_by_address("10.78.0.3") is car.peers["other"]
        assert car._peer_by_address("10.78.0.9") is None
        assert car._peer_by_address("::ffff:10.78.0.2") is None  # not the IPv4 peer
        assert car._peer_by_address("not an address") is None

        path.write_text(json.dumps(document("10.78.0.9")))
        await car.reload()
        assert car._peer_by_address("10.78.0.2") is None
        assert car._peer_by_address("10.78.0.9") is car.peers["v4"]

        car.hurry()
        await car.stop()

    asyncio.run(main())
