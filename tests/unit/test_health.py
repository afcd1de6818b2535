"""/metrics, /healthz and /readyz over a real TCP socket on loopback, and what is refused."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kipsec_sidecar.exposition import Registry
from kipsec_sidecar.health import MAX_REQUEST_HEAD, HealthServer, parse_listen
from kipsec_sidecar.metrics import build_registry
from support.controller_double import ControllerDouble, not_ready_snapshot

Response = tuple[int, dict[str, str], bytes]


async def exchange(port: int, request: bytes, timeout: float = 5.0) -> Response:
    """Send raw bytes, read until the server closes; status, headers, body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split(" ")[1]), headers, body


def get(port: int, path: str) -> Awaitable[Response]:
    return exchange(port, f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())


def serve(
    test: Callable[[HealthServer], Awaitable[None]],
    controller: ControllerDouble | None = None,
    **options: float,
) -> None:
    """Run ``test`` against a server on a free loopback port, in a fresh event loop."""
    controller = controller or ControllerDouble()

    async def main() -> None:
        server = HealthServer(
            controller,
            build_registry(controller),
            "127.0.0.1:0",
            **options,  # type: ignore[arg-type]
        )
        async with server:
            async with asyncio.timeout(15):
                await test(server)

    asyncio.run(main())


def test_healthz_answers_200_while_the_loop_runs() -> None:
    async def test(server: HealthServer) -> None:
        status, headers, body = await get(server.port, "/healthz")
        assert (status, body) == (200, b"ok\n")
        assert headers["Connection"] == "close"

    serve(test)


def test_readyz_is_200_when_every_peer_has_an_installed_child() -> None:
    async def test(server: HealthServer) -> None:
        assert await get(server.port, "/readyz") == (
            200,
            {
                "Content-Type": "text/plain; charset=utf-8",
                "Content-Length": "6",
                "Connection": "close",
                "Cache-Control": "no-store",
            },
            b"ready\n",
        )

    serve(test)


def test_readyz_is_503_naming_the_peers_not_ready() -> None:
    async def test(server: HealthServer) -> None:
        status, _, body = await get(server.port, "/readyz")
        assert status == 503
        assert body == b"not ready: no installed child SA for 1 peer(s): d (connecting)\n"

    serve(test, ControllerDouble(not_ready_snapshot()))


def test_readyz_follows_the_snapshot_as_it_changes() -> None:
    controller = ControllerDouble(not_ready_snapshot())

    async def test(server: HealthServer) -> None:
        assert (await get(server.port, "/readyz"))[0] == 503
        controller.current = replace(controller.current, peers=controller.current.peers[:1])
        assert (await get(server.port, "/readyz"))[0] == 200

    serve(test, controller)


def test_status_is_the_snapshot_json_with_the_running_phase() -> None:
    controller = ControllerDouble(not_ready_snapshot())

    async def test(server: HealthServer) -> None:
        status, headers, body = await get(server.port, "/status")
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        expected = {"phase": "running", **controller.current.to_json()}
        assert json.loads(body) == json.loads(json.dumps(expected))

    serve(test, controller)


def test_without_a_controller_every_probe_says_why_it_waits() -> None:
    async def main() -> None:
        server = HealthServer(None, Registry(), "127.0.0.1:0", waiting="waiting for X")
        async with server:
            for path in ("/healthz", "/readyz"):
                assert (await get(server.port, path))[::2] == (503, b"waiting for X\n")
            status, _, body = await get(server.port, "/status")
            assert (status, json.loads(body)) == (
                503,
                {"phase": "waiting", "reason": "waiting for X"},
            )
            assert (await get(server.port, "/metrics"))[0] == 200

    asyncio.run(main())


def test_metrics_is_the_prometheus_text_exposition() -> None:
    async def test(server: HealthServer) -> None:
        status, headers, body = await get(server.port, "/metrics?name[]=ignored")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert families["kipsec_ready"].samples[0].value == 1
        assert "process_resident_memory_bytes" in families
        assert int(headers["Content-Length"]) == len(body)

    serve(test)


def test_unknown_path_is_404() -> None:
    async def test(server: HealthServer) -> None:
        status, _, body = await get(server.port, "/admin")
        assert status == 404
        assert body == b"no such path: /admin\n"

    serve(test)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "HEAD"])
def test_methods_other_than_get_are_405(method: str) -> None:
    async def test(server: HealthServer) -> None:
        request = f"{method} /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n".encode()
        status, headers, _ = await exchange(server.port, request)
        assert status == 405
        assert headers["Allow"] == "GET"

    serve(test)


