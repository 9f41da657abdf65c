"""Any CSV with a header row, given a column mapping: ``t=time,s=ticker,p=price,v=qty``.

Keys are tick fields (``t`` and ``p`` required; ``s``, ``b``, ``a``, ``v``, ``q``
optional), values are header names. ``s=:NAME`` gives every row the symbol NAME (a file
of one instrument). ``t`` is read in ``time_unit``: ``s`` (decimal seconds, exact), ``ms``,
``us``, ``ns`` (integers) or ``iso`` (ISO-8601, UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ticker.recording.importers.csvcolumns import Column, read_columns, read_text_lines
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.table import TickTable, valid_symbol

TIME_UNITS = {"s": 1_000_000, "ms": 1000, "us": 1, "ns": 1, "iso": 1}
FIELDS = ("t", "s", "p", "b", "a", "v", "q")


@dataclass(frozen=True, slots=True)
class CsvMapping:
    """How a CSV with its own header names maps onto tick fields (``--columns``)."""

    columns: dict[str, str] = field(default_factory=dict)
    """Tick field -> header name."""
    symbol: str | None = None
    """The one symbol of every row, when no column holds it."""
    time_unit: str = "us"

    @classmethod
    def parse(cls, text: str, time_unit: str = "us") -> CsvMapping:
        """``t=time,s=sym,p=price``; raises ValueError with a message for the user."""
        if time_unit not in TIME_UNITS:
            raise ValueError(f"time unit must be one of {', '.join(TIME_UNITS)}")
        columns: dict[str, str] = {}
        symbol = None
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key not in FIELDS or not value:
                raise ValueError(f"{item!r}: expected FIELD=COLUMN with FIELD one of {FIELDS}")
            if key == "s" and value.startswith(":"):
                symbol = value[1:]
                if not valid_symbol(symbol):
                    raise ValueError(f"{symbol!r} is not a valid symbol")
            else:
                columns[key] = value
        if "t" not in columns or "p" not in columns or ("s" not in columns and symbol is None):
            raise ValueError("the mapping needs t, p and s (s=:NAME for a fixed symbol)")
        return cls(columns, symbol, time_unit)


def read_generic_csv(path: Path, problems: Problems, mapping: CsvMapping | None) -> TickTable:
    """Any CSV with a header, given the mapping: there is no guessing which column is the price."""
    if mapping is None:
        raise RecordingError(
            path,
            "a plain CSV needs a column mapping: --columns t=COL,s=COL,p=COL[,v=COL...] "
            "(a renamed LOBSTER message file: --symbol and --date)",
        )
    lines = read_text_lines(path)
    header = [name.strip().strip('"') for name in lines[0].split(",")]
    missing = [name for name in mapping.columns.values() if name not in header]
    if missing:
        raise RecordingError(
            path,
            f"no column(s) {', '.join(missing)} in the header; --columns can name: "
            + ", ".join(header[:20]),
            1,
        )
    unit = mapping.time_unit
    time_kind = {"s": "decimal", "iso": "iso"}.get(unit, "int")
    kinds = {"t": time_kind, "s": "str", "q": "int"}
    spec = [
        Column(header.index(name), name, kinds.get(key, "float"))
        for key, name in mapping.columns.items()
    ]
    cols, numbers = read_columns(path, lines[1:], 2, spec, problems)
    if not len(numbers):
        raise RecordingError(path, "no rows after the header")
    values = {key: cols[name] for key, name in mapping.columns.items()}
    t = values.pop("t")
    t = t // 1000 if unit in ("s", "ns") else t * TIME_UNITS[unit]
    sym: np.ndarray
    if mapping.symbol is not None:
        symbols, sym = [mapping.symbol], np.zeros(len(t), np.int32)
    else:
        names, sym = np.unique(values.pop("s"), return_inverse=True)
        symbols = names.tolist()  # checked with every format's in formats.read_tables
    return TickTable.build(symbols, t=t, sym=sym, lines=numbers, **values)
