"""OHLCV bars per symbol and interval, built from ticks in batches, without I/O.

A bar covers one bucket ``[ts, ts + interval)`` aligned on UTC: ``ts`` is a multiple of
the interval in µs since the Unix epoch, so ``1d`` bars are UTC days and ``4h`` bars start
at 00:00, 04:00... UTC. Its fields come from the ticks' own ``t``, ``p`` and ``v``: the
open is the first price, the close the last, ``v`` the sum of volumes, ``n`` the tick
count. A bucket without ticks makes no bar. A bar closes when a tick of a later bucket
arrives or, for a quiet symbol, when its bucket has ended on the stream's clock
(``close_due``); a tick for a bucket already closed is dropped from the bars (``late``).

Work is per batch and per interval, vectorised with numpy: a handful of array calls per
interval whatever the number of ticks or symbols. The open bars of an interval are one
row per symbol of a structured array; closed bars go to a ``BarRing`` of each (symbol,
interval), bounded at ``depth`` bars (``BAR_BYTES`` each).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import orjson

from ticker.core.tape import Columns
from ticker.core.ticks import MicrosClock, now_us
from ticker.core.topics import TopicKind

INTERVALS: dict[str, int] = {
    "1s": 1_000_000,
    "5s": 5_000_000,
    "15s": 15_000_000,
    "1m": 60_000_000,
    "5m": 300_000_000,
    "15m": 900_000_000,
    "1h": 3_600_000_000,
    "4h": 14_400_000_000,
    "1d": 86_400_000_000,
}
"""Every interval served, in µs; ``1d`` is a UTC day."""

CANDLES = TopicKind("candles", INTERVALS.__contains__, " ".join(INTERVALS))
"""The derived-topic kind ``SYMBOL@INTERVAL``."""

DEFAULT_HISTORY = 1440
BAR = np.dtype(
    [
        ("ts", "<i8"),
        ("o", "<f8"),
        ("h", "<f8"),
        ("l", "<f8"),
        ("c", "<f8"),
        ("v", "<f8"),
        ("n", "<i8"),
    ]
)
BAR_BYTES = BAR.itemsize
"""56: what one closed bar costs in its ring (ts, o, h, l, c, v, n)."""
_FIRST_CAPACITY = 64
_NEVER = np.iinfo(np.int64).min
"""The floor of a symbol the interval has not seen a tick of."""

Key = tuple[str, str]
"""(symbol, interval): one bar series."""


class BarRing:
    """The closed bars of one (symbol, interval), oldest first, at most ``depth``.

    Storage grows by doubling up to ``depth`` rows, so a short-lived series costs little
    and a full one ``depth * BAR_BYTES``.
    """

    __slots__ = ("_data", "_head", "_size", "depth")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._data = np.zeros(min(depth, _FIRST_CAPACITY), BAR)
        self._head = 0  # where the next bar goes
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, rows: np.ndarray) -> None:
        """Append closed bars (oldest first); the oldest leave past ``depth``."""
        rows = rows[-self.depth :]
        need = self._size + len(rows)
        capacity = len(self._data)
        if need > capacity and capacity < self.depth:
            grown = np.zeros(min(self.depth, max(need, capacity * 2)), BAR)
            grown[: self._size] = self.last(self._size)
            self._data, self._head = grown, self._size % len(grown)
            capacity = len(grown)
        at = (self._head + np.arange(len(rows))) % capacity
        self._data[at] = rows
        self._head = (self._head + len(rows)) % capacity
        self._size = min(capacity, need)

    def merge(self, rows: np.ndarray) -> int:
        """Add bars of buckets it does not hold (a late node's history from its peers),
        in ``ts`` order, the newest ``depth`` kept; returns how many new bars stayed."""
        held = self.last(self._size)
        rows = rows[~np.isin(rows["ts"], held["ts"])]
        if not len(rows):
            return 0
        both = np.concatenate([held, rows])
        both = both[np.argsort(both["ts"], kind="stable")][-self.depth :]
        self._data = both  # full: ``extend`` grows it again
        self._size, self._head = len(both), 0
        return int(np.isin(both["ts"], rows["ts"]).sum())

    def last(self, n: int, end: int | None = None) -> np.ndarray:
        """The last ``n`` bars (those starting before ``end`` µs, if given), oldest first."""
        capacity = len(self._data)
        start = (self._head - self._size) % capacity
        rows = self._data[(start + np.arange(self._size)) % capacity]
        if end is not None:
            rows = rows[: np.searchsorted(rows["ts"], end, "left")]
        return rows[max(0, len(rows) - n) :]

    def nbytes(self) -> int:
        """Bytes the ring's storage takes now (``BAR_BYTES`` per row allocated)."""
        return int(self._data.nbytes)


class _Interval:
    """The open bar of every symbol for one interval: one row per symbol index."""

    __slots__ = ("dirty", "floor", "open", "us")

    def __init__(self, us: int) -> None:
        self.us = us
        self.open = np.zeros(0, BAR)
        """n == 0: no open bar."""
        self.floor = np.zeros(0, np.int64)
        """The earliest bucket a tick may still count in (ticks before it are late)."""
        self.dirty = np.zeros(0, bool)
        """The open bar changed since ``take_dirty``."""

    def grow(self, size: int) -> None:
        extra = size - len(self.open)
        self.open = np.concatenate([self.open, np.zeros(extra, BAR)])
        self.floor = np.concatenate([self.floor, np.full(extra, _NEVER)])
        self.dirty = np.concatenate([self.dirty, np.zeros(extra, bool)])


def _keep_monotone(sym: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    """Per symbol, the ticks whose bucket is not before an earlier tick's (the rest are late)."""
    keep = np.ones(len(buckets), bool)
    starts = np.flatnonzero(np.r_[True, sym[1:] != sym[:-1]])
    for start, end in zip(starts, np.r_[starts[1:], len(sym)], strict=True):
        run = buckets[start:end]
        keep[start:end] = run >= np.maximum.accumulate(run)
    return keep


class Candles:
    """Every symbol's bars for every interval of ``intervals``; see the module docstring.

    ``clock`` (µs) tells ``close_due`` how far the stream has moved since its newest tick:
    bars use the ticks' ``t``, which a ``--keep-time`` replay takes from the recording.
    ``partial_start``: the stream was running before this one saw it (a node joining a
    cluster, whose first tick of a symbol may be a last value from Redis): the first
    bucket of each series is left out, as it holds only part of its ticks, so every node
    has the same closed bars.
    """

    def __init__(
        self,
        intervals: Iterable[str] = INTERVALS,
        *,
        depth: int = DEFAULT_HISTORY,
        clock: MicrosClock = now_us,
        partial_start: bool = False,
    ) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1 bar")
        self.depth = depth
        self._clock = clock
        self._partial_start = partial_start
        self._intervals = {name: _Interval(INTERVALS[name]) for name in intervals}
        self._index: dict[str, int] = {}
        self._symbols: list[str] = []
        self._rings: dict[Key, BarRing] = {}
        self._offset: int | None = None
        """Clock minus the newest tick time of the last batch: the stream's lag (a replay's
        keeps its recorded times, so this is its distance from now)."""
        self.dropped: dict[Key, int] = {}
        """With ``partial_start``: the first bucket (``ts``) left out of each series, until
        its bar is taken from the cluster (``backfill``)."""
        self.late = 0
        """Ticks dropped from an interval's bars because their bucket had closed."""

    @property
    def intervals(self) -> list[str]:
        """The intervals kept, shortest first."""
        return list(self._intervals)

    def _indices(self, symbols: Sequence[str]) -> list[int]:
        index = self._index
        for symbol in symbols:
            if symbol not in index:
                index[symbol] = len(self._symbols)
                self._symbols.append(symbol)
        if self._symbols and len(next(iter(self._intervals.values())).open) < len(self._symbols):
            for state in self._intervals.values():
                state.grow(len(self._symbols) + 16)
        return [index[s] for s in symbols]

    def add(self, ticks: Columns) -> list[tuple[Key, np.ndarray]]:
        """Take a batch of ticks, each symbol's in stream order; returns the bars it
        closed, oldest first per series."""
        t = ticks.t
        if not len(t):
            return []
        self._offset = self._clock() - int(t.max())
        sym = np.repeat(np.asarray(self._indices(ticks.symbols), np.int64), ticks.counts)
        closed: list[tuple[Key, np.ndarray]] = []
        for name, state in self._intervals.items():
            closed += self._add_interval(name, state, sym, t, ticks.p, ticks.v)
        return closed

    def _add_interval(
        self,
        name: str,
        state: _Interval,
        sym: np.ndarray,
        t: np.ndarray,
        p: np.ndarray,
        v: np.ndarray,
    ) -> list[tuple[Key, np.ndarray]]:
        buckets = t - t % state.us
        unseen = None
        if self._partial_start:
            unseen = state.floor[sym] == _NEVER  # a partial first bucket is not late
            firsts = np.flatnonzero(np.r_[True, sym[1:] != sym[:-1]])
            new = firsts[unseen[firsts]]
            state.floor[sym[new]] = buckets[new] + state.us  # a later bucket is whole
            for i, ts in zip(sym[new].tolist(), buckets[new].tolist(), strict=True):
                self.dropped[self._symbols[i], name] = ts
        keep = buckets >= state.floor[sym]
        same = sym[1:] == sym[:-1]
        if (same & (buckets[1:] < buckets[:-1])).any():
            keep &= _keep_monotone(sym, buckets)
        if not keep.all():
            self.late += int((~keep if unseen is None else ~keep & ~unseen).sum())
            sym, buckets, p, v = sym[keep], buckets[keep], p[keep], v[keep]
            if not len(sym):
                return []
            same = sym[1:] == sym[:-1]
        starts = np.flatnonzero(np.r_[True, ~same | (buckets[1:] != buckets[:-1])])
        ends = np.r_[starts[1:], len(sym)]
        groups = np.zeros(len(starts), BAR)
        gsym = sym[starts]
        groups["ts"] = buckets[starts]
        groups["o"] = p[starts]
        groups["h"] = np.maximum.reduceat(p, starts)
        groups["l"] = np.minimum.reduceat(p, starts)
        groups["c"] = p[ends - 1]
        groups["v"] = np.add.reduceat(v, starts)
        groups["n"] = ends - starts
        new_symbol = np.r_[True, gsym[1:] != gsym[:-1]]
        last = np.r_[gsym[1:] != gsym[:-1], True]
        current = state.open[gsym]
        has_open = new_symbol & (current["n"] > 0)
        merge = has_open & (current["ts"] == groups["ts"])
        if merge.any():
            cur, grp = current[merge], groups[merge]
            grp["o"] = cur["o"]
            grp["h"] = np.maximum(cur["h"], grp["h"])
            grp["l"] = np.minimum(cur["l"], grp["l"])
            grp["v"] += cur["v"]
            grp["n"] += cur["n"]
            groups[merge] = grp
        superseded = has_open & ~merge
        closing_sym = np.concatenate([gsym[superseded], gsym[~last]])
        closing = np.concatenate([current[superseded], groups[~last]])
        lasts = gsym[last]
        state.open[lasts] = groups[last]
        state.floor[lasts] = groups["ts"][last]
        state.dirty[lasts] = True
        if not len(closing):
            return []
        order = np.argsort(closing_sym, kind="stable")
        return self._close(name, closing_sym[order], closing[order])

    def _close(self, name: str, sym: np.ndarray, rows: np.ndarray) -> list[tuple[Key, np.ndarray]]:
        """Put closed bars (grouped by symbol) in their rings; the (key, rows) of each."""
        out: list[tuple[Key, np.ndarray]] = []
        starts = np.flatnonzero(np.r_[True, sym[1:] != sym[:-1]])
        for start, end in zip(starts.tolist(), np.r_[starts[1:], len(sym)].tolist(), strict=True):
            key = (self._symbols[int(sym[start])], name)
            ring = self._rings.get(key)
            if ring is None:
                ring = self._rings[key] = BarRing(self.depth)
            ring.extend(rows[start:end])
            out.append((key, rows[start:end]))
        return out

    def backfill(self, key: Key, rows: np.ndarray) -> int:
        """Closed bars of a series from elsewhere (a late node's peers): those of buckets
        before the first this node makes itself and not held yet are merged in; returns
        how many."""
        symbol, name = key
        state = self._intervals.get(name)
        if state is None:
            return 0
        i = self._index.get(symbol)
        if i is not None and state.floor[i] != _NEVER:
            rows = rows[rows["ts"] < state.floor[i]]
        if not len(rows):
            return 0
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = BarRing(self.depth)
        return ring.merge(rows)

    def stream_now(self) -> int | None:
        """The stream's time: the newest tick's ``t`` plus the time since (None: no tick yet)."""
        return None if self._offset is None else self._clock() - self._offset

    def close_due(self) -> list[tuple[Key, np.ndarray]]:
        """Close the open bars whose bucket has ended on the stream's clock (the quiet
        symbols': a busy one's closed on its next tick)."""
        now = self.stream_now()
        if now is None:
            return []
        closed: list[tuple[Key, np.ndarray]] = []
        for name, state in self._intervals.items():
            opened = state.open
            due = np.flatnonzero((opened["n"] > 0) & (opened["ts"] + state.us <= now))
            if not len(due):
                continue
            rows = opened[due]
            state.floor[due] = rows["ts"] + state.us
            opened["n"][due] = 0
            state.dirty[due] = False
            closed += self._close(name, due, rows)
        return closed

    def take_dirty(self) -> list[tuple[Key, np.ndarray]]:
        """The open bars that changed since the last call, one row each."""
        out: list[tuple[Key, np.ndarray]] = []
        symbols = self._symbols
        for name, state in self._intervals.items():
            changed = np.flatnonzero(state.dirty)
            if not len(changed):
                continue
            state.dirty[changed] = False
            for i in changed.tolist():
                out.append(((symbols[i], name), state.open[i : i + 1]))
        return out

    def history(
        self, key: Key, limit: int, end: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The last ``limit`` closed bars of a series (those starting before ``end`` µs, if
        given), oldest first, and its open bar (zero or one row)."""
        symbol, name = key
        ring = self._rings.get(key)
        closed = ring.last(limit, end) if ring is not None and limit else np.zeros(0, BAR)
        state = self._intervals.get(name)
        i = self._index.get(symbol)
        if state is None or i is None:
            return closed, np.zeros(0, BAR)
        opened = state.open[i : i + 1]
        if opened["n"][0] == 0 or (end is not None and opened["ts"][0] >= end):
            return closed, np.zeros(0, BAR)
        return closed, opened

    def series(self) -> int:
        """How many (symbol, interval) rings exist (for the memory figure)."""
        return len(self._rings)

    def nbytes(self) -> int:
        """Bytes the rings and the open bars take."""
        rings = sum(r.nbytes() for r in self._rings.values())
        return rings + sum(s.open.nbytes + s.floor.nbytes for s in self._intervals.values())


def bar_dicts(key: Key, rows: np.ndarray, closed: bool) -> list[dict[str, Any]]:
    """Bars as the protocol writes them (``s i ts o h l c v n x``)."""
    symbol, name = key
    fields = ("ts", "o", "h", "l", "c", "v", "n")
    return [
        {"s": symbol, "i": name, **dict(zip(fields, row, strict=True)), "x": closed}
        for row in rows.tolist()
    ]


def encode(key: Key, closed: np.ndarray, opened: np.ndarray) -> list[bytes]:
    """Closed bars (``x: true``) then the open one, each encoded once, to be joined into
    frames (as the bus does with ticks)."""
    dumps = orjson.dumps
    bars = bar_dicts(key, closed, True) + bar_dicts(key, opened, False)
    return [dumps(bar) for bar in bars]
