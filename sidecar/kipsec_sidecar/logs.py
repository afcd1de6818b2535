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
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
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
