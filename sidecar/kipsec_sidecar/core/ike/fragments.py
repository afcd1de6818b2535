"""IKE fragmentation bookkeeping (RFC 7383): splitting content and bounded reassembly.

No cryptography here: :mod:`.sk` seals and opens each SKF fragment and uses
:class:`FragmentStore` to hold the *verified, decrypted* pieces until a message is
complete. The store is bounded (fragments per message, bytes per message, messages in
progress) so that a peer cannot make the SA hold unbounded memory.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from ..errors import LocalProtocolError, ParseError

MAX_FRAGMENTS = 64
"""Default limit on Total Fragments of one message."""

MAX_REASSEMBLY_BYTES = 128 * 1024
"""Default limit on the decrypted bytes of one message (certificate chains fit)."""

MAX_PENDING_MESSAGES = 2
"""Default number of messages reassembled at once: a request and a response."""

FragmentKey = tuple[int, bool]
"""(message ID, is_response): which message a fragment belongs to."""


def split(content: bytes, chunk_len: int) -> list[bytes]:
    """Cut ``content`` into pieces of ``chunk_len`` bytes (the last may be shorter).

    Empty content still gives one (empty) piece, so that every message has a fragment 1.
    """
    if chunk_len < 1:
        raise LocalProtocolError(f"fragment content length {chunk_len} is below 1")
    pieces = [content[i : i + chunk_len] for i in range(0, len(content), chunk_len)]
    return pieces or [b""]


@dataclass(slots=True)
class _Pending:
    total: int
    exchange: int
    first_inner: int = 0
    pieces: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class FragmentStore:
    """Verified fragment contents by message, until every number 1..total is present.

    Rules of RFC 7383 section 2.6: a fragment whose Total Fragments is larger than the
    one being reassembled restarts reassembly (the sender re-fragmented smaller); a
    smaller one is rejected with ParseError; a duplicate number is ignored. The caller
    must have verified each fragment's integrity before :meth:`add`.
    """

    def __init__(
        self,
        max_fragments: int = MAX_FRAGMENTS,
        max_bytes: int = MAX_REASSEMBLY_BYTES,
        max_messages: int = MAX_PENDING_MESSAGES,
    ) -> None:
        if max_fragments < 1 or max_bytes < 1 or max_messages < 1:
            raise LocalProtocolError("fragment store limits must be positive")
        self.max_fragments = max_fragments
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self._pending: OrderedDict[FragmentKey, _Pending] = OrderedDict()

    def __len__(self) -> int:
        """Number of messages being reassembled."""
        return len(self._pending)

    def check_numbers(self, number: int, total: int) -> None:
        """ParseError unless 1 <= number <= total <= the fragment limit.

        Cheap, so the caller runs it before any cryptography.
        """
        if total > self.max_fragments:
            raise ParseError(
                f"{total} fragments exceed the limit of {self.max_fragments}",
                field="skf.total_fragments",
            )
        if not 1 <= number <= total:
            raise ParseError(f"fragment {number} of {total}", field="skf.fragment_number")

    def is_duplicate(self, key: FragmentKey, number: int, total: int) -> bool:
        """Is this fragment already held? Then it can be dropped without decrypting."""
        pending = self._pending.get(key)
        return pending is not None and pending.total == total and number in pending.pieces

    def add(
        self,
        key: FragmentKey,
        exchange: int,
        number: int,
        total: int,
        first_inner: int,
        piece: bytes,
    ) -> tuple[int, bytes] | None:
        """Store a verified piece; returns (first inner payload type, content) when complete.

        ``first_inner`` is only meaningful for fragment 1. Raises ParseError for a
        number out of range, a smaller Total Fragments than the one in progress, an
        exchange type that differs from the other fragments', or a message growing
        beyond ``max_bytes`` (its partial state is then dropped).
        """
        self.check_numbers(number, total)
        pending = self._pending.get(key)
        if pending is not None and total < pending.total:
            raise ParseError(
                f"total {total} is below the {pending.total} being reassembled",
                field="skf.total_fragments",
            )
        if pending is None or total > pending.total:
            pending = self._start(key, total, exchange)
        if exchange != pending.exchange:
            raise ParseError("fragments of one message differ in exchange", field="header.exchange")
        if number in pending.pieces:
            return None
        if pending.size + len(piece) > self.max_bytes:
            del self._pending[key]
            raise ParseError(
                f"message exceeds {self.max_bytes} bytes in reassembly", field="skf.length"
            )
        pending.pieces[number] = piece
        pending.size += len(piece)
        if number == 1:
            pending.first_inner = first_inner
        if len(pending.pieces) < pending.total:
            return None
        del self._pending[key]
        content = b"".join(pending.pieces[n] for n in range(1, pending.total + 1))
        return pending.first_inner, content

    def _start(self, key: FragmentKey, total: int, exchange: int) -> _Pending:
        self._pending.pop(key, None)
        while len(self._pending) >= self.max_messages:
            self._pending.popitem(last=False)
        pending = _Pending(total=total, exchange=exchange)
        self._pending[key] = pending
        return pending
