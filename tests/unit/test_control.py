"""The control socket: JSON lines over a real Unix socket, served by ControlServer."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
import time
from typing import Any

import pytest

from kipsec_sidecar.config.model import DEFAULT_CONTROL_SOCKET
from kipsec_sidecar.control import (
    DEFAULT_SOCKET,
    MAX_REQUEST,
    ControlClient,
    ControlConnectionError,
    ControlServer,
)
from kipsec_sidecar.state import ControlError, ControlTimeout
from support.controller_double import ControllerDouble, example_snapshot, running, short_dir


def raw_exchange(path: str, data: bytes, lines: int = 1) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(data)
        received = b""
        while received.count(b"\n") < lines:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return [json.loads(line) for line in received.splitlines()]


def test_sas_returns_the_snapshot_json_exactly() -> None:
    with running() as (server, _):
        result = ControlClient(server.path).request("sas")
    assert result == json.loads(json.dumps(example_snapshot().to_json()))
    assert result["jsonVersion"] == 1
    assert result["ready"] is True


def test_sas_for_one_peer_lists_only_that_peer() -> None:
    with running() as (server, _):
        result = ControlClient(server.path).request("sas", peer="c")
    assert [peer["name"] for peer in result["peers"]] == ["c"]


def test_sas_for_an_unknown_peer_is_an_error() -> None:
    with running() as (server, _), pytest.raises(ControlError, match="unknown peer 'zz'"):
        ControlClient(server.path).request("sas", peer="zz")


def test_initiate_calls_the_controller() -> None:
    with running() as (server, controller):
        assert ControlClient(server.path).request("initiate", peer="b") is None
    assert controller.actions == [("initiate", "b")]


@pytest.mark.parametrize("kind", ["child", "ike"])
def test_rekey_calls_the_controller_with_the_kind(kind: str) -> None:
    with running() as (server, controller):
        ControlClient(server.path).request("rekey", peer="b", kind=kind)
    assert controller.actions == [("rekey", "b", kind)]


def test_terminate_calls_the_controller() -> None:
    with running() as (server, controller):
        ControlClient(server.path).request("terminate", peer="c")
    assert controller.actions == [("terminate", "c")]


def test_reload_returns_the_controllers_change_lines() -> None:
    with running() as (server, controller):
        assert ControlClient(server.path).request("reload") == ["+ d (added)", "- c (removed)"]
    assert controller.actions == [("reload",)]


@pytest.mark.parametrize("command", ["initiate", "terminate"])
def test_an_unknown_peer_answers_ok_false_with_the_controllers_message(command: str) -> None:
    with running() as (server, controller):
        [answer] = raw_exchange(
            server.path, json.dumps({"command": command, "peer": "x"}).encode() + b"\n"
        )
    assert answer == {"ok": False, "error": "unknown peer 'x'"}
    assert controller.actions == []


@pytest.mark.parametrize(
    ("request_line", "error"),
    [
        (b"{not json\n", "request is not valid JSON"),
        (b"\xff\xfe\n", "request is not valid JSON"),
        (b"[1, 2]\n", "request must be a JSON object"),
        (b'{"command": "explode"}\n', "unknown command 'explode': use one of sas, initiate"),
        (b'{"peer": "b"}\n', "unknown command 'None'"),
        (b'{"command": "initiate"}\n', "initiate: field 'peer' must be a peer name"),
        (b'{"command": "initiate", "peer": 7}\n', "initiate: field 'peer' must be a peer name"),
        (b'{"command": "rekey", "peer": "b"}\n', "rekey: field 'kind' must be 'child' or 'ike'"),
        (b'{"command": "rekey", "peer": "b", "kind": "all"}\n', "field 'kind' must be"),
        (b'{"command": "reload", "force": true}\n', "reload: unknown field(s) force"),
    ],
)
def test_bad_requests_answer_an_error_and_keep_the_connection(
    request_line: bytes, error: str
) -> None:
    with running() as (server, controller):
        answers = raw_exchange(server.path, request_line + b'{"command": "sas"}\n', lines=2)
    assert answers[0]["ok"] is False
    assert error in answers[0]["error"]
    assert answers[1]["ok"] is True
    assert controller.actions == []


def test_several_requests_on_one_connection_are_answered_in_order() -> None:
    with running() as (server, controller):
        data = b"".join(
            json.dumps(r).encode() + b"\n"
            for r in (
                {"command": "initiate", "peer": "b"},
                {"command": "rekey", "peer": "c", "kind": "ike"},
                {"command": "terminate", "peer": "b"},
            )
        )
        answers = raw_exchange(server.path, b"\n" + data, lines=3)
    assert [a["ok"] for a in answers] == [True, True, True]
    assert controller.actions == [("initiate", "b"), ("rekey", "c", "ike"), ("terminate", "b")]


def test_an_oversized_request_is_refused_and_the_server_keeps_serving() -> None:
    with running() as (server, _):
        [answer] = raw_exchange(server.path, b'{"command": "' + b"a" * (2 * MAX_REQUEST) + b"\n")
        assert answer == {"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}
        assert ControlClient(server.path).request("sas")["jsonVersion"] == 1


def test_several_clients_are_served_at_once() -> None:
    with running(ControllerDouble(action_delay=0.3)) as (server, controller):
        results: list[object] = []

        def initiate(peer: str) -> None:
            results.append(ControlClient(server.path, timeout=5).request("initiate", peer=peer))

        threads = [threading.Thread(target=initiate, args=(p,)) for p in ("b", "c", "b", "c")]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=5)
        elapsed = time.monotonic() - started
    assert results == [None] * 4
    assert len(controller.actions) == 4
    assert elapsed < 1.0, f"clients were served one after the other ({elapsed:.2f} s)"


def test_a_stuck_action_answers_a_timeout_error() -> None:
    slow = ControllerDouble(action_delay=5)
    with (
        running(slow, action_timeout=0.2) as (server, _),
        pytest.raises(ControlError, match=r"rekey: no answer within 0.2 s"),
    ):
        ControlClient(server.path).request("rekey", peer="b", kind="child")


def test_an_unexpected_controller_failure_is_an_error_not_a_crash() -> None:
    class Failing(ControllerDouble):
        async def terminate(self, peer: str, wait: float | None = None) -> None:
            raise RuntimeError("bug")

    with running(Failing()) as (server, _):
        with pytest.raises(ControlError, match=r"terminate: internal error \(RuntimeError\)"):
            ControlClient(server.path).request("terminate", peer="b")
        assert ControlClient(server.path).request("sas")["ready"] is True


def test_the_socket_file_is_mode_0600_and_removed_on_close() -> None:
    with running() as (server, _):
        mode = os.stat(server.path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(server.path)).st_mode) == 0o700
        assert os.listdir(os.path.dirname(server.path)) == ["control.sock"]
    assert not os.path.exists(server.path)


def test_a_stale_socket_file_is_replaced() -> None:
    with short_dir() as directory:
        path = str(directory / "c.sock")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()  # the file stays; nobody listens

        async def main() -> object:
            async with ControlServer(ControllerDouble(), path):
                return await asyncio.to_thread(ControlClient(path).request, "reload")

        assert asyncio.run(main()) == ["+ d (added)", "- c (removed)"]


def test_a_second_server_on_a_live_socket_is_refused() -> None:
    with running() as (server, _):
        second = ControlServer(ControllerDouble(), server.path)
        with pytest.raises(ControlError, match="is in use: is another sidecar running"):
            asyncio.run(second.start())
        assert ControlClient(server.path).request("sas")["jsonVersion"] == 1


def test_a_regular_file_at_the_socket_path_is_not_replaced() -> None:
    with short_dir() as directory:
        path = directory / "c.sock"
        path.write_text("precious")
        with pytest.raises(ControlError, match="exists and is not a socket"):
            asyncio.run(ControlServer(ControllerDouble(), str(path)).start())
        assert path.read_text() == "precious"


def test_the_client_says_when_no_sidecar_is_running() -> None:
    with short_dir() as directory:
        path = str(directory / "absent.sock")
        with pytest.raises(ControlConnectionError) as failure:
            ControlClient(path).request("sas")
    assert path in str(failure.value)
    assert "the sidecar is not running" in str(failure.value)


def test_the_client_says_when_the_socket_is_stale() -> None:
    with short_dir() as directory:
        path = str(directory / "stale.sock")
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(path)
        stale.close()
        with pytest.raises(ControlConnectionError, match="nothing listens there"):
            ControlClient(path).request("sas")


def test_the_default_path_matches_the_configuration_default() -> None:
    assert DEFAULT_SOCKET == DEFAULT_CONTROL_SOCKET


def test_close_cuts_connected_clients_without_loop_errors() -> None:
    loop_errors: list[dict[str, object]] = []

    async def main(path: str) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        server = ControlServer(ControllerDouble(), path)
        await server.start()
        reader, writer = await asyncio.open_unix_connection(path)
        await asyncio.sleep(0.05)
        async with asyncio.timeout(2):
            await server.close()
            assert await reader.read() == b""
        writer.close()
        await asyncio.sleep(0.05)

    with short_dir() as directory:
        asyncio.run(main(str(directory / "c.sock")))
    assert loop_errors == []


def test_wait_is_passed_to_the_controller_and_its_outcome_answered() -> None:
    with running(ControllerDouble(wait_failure="NO_PROPOSAL_CHOSEN")) as (server, controller):
        client = ControlClient(server.path)
        assert client.request("initiate", peer="b") is None  # without wait: not awaited
        with pytest.raises(ControlError, match="NO_PROPOSAL_CHOSEN") as failed:
            client.request("initiate", peer="b", wait=3)
        assert not isinstance(failed.value, ControlTimeout)
    assert controller.actions == [("initiate", "b"), ("initiate", "b", "3.0")]


def test_a_wait_longer_than_the_action_timeout_is_answered_timeout() -> None:
    """The wait extends the server's action timeout: the controller's own timeout wins."""
    with running(ControllerDouble(wait_failure="timeout"), action_timeout=0.1) as (server, _):
        answer = raw_exchange(server.path, b'{"command": "rekey", "peer": "b", "kind": "ike", '
                              b'"wait": 0.5}\n')  # fmt: skip
        with pytest.raises(ControlTimeout, match=r"within 0.5 s"):
            ControlClient(server.path).request("terminate", peer="b", wait=0.5)
    assert answer == [{"ok": False, "error": "timeout: no outcome within 0.5 s", "timeout": True}]


@pytest.mark.parametrize("wait", [0, -1, True, "5", 3601])
def test_a_bad_wait_is_refused_naming_the_field(wait: object) -> None:
    with running() as (server, controller):
        request = json.dumps({"command": "initiate", "peer": "b", "wait": wait}).encode()
        (answer,) = raw_exchange(server.path, request + b"\n")
    assert answer["ok"] is False and "field 'wait'" in answer["error"], answer
    assert controller.actions == []
