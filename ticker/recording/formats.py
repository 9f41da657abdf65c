"""Which format a path is in, and one entry point to read any of them or write ours.

Readers: ``jsonl`` (``.jsonl``, ``.jsonl.gz``), ``npz``, ``ticks`` (a column directory),
and the importers ``lobster``, ``tardis``, ``coinbase``, ``csv`` (with a column mapping).
Writers: ``jsonl``/``jsonl.gz``, ``npz`` and ``ticks``, chosen by the output's name.

Order books (``ticker/recording/book_lines.py``) come beside the ticks: readers that know
books (JSON Lines, LOBSTER with its orderbook file, tardis ``incremental_book_L2``,
Coinbase ``level2``) fill the ``BookLog`` a caller passes; only JSON Lines holds them, so
the column writers refuse book rows rather than drop them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from ticker.core.symbols import symbol_problem
from ticker.core.ticks import TickBatch
from ticker.recording.book_lines import BookLog, BookRow
from ticker.recording.columnar import (
    ColumnarDirWriter,
    NpzWriter,
    is_columnar_dir,
    read_columnar_dir,
    read_npz,
)
from ticker.recording.importers import coinbase, lobster, tardis, tardis_book
from ticker.recording.importers.generic_csv import CsvMapping, read_generic_csv
from ticker.recording.jsonl import JsonlReader, JsonlWriter, is_gzip
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.table import TickTable, concat, valid_symbol

READ_FORMATS = ("jsonl", "npz", "ticks", "lobster", "tardis", "coinbase", "csv")
WRITE_SUFFIXES = (".jsonl", ".jsonl.gz", ".npz", ".ticks")


def _first_line(path: Path) -> str:
    with path.open("rb") as f:
        return f.readline(4096).decode("utf-8", "replace")


def detect(path: Path) -> str:
    """The format of ``path`` from its name, or its first line where names say nothing."""
    name = path.name
    if is_columnar_dir(path):
        return "ticks"
    if path.is_dir():
        raise RecordingError(path, "a directory, but not a column directory (no t.npy)")
    if not path.exists():
        raise RecordingError(path, "no such file")
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return "jsonl"
    if name.endswith(".npz"):
        return "npz"
    if lobster.matches(path):
        return "lobster"
    if is_gzip(path):
        return "jsonl"
    first = _first_line(path)
    if tardis.matches_header(first):
        return "tardis"
    if coinbase.matches_first_line(first):
        return "coinbase"
    if name.endswith(".csv"):
        return "csv"
    if first.lstrip().startswith("{"):
        return "jsonl"
    raise RecordingError(
        path,
        "cannot tell the format (expected .jsonl, .jsonl.gz, .npz, a .ticks directory, "
        "a LOBSTER message file, a tardis trades or incremental_book_L2 CSV, a Coinbase "
        "recording or a .csv); "
        "give it with --format",
    )


def format_of(
    path: Path, fmt: str | None, mapping: CsvMapping | None, naming: lobster.Naming | None
) -> str:
    """``fmt`` if given, else detected; with a LOBSTER naming (``--symbol``/``--date``) a
    file that does not say what it is (a .csv without a mapping, say) is a renamed LOBSTER
    file."""
    if fmt is not None:
        return fmt
    try:
        found = detect(path)
    except RecordingError:
        if naming is None or not path.is_file():
            raise
        return "lobster"
    return "lobster" if naming is not None and found == "csv" and mapping is None else found


def read_tables(
    path: Path,
    problems: Problems,
    *,
    fmt: str | None = None,
    mapping: CsvMapping | None = None,
    naming: lobster.Naming | None = None,
    books: BookLog | None = None,
) -> Iterator[TickTable]:
    """The file's ticks, in file order, in one or more tables (JSONL streams in chunks).
    ``naming``: a LOBSTER file's symbol and date, for one renamed. ``books``: where its
    book rows go (None: only its ticks are read)."""
    fmt = format_of(path, fmt, mapping, naming)
    found = BookLog()
    if fmt == "jsonl":  # rows go to ``books`` as read: a converter streams them along
        yield from JsonlReader(path, problems, books).tables()
        return
    readers = {"npz": read_npz, "ticks": read_columnar_dir, "tardis": tardis.read_tardis}
    if fmt == "csv":
        table = read_generic_csv(path, problems, mapping)
    elif fmt == "lobster":
        table = lobster.read_lobster(path, problems, naming)
        if books is not None:
            lobster.read_books(path, problems, naming, found)
    elif fmt == "coinbase":
        table = coinbase.read_coinbase(path, problems, None if books is None else found)
    elif fmt == "tardis" and tardis_book.matches_header(_first_line(path)):
        table = tardis_book.read_books(path, problems, found)
    elif fmt in readers:
        table = readers[fmt](path, problems)
    else:
        raise RecordingError(path, f"unknown format {fmt!r}; known: {', '.join(READ_FORMATS)}")
    if not len(table) and not (books is not None and len(found)):
        raise RecordingError(path, f"no ticks in it (read as {fmt})")
    problem = next((symbol_problem(s) for s in table.symbols if not valid_symbol(s)), None)
    if problem is not None:
        raise RecordingError(path, problem)
    if books is not None:
        books.extend(found)
    yield table


def expand(paths: Sequence[Path]) -> list[Path]:
    """Files and column directories; a plain directory stands for the recordings in it."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir() and not is_columnar_dir(path):
            inside = sorted(p for p in path.iterdir() if not p.name.startswith("."))
            if not inside:
                raise RecordingError(path, "an empty directory: no recordings in it")
            out += [p for p in inside if p.is_file() or is_columnar_dir(p)]
        else:
            out.append(path)
    return out


