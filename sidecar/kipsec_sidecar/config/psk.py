"""The bytes of a pre-shared key, as written in `psk.secretFile` or `psk.value`.

A PSK is raw bytes, used exactly as they are, except for two prefixes that let a binary
key be written as text — the ones strongSwan's `swanctl.conf` (`secrets.ike.secret`)
accepts, matched the same way (case-insensitively), so one key text means the same to
both:

- `0x` followed by hexadecimal digits (`:` separators allowed, as in the manual keys):
  the bytes they spell, e.g. `0x0001ff…` for the bytes 00 01 ff …;
- `0s` followed by base64: the bytes it decodes to.

A key that starts with such a prefix but is not valid hexadecimal/base64 is an error,
not a text key (a typo must not silently become another key); a raw binary key whose
first two bytes happen to be `0x`/`0s` must therefore be written in one of the two
text forms. A file's content loses exactly one trailing line ending (`\\n` or
`\\r\\n`, so `echo key > file` works) before anything else; a lone trailing `\\r` or a
second newline is part of the key. Messages never contain the key.
"""

from __future__ import annotations

import base64
import binascii

#: Fewest bytes a pre-shared key may have (after decoding a `0x`/`0s` form).
MIN_PSK_LENGTH = 8


def strip_line_ending(data: bytes) -> bytes:
    """`data` without one trailing `\\n` or `\\r\\n` (and nothing else)."""
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data.removesuffix(b"\n")


def psk_bytes(text: bytes) -> bytes:
    """The key that `text` (a file's content without its line ending, or an inline
    value in UTF-8) stands for: raw bytes, or the `0x` hex / `0s` base64 form decoded.

    Raises ValueError for a bad hex/base64 form or a key shorter than
    :data:`MIN_PSK_LENGTH` bytes; its message never shows the value and reads after
    "the key" ("starts with 0x but ...", "is shorter than ...").
    """
    prefix, rest = text[:2].lower(), text[2:]
    if prefix == b"0x":
        try:
            key = bytes.fromhex(rest.replace(b":", b"").decode("ascii"))
        except ValueError:
            raise ValueError(
                "starts with 0x but the rest is not hexadecimal (the value is not shown)"
            ) from None
    elif prefix == b"0s":
        try:
            key = base64.b64decode(rest, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                "starts with 0s but the rest is not base64 (the value is not shown)"
            ) from None
    else:
        key = text
    if len(key) < MIN_PSK_LENGTH:
        raise ValueError(
            f"is shorter than {MIN_PSK_LENGTH} bytes (after decoding a 0x/0s form); use 32 "
            "random bytes (the value is not shown)"
        )
    return key


__all__ = ["MIN_PSK_LENGTH", "psk_bytes", "strip_line_ending"]
