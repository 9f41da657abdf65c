"""``TickTable``: ticks as columns, the one shape every format is read into and written from.

Columns (numpy arrays of one length): ``t`` int64 microseconds since the Unix epoch UTC,
``sym`` int32 index into ``symbols``, ``p``/``b``/``a``/``v`` float64 with NaN for "absent",
``q`` int64 with 0 for "absent" (the bus numbers ticks from 1). Optional ``lines`` holds the
source line of each tick, for error messages only; it is never written.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ticker.core.symbols import symbol_problem
from ticker.core.ticks import Tick, TickBatch

FLOAT_FIELDS = ("p", "b", "a", "v")
COLUMNS = ("t", "sym", "p", "b", "a", "v", "q")
DTYPES: dict[str, np.dtype] = {
    "t": np.dtype("<i8"),
    "sym": np.dtype("<i4"),
    "p": np.dtype("<f8"),
    "b": np.dtype("<f8"),
    "a": np.dtype("<f8"),
    "v": np.dtype("<f8"),
    "q": np.dtype("<i8"),
}
TickField = Literal["p", "b", "a", "v", "t", "q"]
ROW_FIELDS: tuple[TickField, ...] = ("p", "b", "a", "v", "t", "q")
"""The order :meth:`TickTable.ticks` writes a tick's fields in, after ``s``."""


def valid_symbol(symbol: object) -> bool:
    """A symbol read from a file is input: the one rule of ``ticker/core/symbols.py`` (a
    recorded ``AAPL@1m`` would read back as a candle topic)."""
    return symbol_problem(symbol) is None


