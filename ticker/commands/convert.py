"""``ticker convert IN... OUT``: any readable format into one of ours, losslessly.

One input that is in time order streams through in chunks (bounded memory); several
inputs, or ``--sort``, are loaded whole to merge or sort them. The output appears only on
success: it is written under a hidden partial name and renamed at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from ticker.commands.envparser import Commands, EnvParser
from ticker.progress import Progress
from ticker.recording.formats import (
    READ_FORMATS,
    check_order,
    check_output_name,
    expand,
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


def _chunks(args: argparse.Namespace, problems: Problems) -> Iterator[TickTable]:
    inputs = expand(args.inputs)
    mapping, naming = mapping_from(args), naming_from(args)
    if len(inputs) == 1 and not args.sort:
        last_t = None
        for table in read_tables(
            inputs[0], problems, fmt=args.format, mapping=mapping, naming=naming
        ):
            if len(table) and last_t is not None and table.t[0] < last_t:
                raise RecordingError(
                    inputs[0],
                    "timestamps go backwards; pass --sort to sort the ticks by time",
                    None if table.lines is None else int(table.lines[0]),
                )
            yield check_order(inputs[0], table, False, problems)
            last_t = table.t[-1] if len(table) else last_t
        return
    table = load(inputs, problems, sort=args.sort, fmt=args.format, mapping=mapping, naming=naming)
    for start in range(0, len(table), WRITE_CHUNK):
        yield table.take(slice(start, start + WRITE_CHUNK))


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
            for table in _chunks(args, problems):
                writer.write_table(table)
                progress.advance(len(table))
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
    print(f"wrote {writer.ticks:,} ticks to {out}", file=sys.stderr)
    return 0
