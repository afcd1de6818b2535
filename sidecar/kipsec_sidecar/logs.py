"""Structured logs: one line per event on stderr, as text or JSON, with secrets redacted.

Code logs events the usual way, with the facts as ``extra=`` fields::

    log.info("child SA installed", extra={"peer": "b", "spi_in": "c0ffee01"})

``setup_logging("json")`` prints ``{"ts": ..., "level": "info", "logger": ...,
"event": "child SA installed", "peer": "b", "spi_in": "c0ffee01"}``; ``"text"`` prints
``2026-11-27T07:16:04.123Z info kipsec_sidecar.daemon child SA installed peer=b
spi_in=c0ffee01``.

The :class:`RedactingFilter` on the handler is the last line of defence, not a licence to
log secrets: it replaces the value of any field whose name suggests secret material
(a name containing a word such as ``key``, ``psk``, ``secret``, ``nonce``, ``password``,
``private``, ``skeyseed``) and any bytes value longer than 8 bytes (raw bytes never reach
a log; 8 bytes or fewer, e.g. an SPI, are shown as hex). It cannot see a secret formatted
into the message text itself, so never do that; bytes passed as ``%s`` arguments are
redacted too.

A line that a peer, a packet or a connection can cause goes through :data:`LIMITER`
(one :class:`LogLimiter` per process) instead of the logger, so a flood writes a bounded
number of lines::

    LIMITER.log(log, logging.INFO, "IKE_SA_INIT from an unknown address refused",
                {"source": addr[0]})

Per event, the first :data:`BURST` lines of each :data:`PERIOD` are written; the rest are
counted, summarized in one ``similar lines suppressed`` line when the period ends, and
exported as ``kipsec_log_lines_suppressed_total``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]

REDACTED = "<redacted>"
MAX_SHOWN_BYTES = 8

#: Words that mark a field name as secret; matched against the name's words, so ``psk``,
#: ``psk_file``, ``sk_ei``, ``privateKey`` and ``dh_private`` are redacted but ``keying``
#: and ``keepalive`` are not.
SECRET_WORDS = frozenset(
    {
        "key", "keys", "keymat", "psk", "secret", "secrets", "nonce", "nonces", "ni", "nr",
        "password", "passwd", "passphrase", "private", "privkey", "skeyseed", "sk", "token",
        "credential", "credentials", "shared",
    }
)  # fmt: skip

#: LogRecord attributes that are not ``extra=`` fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_HANDLER_NAME = "kipsec"


def is_secret_name(name: str) -> bool:
    """Whether a field name suggests secret material (``psk``, ``sk_ei``, ``privateKey``)."""
    words = [word.lower() for word in _WORD.findall(name)]
    return any(word in SECRET_WORDS or word.endswith(("key", "secret")) for word in words)


def redact(value: Any) -> Any:
    """``value`` with long bytes replaced, recursing into dicts, lists and tuples."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        if len(data) > MAX_SHOWN_BYTES:
            return f"<{len(data)} bytes redacted>"
        return data.hex()
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and is_secret_name(key) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item) for item in value]
    return value


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, in the order they were given."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """Rewrites a record's secret-named fields and long bytes before any handler formats it.

    Attach it to a handler (as :func:`setup_logging` does) so it sees records from every
    logger that propagates there. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in extra_fields(record).items():
            setattr(record, name, REDACTED if is_secret_name(name) else redact(value))
        if isinstance(record.args, Mapping):
            record.args = redact(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(redact(arg) for arg in record.args)
        return True


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _exception(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for name, value in extra_fields(record).items():
            line.setdefault(name, value)
        if (text := _exception(self, record)) is not None:
            line["exception"] = text
        return json.dumps(line, default=str, ensure_ascii=False)


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``ts level logger event k=v ...`` on one line (values with spaces are quoted)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record),
            record.levelname.lower(),
            record.name,
            record.getMessage().replace("\n", "\\n"),
        ]
        parts += [f"{k}={_text_value(v)}" for k, v in extra_fields(record).items()]
        if (text := _exception(self, record)) is not None:
            parts.append("exception=" + json.dumps(text))
        return " ".join(parts)


#: Libraries whose debug output is per message, not per event.
_NOISY_LIBRARIES = ("pyroute2", "asyncio")


def setup_logging(
    format: LogFormat = "text",
    level: str | int = "info",
    *,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route every logger's records through one redacting handler on ``stream`` (stderr).

    Replaces a handler installed by an earlier call (so a reload can switch format) and
    leaves other handlers alone. ``level`` is a name (``"debug"``, ``"INFO"``) or a number.
    Raises ValueError naming the bad format or level. Returns the handler.
    """
    formatters: dict[str, logging.Formatter] = {"text": TextFormatter(), "json": JsonFormatter()}
    if format not in formatters:
        raise ValueError(f"log format must be 'text' or 'json', not {format!r}")
    number = level if isinstance(level, int) else logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatters[format])
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(number)
    # pyroute2 logs every netlink message at debug: keep our debug output readable.
    for noisy in _NOISY_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(number, logging.INFO))
    return handler


#: Lines of one event written per period before the rest are suppressed.
BURST = 10
#: Seconds of one rate-limiting window.
PERIOD = 10.0


@dataclass(slots=True)
class _Window:
    """One event's current period: when it began, lines written and suppressed."""

    start: float
    logger: logging.Logger
    level: int
    shown: int = 0
    suppressed: int = 0


class LogLimiter:
    """The first ``burst`` lines per event and ``period``, then one summary with the count.

    The key is the logger and the event text (or ``key``), never a field value: a flood
    from many addresses is one key, and the keys are bounded by the code. A line below the
    logger's level is neither written nor counted. When a period in which lines were
    suppressed ends, one ``similar lines suppressed`` line names the event and the count
    at the event's level: at the next line of that event, or at :meth:`flush`, which the
    daemon calls once a second. ``suppressed`` is the total ever suppressed (a metric).
    ``clock`` is injected for tests.
    """

    def __init__(
        self,
        *,
        burst: int = BURST,
        period: float = PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.period = period
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        self.suppressed = 0

    def log(
        self,
        logger: logging.Logger,
        level: int,
        event: str,
        extra: Mapping[str, Any] | None = None,
        *,
        key: str | None = None,
        exc_info: bool = False,
    ) -> bool:
        """Log ``event`` with ``extra`` unless its burst is spent; whether it was written."""
        if not logger.isEnabledFor(level):
            return False
        now = self._clock()
        name = (logger.name, key or event)
        window = self._windows.get(name)
        if window is not None and now - window.start >= self.period:
            self._summarize(name, window)
            window = None
        if window is None:
            window = self._windows[name] = _Window(now, logger, level)
        if window.shown < self.burst:
            window.shown += 1
            logger.log(level, event, extra=dict(extra or {}), exc_info=exc_info)
            return True
        window.suppressed += 1
        self.suppressed += 1
        return False

    def flush(self) -> None:
        """Write the summary of every period that has ended, and forget those periods."""
        now = self._clock()
        for name, window in list(self._windows.items()):
            if now - window.start >= self.period:
                self._summarize(name, window)

    def _summarize(self, name: tuple[str, str], window: _Window) -> None:
        del self._windows[name]
        if window.suppressed:
            window.logger.log(
                window.level,
                "similar lines suppressed",
                extra={"like": name[1], "suppressed": window.suppressed, "seconds": self.period},
            )


LIMITER = LogLimiter()
"""The process's limiter for every line a peer, a packet or a connection can cause."""
