"""tardis.dev normalised trades CSV (``exchange,symbol,timestamp,local_timestamp,id,side,
price,amount``): every row is one trade; ``timestamp`` is the exchange time in µs UTC."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ticker.recording.importers.csvcolumns import Column, read_columns, read_text_lines
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.table import TickTable

HEADER = ("exchange", "symbol", "timestamp", "local_timestamp", "id", "side", "price", "amount")


def matches_header(first_line: str) -> bool:
    """Sniffs the format from its header, for files named without a hint."""
    return tuple(first_line.strip().split(",")[:4]) == HEADER[:4]


def named_columns(
    path: Path, lines: list[str], kinds: dict[str, str], what: str, problems: Problems
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The columns of ``kinds`` (name -> kind), found by header name, so tardis adding a
    column does not break the import; ``what`` names the file kind when one is missing."""
    header = lines[0].strip().split(",")
    missing = [name for name in kinds if name not in header]
    if missing:
        raise RecordingError(path, f"not a {what}: the header has no {', '.join(missing)}", 1)
    spec = [Column(header.index(name), name, kind) for name, kind in kinds.items()]
    return read_columns(path, lines[1:], 2, spec, problems)


def read_tardis(path: Path, problems: Problems) -> TickTable:
    """A tardis trades CSV as ticks."""
    lines = read_text_lines(path)
    kinds = {"symbol": "str", "timestamp": "int", "price": "float", "amount": "float"}
    cols, numbers = named_columns(path, lines, kinds, "tardis trades CSV", problems)
    if not len(numbers):
        raise RecordingError(path, "no trades in it (a header only)")
    symbols, sym = np.unique(cols["symbol"], return_inverse=True)
    return TickTable.build(
        symbols.tolist(),
        t=cols["timestamp"],
        sym=sym,
        p=cols["price"],
        v=cols["amount"],
        lines=numbers,
    )
