"""The inbound anti-replay window of an SA (RFC 4303 section 3.4.3 and Appendix A).

A sliding bitmap over the highest sequence number accepted so far (``top``): bit ``i``
of ``bitmap`` records whether ``top - i`` was received. A Python int is the bitmap, so
any window size costs one shift and one mask per packet.

Two steps, in the order RFC 4303 section 3.4.3 requires:

1. :meth:`ReplayWindow.check` before the integrity check, with the 32 bits from the
   wire: rejects duplicates and packets left of the window cheaply, without touching
   state, and (with ESN) infers the high-order 32 bits (Appendix A2.2).
2. :meth:`ReplayWindow.accept` only after the ICV verified, with the full sequence
   number ``check`` returned: slides the window. A forged packet therefore never moves
   the window.

Default size: :data:`DEFAULT_WINDOW_SIZE` = 1024 packets, larger than the kernel's 32
or 64, because a userspace datapath fed from several queues reorders more than a
kernel one, and a bigger window costs nothing but a wider int. Sizes from
:data:`MIN_WINDOW_SIZE` to :data:`MAX_WINDOW_SIZE` are accepted.

With ESN, when the inferred high half is wrong (more than 2**32 packets were lost),
the ICV fails and the packet is dropped; Appendix A3's optional re-synchronisation
is not attempted.
"""

from __future__ import annotations

from .errors import LocalProtocolError, ReplayError

MIN_WINDOW_SIZE = 32
MAX_WINDOW_SIZE = 65536
DEFAULT_WINDOW_SIZE = 1024

_LOW_MASK = 0xFFFFFFFF


class ReplayWindow:
    """Anti-replay state of one inbound SA. Not thread-safe: one SA, one datapath worker."""

    __slots__ = ("_mask", "bitmap", "esn", "size", "top")

    def __init__(self, size: int = DEFAULT_WINDOW_SIZE, *, esn: bool = False) -> None:
        if not MIN_WINDOW_SIZE <= size <= MAX_WINDOW_SIZE:
            raise LocalProtocolError(
                f"replay window size {size} is outside {MIN_WINDOW_SIZE}..{MAX_WINDOW_SIZE}"
            )
        self.size = size
        self.esn = esn
        self.top = 0  # highest accepted sequence number (full 64 bits with ESN); 0 = none
        self.bitmap = 0
        self._mask = (1 << size) - 1

    def infer(self, seq_low: int) -> int:
        """The full sequence number a received 32-bit value stands for.

        Without ESN this is ``seq_low``. With ESN it is RFC 4303 Appendix A2.2: the high
        half is that of ``top``, or one more when ``seq_low`` lies right of a window that
        has wrapped, or one less when it lies left of a window straddling a wrap.
        """
        if not self.esn:
            return seq_low
        th = self.top >> 32
        tl = self.top & _LOW_MASK
        bottom = (tl - self.size + 1) & _LOW_MASK
        if tl >= self.size - 1:
            high = th if seq_low >= bottom else th + 1
        else:
            high = th - 1 if seq_low >= bottom and th > 0 else th
        return (high << 32) | seq_low

    def check(self, seq_low: int) -> int:
        """Validate a received sequence number without changing state; return the full value.

        Raises ReplayError for sequence number 0 (never sent), for a number already
        accepted and for one left of the window.
        """
        seq = self.infer(seq_low)
        if seq == 0:
            raise ReplayError("sequence number 0 is never sent")
        if seq > self.top:
            return seq
        offset = self.top - seq
        if offset >= self.size:
            raise ReplayError(f"sequence number {seq} is left of the window (top {self.top})")
        if (self.bitmap >> offset) & 1:
            raise ReplayError(f"sequence number {seq} was already received")
        return seq

    def accept(self, seq: int) -> None:
        """Record a full sequence number whose packet passed the integrity check.

        Re-checks the window first (raising ReplayError), so a duplicate that raced the
        first check is still refused.
        """
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = 1 if shift >= self.size else ((self.bitmap << shift) | 1) & self._mask
            self.top = seq
            return
        offset = self.top - seq
        if seq == 0 or offset >= self.size or (self.bitmap >> offset) & 1:
            raise ReplayError(f"sequence number {seq} is a replay")
        self.bitmap |= 1 << offset

    def __repr__(self) -> str:
        return f"ReplayWindow(size={self.size}, esn={self.esn}, top={self.top})"


def seq_low_high(seq: int) -> tuple[int, int]:
    """Split a 64-bit sequence number into (low 32 bits on the wire, high 32 bits)."""
    return seq & _LOW_MASK, seq >> 32


__all__ = [
    "DEFAULT_WINDOW_SIZE",
    "MAX_WINDOW_SIZE",
    "MIN_WINDOW_SIZE",
    "ReplayWindow",
    "seq_low_high",
]