def check_order(path: Path, table: TickTable, sort: bool, problems: Problems) -> TickTable:
    """A file's ticks must go forward in time; ``sort`` fixes it (stable), with a warning."""
    i = table.first_disorder()
    if i is None:
        return table
    where = f"line {table.lines[i]}" if table.lines is not None else f"tick #{i + 1}"
    if not sort:
        line = int(table.lines[i]) if table.lines is not None else None
        raise RecordingError(
            path,
            f"timestamps go backwards at {where} (t={table.t[i]} after {table.t[i - 1]}); "
            "pass --sort to sort the ticks by time",
            line,
        )
    problems.warn(path, f"out of order from {where}: sorted by time (--sort)")
    return table.sorted_by_time()


def check_book_order(path: Path, log: BookLog, sort: bool, problems: Problems) -> BookLog:
    """A file's book rows must go forward in time, as its ticks must (``--sort`` fixes it)."""
    i = log.first_disorder()
    if i is None:
        return log
    row, line = log.rows[i], log.lines[i]
    if not sort:
        raise RecordingError(
            path,
            f"book rows go backwards in time at line {line} (t={row.t} after "
            f"{log.rows[i - 1].t}); pass --sort to sort them by time",
            line,
        )
    problems.warn(path, f"book rows out of order from line {line}: sorted by time (--sort)")
    return log.sorted_by_time()


def load(
    paths: Sequence[Path],
    problems: Problems,
    *,
    sort: bool = False,
    fmt: str | None = None,
    mapping: CsvMapping | None = None,
    naming: lobster.Naming | None = None,
    books: BookLog | None = None,
) -> TickTable:
    """All ticks of these files as one table in time order (files merged by time), and
    their book rows into ``books`` (if given), likewise."""
    tables = []
    for path in expand(paths):
        found = None if books is None else BookLog()
        table = concat(
            list(read_tables(path, problems, fmt=fmt, mapping=mapping, naming=naming, books=found))
        )
        tables.append(check_order(path, table, sort, problems))
        if books is not None and found is not None:
            books.extend(check_book_order(path, found, sort, problems))
    merged = concat(tables)
    if len(tables) > 1 and merged.first_disorder() is not None:
        merged = merged.sorted_by_time()  # files side by side (one per symbol, say)
    if books is not None and books.first_disorder() is not None:
        sorted_books = books.sorted_by_time()
        books.rows, books.lines = sorted_books.rows, sorted_books.lines
    merged.lines = None
    return merged


class TickWriter(Protocol):
    """What every writer of ours offers (read-only counts: the writers keep them)."""

    path: Path

    @property
    def ticks(self) -> int:
        """Ticks written so far (progress, rotation)."""

    @property
    def bytes(self) -> int:
        """Bytes written so far: ``--record-max-bytes`` rotates on it."""

    @property
    def books(self) -> int:
        """Book rows written so far."""

    def write_ticks(self, ticks: TickBatch, books: Sequence[BookRow] = ()) -> None:
        """Append protocol tick dicts, as the bus publishes them, and book rows of the
        same span, merged by time (``RecordingError`` from a format without books)."""

    def write_table(self, table: TickTable, books: Sequence[BookRow] = ()) -> None:
        """Append a table, as a conversion reads it, and book rows, likewise."""

    def close(self) -> None:
        """Finish the file: until then it may not be complete."""


def remove(path: Path) -> None:
    """A writer's output gone, file or column directory (a failed or refused run's)."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def holds_books(path: Path) -> bool:
    """Whether the format of this output name can hold book rows (JSON Lines only)."""
    return path.name.endswith((".jsonl", ".jsonl.gz"))


def check_output_name(path: Path) -> None:
    """RecordingError unless the name says one of the formats we write, in a directory
    that exists (an OSError would name the file it failed on, not what to do)."""
    if not path.name.endswith(WRITE_SUFFIXES):
        raise RecordingError(path, f"output name must end with one of {', '.join(WRITE_SUFFIXES)}")
    if not path.parent.is_dir():
        raise RecordingError(path, f"no directory {path.parent} to write it in: create it first")


def open_writer(path: Path) -> TickWriter:
    """A new file (never overwrites) in the format its name says."""
    check_output_name(path)
    name = path.name
    if path.exists():
        raise RecordingError(path, "already exists; not overwriting it")
    if name.endswith((".jsonl", ".jsonl.gz")):
        return JsonlWriter(path)
    if name.endswith(".npz"):
        return NpzWriter(path)
    return ColumnarDirWriter(path)