@pytest.mark.parametrize(
    "request_line",
    [b"GET /healthz", b"GET /healthz HTTP/9.9", b"GET healthz HTTP/1.1", b"\xff\xfe / HTTP/1.1"],
)
def test_malformed_request_lines_are_400(request_line: bytes) -> None:
    async def test(server: HealthServer) -> None:
        status, _, _ = await exchange(server.port, request_line + b"\r\n\r\n")
        assert status == 400

    serve(test)


def test_an_oversized_request_is_refused_and_the_server_keeps_serving() -> None:
    async def test(server: HealthServer) -> None:
        huge = b"GET /healthz HTTP/1.1\r\nX-Fill: " + b"a" * (8 * MAX_REQUEST_HEAD) + b"\r\n\r\n"
        try:
            status, _, _ = await exchange(server.port, huge)
        except ConnectionResetError:
            status = 431  # the server closed with our bytes unread: the kernel sent RST
        assert status == 431
        assert (await get(server.port, "/healthz"))[0] == 200

    serve(test)


def test_a_slow_client_gets_408_without_stalling_others() -> None:
    async def test(server: HealthServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\n")  # and never the blank line
        await writer.drain()
        started = time.monotonic()
        assert (await get(server.port, "/healthz"))[0] == 200
        assert time.monotonic() - started < 0.3, "another client waited for the slow one"
        async with asyncio.timeout(3):
            answer = await reader.read()
        assert time.monotonic() - started >= 0.4
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        writer.close()

    serve(test, read_timeout=0.5)


def test_connections_beyond_the_limit_are_closed_at_once() -> None:
    async def test(server: HealthServer) -> None:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        async with asyncio.timeout(1):
            assert await reader.read() == b""
        writer.close()
        for _, w in idle:
            w.close()
        await asyncio.sleep(0.05)
        assert (await get(server.port, "/healthz"))[0] == 200

    serve(test, max_connections=2)


def test_one_source_holding_every_connection_cannot_keep_another_out() -> None:
    async def test(server: HealthServer) -> None:
        # 127.0.0.2 fills the table with idle connections (a slowloris)...
        idle = [
            await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
            for _ in range(4)
        ]
        await asyncio.sleep(0.05)
        # ...a probe from another source still gets its answer, in a slot taken from the
        # oldest of the flooding source's connections,
        started = time.monotonic()
        assert (await get(server.port, "/healthz"))[0] == 200
        assert time.monotonic() - started < 0.4
        async with asyncio.timeout(1):
            assert await idle[0][0].read() == b""
        # When the flooding source holds the whole table again, its next connection is the
        # one closed at once.
        idle.append(
            await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
        )
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, local_addr=("127.0.0.2", 0)
        )
        async with asyncio.timeout(1):
            assert await reader.read() == b""
        for _, w in [*idle, (reader, writer)]:
            w.close()

    serve(test, max_connections=4, read_timeout=5.0)


def test_the_probe_listener_serves_only_the_probes_with_its_own_table() -> None:
    async def main() -> None:
        controller = ControllerDouble()
        server = HealthServer(
            controller,
            build_registry(controller),
            "127.0.0.1:0",
            probe_listen="127.0.0.1:0",
            max_connections=2,
        )
        async with server:
            assert server.probe_port is not None and server.probe_port != server.port
            idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
            await asyncio.sleep(0.05)
            assert (await get(server.probe_port, "/healthz"))[0] == 200
            assert (await get(server.probe_port, "/readyz"))[0] == 200
            assert (await get(server.probe_port, "/metrics"))[0] == 404
            assert (await get(server.probe_port, "/status"))[0] == 404
            for _, w in idle:
                w.close()
            await asyncio.sleep(0.1)
            assert (await get(server.port, "/metrics"))[0] == 200

    asyncio.run(main())


def test_a_failing_snapshot_answers_500_on_metrics_and_503_on_readyz() -> None:
    class Broken(ControllerDouble):
        def snapshot(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("daemon wedged")

    async def test(server: HealthServer) -> None:
        assert (await get(server.port, "/metrics"))[0] == 500
        assert (await get(server.port, "/readyz"))[0] == 503
        assert (await get(server.port, "/healthz"))[0] == 200

    serve(test, Broken())


def test_close_cuts_open_connections_without_loop_errors() -> None:
    loop_errors: list[dict[str, object]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        controller = ControllerDouble()
        server = HealthServer(controller, build_registry(controller), "127.0.0.1:0")
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.sleep(0.05)
        async with asyncio.timeout(2):
            await server.close()
            assert await reader.read() == b""
        writer.close()
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert loop_errors == []


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("127.0.0.1:9585", ("127.0.0.1", 9585)), ("[::]:9585", ("::", 9585))],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


def test_parse_listen_names_the_bad_value() -> None:
    with pytest.raises(ValueError, match="'localhost'"):
        parse_listen("localhost")
