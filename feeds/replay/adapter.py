"""``--feed replay:PATH``: a recording played into the bus as a ``FeedAdapter``.

The files are loaded (and checked) when the feed is made, so a bad file stops the server
before it listens, with the file and line in the message. ``stream()`` paces the ticks
with ``Replay``: absolute scheduling against the recording's clock, the clock and sleep
injectable for tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from pathlib import Path

from feeds.base import FeedProgress
from ticker.core.ticks import MicrosClock, TickBatch, now_us
from ticker.progress import Progress
from ticker.recording.formats import load
from ticker.recording.importers.generic_csv import CsvMapping
from ticker.recording.importers.lobster import Naming
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
        return cls(select(table, str(paths[0]), symbols, start, end), options)

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
        while True:
            batch = replay.batch(clock())
            if batch:
                yield batch
                if meter is not None:
                    meter.advance(len(batch))
            wait = replay.wait(clock())
            if wait is None:
                if meter is not None:
                    meter.done()
                return
            await self._sleep(wait)  # 0 when more is due: the loop still gets a turn
