"""A "*" subscriber that keeps what the bus routed until taken, then gives it as columns.

What computes from the whole stream (the candles) needs the ticks' numbers, not their
bytes, but must not cost the publish more than any client does: ``offer`` keeps a
reference to the batch's encoded segments (as a ``DelayLine`` does), and ``take`` decodes
everything held with one ``orjson.loads``, grouped by symbol, into numpy columns. Held
bytes are bounded: past ``max_bytes`` the held batches are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter

import numpy as np
import orjson

from ticker.core.mailbox import Delivery, Follows

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Columns:
    """Ticks grouped by symbol: ``symbols[i]``'s are the next ``counts[i]`` rows."""

    symbols: list[str]
    counts: list[int]
    t: np.ndarray
    p: np.ndarray
    v: np.ndarray
    """0 where a tick has no ``v``."""


class Tape:
    """The bus subscriber behind derived topics; see the module docstring."""

    mode = "tape"
    overflowed = False

    __slots__ = ("_held", "dropped", "follows", "max_bytes", "nbytes")

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.follows: Follows = None  # subscribed to "*"
        self.max_bytes = max_bytes
        self._held: list[tuple[dict[str, bytes], dict[str, int]]] = []
        self.nbytes = 0
        self.dropped = 0
        """Ticks dropped because more than ``max_bytes`` was held (a metric)."""

    def offer(self, delivery: Delivery) -> None:
        """Hold a batch's segments (called inside the bus's publish)."""
        self._held.append((delivery.segments, delivery.counts))
        self.nbytes += sum(map(len, delivery.segments.values()))
        if self.nbytes > self.max_bytes:
            self.dropped += sum(sum(counts.values()) for _, counts in self._held)
            self._held.clear()
            self.nbytes = 0

    def __len__(self) -> int:
        """Batches held."""
        return len(self._held)

    def take(self) -> Columns:
        """Everything held since the last call, decoded once, in each symbol's order."""
        runs: dict[str, list[bytes]] = {}
        counts: dict[str, int] = {}
        for segments, batch_counts in self._held:
            for symbol, segment in segments.items():
                runs.setdefault(symbol, []).append(segment)
                counts[symbol] = counts.get(symbol, 0) + batch_counts[symbol]
        self._held = []
        self.nbytes = 0
        joined = b",".join(segment for run in runs.values() for segment in run)
        ticks = orjson.loads(b"[" + joined + b"]")
        n = len(ticks)
        return Columns(  # map() over C callables: no Python frame per tick and column
            list(runs),
            list(counts.values()),
            np.fromiter(map(itemgetter("t"), ticks), np.int64, n),
            np.fromiter(map(itemgetter("p"), ticks), np.float64, n),
            np.fromiter(map(dict.get, ticks, repeat("v"), repeat(0.0)), np.float64, n),
        )
