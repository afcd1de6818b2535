"""Structured logs: one line per event, valid JSON, and never a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from kipsec_sidecar.logs import REDACTED, LogLimiter, is_secret_name, setup_logging

PSK = b"kipsec example pre-shared key, 32B"
PSK_TEXT = PSK.decode()


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """A fresh output; the root logger's handlers and level are restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    yield out
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def json_lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_hold_ts_level_logger_event_and_fields(stream: io.StringIO) -> None:
    setup_logging("json", "info", stream=stream)
    logging.getLogger("kipsec_sidecar.daemon").info(
        "child SA installed", extra={"peer": "b", "spi_in": "c0ffee01", "packets": 3}
    )
    [line] = json_lines(stream)
    assert isinstance(line.pop("ts"), str)
    assert line == {
        "level": "info",
        "logger": "kipsec_sidecar.daemon",
        "event": "child SA installed",
        "peer": "b",
        "spi_in": "c0ffee01",
        "packets": 3,
    }


def test_the_timestamp_is_utc_rfc3339_with_milliseconds(stream: io.StringIO) -> None:
    setup_logging("json", stream=stream)
    logging.getLogger("t").warning("x")
    [line] = json_lines(stream)
    ts = str(line["ts"])
    assert len(ts) == len("2026-11-27T07:16:04.123Z") and ts.endswith("Z") and ts[10] == "T"


