"""The bounds-checked reader turns every overrun into a ParseError naming the field."""

from __future__ import annotations

import pytest

from kipsec_sidecar.core.buffer import Reader, Writer
from kipsec_sidecar.core.errors import ParseError


def test_reader_pulls_big_endian_fields_in_order() -> None:
    w = Writer()
    w.push_uint8(1)
    w.push_uint16(0x0203)
    w.push_uint32(0x04050607)
    w.push_uint64(0x08090A0B0C0D0E0F)
    w.push_bytes(b"xy")
    r = Reader(bytes(w))
    assert (r.pull_uint8(), r.pull_uint16(), r.pull_uint32(), r.pull_uint64()) == (
        1,
        0x0203,
        0x04050607,
        0x08090A0B0C0D0E0F,
    )
    assert r.pull_rest() == b"xy" and r.eof()


def test_overrun_names_the_field() -> None:
    with pytest.raises(ParseError, match="spi"):
        Reader(b"\x00\x01").pull_uint32("spi")


@pytest.mark.parametrize(
    ("width", "default"), [(1, "uint8"), (2, "uint16"), (4, "uint32"), (8, "uint64")]
)
def test_a_short_fixed_width_pull_names_its_field_and_leaves_the_position(
    width: int, default: str
) -> None:
    """The fixed-width pulls index the data directly (no pull_bytes): same checks."""
    pull = {1: "pull_uint8", 2: "pull_uint16", 4: "pull_uint32", 8: "pull_uint64"}[width]
    r = Reader(b"\x00" + bytes(range(1, width)), 1)  # one byte short, read from 1
    with pytest.raises(ParseError) as named:
        getattr(r, pull)("spi")
    with pytest.raises(ParseError) as unnamed:
        getattr(r, pull)()
    assert (named.value.field, unnamed.value.field) == ("spi", default)
    assert r.position == 1 and r.remaining() == width - 1
    bounded = Reader(b"\xff" * (width + 1), 0, width - 1)  # the end bounds it, not the data
    with pytest.raises(ParseError):
        getattr(bounded, pull)()


def test_sub_reader_is_confined_to_its_length() -> None:
    r = Reader(b"abcdef")
    sub = r.sub(2, "payload")
    assert sub.pull_rest() == b"ab"
    assert r.pull_bytes(4) == b"cdef"
    with pytest.raises(ParseError, match="payload length"):
        Reader(b"abc").sub(4, "payload length")


def test_negative_length_is_rejected() -> None:
    with pytest.raises(ParseError):
        Reader(b"abc").pull_bytes(-1)
