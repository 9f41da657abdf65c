"""``ticker convert IN... OUT``: any readable format into one of ours, losslessly.

One input that is in time order streams through in chunks (bounded memory); several
inputs, or ``--sort``, are loaded whole to merge or sort them. The output appears only on
success: it is written under a hidden partial name and renamed at the end. Book rows (a
LOBSTER orderbook file, tardis ``incremental_book_L2``, Coinbase ``level2``, a recording
with books) are written among the ticks in time order; an output that cannot hold them
(.npz, .ticks) is an error, never a silent drop.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

from ticker.commands.envparser import Commands, EnvParser
from ticker.progress import Progress
from ticker.recording.book_lines import BookLog, BookRow
from ticker.recording.columnar import refuse_books
from ticker.recording.formats import (
    READ_FORMATS,
    check_order,
    check_output_name,
    expand,
    holds_books,
    load,
    open_writer,
    read_tables,
    remove,
)
from ticker.recording.importers.generic_csv import TIME_UNITS, CsvMapping
from ticker.recording.importers.lobster import Naming
from ticker.recording.problems import ON_ERROR, Problems, RecordingError
from ticker.recording.table import TickTable, valid_symbol

WRITE_CHUNK = 65536
EXIT_BAD_INPUT = 2


def add_input_options(parser: EnvParser) -> None:
    """How to read recordings: shared by ``convert`` and the replay feed of ``serve``."""
    add = parser.add_option
    add("--format", default=None, choices=READ_FORMATS, help="input format (default: detected)")
    add("--columns", default=None, help="plain CSV column mapping, e.g. t=time,s=sym,p=price")
    add("--time-unit", default="us", choices=tuple(TIME_UNITS), help="plain CSV time unit")
    add("--on-error", default="stop", choices=ON_ERROR, help="a bad line: stop (exit 2) or skip")
    add("--symbol", default=None, help="LOBSTER: the symbol, for a file not named SYMBOL_DATE_...")
    add("--date", type=_day, default=None, help="LOBSTER: the trading day (YYYY-MM-DD), likewise")
    parser.add_flag("--sort", help="sort ticks that are out of time order")


def _day(text: str) -> date:
    return date.fromisoformat(text)


_day.__name__ = "date (YYYY-MM-DD)"  # what argparse says of a bad one


def mapping_from(args: argparse.Namespace) -> CsvMapping | None:
    """The plain CSV mapping of ``--columns``/``--time-unit``; ValueError if malformed."""
    if args.columns is None:
        return None
    try:
        return CsvMapping.parse(args.columns, args.time_unit)
    except ValueError as exc:
        raise ValueError(f"--columns {args.columns}: {exc}") from None


def naming_from(args: argparse.Namespace) -> Naming | None:
    """A renamed LOBSTER file's ``--symbol``/``--date``; None when neither is given."""
    if args.symbol is None and args.date is None:
        return None
    if args.symbol is not None and not valid_symbol(args.symbol):
        raise ValueError(f"--symbol {args.symbol!r}: not a valid symbol (1 to 32 characters)")
    return Naming(args.symbol, args.date)