def test_every_event_is_one_line_even_with_newlines_and_tracebacks(stream: io.StringIO) -> None:
    setup_logging("json", stream=stream)
    log = logging.getLogger("t")
    log.info("two\nlines", extra={"detail": "a\nb"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = json_lines(stream)
    assert len(lines) == 2
    assert lines[0]["event"] == "two\nlines"
    assert "ValueError: boom" in str(lines[1]["exception"])


def test_text_lines_hold_level_logger_event_and_quoted_fields(stream: io.StringIO) -> None:
    setup_logging("text", "debug", stream=stream)
    logging.getLogger("kipsec_sidecar.ike").debug(
        "peer down", extra={"peer": "b", "reason": "no reply", "tries": 3}
    )
    [line] = stream.getvalue().splitlines()
    _, rest = line.split(" ", 1)
    assert rest == 'debug kipsec_sidecar.ike peer down peer=b reason="no reply" tries=3'


def test_the_level_filters_events(stream: io.StringIO) -> None:
    setup_logging("json", "warning", stream=stream)
    logging.getLogger("t").info("hidden")
    logging.getLogger("t").error("shown")
    assert [line["event"] for line in json_lines(stream)] == ["shown"]


def test_a_second_setup_replaces_the_first_handler(stream: io.StringIO) -> None:
    setup_logging("text", stream=io.StringIO())
    setup_logging("json", stream=stream)
    logging.getLogger("t").info("once")
    assert len(json_lines(stream)) == 1
    names = [h.get_name() for h in logging.getLogger().handlers]
    assert names.count("kipsec") == 1


@pytest.mark.parametrize(
    ("format", "level", "message"),
    [("xml", "info", "'xml'"), ("json", "loud", "'loud'")],
)
def test_bad_format_or_level_is_refused_by_name(format: str, level: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        setup_logging(format, level)  # type: ignore[arg-type]


@pytest.mark.parametrize("log_format", ["json", "text"])
@pytest.mark.parametrize(
    "field",
    ["psk", "key", "sk_ei", "privateKey", "private_key_pem", "nonce", "ni", "password",
     "shared_secret", "skeyseed", "auth_key", "keymat"],
)  # fmt: skip
def test_a_psk_never_appears_under_a_secret_field_name(
    stream: io.StringIO, log_format: str, field: str
) -> None:
    setup_logging(log_format, stream=stream)  # type: ignore[arg-type]
    logging.getLogger("t").info("configured", extra={field: PSK_TEXT, "peer": "b"})
    output = stream.getvalue()
    assert PSK_TEXT not in output
    assert "shared key" not in output
    assert REDACTED in output
    assert "peer" in output


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_long_bytes_are_never_dumped_whatever_the_field(
    stream: io.StringIO, log_format: str
) -> None:
    setup_logging(log_format, stream=stream)  # type: ignore[arg-type]
    log = logging.getLogger("t")
    log.info("received", extra={"payload": PSK, "nested": {"material": [PSK]}})
    log.info("argument %s", PSK)
    log.info("mapping %(data)s", {"data": bytearray(PSK)})
    output = stream.getvalue()
    assert PSK_TEXT not in output
    assert PSK.hex() not in output
    assert "shared key" not in output
    assert output.count(f"<{len(PSK)} bytes redacted>") == 4


def test_nested_secret_names_are_redacted(stream: io.StringIO) -> None:
    setup_logging("json", stream=stream)
    logging.getLogger("t").info("peer", extra={"peer": {"name": "b", "psk": PSK_TEXT}})
    [line] = json_lines(stream)
    assert line["peer"] == {"name": "b", "psk": REDACTED}


def test_short_bytes_such_as_an_spi_are_shown_as_hex(stream: io.StringIO) -> None:
    setup_logging("json", stream=stream)
    logging.getLogger("t").info("sa", extra={"spi": b"\xc0\xff\xee\x01"})
    assert json_lines(stream)[0]["spi"] == "c0ffee01"


def test_a_record_logged_through_a_child_logger_is_redacted(stream: io.StringIO) -> None:
    setup_logging("json", stream=stream)
    logging.getLogger("kipsec_sidecar.daemon.peers.b").warning("x", extra={"psk": PSK_TEXT})
    assert PSK_TEXT not in stream.getvalue()


@pytest.mark.parametrize(
    ("name", "secret"),
    [("psk", True), ("psk_file", True), ("sk_ar", True), ("privateKey", True),
     ("dh_private", True), ("keying", False), ("keepalive", False), ("peer", False),
     ("spi_in", False), ("monkey_business", True), ("task", False)],
)  # fmt: skip
def test_secret_names_are_recognised_by_their_words(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


class FakeClock:
    """Monotonic seconds that the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def limited(
    stream: io.StringIO, burst: int, period: float
) -> tuple[LogLimiter, FakeClock, logging.Logger]:
    """A limiter on an injected clock, logging as JSON to ``stream``."""
    setup_logging("json", "info", stream=stream)
    clock = FakeClock()
    return LogLimiter(burst=burst, period=period, clock=clock), clock, logging.getLogger("kipsec")


def test_the_limiter_writes_the_first_lines_then_one_summary_per_period(
    stream: io.StringIO,
) -> None:
    limiter, clock, log = limited(stream, burst=3, period=10.0)
    written = [
        limiter.log(log, logging.INFO, "refused", {"source": f"10.0.0.{n}"}) for n in range(1000)
    ]
    assert written == [True] * 3 + [False] * 997
    assert [line["source"] for line in json_lines(stream)] == ["10.0.0.0", "10.0.0.1", "10.0.0.2"]
    assert limiter.suppressed == 997
    clock.now += 9.9
    limiter.flush()  # the period has not ended: nothing yet
    assert len(json_lines(stream)) == 3
    clock.now += 0.1
    limiter.flush()
    summary = json_lines(stream)[-1]
    assert summary["event"] == "similar lines suppressed"
    assert summary["level"] == "info" and summary["logger"] == "kipsec"
    assert (summary["like"], summary["suppressed"], summary["seconds"]) == ("refused", 997, 10.0)
    limiter.flush()  # once per period, not again
    assert len(json_lines(stream)) == 4
    # A new period starts with a new burst.
    assert limiter.log(log, logging.INFO, "refused", {"source": "10.0.0.9"})
    assert limiter.suppressed == 997


def test_the_summary_also_comes_with_the_next_line_of_a_later_period(
    stream: io.StringIO,
) -> None:
    limiter, clock, log = limited(stream, burst=1, period=5.0)
    for _ in range(4):
        limiter.log(log, logging.WARNING, "too many connections")
    clock.now += 60
    limiter.log(log, logging.WARNING, "too many connections")
    events = [(line["event"], line.get("suppressed")) for line in json_lines(stream)]
    assert events == [
        ("too many connections", None),
        ("similar lines suppressed", 3),
        ("too many connections", None),
    ]


def test_events_are_limited_separately_and_quiet_levels_are_not_counted(
    stream: io.StringIO,
) -> None:
    limiter, _, log = limited(stream, burst=1, period=5.0)
    assert limiter.log(log, logging.INFO, "a")
    assert limiter.log(log, logging.INFO, "b")
    assert not limiter.log(log, logging.INFO, "a")
    assert not limiter.log(log, logging.DEBUG, "c")  # below the level: neither written nor counted
    assert limiter.suppressed == 1
    assert [line["event"] for line in json_lines(stream)] == ["a", "b"]
