"""``--feed replay:PATH``: a recording played into the bus as a ``FeedAdapter``.

The files are loaded (and checked) when the feed is made, so a bad file stops the server
before it listens, with the file and line in the message. ``stream()`` paces the ticks
with ``Replay``: absolute scheduling against the recording's clock, the clock and sleep
injectable for tests.

The feed reports its symbols' status itself: ``halted`` and live again where a LOBSTER
file's type-7 rows say so, at their time in the recording, and ``closed`` when the
recording ends. A recording's book rows (``ticker/recording/book_lines.py``) go to the
node's books (``bind_books``) at their time, among the ticks, on the same clock: halts
and book rows are both timed events, each handed over once the replay has reached it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np

from feeds.base import FeedProgress
from ticker.core.books import BookSink
from ticker.core.status import CLOSED, HALTED, LIVE, StatusSink
from ticker.core.ticks import MicrosClock, TickBatch, now_us
from ticker.progress import Progress
from ticker.recording.book_lines import BookLog
from ticker.recording.formats import load
from ticker.recording.importers import lobster
from ticker.recording.importers.generic_csv import CsvMapping
from ticker.recording.importers.lobster import Halt, Naming
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.schedule import Replay, ReplayOptions, Timed, span
from ticker.recording.table import TickTable

log = logging.getLogger("ticker.replay")

DEFAULT_OPTIONS = ReplayOptions()


def select(
    table: TickTable,
    source: str,
    symbols: Sequence[str] | None,
    start: int | None,
    end: int | None,
    books: BookLog | None = None,
) -> TickTable:
    """The window and symbols asked for, or an error saying why it is empty; ``books``
    (if given) is cut to the same window in place."""
    chosen = table.select(symbols=symbols, start=start, end=end)
    has_books = False
    if books is not None:
        window = books.select(symbols, start, end)
        books.rows, books.lines = window.rows, window.lines
        has_books = bool(len(books))
    if not len(chosen) and not has_books:
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
        books: BookLog | None = None,
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
        self.books = books or BookLog()
        """The recording's book rows (in time order), for ``bind_books``."""
        chosen = set(self.symbols())
        self.halts = sorted((h for h in halts if h.symbol in chosen), key=lambda h: h.t)
        """The recording's trading halts and resumptions of the symbols replayed."""
        self._status: StatusSink | None = None
        self._books: BookSink | None = None
        self._refused = False

    def bind_books(self, sink: BookSink) -> None:
        """Hand the recording's book rows to ``sink`` at their times."""
        self._books = sink

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
        books = BookLog()
        table = load(
            paths, problems, sort=sort, fmt=fmt, mapping=mapping, naming=naming, books=books
        )
        halts = [
            halt
            for path in paths
            if fmt == "lobster" or (fmt is None and lobster.matches(path))
            for halt in lobster.read_halts(path, Problems(), naming)
            if (start is None or halt.t >= start) and (end is None or halt.t <= end)
        ]
        chosen = select(table, str(paths[0]), symbols, start, end, books)
        return cls(chosen, options, halts=halts, books=books)

    def symbols(self) -> list[str]:
        """The symbols that have ticks or books in the selection, not the whole file's table."""
        ticked = {self.table.symbols[i] for i in set(self.table.sym.tolist())}
        return sorted(ticked | self.books.symbols())

    def span(self) -> tuple[int, int]:
        """The recording times (µs) of the first and last row replayed, tick or book."""
        found = span(self.table, self.books.times())
        return found or (int(self.table.t[0]), int(self.table.t[-1]))

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
        if len(self.books) and self._books is None and not self._refused:
            self._refused = True  # a node without books (--book-interval-ms 0)
            log.warning("replay: %d book rows not replayed: books are off", len(self.books))
        replay = self.replay = Replay(
            self.table,
            self.options,
            now=clock(),
            wall_us=self._wall_clock(),
            span=span(self.table, self.books.times()),
        )
        meter = self.meter
        halts = Timed(np.array([h.t for h in self.halts], np.int64))
        rows = Timed(self.books.times())
        begun: set[str] = set()
        """Books handed a row in this pass: the first of each is a reset (a restart or a
        new pass starts each book over, whatever the node held)."""
        loop_index = 0

        def hand() -> None:
            reached = replay.reached(clock())
            self._report_halts(halts.reached(reached))
            self._hand_books(rows.reached(reached), begun)

        while True:
            hand()  # what this pass has reached by now, before a new pass may begin
            batch = replay.batch(clock())
            if replay.loop_index != loop_index:  # a new pass: its halts and books come again
                loop_index, halts.done, rows.done = replay.loop_index, 0, 0
                begun.clear()
            hand()  # and what the batch reaches, before its ticks go out
            if batch:
                yield batch
                if meter is not None:
                    meter.advance(len(batch))
            now = clock()
            waits = [w for w in (halts.wait(replay, now), rows.wait(replay, now)) if w is not None]
            wait = replay.wait(now)
            if wait is None and not waits:
                if meter is not None:
                    meter.done()
                if self._status is not None:
                    self._status(self.symbols(), CLOSED, "the feed ended")
                return
            await self._sleep(min(waits + ([] if wait is None else [wait])))

    def _report_halts(self, due: range) -> None:
        """Report the halts the replay has reached (before the ticks after them)."""
        sink = self._status
        if sink is None:
            return
        for i in due:
            halt = self.halts[i]
            sink([halt.symbol], HALTED if halt.reason else LIVE, halt.reason)

    def _hand_books(self, due: range, begun: set[str]) -> None:
        """Hand the node the book rows the replay has reached."""
        sink = self._books
        if sink is None:
            return
        for i in due:
            row = self.books.rows[i]
            sink(row.s, row.bids, row.asks, row.reset or row.s not in begun)
            begun.add(row.s)
