"""The configuration as Kubernetes delivers it: late, then changed by a ``..data`` swap.

Each sidecar reads ``config.yaml`` from a directory laid out the way the kubelet's
atomic writer lays out a Secret volume (:mod:`support.atomic_writer`). Sidecar ``pa``
starts before its pod has a configuration (the operator's empty bootstrap Secret): it
waits, with no control socket and no SAs, and negotiates as soon as the file appears.
Then both configurations are swapped for ones of the same size and mtime that change
the peer's ESP proposal; both sidecars follow the swap without a signal.

With configuration delivery on, ``pa`` polls an "operator" (:mod:`support.config_server`,
HTTPS inside its namespace, trusted through the ``operator-ca.crt`` of its bootstrap
Secret) and starts from, then follows, the copy it writes to its run directory while
the mounted Secret is still the bootstrap one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.atomic_writer import publish
from support.netns import Topology, wait_for_output
from support.operator_cluster import self_signed
from support.sidecars import REPO, Sidecar, peer_entry, wait_until

pytestmark = pytest.mark.netns

POLL = 0.2
"""Seconds between the sidecars' checks of their configuration files."""
MTIME = 1_800_000_000.0
"""The mtime every published file gets, so a swap changes neither size nor mtime."""


def _publish(sidecar: Sidecar, volume: Path, peer: str, esp: str) -> None:
    entry = peer_entry(sidecar.topology, peer, mode="tunnel", proposals={"esp": [esp]})
    document = json.dumps(sidecar.document([entry]), indent=1).encode()
    publish(volume, {"config.yaml": document}, mtime=MTIME)


def _start(
    sidecar: Sidecar,
    volume: Path,
    *,
    delivery: Path | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """``run`` on ``volume/config.yaml`` with a short poll (and configuration delivery
    into ``delivery``); does not wait for anything."""
    sidecar.config = volume / "config.yaml"
    extra = f", operator_config_dir={str(delivery)!r}" if delivery is not None else ""
    code = (
        "import sys; from kipsec_sidecar.daemon import run; "
        f"sys.exit(run(sys.argv[1], config_poll_interval={POLL}{extra}))"
    )
    with sidecar.log.open("ab") as log:
        sidecar.proc = sidecar.topology.popen(
            sidecar.pod,
            [sys.executable, "-c", code, str(sidecar.config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, **(env or {})},
        )


def _child(sidecar: Sidecar, peer: str, encryption: str) -> bool:
    return any(c["encryption"] == encryption for c in sidecar.installed(peer))


def _two_pods(topology: Topology, tmp_path: Path) -> tuple[Sidecar, Sidecar]:
    """Pods pa and pb on two nodes, and their (not yet started) sidecars."""
    for index, pod in enumerate(("pa", "pb")):
        topology.add_node(f"n{index}")
        topology.add_pod(pod, f"n{index}")
    return Sidecar(topology, "pa", tmp_path), Sidecar(topology, "pb", tmp_path)


def _wait_both_on_aes128(a: Sidecar, b: Sidecar) -> None:
    def on_aes128() -> bool:
        return _child(a, "pb", "aes-gcm-16-128") and _child(b, "pa", "aes-gcm-16-128")

    try:
        wait_until("both sides on AES-128-GCM after the change", on_aes128, timeout=20)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- pa ---\n{a.tail()}\n--- pb ---\n{b.tail()}") from None


def test_a_late_configuration_is_waited_for_and_a_data_swap_is_followed(
    topology: Topology, tmp_path: Path
) -> None:
    a, b = _two_pods(topology, tmp_path)
    volume_a, volume_b = tmp_path / "secret-pa", tmp_path / "secret-pb"
    publish(volume_a, {})  # the bootstrap Secret: no config.yaml yet
    _publish(b, volume_b, "pa", "aes256gcm16")
    _start(a, volume_a)
    _start(b, volume_b)

    wait_until("pa to say it waits", lambda: "waiting for configuration" in a.log.read_text())
    time.sleep(3 * POLL)
    assert a.running, a.tail()
    assert not Path(a.socket).exists(), "a waiting sidecar must not serve control yet"

    _publish(a, volume_a, "pb", "aes256gcm16")
    wait_until("pa-pb on AES-256-GCM", lambda: _child(a, "pb", "aes-gcm-16-256"), timeout=15)
    topology.ping("pa", "pb", count=2)

    _publish(a, volume_a, "pb", "aes128gcm16")  # same length, same mtime: only the bytes differ
    _publish(b, volume_b, "pa", "aes128gcm16")

    _wait_both_on_aes128(a, b)
    assert a.sas()["config_generation"] == 2
    topology.ping("pa", "pb", count=2)


OPERATOR_PORT = 18443
TOKEN = "pa-projected-token"


def _serve(sidecar: Sidecar, served: Path, peer: str, esp: str) -> None:
    """Make the stand-in operator serve ``sidecar``'s document for ``peer``."""
    entry = peer_entry(sidecar.topology, peer, mode="tunnel", proposals={"esp": [esp]})
    tmp = served / "config.yaml.tmp"
    tmp.write_text(json.dumps(sidecar.document([entry]), indent=1))
    os.replace(tmp, served / "config.yaml")


def test_a_sidecar_starts_from_and_follows_the_operators_copy_before_the_kubelets(
    topology: Topology, tmp_path: Path
) -> None:
    a, b = _two_pods(topology, tmp_path)
    pki = tmp_path / "operator-tls"
    pki.mkdir()
    cert, key = self_signed(pki)
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(cert, served / "operator-ca.crt")
    _serve(a, served, "pb", "aes256gcm16")
    server = topology.popen(
        "pa",
        [
            sys.executable,
            str(REPO / "tests" / "support" / "config_server.py"),
            *(str(p) for p in (served, cert, key, OPERATOR_PORT)),
            TOKEN,
        ],
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None
    wait_for_output(server.stdout, b"ready", timeout=10)
    (tmp_path / "token").write_text(TOKEN)
    volume_a, volume_b = tmp_path / "secret-pa", tmp_path / "secret-pb"
    publish(volume_a, {"operator-ca.crt": cert.read_bytes()})  # the bootstrap Secret
    _publish(b, volume_b, "pa", "aes256gcm16")
    environment = {
        "KIPSEC_OPERATOR_URL": f"https://127.0.0.1:{OPERATOR_PORT}",
        "KIPSEC_TOKEN_FILE": str(tmp_path / "token"),
    }
    _start(a, volume_a, delivery=tmp_path / "run-pa", env=environment)
    _start(b, volume_b)

    wait_until("pa-pb on AES-256-GCM", lambda: _child(a, "pb", "aes-gcm-16-256"), timeout=20)
    assert not (volume_a / "config.yaml").exists()  # the kubelet has not caught up

    _serve(a, served, "pb", "aes128gcm16")
    _publish(b, volume_b, "pa", "aes128gcm16")

    _wait_both_on_aes128(a, b)
    topology.ping("pa", "pb", count=2)
    assert TOKEN not in a.log.read_text()
