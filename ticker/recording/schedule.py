"""When each recorded tick is due, and what it looks like when it goes out. Pure: the
caller passes the clock's readings in.

The schedule maps the recording's clock onto the replay clock through an anchor (a
recording time and the clock reading it corresponds to): a tick recorded at ``t`` is due
at ``anchor_clock + (t - anchor_rec) / speed``. Every wake-up computes what is due from
that mapping, never from the time the last sleep took, so late wake-ups make bigger
batches but errors never accumulate (no drift over a long replay). Pause, seek and a new
speed just move the anchor.

Loops continue the stream: each pass is re-anchored where the previous one ended, times
keep increasing (re-based times run on; kept times shift by the recording's span per
pass) and a tick's ``q``, when the recording has one, is raised by that symbol's span of
``q`` per pass, so ``q`` keeps counting up in the same epoch.

A recording's span may reach past its ticks (book rows before the first tick or after the
last, or no ticks at all): ``span`` gives it, so the clock mapping and the passes cover
every row the owner paces by ``clock_at`` (``feeds/replay/adapter.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ticker.core.ticks import TickBatch
from ticker.recording.table import TickTable

MAX_BATCH = 8192
"""Ticks per yielded batch at most: a burst (or speed 0) goes out in several batches, so
the loop gets control between them."""

US = 1_000_000


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How a recording is played: speed, looping, and whether times are re-based."""

    speed: float = 1.0
    """1 = as recorded, 10 = ten times faster, 0 = as fast as it can be taken."""
    loop: bool = False
    keep_time: bool = False
    """Keep the recorded timestamps; by default they are re-based to the replay's clock."""

    def __post_init__(self) -> None:
        if not self.speed >= 0:
            raise ValueError("speed must be >= 0")


