"""A log of everything broadcast, kdb+tick style: one file per UTC day, the date in its
name, and a new file when one grows past a size.

Files are ``ticks-YYYY-MM-DD-NNN.<suffix>`` (NNN counts from 000 within a day), so a
name sort is a time sort and a whole day replays with ``--feed replay:DIR``. A restart
never appends to an existing file (it could end in a torn tail): it takes the next number.

Book rows (``book_lines.py``) go in among the ticks. So that each file replays on its
own, the recorder keeps a copy of every book it wrote (the engine's ``Book``) and begins
each new file with a reset row per book: the whole book as it stands; a book first seen
in a file begins with its whole book too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ticker.core.books import Book
from ticker.core.ticks import TickBatch
from ticker.recording.book_lines import BookRow, whole
from ticker.recording.formats import TickWriter, holds_books, open_writer

SUFFIXES = (".jsonl", ".jsonl.gz", ".ticks")
DAY_US = 86_400_000_000


def day_of(t_us: int) -> str:
    """The UTC date of a tick time: recordings are cut at UTC midnight, whatever the local zone."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t_us)).date().isoformat()


class RotatingRecorder:
    """Writes batches of stamped ticks (each with ``t``) into the day's current file."""

    def __init__(self, directory: Path, *, suffix: str = ".jsonl.gz", max_bytes: int = 1 << 30):
        if suffix not in SUFFIXES:
            raise ValueError(f"suffix must be one of {', '.join(SUFFIXES)}")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.suffix = suffix
        self.max_bytes = max_bytes
        self._writer: TickWriter | None = None
        self._day_end = 0
        self.files: list[Path] = []
        self.ticks = 0
        self.book_rows = 0
        self._books: dict[str, Book] = {}
        """Every book as the rows written so far left it."""
        self._in_file: set[str] = set()
        """The books the current file has begun with a reset."""
        self._fresh = False
        """The current file has had no write yet: it begins with every book known."""

    @property
    def holds_books(self) -> bool:
        """Whether the files can hold book rows (``.ticks`` directories cannot)."""
        return holds_books(Path(f"x{self.suffix}"))

    def write(self, ticks: TickBatch, books: Sequence[BookRow] = ()) -> None:
        """Append a batch of ticks and book rows (each in time order), starting a new file
        at midnight UTC or past ``max_bytes``, so no file grows without bound."""
        while ticks or books:
            first = min(([ticks[0]["t"]] if ticks else []) + ([books[0].t] if books else []))
            if self._writer is None or first >= self._day_end:
                self._open(first)
            assert self._writer is not None
            end = self._day_end  # a batch that crosses midnight (rare) is split there
            cut = next((i for i, t in enumerate(ticks) if t["t"] >= end), len(ticks))
            book_cut = next((i for i, r in enumerate(books) if r.t >= end), len(books))
            part, ticks = ticks[:cut], ticks[cut:]
            rows, books = self._rows(books[:book_cut], first), books[book_cut:]
            self._writer.write_ticks(part, rows)
            self.ticks += len(part)
            self.book_rows += len(rows)
            if self._writer.bytes >= self.max_bytes:
                self._close_current()

    def _rows(self, rows: Sequence[BookRow], first: int) -> list[BookRow]:
        """The rows to write: each applied to the recorder's copy of its book; a book's
        first in this file written as its whole book (a reset)."""
        out: list[BookRow] = []
        if self._fresh:  # a new file: every book known begins it
            self._fresh = False
            for symbol, book in self._books.items():
                if len(book.bids) or len(book.asks):
                    out.append(BookRow(first, symbol, *whole(book), reset=True))
                    self._in_file.add(symbol)
        for row in rows:
            if row.s not in self._books:
                self._books[row.s] = Book(row.s)
            book = self._books[row.s]
            (book.reset if row.reset else book.apply)(row.bids, row.asks, ())
            if row.reset or row.s in self._in_file:
                out.append(row)
            else:
                out.append(BookRow(row.t, row.s, *whole(book), reset=True))
            self._in_file.add(row.s)
        return out

    def _open(self, t_us: int) -> None:
        self._close_current()
        day = day_of(t_us)
        pattern = re.compile(rf"ticks-{day}-(\d{{3,}})\.")
        taken = [int(m[1]) for p in self.directory.iterdir() if (m := pattern.match(p.name))]
        number = max(taken, default=-1) + 1
        path = self.directory / f"ticks-{day}-{number:03d}{self.suffix}"
        self._writer = open_writer(path)
        self._fresh = True
        self.files.append(path)
        self._day_end = (t_us // DAY_US + 1) * DAY_US

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._in_file = set()

    def close(self) -> None:
        """Close the current file, leaving every file complete."""
        self._close_current()