def add_parser(commands: Commands) -> None:
    """``convert IN... OUT`` with the input options and ``--force``."""
    parser = commands.add_parser(
        "convert",
        help="convert recordings between formats",
        description="Convert recordings (jsonl, jsonl.gz, npz, .ticks directories, LOBSTER, "
        "tardis, Coinbase, CSV) into .jsonl, .jsonl.gz, .npz or a .ticks directory.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="files or directories")
    parser.add_argument(
        "output", type=Path, metavar="OUT", help="new file: its name sets the format"
    )
    parser.add_flag("--force", help="overwrite OUT if it exists")
    add_input_options(parser)


Chunk = tuple[TickTable, list[BookRow]]


def _chunks(args: argparse.Namespace, problems: Problems) -> Iterator[Chunk]:
    """Tables to write, each with the book rows up to its last tick (the rest at the end)."""
    inputs = expand(args.inputs)
    books = BookLog()
    if len(inputs) == 1 and not args.sort:
        yield from _with_books(_stream(args, inputs[0], problems, books), books, inputs[0])
        return
    mapping, naming = mapping_from(args), naming_from(args)
    table = load(
        inputs,
        problems,
        sort=args.sort,
        fmt=args.format,
        mapping=mapping,
        naming=naming,
        books=books,
    )
    parts = (table.take(slice(i, i + WRITE_CHUNK)) for i in range(0, len(table), WRITE_CHUNK))
    yield from _with_books(parts, books, None)


def _with_books(tables: Iterable[TickTable], books: BookLog, path: Path | None) -> Iterator[Chunk]:
    """Each table with the book rows read so far up to its last tick. ``path``: the one
    input streamed, whose rows are checked for time order as they go."""
    taken = 0
    last_t = -1
    for table in tables:
        upto = int(table.t[-1]) if len(table) else -1
        end = taken
        while end < len(books) and books.rows[end].t <= upto:
            end += 1
        yield table, _in_order(books, taken, end, last_t, path)
        if end > taken:
            last_t = books.rows[end - 1].t
        taken = end
    yield TickTable.empty(), _in_order(books, taken, len(books), last_t, path)


def _in_order(
    books: BookLog, start: int, end: int, last_t: int, path: Path | None
) -> list[BookRow]:
    rows = books.rows[start:end]
    if path is not None:
        for i, row in enumerate(rows):
            if row.t < (rows[i - 1].t if i else last_t):
                raise RecordingError(
                    path,
                    "book rows go backwards in time; pass --sort to sort them by time",
                    books.lines[start + i],
                )
    return rows


def _stream(
    args: argparse.Namespace, path: Path, problems: Problems, books: BookLog
) -> Iterator[TickTable]:
    """One input in time order, chunk by chunk; its book rows go to ``books`` as read."""
    mapping, naming = mapping_from(args), naming_from(args)
    last_t = None
    for table in read_tables(
        path, problems, fmt=args.format, mapping=mapping, naming=naming, books=books
    ):
        if len(table) and last_t is not None and table.t[0] < last_t:
            raise RecordingError(
                path,
                "timestamps go backwards; pass --sort to sort the ticks by time",
                None if table.lines is None else int(table.lines[0]),
            )
        yield check_order(path, table, False, problems)
        last_t = table.t[-1] if len(table) else last_t


def run(args: argparse.Namespace) -> int:
    """Convert; exit 2 with one line naming the file on bad input, OUT left untouched."""
    out: Path = args.output
    partial = out.with_name(f".partial-{out.name}")  # same suffix: same format
    problems = Problems(args.on_error, "--on-error")
    progress = Progress(f"convert -> {out.name}")
    try:
        check_output_name(out)  # before the partial name would stand in for it
        if out.exists() and not args.force:
            raise RecordingError(out, "already exists; pass --force to overwrite it")
        remove(partial)
        writer = open_writer(partial)
        try:
            for table, books in _chunks(args, problems):
                if not holds_books(out):
                    refuse_books(out, books)  # named as the user named it, not the partial
                writer.write_table(table, books)
                progress.advance(len(table) + len(books))
        finally:
            writer.close()
        if out.exists() and (out.is_dir() or partial.is_dir()):  # --force; os.replace
            remove(out)  # swaps a file for a file atomically, not directories
        os.replace(partial, out)
    except (OSError, RecordingError, ValueError) as exc:  # OSError: a read-only OUT, say
        remove(partial)
        print(f"ticker convert: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    progress.done()
    for line in problems.summary():
        print(line, file=sys.stderr)
    rows = f" and {writer.books:,} book rows" if writer.books else ""
    print(f"wrote {writer.ticks:,} ticks{rows} to {out}", file=sys.stderr)
    return 0