class Replay:
    """A table replayed on a clock: ``batch(now)`` and ``wait(now)`` drive it."""

    __slots__ = (
        "_q_span",
        "_t_span",
        "anchor_clock",
        "anchor_rec",
        "clock0",
        "cursor",
        "first",
        "last",
        "loop_index",
        "options",
        "paused",
        "speed",
        "table",
        "wall0_us",
    )

    def __init__(
        self,
        table: TickTable,
        options: ReplayOptions,
        *,
        now: float,
        wall_us: int,
        span: tuple[int, int] | None = None,
    ) -> None:
        if span is None:
            if not len(table):
                raise ValueError("nothing to replay")
            span = int(table.t[0]), int(table.t[-1])
        self.first, self.last = span
        """The recording times (µs) a pass runs from and to."""
        self.table = table
        self.options = options
        self.speed = options.speed
        self.clock0 = now
        self.wall0_us = wall_us
        """The wall clock (µs) at ``clock0``: re-based times are scheduled times on it."""
        self.cursor = 0
        self.loop_index = 0
        self.paused = False
        self.anchor_rec = self.first
        self.anchor_clock = now
        self._t_span = self.last - self.first
        q_max = np.zeros(len(table.symbols), np.int64)
        q_min = np.full(len(table.symbols), np.iinfo(np.int64).max)
        has_q = table.q > 0
        np.maximum.at(q_max, table.sym[has_q], table.q[has_q])
        np.minimum.at(q_min, table.sym[has_q], table.q[has_q])
        self._q_span = np.where(q_max > 0, q_max - q_min + 1, 0)

    # -- the clock mapping -------------------------------------------------------------

    def position(self, now: float) -> float:
        """The recording time (µs) the replay is at."""
        if self.paused or self.speed == 0:
            return self.anchor_rec
        return self.anchor_rec + (now - self.anchor_clock) * self.speed * US

    def due_at(self, index: int) -> float:
        """Clock reading at which row ``index`` of this pass is due."""
        return self.clock_at(int(self.table.t[index]))

    def clock_at(self, t_us: int) -> float:
        """Clock reading at which recording time ``t_us`` is due in this pass (speed > 0)."""
        return self.anchor_clock + (t_us - self.anchor_rec) / (self.speed * US)

    def reached(self, now: float) -> float:
        """The recording time the replay has reached, for events timed beside the ticks
        (``Timed``): its position, or at speed 0 (where the position stays put) the last
        tick taken, and everything once they are all out."""
        if self.speed == 0 and self.cursor >= len(self.table):
            return float("inf")
        reached = self.position(now)
        if self.cursor:
            reached = max(reached, int(self.table.t[self.cursor - 1]))
        return reached

    @property
    def finished(self) -> bool:
        """Every tick is out and the replay does not loop."""
        return self.cursor >= len(self.table) and not self.options.loop

    # -- driving ------------------------------------------------------------------------

    def batch(self, now: float, max_rows: int = MAX_BATCH) -> TickBatch:
        """The ticks due by ``now`` (at most ``max_rows``), ready to publish."""
        table = self.table
        if self.options.loop and self._pass_done(now):
            self._next_pass()
        if self.paused or self.cursor >= len(table):
            return []
        if self.speed == 0:
            end = len(table)
        else:
            end = int(np.searchsorted(table.t, self.position(now), side="right"))
        end = min(end, self.cursor + max_rows)
        if end <= self.cursor:
            return []
        rows = slice(self.cursor, end)
        self.cursor = end
        return self._ticks(rows, now)

    def wait(self, now: float) -> float | None:
        """Seconds until the next tick is due; 0 if one is due; None when done."""
        if self.finished:
            return None
        if self.speed == 0:
            return 0.0
        if self.paused:
            return 3600.0  # the owner wakes the replay when it resumes
        if self.cursor >= len(self.table):  # looping: the next pass begins at the span's end
            return max(0.0, self.clock_at(self.last) - now)
        return max(0.0, self.due_at(self.cursor) - now)

    def _pass_done(self, now: float) -> bool:
        """Every tick of this pass is out and its span is over."""
        return self.cursor >= len(self.table) and (
            self.speed == 0 or self.position(now) >= self.last
        )

    def _next_pass(self) -> None:
        end_clock = self.clock_at(self.last) if self.speed else self.anchor_clock
        self.loop_index += 1
        self.cursor = 0
        self.anchor_rec = self.first
        self.anchor_clock = end_clock

    # -- steering (on-demand replays) -----------------------------------------------------

    def pause(self, now: float) -> None:
        """Hold the position: the anchor moves there and time stops counting."""
        if not self.paused:
            self.anchor_rec = round(self.position(now))
            self.anchor_clock = now
            self.paused = True

    def resume(self, now: float) -> None:
        """Go on from where the pause held, re-anchored to now."""
        if self.paused:
            self.anchor_clock = now
            self.paused = False

    def seek(self, t_us: int, now: float) -> None:
        """Continue from the first tick at or after recording time ``t_us``."""
        table = self.table
        t_us = min(max(t_us, self.first), self.last)
        self.cursor = int(np.searchsorted(table.t, t_us, side="left"))
        self.anchor_rec = t_us
        self.anchor_clock = now

    def set_speed(self, speed: float, now: float) -> None:
        """Change speed without a jump: re-anchored at the current position."""
        if not speed >= 0:
            raise ValueError("speed must be >= 0")
        self.anchor_rec = round(self.position(now))
        if self.speed == 0 and self.cursor < len(self.table):
            self.anchor_rec = int(self.table.t[self.cursor])
        self.anchor_clock = now
        self.speed = speed

    # -- what goes out ------------------------------------------------------------------

    def _ticks(self, rows: slice, now: float) -> TickBatch:
        table = self.table
        t = table.t[rows]
        if self.options.keep_time:
            t = t + self.loop_index * self._t_span
        elif self.speed == 0:
            t = np.full(len(t), self.wall0_us + round((now - self.clock0) * US), np.int64)
        else:
            due = self.anchor_clock - self.clock0 + (t - self.anchor_rec) / (self.speed * US)
            t = self.wall0_us + np.round(due * US).astype(np.int64)
        sym, q = table.sym[rows], table.q[rows]
        if self.loop_index:
            q = np.where(q > 0, q + self.loop_index * self._q_span[sym], 0)
        out = TickTable(
            table.symbols, t, sym, table.p[rows], table.b[rows], table.a[rows], table.v[rows], q
        )
        return out.ticks()


def span(table: TickTable, times: np.ndarray) -> tuple[int, int] | None:
    """The recording times of the first and last row of ``table`` and of events timed
    beside it (sorted ``times``), for ``Replay``'s ``span``; None without such events."""
    if not len(times):
        return None
    ends = [int(times[0]), int(times[-1])]
    if len(table):
        ends += [int(table.t[0]), int(table.t[-1])]
    return min(ends), max(ends)


class Timed:
    """Events at recording times (halts, book rows), handed over once the replay reaches
    them: how many of this pass's are out, and when the next is due."""

    __slots__ = ("done", "times")

    def __init__(self, times: np.ndarray) -> None:
        self.times = times
        self.done = 0

    def reached(self, position: float) -> range:
        """Indices of the events newly reached at ``position`` (µs)."""
        start = self.done
        self.done = max(start, int(np.searchsorted(self.times, position, side="right")))
        return range(start, self.done)

    def wait(self, replay: Replay, now: float) -> float | None:
        """Seconds until the next event is due (None: none left, or the clock stands)."""
        if self.done >= len(self.times) or replay.speed == 0 or replay.paused:
            return None
        return max(0.0, replay.clock_at(int(self.times[self.done])) - now)
