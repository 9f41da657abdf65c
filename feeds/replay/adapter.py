"""``--feed replay:PATH``: a recording played into the bus as a ``FeedAdapter``.

The files are loaded (and checked) when the feed is made, so a bad file stops the server
before it listens, with the file and line in the message. ``stream()`` paces the ticks
with ``Replay``: absolute scheduling against the recording's clock, the clock and sleep
injectable for tests.

The feed reports its symbols' status itself: ``halted`` and live again where a LOBSTER
file's type-7 rows say so, at their time in the recording, and ``closed`` when the
recording ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from pathlib import Path

from feeds.base import FeedProgress
from ticker.core.status import CLOSED, HALTED, LIVE, StatusSink
from ticker.core.ticks import MicrosClock, TickBatch, now_us
from ticker.progress import Progress
from ticker.recording.formats import load
from ticker.recording.importers import lobster
from ticker.recording.importers.generic_csv import CsvMapping
from ticker.recording.importers.lobster import Halt, Naming
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.schedule import Replay, ReplayOptions
from ticker.recording.table import TickTable

DEFAULT_OPTIONS = ReplayOptions()


def select(
    table: TickTable,
    source: str,
    symbols: Sequence[str] | None,
    start: int | None,
    end: int | None,
) -> TickTable:
    """The window and symbols asked for, or an error saying why it is empty."""
    chosen = table.select(symbols=symbols, start=start, end=end)
    if not len(chosen):
        raise RecordingError(source, "no ticks in the selected time window and symbols")
    return chosen


class ReplayFeed:
    """A ``FeedAdapter`` replaying ``table``; see ``ticker/recording/schedule.py`` for pacing."""

    def __init__(
        self,
        table: TickTable,
        options: ReplayOptions = DEFAULT_OPTIONS,
        *,
        name: str = "replay",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: MicrosClock = now_us,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        meter: Progress | None = None,
        halts: Sequence[Halt] = (),
    ) -> None:
        self.name = name
        self.meter = meter
        """Advanced per batch, done at the end: for a flat-out (speed 0) replay on a TTY."""
        self.table = table
        self.options = options
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self.replay: Replay | None = None
        chosen = set(self.symbols())
        self.halts = sorted((h for h in halts if h.symbol in chosen), key=lambda h: h.t)
        """The recording's trading halts and resumptions of the symbols replayed."""
        self._status: StatusSink | None = None

    def bind_status(self, sink: StatusSink) -> None:
        """Report halts and the end of the recording to ``sink``."""
        self._status = sink

    @classmethod
    def from_paths(
        cls,
        paths: Sequence[Path],
        options: ReplayOptions,
        problems: Problems,
        *,
        symbols: Sequence[str] | None = None,
        start: int | None = None,
        end: int | None = None,
        sort: bool = False,
        fmt: str | None = None,
        mapping: CsvMapping | None = None,
        naming: Naming | None = None,
    ) -> ReplayFeed:
        """The feed of recordings read as ``load`` reads them (``fmt`` None: detected)."""
        table = load(paths, problems, sort=sort, fmt=fmt, mapping=mapping, naming=naming)
        halts = [
            halt
            for path in paths
            if fmt == "lobster" or (fmt is None and lobster.matches(path))
            for halt in lobster.read_halts(path, Problems(), naming)
            if (start is None or halt.t >= start) and (end is None or halt.t <= end)
        ]
        chosen = select(table, str(paths[0]), symbols, start, end)
        return cls(chosen, options, halts=halts)

    def symbols(self) -> list[str]:
        """The symbols that have ticks in the selection, not the whole file's table."""
        return sorted({self.table.symbols[i] for i in set(self.table.sym.tolist())})

    def progress(self) -> FeedProgress | None:
        """For the replay metrics: the recording time of the last tick yielded, and the
        share of the current pass done."""
        replay = self.replay
        if replay is None or replay.cursor == 0:
            return None
        cursor = replay.cursor
        return FeedProgress(int(self.table.t[cursor - 1]) / 1e6, cursor / len(self.table))

    async def stream(self) -> AsyncGenerator[TickBatch, None]:
        """Yield batches on schedule; at speed 0 as fast as they are taken. Ends with the
        recording unless looping. A restart (by the supervisor) starts over."""
        clock = self._clock
        replay = self.replay = Replay(
            self.table, self.options, now=clock(), wall_us=self._wall_clock()
        )
        meter = self.meter
        halted = 0  # halts reported in this pass
        loop_index = 0
        while True:
            batch = replay.batch(clock())
            if replay.loop_index != loop_index:  # a new pass: its halts come again
                loop_index, halted = replay.loop_index, 0
            halted = self._report_halts(replay, clock(), halted)
            if batch:
                yield batch
                if meter is not None:
                    meter.advance(len(batch))
            wait = replay.wait(clock())
            if wait is None:
                if meter is not None:
                    meter.done()
                if self._status is not None:
                    self._status(self.symbols(), CLOSED, "the feed ended")
                return
            if halted < len(self.halts) and replay.speed > 0 and not replay.paused:
                wait = min(wait, max(0.0, replay.clock_at(self.halts[halted].t) - clock()))
            await self._sleep(wait)  # 0 when more is due: the loop still gets a turn

    def _report_halts(self, replay: Replay, now: float, done: int) -> int:
        """Report the halts the replay has reached (before the ticks after them); returns
        how many of this pass's are reported."""
        halts, sink = self.halts, self._status
        if not halts or sink is None:
            return done
        reached = replay.position(now)  # at speed 0 it stays put: the ticks taken tell
        if replay.cursor:
            reached = max(reached, int(replay.table.t[replay.cursor - 1]))
        while done < len(halts) and halts[done].t <= reached:
            halt = halts[done]
            sink([halt.symbol], HALTED if halt.reason else LIVE, halt.reason)
            done += 1
        return done
