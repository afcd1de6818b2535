"""Exponential back-off with jitter, for anything retried after a failure.

The daemon spaces re-initiations to a peer that keeps failing with it, enrollment its
certificate requests, and the IKEv1 engine its retried re-authentications (a new main
mode that failed, retried until the ISAKMP SA's hard lifetime). It lives in the core so
that the sans-IO engine can use it with its injected randomness.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays between re-initiations: ``initial`` doubling up to ``maximum`` seconds.

    Each delay is multiplied by a random factor in [1 - jitter, 1 + jitter] (then capped
    at ``maximum``). :meth:`reset` after a success starts again from ``initial``.
    """

    def __init__(
        self,
        initial: float = 1.0,
        maximum: float = 30.0,
        jitter: float = 0.2,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one more failure."""
        base = min(self.maximum, self.initial * 2.0**self.failures)
        self.failures += 1
        factor = 1.0 + self.jitter * (2.0 * self.rng() - 1.0)
        return min(self.maximum, base * factor)

    def reset(self) -> None:
        self.failures = 0


__all__ = ["Backoff"]