@dataclass(slots=True)
class TickTable:
    """Ticks as numpy columns: every format reads into it and writes from it."""

    symbols: list[str]
    t: np.ndarray
    sym: np.ndarray
    p: np.ndarray
    b: np.ndarray
    a: np.ndarray
    v: np.ndarray
    q: np.ndarray
    lines: np.ndarray | None = None

    @classmethod
    def empty(cls, symbols: Sequence[str] = ()) -> TickTable:
        """A table of no ticks (an empty file still has a symbol table)."""
        return cls(list(symbols), **{c: np.empty(0, DTYPES[c]) for c in COLUMNS})

    @classmethod
    def build(
        cls,
        symbols: Sequence[str],
        *,
        t: np.ndarray,
        sym: np.ndarray,
        p: np.ndarray,
        b: np.ndarray | None = None,
        a: np.ndarray | None = None,
        v: np.ndarray | None = None,
        q: np.ndarray | None = None,
        lines: np.ndarray | None = None,
    ) -> TickTable:
        """A table from whichever columns a source has; the others are absent."""
        n = len(t)

        def col(values: np.ndarray | None, name: str) -> np.ndarray:
            fill = 0 if name == "q" else np.nan
            if values is None:
                return np.full(n, fill, DTYPES[name])
            return np.ascontiguousarray(values, DTYPES[name])

        return cls(
            list(symbols),
            col(t, "t"),
            col(sym, "sym"),
            col(p, "p"),
            col(b, "b"),
            col(a, "a"),
            col(v, "v"),
            col(q, "q"),
            lines,
        )

    def __len__(self) -> int:
        return len(self.t)

    def column(self, name: str) -> np.ndarray:
        """A column by its name, for code that loops over ``COLUMNS``."""
        values: np.ndarray = getattr(self, name)
        return values

    def take(self, index: np.ndarray | slice) -> TickTable:
        """The rows at ``index`` (a mask, indices or a slice), same symbol table."""
        lines = None if self.lines is None else self.lines[index]
        return TickTable(self.symbols, **{c: getattr(self, c)[index] for c in COLUMNS}, lines=lines)

    def first_disorder(self) -> int | None:
        """Index of the first tick whose time is before its predecessor's, if any."""
        back = np.flatnonzero(self.t[1:] < self.t[:-1])
        return int(back[0]) + 1 if len(back) else None

    def sorted_by_time(self) -> TickTable:
        """Stable: ticks with equal times keep their order (a sweep stays in sequence)."""
        return self.take(np.argsort(self.t, kind="stable"))

    def select(
        self,
        *,
        symbols: Iterable[str] | None = None,
        start: int | None = None,
        end: int | None = None,
    ) -> TickTable:
        """Ticks of these symbols with ``start <= t < end`` (µs); the symbol table is kept."""
        mask = np.ones(len(self), bool)
        if symbols is not None:
            wanted = set(symbols)
            keep = np.array([s in wanted for s in self.symbols] + [False], bool)
            mask &= keep[self.sym]
        if start is not None:
            mask &= self.t >= start
        if end is not None:
            mask &= self.t < end
        return self if mask.all() else self.take(mask)

    def equals(self, other: TickTable) -> bool:
        """Same ticks, symbol names compared (not indices), NaN equal to NaN."""
        if len(self) != len(other):
            return False
        names, other_names = np.array(self.symbols, object), np.array(other.symbols, object)
        if len(self) and not (names[self.sym] == other_names[other.sym]).all():
            return False
        return all(
            np.array_equal(getattr(self, c), getattr(other, c), equal_nan=c in FLOAT_FIELDS)
            for c in ("t", "p", "b", "a", "v", "q")
        )

    # -- to and from protocol ticks --------------------------------------------------

    def ticks(self, start: int = 0, stop: int | None = None) -> TickBatch:
        """Rows ``start:stop`` as protocol tick dicts; absent fields are left out.

        Columns with nothing absent in the range (the usual case) are zipped whole, so the
        cost is one dict per tick and no per-field test.
        """
        part = slice(start, stop)
        names = np.array(self.symbols, object)[self.sym[part]].tolist()
        keys: list[str] = ["s"]
        columns: list[list[Any]] = [names]
        ragged: list[tuple[TickField, list[Any]]] = []
        for name in ROW_FIELDS:
            values = getattr(self, name)[part]
            absent = values == 0 if name == "q" else np.isnan(values) if name != "t" else None
            if absent is None or not absent.any():
                keys.append(name)
                columns.append(values.tolist())
            elif not absent.all():
                boxed = values.astype(object)
                boxed[absent] = None
                ragged.append((name, boxed.tolist()))
        ticks: TickBatch = _row_builder(tuple(keys))(columns)
        for name, values in ragged:
            for tick, value in zip(ticks, values, strict=True):
                if value is not None:
                    tick[name] = value
        return ticks

    @classmethod
    def from_ticks(cls, ticks: Sequence[Tick], symbols: dict[str, int] | None = None) -> TickTable:
        """Protocol tick dicts as a table; ``symbols`` (name -> index) is extended in place."""
        index: dict[str, int] = {} if symbols is None else symbols
        sym = np.fromiter(
            (index.setdefault(t["s"], len(index)) for t in ticks), DTYPES["sym"], len(ticks)
        )
        nan = float("nan")
        cols = {
            name: np.fromiter((t.get(name, nan) for t in ticks), DTYPES[name], len(ticks))
            for name in FLOAT_FIELDS
        }
        return cls(
            list(index),
            np.fromiter((t.get("t", 0) for t in ticks), DTYPES["t"], len(ticks)),
            sym,
            cols["p"],
            cols["b"],
            cols["a"],
            cols["v"],
            np.fromiter((t.get("q", 0) for t in ticks), DTYPES["q"], len(ticks)),
        )


@functools.cache
def _row_builder(keys: tuple[str, ...]) -> Callable[[list[list[Any]]], TickBatch]:
    """A list comprehension with a dict display for exactly these keys, compiled once.

    A dict display is about three times faster than ``dict(zip(keys, row))``, and this is
    the replay's cost per tick. ``keys`` are column names from this module, never input.
    """
    assert all(k in ("s", *COLUMNS) for k in keys)
    names = [f"c{i}" for i in range(len(keys))]
    display = ", ".join(f"{key!r}: {name}" for key, name in zip(keys, names, strict=True))
    targets = ", ".join(names) + ("," if len(names) == 1 else "")
    build: Callable[[list[list[Any]]], TickBatch] = eval(
        f"lambda columns: [{{{display}}} for {targets} in zip(*columns)]"
    )
    return build


def concat(tables: Sequence[TickTable]) -> TickTable:
    """One table of all rows, in order, with one merged symbol table."""
    if not tables:
        return TickTable.empty()
    if len(tables) == 1:
        return tables[0]
    index: dict[str, int] = {}
    syms = []
    for table in tables:
        remap = np.array([index.setdefault(s, len(index)) for s in table.symbols] + [0], "<i4")
        syms.append(remap[table.sym])
    lines = [t.lines for t in tables if t.lines is not None]
    return TickTable(
        list(index),
        sym=np.concatenate(syms),
        **{c: np.concatenate([getattr(t, c) for t in tables]) for c in COLUMNS if c != "sym"},
        lines=np.concatenate(lines) if len(lines) == len(tables) else None,
    )
