"""The delay lines of a node (``ticker/core/delay.py``) and the one task that releases them.

Lines are made on first use, one per distinct delay, and kept for the node's life (a
late subscriber then finds the delayed snapshot waiting); at most ``MAX_DELAY_LINES``.
The task sleeps until the earliest held batch is due, or until an empty line gets one.
"""

from __future__ import annotations

import asyncio

from ticker.core.bus import WILDCARD, Bus
from ticker.core.delay import DelayLine

MAX_DELAY_LINES = 16
MIN_STEP_S = 0.005
"""Batches due within this are released together: one wake-up per step, not per batch."""


class DelayPump:
    """Owns every delay line of a node, so one task (not one per line) releases them."""

    def __init__(self, live: Bus, max_bytes: int) -> None:
        self.live = live
        self.max_bytes = max_bytes
        self.lines: dict[float, DelayLine] = {}
        self._changed = asyncio.Event()

    def bus(self, delay_s: float) -> Bus:
        """The delayed bus for ``delay_s`` (LookupError past ``MAX_DELAY_LINES`` delays)."""
        line = self.lines.get(delay_s)
        if line is not None and line.bus.epoch != self.live.epoch:
            # the cluster's stream restarted (its clients were closed with 1001): what the
            # line holds belongs to the old epoch, so start the delay over
            self.live.unsubscribe(line, [WILDCARD])
            del self.lines[delay_s]
            line = None
        if line is None:
            if len(self.lines) >= MAX_DELAY_LINES:
                raise LookupError(f"this server serves at most {MAX_DELAY_LINES} distinct delays")
            line = DelayLine(delay_s, self.live, max_bytes=self.max_bytes, wake=self._changed.set)
            self.live.subscribe(line, [WILDCARD])
            self.lines[delay_s] = line
        return line.bus

    async def run(self) -> None:
        """The one task for every delay line: release what is due, sleep until the next."""
        while True:
            earliest: float | None = None
            for line in self.lines.values():
                wait = line.release()
                if wait is not None:
                    earliest = wait if earliest is None else min(earliest, wait)
            self._changed.clear()
            try:
                async with asyncio.timeout(None if earliest is None else max(earliest, MIN_STEP_S)):
                    await self._changed.wait()
            except TimeoutError:
                pass
