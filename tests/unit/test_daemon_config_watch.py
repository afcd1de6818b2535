"""Following the configuration in a Secret volume: late arrival, ..data swaps, named files.

Real files in the kubelet's atomic-writer layout (:mod:`support.atomic_writer`), real
loads; the waiting daemon is the real ``run`` entry point on a loopback health port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kipsec_sidecar.config.load import load_config
from kipsec_sidecar.daemon import EXIT_OK, _main
from kipsec_sidecar.daemon.config_watch import (
    ConfigWatch,
    digest,
    referenced_files,
    wait_for_document,
)
from support.atomic_writer import publish

PSK = b"config watch test pre-shared key 0123456789"


def document(address: str = "10.10.2.2", **peer: Any) -> bytes:
    doc = {
        "apiVersion": "kipsec.io/v1alpha1",
        "kind": "SidecarConfig",
        "local": {"addresses": ["10.10.1.2"], "auth": {"psk": {"secretFile": "psk"}}},
        "peers": [{"name": "pb", "address": address, **peer}],
    }
    return json.dumps(doc, indent=1).encode()


def volume_with(tmp_path: Path, doc: bytes, psk: bytes = PSK, **options: Any) -> Path:
    publish(tmp_path / "etc", {"config.yaml": doc, "psk": psk}, **options)
    return tmp_path / "etc" / "config.yaml"


def watching(path: Path) -> ConfigWatch:
    watch = ConfigWatch(str(path))
    before = watch.begin()
    watch.applied(load_config(path), before)
    return watch


def test_referenced_files_are_every_file_the_document_names_resolved_against_it(
    tmp_path: Path,
) -> None:
    doc = json.loads(document())
    doc["peers"].append(
        {
            "name": "pc",
            "address": "10.10.3.2",
            "auth": {
                "certificate": {
                    "certFile": "/identity/tls.crt",
                    "keyFile": "/identity/tls.key",
                    "caFiles": ["ca-1.crt", "ca-2.crt"],
                }
            },
        }
    )
    path = volume_with(tmp_path, json.dumps(doc).encode())

    found = referenced_files(load_config(path))

    volume = str(tmp_path / "etc")
    assert found == tuple(
        sorted(
            [
                f"{volume}/psk",
                f"{volume}/ca-1.crt",
                f"{volume}/ca-2.crt",
                "/identity/tls.crt",
                "/identity/tls.key",
            ]
        )
    )


def test_a_data_swap_with_equal_size_and_mtime_is_a_change(tmp_path: Path) -> None:
    path = volume_with(tmp_path, document("10.10.2.2"), mtime=1_700_000_000)
    watch = watching(path)
    stat = os.stat(path)

    volume_with(tmp_path, document("10.10.2.3"), mtime=1_700_000_000)

    assert (os.stat(path).st_size, os.stat(path).st_mtime) == (stat.st_size, stat.st_mtime)
    assert watch.changed() is not None


def test_an_unchanged_volume_is_no_change(tmp_path: Path) -> None:
    path = volume_with(tmp_path, document())
    watch = watching(path)

    volume_with(tmp_path, document())  # republished with the same contents

    assert watch.changed() is None


def test_a_new_psk_under_the_same_document_is_a_change(tmp_path: Path) -> None:
    path = volume_with(tmp_path, document())
    watch = watching(path)

    volume_with(tmp_path, document(), psk=b"a rotated pre-shared key 0123456789abcdef")

    assert watch.changed() is not None


def test_a_refused_document_is_not_reported_again_until_it_changes(tmp_path: Path) -> None:
    path = volume_with(tmp_path, document())
    watch = watching(path)
    volume_with(tmp_path, b'{"apiVersion": "kipsec.io/v1alpha1", "kind": "Sidecar')
    bad = watch.changed()
    assert bad is not None

    watch.refused(bad)

    assert watch.changed() is None
    volume_with(tmp_path, document("10.10.2.9"))
    assert watch.changed() is not None


def test_a_refused_document_is_tried_again_when_a_file_it_names_appears(tmp_path: Path) -> None:
    # The document loads but names a file that does not exist yet (a certificate the
    # enrollment has still to write): the running document does not name it, so only
    # watching the refused document's own files shows its arrival.
    path = volume_with(tmp_path, document())
    watch = watching(path)
    doc = json.loads(document())
    doc["peers"][0]["auth"] = {"psk": {"secretFile": str(tmp_path / "later.psk")}}
    volume_with(tmp_path, json.dumps(doc).encode())
    before = watch.changed()
    assert before is not None

    watch.refused(before, load_config(path))

    assert watch.changed() is None
    (tmp_path / "later.psk").write_bytes(PSK)
    assert watch.changed() is not None


def test_a_document_that_disappears_is_no_change(tmp_path: Path) -> None:
    path = volume_with(tmp_path, document())
    watch = watching(path)

    publish(tmp_path / "etc", {})  # the operator's bootstrap Secret again

    assert watch.changed() is None


def test_a_change_during_a_load_is_loaded_again(tmp_path: Path) -> None:
    path = volume_with(tmp_path, document("10.10.2.2"))
    watch = ConfigWatch(str(path))
    before = watch.begin()
    config = load_config(path)
    volume_with(tmp_path, document("10.10.2.3"))  # swapped between the read and applied()

    watch.applied(config, before)

    assert watch.changed() is not None


def test_the_generation_counts_applied_configurations(tmp_path: Path) -> None:
    path = volume_with(tmp_path, document())
    watch = watching(path)
    volume_with(tmp_path, document("10.10.2.3"))

    watch.applied(load_config(path), watch.begin())

    assert watch.generation == 2
    assert watch.current is not None
    assert watch.current.document == digest(str(path)).document


def waited_for(paths: list[Path], then: Callable[[], object]) -> Any:
    """Wait on ``paths``; check it still waits after 0.2 s, call ``then``, return the result."""

    async def main() -> Any:
        stopped = asyncio.Event()
        names = [str(path) for path in paths]
        waiter = asyncio.create_task(wait_for_document(names, interval=0.02, stopped=stopped))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        then()
        async with asyncio.timeout(5):
            return await waiter

    return asyncio.run(main())


def test_waiting_returns_once_the_document_appears(tmp_path: Path) -> None:
    publish(tmp_path / "etc", {})
    path = tmp_path / "etc" / "config.yaml"

    waited = waited_for([path], lambda: volume_with(tmp_path, document("10.10.2.7")))

    assert waited is not None
    config, _, source = waited
    assert source == str(path)
    assert config.peers[0].address == "10.10.2.7"


def test_waiting_on_two_sources_takes_the_first_that_has_a_document(tmp_path: Path) -> None:
    publish(tmp_path / "etc", {})
    delivered = tmp_path / "run" / "config.yaml"

    def deliver() -> None:
        publish(tmp_path / "run", {"config.yaml": document("10.10.2.8"), "psk": PSK})

    config, _, source = waited_for([tmp_path / "etc" / "config.yaml", delivered], deliver)

    assert source == str(delivered)
    assert config.peers[0].address == "10.10.2.8"


def test_waiting_goes_on_past_an_invalid_document_and_logs_it_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish(tmp_path / "etc", {"config.yaml": b"apiVersion: kipsec.io/v1alpha1\nkind: Nope\n"})
    path = tmp_path / "etc" / "config.yaml"

    with caplog.at_level(logging.INFO, logger="kipsec_sidecar.daemon.config_watch"):
        assert waited_for([path], lambda: volume_with(tmp_path, document())) is not None

    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("waiting for configuration") == 1
    assert messages.count("configuration not loaded; still waiting") == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_a_daemon_without_its_file_fails_healthz_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    port = _free_port()
    path = tmp_path / "etc" / "config.yaml"

    async def main() -> tuple[int, list[tuple[int, bytes]]]:
        daemon = asyncio.create_task(
            _main(str(path), health_listen=f"127.0.0.1:{port}", config_poll_interval=0.02)
        )
        answers: list[tuple[int, bytes]] = []
        async with asyncio.timeout(10):
            while True:
                try:
                    answers.append(await _get(port, "/healthz"))
                    break
                except OSError:
                    await asyncio.sleep(0.02)
            answers.append(await _get(port, "/status"))
            os.kill(os.getpid(), signal.SIGTERM)
            return await daemon, answers

    code, answers = asyncio.run(main())

    assert code == EXIT_OK
    (health, health_body), (status, status_body) = answers
    assert health == 503
    assert health_body.startswith(b"waiting for configuration: ")
    assert status == 503
    assert json.loads(status_body)["phase"] == "waiting"
