"""Book change sets in a recording: one JSON line each, among the tick lines.

``{"type":"book","s":"AAPL","t":1340280000000000,"bids":[[p,size],...],"asks":[...]}``
with ``"reset":true`` when the change set is the source's whole book (a snapshot). Tick
lines have no ``type``, so a reader tells them apart by that key, and a recording of
books and ticks replays both in the order of its lines (``t`` ascending).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from ticker.core.books import Book, Level
from ticker.core.publish_books import check_side

TYPE = "book"


@dataclass(frozen=True, slots=True)
class BookRow:
    """One recorded change set: absolute levels (size 0 removes), at ``t`` (µs)."""

    t: int
    s: str
    bids: list[Level]
    asks: list[Level]
    reset: bool = False


def encode(row: BookRow) -> bytes:
    """The row's line, without its newline."""
    obj: dict[str, Any] = {"type": TYPE, "s": row.s, "t": row.t, "bids": row.bids, "asks": row.asks}
    if row.reset:
        obj["reset"] = True
    return orjson.dumps(obj)


def is_book(obj: Any) -> bool:
    """Whether a parsed line is a book row (rather than a tick)."""
    return isinstance(obj, dict) and obj.get("type") == TYPE


def parse(obj: dict[str, Any]) -> BookRow:
    """A book row from its parsed line, or ``ValueError`` saying what is wrong."""
    symbol, t = obj.get("s"), obj.get("t")
    if not isinstance(symbol, str) or not symbol:
        raise ValueError("a book row needs s, its symbol")
    if not isinstance(t, int) or isinstance(t, bool) or t < 0:
        raise ValueError("a book row needs t, microseconds since 1970")
    reset = obj.get("reset", False)
    if not isinstance(reset, bool):
        raise ValueError("reset must be true or false")
    problems: list[tuple[str, str]] = []
    bids = check_side("bids", obj.get("bids", []), problems, prefix="")
    asks = check_side("asks", obj.get("asks", []), problems, prefix="")
    if problems:
        raise ValueError("; ".join(f"{where}: {why}" for where, why in problems[:3]))
    return BookRow(t, symbol, bids, asks, reset)


@dataclass(slots=True)
class BookLog:
    """A recording's book rows, in file order, with the line each came from (for
    messages: a row out of time order names its line, as a tick does)."""

    rows: list[BookRow] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, row: BookRow, line: int = 0) -> None:
        """One more row, read from ``line`` (0: not read from a file)."""
        self.rows.append(row)
        self.lines.append(line)

    def extend(self, other: BookLog) -> None:
        """Another file's rows after these (``sorted_by_time`` merges them)."""
        self.rows += other.rows
        self.lines += other.lines

    def first_disorder(self) -> int | None:
        """Index of the first row whose time is before its predecessor's, if any."""
        rows = self.rows
        return next((i for i in range(1, len(rows)) if rows[i].t < rows[i - 1].t), None)

    def sorted_by_time(self) -> BookLog:
        """Stable: rows of one time keep their order (a reset stays before its changes)."""
        order = sorted(range(len(self.rows)), key=lambda i: self.rows[i].t)
        return BookLog([self.rows[i] for i in order], [self.lines[i] for i in order])

    def times(self) -> np.ndarray:
        """Each row's ``t`` (µs), for the replay's schedule."""
        return np.fromiter((row.t for row in self.rows), np.int64, len(self.rows))

    def symbols(self) -> set[str]:
        """The books in the log."""
        return {row.s for row in self.rows}

    def select(self, symbols: Iterable[str] | None, start: int | None, end: int | None) -> BookLog:
        """The rows of these symbols with ``start <= t < end``. A book that changed before
        ``start`` begins with a reset to what it was then, so the window replays on its own."""
        wanted = None if symbols is None else set(symbols)
        before: dict[str, Book] = {}
        out = BookLog()
        for row, line in zip(self.rows, self.lines, strict=True):
            if wanted is not None and row.s not in wanted:
                continue
            if end is not None and row.t >= end:
                break
            if start is not None and row.t < start:
                book = before.setdefault(row.s, Book(row.s))
                (book.reset if row.reset else book.apply)(row.bids, row.asks, ())
                continue
            held = before.pop(row.s, None)
            if held is not None and not row.reset:
                out.add(BookRow(row.t, row.s, *whole(held), reset=True), line)
            out.add(row, line)
        for book in before.values():  # nothing in the window: the book as it stood
            if start is not None:
                out.add(BookRow(start, book.symbol, *whole(book), reset=True))
        return out if out.first_disorder() is None else out.sorted_by_time()


def whole(book: Book) -> tuple[list[Level], list[Level]]:
    """Every level of a book, each side best first: a reset row's levels."""
    return [(p, s) for p, s in book.bids.top(None)], [(p, s) for p, s in book.asks.top(None)]
