"""Capped, jittered reconnect delays, kept apart from any I/O so they are tested alone."""

from __future__ import annotations

import random

JITTER = 0.2
"""Each delay is shortened by up to this fraction at random, so peers that failed together
(one upstream outage) do not reconnect in lockstep; shortening keeps ``maximum`` a true
bound and keeps successive delays increasing until the cap."""


class Backoff:
    """``initial`` doubling up to ``maximum`` per failure; ``reset`` once a try worked."""

    __slots__ = ("_next", "_rng", "initial", "maximum")

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("need 0 < backoff_initial <= backoff_max")  # as callers name them
        self.initial = initial
        self.maximum = maximum
        self._rng = rng or random.Random()
        self._next = initial

    def delay(self) -> float:
        """The wait before the next try; the one after it is twice as long (capped)."""
        delay = self._next * (1.0 - JITTER * self._rng.random())
        self._next = min(self._next * 2.0, self.maximum)
        return delay

    def reset(self) -> None:
        """It worked: forget past failures."""
        self._next = self.initial
