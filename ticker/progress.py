"""Progress of long work on a terminal: count, rate and ETA on one rewritten line.

Quiet when the stream is not a terminal (piped, redirected, under CI): a log must not
fill with carriage returns. The clock is injectable so the line can be tested.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

INTERVAL_S = 0.25
"""Redraw at most this often: a redraw per chunk would cost more than the work at speed."""


def _eta(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """``label: 1,234,567 ticks  812,000/s  42% ETA 3s`` (ETA only when ``total`` is known)."""

    def __init__(
        self,
        label: str,
        *,
        total: int | None = None,
        unit: str = "ticks",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self._clock = clock
        self._start = self._last = clock()
        self.count = 0

    def advance(self, n: int) -> None:
        """Count ``n`` more; redraws at most every ``INTERVAL_S``, not per call."""
        self.count += n
        if self.enabled and self._clock() - self._last >= INTERVAL_S:
            self._draw(final=False)

    def line(self) -> str:
        """The line shown: count, rate, and share and ETA when the total is known."""
        elapsed = max(self._clock() - self._start, 1e-9)
        rate = self.count / elapsed
        text = f"{self.label}: {self.count:,} {self.unit}  {rate:,.0f}/s"
        if self.total:
            share = min(1.0, self.count / self.total)
            text += f"  {share:.0%}"
            if rate > 0 and self.count < self.total:
                text += f" ETA {_eta((self.total - self.count) / rate)}"
        return text

    def _draw(self, final: bool) -> None:
        self._last = self._clock()
        self.stream.write(f"\r\x1b[2K{self.line()}" + ("\n" if final else ""))
        self.stream.flush()

    def done(self) -> None:
        """The final line, kept on the terminal."""
        if self.enabled:
            self._draw(final=True)
