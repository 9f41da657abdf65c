"""``ticker convert IN... OUT``: any readable format into one of ours, losslessly.

One input that is in time order streams through in chunks (bounded memory); several
inputs, or ``--sort``, are loaded whole to merge or sort them. The output appears only on
success: it is written under a hidden partial name and renamed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from ticker.progress import Progress
from ticker.recording.formats import (
    READ_FORMATS,
    check_order,
    expand,
    load,
    open_writer,
    read_tables,
)
from ticker.recording.importers.generic_csv import TIME_UNITS, CsvMapping
from ticker.recording.problems import ON_ERROR, Problems, RecordingError
from ticker.recording.table import TickTable

WRITE_CHUNK = 65536
EXIT_BAD_INPUT = 2


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """How to read recordings: shared by ``convert`` and the replay feed of ``serve``."""
    add = parser.add_option  # type: ignore[attr-defined]
    add("--format", default=None, choices=READ_FORMATS, help="input format (default: detected)")
    add("--columns", default=None, help="plain CSV column mapping, e.g. t=time,s=sym,p=price")
    add("--time-unit", default="us", choices=tuple(TIME_UNITS), help="plain CSV time unit")
    add("--on-error", default="stop", choices=ON_ERROR, help="a bad line: stop (exit 2) or skip")
    parser.add_flag("--sort", help="sort ticks that are out of time order")  # type: ignore[attr-defined]


def mapping_from(args: argparse.Namespace) -> CsvMapping | None:
    if args.columns is None:
        return None
    return CsvMapping.parse(args.columns, args.time_unit)


def add_parser(commands: argparse._SubParsersAction) -> None:
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
    add_input_options(parser)


def _chunks(args: argparse.Namespace, problems: Problems) -> Iterator[TickTable]:
    inputs = expand(args.inputs)
    mapping = mapping_from(args)
    if len(inputs) == 1 and not args.sort:
        last_t = None
        for table in read_tables(inputs[0], problems, fmt=args.format, mapping=mapping):
            if len(table) and last_t is not None and table.t[0] < last_t:
                raise RecordingError(
                    inputs[0],
                    "timestamps go backwards; pass --sort to sort the ticks by time",
                    None if table.lines is None else int(table.lines[0]),
                )
            yield check_order(inputs[0], table, False, problems)
            last_t = table.t[-1] if len(table) else last_t
        return
    table = load(inputs, problems, sort=args.sort, fmt=args.format, mapping=mapping)
    for start in range(0, len(table), WRITE_CHUNK):
        yield table.take(slice(start, start + WRITE_CHUNK))


def run(args: argparse.Namespace) -> int:
    out: Path = args.output
    partial = out.with_name(f".partial-{out.name}")  # same suffix: same format
    problems = Problems(args.on_error)
    progress = Progress(f"convert -> {out.name}")
    try:
        if out.exists():
            raise RecordingError(out, "already exists; not overwriting it")
        _remove(partial)
        writer = open_writer(partial)
        try:
            for table in _chunks(args, problems):
                writer.write_table(table)
                progress.advance(len(table))
        finally:
            writer.close()
        os.replace(partial, out)
    except (RecordingError, ValueError) as exc:
        _remove(partial)
        print(f"ticker convert: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    progress.done()
    for line in problems.summary():
        print(line, file=sys.stderr)
    print(f"wrote {writer.ticks:,} ticks to {out}", file=sys.stderr)
    return 0


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
