"""A bounds-checked read cursor and a write buffer over bytes, as in aioquic.

Every wire parser in the cores pulls through :class:`Reader`, so a truncated or lying
length field raises :class:`~kipsec_sidecar.core.errors.ParseError` naming the field
instead of an ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

from .errors import ParseError


class Reader:
    """Reads big-endian integers and byte strings from ``data``; never reads past the end."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end
        if not 0 <= start <= self._end <= len(data):
            raise ParseError("bad bounds", field="buffer")

    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return self._end - self._pos

    def eof(self) -> bool:
        return self._pos >= self._end

    def pull_bytes(self, n: int, field: str = "") -> bytes:
        if n < 0 or self._pos + n > self._end:
            raise ParseError(f"needs {n} bytes, {self.remaining()} left", field=field or "bytes")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def pull_rest(self) -> bytes:
        out = self._data[self._pos : self._end]
        self._pos = self._end
        return out

    # The fixed-width pulls below index ``_data`` directly rather than going through
    # pull_bytes: a parser makes dozens of them per IKE message, and the slice and the
    # extra call were most of a message's decoding time. Same checks, same errors.

    def pull_uint8(self, field: str = "") -> int:
        pos = self._pos
        if pos >= self._end:
            raise ParseError(f"needs 1 bytes, {self.remaining()} left", field=field or "uint8")
        self._pos = pos + 1
        return self._data[pos]

    def pull_uint16(self, field: str = "") -> int:
        pos = self._pos
        if pos + 2 > self._end:
            raise ParseError(f"needs 2 bytes, {self.remaining()} left", field=field or "uint16")
        self._pos = pos + 2
        data = self._data
        return (data[pos] << 8) | data[pos + 1]

    def pull_uint32(self, field: str = "") -> int:
        pos = self._pos
        if pos + 4 > self._end:
            raise ParseError(f"needs 4 bytes, {self.remaining()} left", field=field or "uint32")
        self._pos = pos + 4
        return int.from_bytes(self._data[pos : pos + 4], "big")

    def pull_uint64(self, field: str = "") -> int:
        return int.from_bytes(self.pull_bytes(8, field or "uint64"), "big")

    def sub(self, n: int, field: str = "") -> Reader:
        """A reader over the next ``n`` bytes; this reader skips past them."""
        if n < 0 or self._pos + n > self._end:
            raise ParseError(
                f"length {n} exceeds the {self.remaining()} bytes left", field=field or "length"
            )
        reader = Reader(self._data, self._pos, self._pos + n)
        self._pos += n
        return reader


class Writer:
    """Accumulates big-endian fields; ``bytes(writer)`` gives the result."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts = bytearray()

    def __len__(self) -> int:
        return len(self._parts)

    def __bytes__(self) -> bytes:
        return bytes(self._parts)

    def push_bytes(self, data: bytes) -> None:
        self._parts += data

    def push_uint8(self, value: int) -> None:
        self._parts.append(value & 0xFF)

    def push_uint16(self, value: int) -> None:
        self._parts += (value & 0xFFFF).to_bytes(2, "big")

    def push_uint32(self, value: int) -> None:
        self._parts += (value & 0xFFFFFFFF).to_bytes(4, "big")

    def push_uint64(self, value: int) -> None:
        self._parts += (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
