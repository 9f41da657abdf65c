"""JSON Lines of protocol ticks (``.jsonl``, or gzip-compressed ``.jsonl.gz``).

One tick per line, exactly as clients receive it: ``{"s":..,"p":..,"t":..,"q":..}``, and
order-book change sets among them (``{"type":"book",...}``, ``book_lines.py``), all in
time order.
Readable by anything, appendable, and crash-safe: the writer flushes whole lines per
batch (gzip with a sync flush, so everything flushed decodes), and the reader treats an
unfinished last line or an unterminated gzip stream as a torn tail: reported, never read
as data.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import orjson

from ticker.core.ticks import TickBatch
from ticker.recording import book_lines
from ticker.recording.book_lines import BookLog, BookRow
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.table import FLOAT_FIELDS, TickTable, valid_symbol

CHUNK = 65536
"""Ticks per table the reader yields: bounded memory for files of any size."""

GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    """By the magic bytes, not the name: a renamed file still opens (and a fake .gz is caught)."""
    with path.open("rb") as f:
        return f.read(2) == GZIP_MAGIC


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_tick(obj: Any) -> str | None:
    """What is wrong with one decoded line as a protocol tick, or None."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    if not valid_symbol(obj.get("s")):
        return '"s" must be a symbol (a string of 1 to 32 characters)'
    for name in FLOAT_FIELDS:
        if name in obj and not _number(obj[name]):
            return f'"{name}" must be a number'
    if "p" not in obj:
        return 'no price ("p")'
    t = obj.get("t")
    if not isinstance(t, int) or isinstance(t, bool) or t < 0:
        return '"t" must be a timestamp in integer microseconds'
    q = obj.get("q", 1)
    if not isinstance(q, int) or isinstance(q, bool) or q < 1:
        return '"q" must be a positive integer'
    return None


def _book_row(obj: dict[str, Any]) -> BookRow:
    row = book_lines.parse(obj)
    if not valid_symbol(row.s):
        raise ValueError('"s" must be a symbol (a string of 1 to 32 characters)')
    return row


class JsonlReader:
    """Reads a tick file in tables of at most ``CHUNK`` ticks; its book rows go to
    ``books`` (None: they are passed over, for a reader of ticks only)."""

    def __init__(self, path: Path, problems: Problems, books: BookLog | None = None) -> None:
        self.path = path
        self.problems = problems
        self.books = books

    def _open(self) -> IO[bytes]:
        if is_gzip(self.path):
            return cast(IO[bytes], gzip.open(self.path, "rb"))
        if self.path.name.endswith(".gz"):
            raise RecordingError(self.path, "not a gzip file (no gzip header)")
        return self.path.open("rb")

    def tables(self) -> Iterator[TickTable]:
        """The file as tables of bounded size, each bad line raised or skipped
        with its number, so a big file never sits in memory as dicts."""
        path, problems = self.path, self.problems
        symbols: dict[str, int] = {}
        ticks: TickBatch = []
        lines: list[int] = []
        number = total = book_rows = 0
        first = True
        with self._open() as f:
            try:
                for number, raw in enumerate(f, 1):
                    if not raw.strip():
                        continue
                    error = None
                    try:
                        obj = orjson.loads(raw)
                        if book_lines.is_book(obj):
                            first = False
                            book_rows += self._book(obj, number)
                            continue
                        error = check_tick(obj)
                    except orjson.JSONDecodeError:
                        error = "not valid JSON"
                        if not raw.endswith(b"\n") and not first:
                            problems.warn(path, f"torn tail: line {number} is an unfinished record")
                            break
                    if error is not None:
                        if first:
                            raise RecordingError(
                                path, f"not a JSON Lines tick file: {error}", number
                            )
                        problems.bad(path, number, error)
                        continue
                    first = False
                    ticks.append(obj)
                    lines.append(number)
                    total += 1
                    if len(ticks) == CHUNK:
                        yield self._table(ticks, lines, symbols)
                        ticks, lines = [], []
            except EOFError:
                problems.warn(
                    path,
                    f"torn tail: the gzip stream ends without its end marker after line "
                    f"{number} (the writer did not finish); the complete lines before it are kept",
                )
            except (gzip.BadGzipFile, zlib.error) as exc:
                raise RecordingError(
                    path, f"corrupt gzip data after line {number}: {exc}"
                ) from None
        if not total and not book_rows:
            raise RecordingError(path, "empty file: no ticks in it" if first else "no valid ticks")
        if ticks:
            yield self._table(ticks, lines, symbols)

    def _book(self, obj: dict[str, Any], number: int) -> int:
        """Keep one book line (or report it as bad); 1 if it is a good row."""
        try:
            row = _book_row(obj)
        except ValueError as exc:
            self.problems.bad(self.path, number, f"bad book row: {exc}")
            return 0
        if self.books is not None:
            self.books.add(row, number)
        return 1

    @staticmethod
    def _table(ticks: TickBatch, lines: list[int], symbols: dict[str, int]) -> TickTable:
        table = TickTable.from_ticks(ticks, symbols)
        table.lines = np.array(lines, np.int64)
        return table


def merged_lines(ticks: TickBatch, books: Sequence[BookRow]) -> list[bytes]:
    """Tick lines and book lines in time order (both already are): a book row goes after
    the ticks of its time."""
    dumps = orjson.dumps
    lines = [dumps(t) for t in ticks]
    if not books:
        return lines
    out: list[bytes] = []
    i, n = 0, len(ticks)
    for row in books:
        while i < n and ticks[i]["t"] <= row.t:
            out.append(lines[i])
            i += 1
        out.append(book_lines.encode(row))
    out += lines[i:]
    return out


class JsonlWriter:
    """Appends ticks as lines; each ``write_*`` call ends flushed on whole lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        raw = path.open("xb")
        self._file: IO[bytes] = (
            cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="wb")) if _gz(path) else raw
        )
        self._raw = raw
        self.ticks = 0
        self.bytes = 0
        self.books = 0

    def write_ticks(self, ticks: TickBatch, books: Sequence[BookRow] = ()) -> None:
        """One line per tick and per book row, merged by time, one write per batch."""
        if not ticks and not books:
            return
        data = b"\n".join(merged_lines(ticks, books)) + b"\n"
        self._file.write(data)
        self._file.flush()  # gzip: a sync flush, so what is on disk decodes
        self.ticks += len(ticks)
        self.books += len(books)
        self.bytes += len(data)

    def write_table(self, table: TickTable, books: Sequence[BookRow] = ()) -> None:
        """A table as its protocol ticks, one line each, and book rows among them."""
        self.write_ticks(table.ticks(), books)

    def close(self) -> None:
        """Flush and close: a ``.jsonl.gz`` is complete only after this."""
        self._file.close()
        self._raw.close()


def _gz(path: Path) -> bool:
    return path.name.endswith(".gz")
