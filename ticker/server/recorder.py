"""``ticker serve --record DIR``: everything the bus publishes, logged off the hot path.

The recorder is one more bus subscriber: a mode ``all`` mailbox on "*", so a publish costs
it what it costs any client (a reference to the batch's bytes). A task drains the mailbox
and writes in a worker thread (decoding, compressing and disk I/O never run on the event
loop). The mailbox is bounded like any other: if the disk cannot keep up by more than
``queue_bytes``, what was queued is lost and logged (the broadcast itself never waits).
At shutdown, after the feeds have stopped, the rest is drained and the files closed.

Order books: every change set a book pass applied (``BookService.on_applied``) becomes a
book row, queued beside the ticks and written with them in time order (``rotating.py``
begins each file with every book whole). That queue is bounded too: past
``MAX_BOOK_LEVELS`` its rows are dropped (logged) and replaced by a reset of each of
their books as it stands, so the file's books stay right from there on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from aiohttp import web

from ticker.core.books import Level
from ticker.core.bus import WILDCARD, Bus
from ticker.core.mailbox import QueueMailbox
from ticker.core.ticks import now_us
from ticker.recording.book_lines import BookRow, whole
from ticker.recording.rotating import RotatingRecorder
from ticker.server.books import BookService

log = logging.getLogger("ticker.recorder")

QUEUE_BYTES = 64 * 1024 * 1024
DRAIN_BYTES = 4 * 1024 * 1024
"""Bytes of ticks handed to the writer thread at once."""
MAX_BOOK_LEVELS = 1_000_000
"""Levels of book rows queued for the writer at most."""


class BusRecorder:
    """The bus subscriber behind ``--record``: writes off the event loop, never slows a publish."""

    def __init__(
        self,
        bus: Bus,
        directory: Path,
        *,
        suffix: str = ".jsonl.gz",
        max_bytes: int = 1 << 30,
        queue_bytes: int = QUEUE_BYTES,
        books: BookService | None = None,
    ) -> None:
        self.bus = bus
        self.log = RotatingRecorder(directory, suffix=suffix, max_bytes=max_bytes)
        self._ready = asyncio.Event()
        self.mailbox = QueueMailbox(queue_bytes, self._ready.set)
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.books = books
        """The node's books, recorded as they are applied (None: ticks only)."""
        self._rows: list[BookRow] = []
        self._levels = 0

    def start(self) -> None:
        """Subscribe to "*" (and to the books' applied change sets) and start the task
        that drains to disk."""
        self.bus.subscribe(self.mailbox, [WILDCARD])
        if self.books is not None:
            if self.log.holds_books:
                self.books.on_applied.append(self._applied)
            else:
                log.warning(
                    "--record: order books are not recorded: %s files hold ticks only "
                    "(--record-format jsonl or jsonl.gz records them)",
                    self.log.suffix,
                )
                self.books = None
        self._task = asyncio.create_task(self._run(), name="recorder")

    def _applied(
        self, symbol: str, reset: bool, bids: list[Level], asks: list[Level], u: int
    ) -> None:
        """One change set a book pass applied: queued as a row (bounded)."""
        self._rows.append(BookRow(now_us(), symbol, bids, asks, reset))
        self._levels += len(bids) + len(asks)
        if self._levels > MAX_BOOK_LEVELS:
            self._resync()
        self._ready.set()

    def _resync(self) -> None:
        """The writer fell behind: the queued rows go, each of their books whole instead."""
        assert self.books is not None
        symbols = {row.s: None for row in self._rows}
        log.error("recorder fell behind: %d book rows replaced by resets", len(self._rows))
        t = now_us()
        books = self.books.books
        self._rows = [BookRow(t, s, *whole(books.book(s)), reset=True) for s in symbols]
        self._levels = sum(len(r.bids) + len(r.asks) for r in self._rows)

    async def _run(self) -> None:
        while not self._closing:
            await self._ready.wait()
            self._ready.clear()
            await self._drain()

    async def _drain(self) -> None:
        mailbox = self.mailbox
        if mailbox.overflowed:
            log.error("recorder fell more than %d bytes behind: ticks lost", mailbox.limit_bytes)
            mailbox.overflowed = False
        while len(mailbox) or self._rows:
            segments, _ = mailbox.drain(DRAIN_BYTES) if len(mailbox) else ([], 0)
            rows, self._rows, self._levels = self._rows, [], 0
            await asyncio.to_thread(self._write, segments, rows)

    def _write(self, segments: list[bytes], rows: list[BookRow]) -> None:
        ticks = orjson.loads(b"[" + b",".join(segments) + b"]")
        self.log.write(ticks, rows)

    async def close(self) -> None:
        """Drain what the bus already published, then close the files."""
        self.bus.unsubscribe(self.mailbox, [WILDCARD])
        if self.books is not None:
            self.books.on_applied.remove(self._applied)
        self._closing = True
        self._ready.set()
        if self._task is not None:
            await self._task  # never cancelled mid-write: one writer thread at a time
        await self._drain()
        await asyncio.to_thread(self.log.close)
        log.info(
            "recorded %d ticks and %d book rows in %d file(s)",
            self.log.ticks,
            self.log.book_rows,
            len(self.log.files),
        )

    def attach(self, app: web.Application) -> None:
        """Run with the app: started at startup, drained and closed at cleanup (by then
        ``Node.shutdown`` has stopped the feeds, so nothing published is left out)."""

        async def context(app: web.Application) -> AsyncIterator[None]:
            self.start()
            yield
            await self.close()

        app.cleanup_ctx.append(context)
