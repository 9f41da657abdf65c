"""Order books for the simulated market: depth around each symbol's quotes.

Pure and seeded (a ``random.Random``, no I/O): the same seed and the same ticks give the
same books. After each batch a symbol's best bid and ask are exactly the ``b`` and ``a``
of its latest tick, and the rest of the book moves the way a real one does: the levels a
quote move leaves behind are gone (eaten or pulled), new quotes step in on the other
side, each trade eats into the touch it hit, and resting orders come and go (adds,
partial cancels, whole levels pulled) mostly near the touch. A side keeps its levels
within ``window`` ticks of its best, so a book is bounded, and the touch is never pulled,
so the book is never crossed. ``update`` returns, per symbol, only the levels whose size
the batch changed, as absolute sizes (0: removed): what a ``BookSink`` takes.

The cost is per symbol that ticked in a batch (a handful of levels each), not per tick
and not per symbol of the universe, plus a few quiet books' changes a second.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from feeds.sim.model import LOT, Grid
from ticker.core.books import Level
from ticker.core.ticks import Tick

WINDOW = 40
"""Ticks of price a side spans from its best: at most this many levels a side."""
FILL = 0.85
"""Chance that a price entering the window has a level: a book with a few gaps."""
EVENTS = 3
"""Resting-order events (add, cancel, pull) per symbol per update: 0 to this many."""
QUIET_PER_S = 2.0
"""Times a second a book changes between its symbol's trades (resting orders only), so
the book of a quiet symbol is not a still picture."""
NEAR = 6.0
"""Mean distance from the touch, in ticks, of a resting-order event: activity is near it."""
MAX_SIZE_LOTS = 2000
"""Lots one level may hold: adds stop there, so sizes are bounded."""


class _Side:
    """One side in grid ticks: price -> shares; ``sign`` +1 for bids (best is the highest),
    -1 for asks. ``was`` keeps each level's size before the current update (0: absent)."""

    __slots__ = ("best", "levels", "sign", "was")

    def __init__(self, sign: int, best: int) -> None:
        self.sign = sign
        self.best = best
        self.levels: dict[int, int] = {}
        self.was: dict[int, int] = {}

    def at(self, distance: int) -> int:
        """The price ``distance`` ticks behind the best (away from the other side)."""
        return self.best - self.sign * distance

    def set(self, price: int, size: int) -> None:
        """Change a level (size 0 removes it), noting its size before the update."""
        levels = self.levels
        if price not in self.was:
            self.was[price] = levels.get(price, 0)
        if size:
            levels[price] = size
        else:
            levels.pop(price, None)

    def changes(self, grid: Grid) -> list[Level]:
        """The levels this update changed, as absolute sizes; forgets ``was``."""
        levels = self.levels
        out = [
            (grid.price(p), float(levels.get(p, 0)))
            for p, old in self.was.items()
            if levels.get(p, 0) != old
        ]
        self.was.clear()
        return out

    def snapshot(self, grid: Grid) -> list[Level]:
        """Every level, best first."""
        ordered = sorted(self.levels, reverse=self.sign > 0)
        return [(grid.price(p), float(self.levels[p])) for p in ordered]


class _Book:
    __slots__ = ("asks", "bids", "last")

    def __init__(self, bid: int, ask: int) -> None:
        self.bids = _Side(+1, bid)
        self.asks = _Side(-1, ask)
        self.last = (bid + ask) // 2
        """The last trade, in ticks: whether the next one is higher tells its side."""


class SimBooks:
    """The books of ``symbols`` (name -> start price in grid ticks), ``window`` ticks deep
    a side. Each starts one tick either side of its start price, full depth behind."""

    def __init__(
        self,
        symbols: dict[str, int],
        grid: Grid,
        *,
        seed: int | None,
        window: int = WINDOW,
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.grid = grid
        self.window = window
        self._rng = random.Random(seed)
        self._books: dict[str, _Book] = {}
        for symbol, start in symbols.items():
            if start < 2:
                raise ValueError(f"{symbol}: a start price of {start} ticks leaves no bid")
            book = self._books[symbol] = _Book(start - 1, start + 1)
            for side in (book.bids, book.asks):
                self._fill(side, 0, window)
                side.was.clear()
        self._symbols = list(self._books)

    def __len__(self) -> int:
        return len(self._books)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._books

    def symbols(self) -> list[str]:
        """The symbols with a book."""
        return list(self._symbols)

    def snapshot(self, symbol: str) -> tuple[list[Level], list[Level]]:
        """A symbol's whole book (bids high to low, asks low to high): a reset's levels."""
        book = self._books[symbol]
        return book.bids.snapshot(self.grid), book.asks.snapshot(self.grid)

    def best(self, symbol: str) -> tuple[float, float]:
        """A symbol's best bid and best ask."""
        book = self._books[symbol]
        return self.grid.price(book.bids.best), self.grid.price(book.asks.best)

    def update(
        self, ticks: Iterable[Tick], dt: float = 0.0
    ) -> list[tuple[str, list[Level], list[Level]]]:
        """Move the books of the symbols in a batch of ticks (time order) to their latest
        quotes, and let resting orders change in a few others as ``dt`` seconds pass
        (``QUIET_PER_S``); ``(symbol, bids, asks)`` of what changed, for each book that did.

        A tick of a booked symbol needs ``b`` and ``a`` on this grid; ticks of other
        symbols are not looked at beyond their ``s``.
        """
        books = self._books
        latest: dict[str, Tick] = {}
        volume: dict[str, int] = {}
        for tick in ticks:
            symbol = tick["s"]
            if symbol in books:
                latest[symbol] = tick
                volume[symbol] = volume.get(symbol, 0) + int(tick.get("v", 0))
        out = []
        ticks_of = self.grid.ticks
        for symbol, tick in latest.items():
            b, a = tick.get("b"), tick.get("a")
            if b is None or a is None:
                raise ValueError(f"{symbol}: a tick without a bid and an ask cannot move a book")
            bid, ask = ticks_of(b), ticks_of(a)
            if not 0 < bid < ask:
                raise ValueError(f"{symbol}: a tick with bid {b} not below ask {a}")
            price = ticks_of(tick["p"])
            bids, asks = self._move(books[symbol], bid, ask, price, volume[symbol])
            if bids or asks:
                out.append((symbol, bids, asks))
        rng = self._rng
        expected = len(books) * QUIET_PER_S * dt
        quiet = int(expected) + (rng.random() < expected % 1)
        for symbol in rng.sample(self._symbols, min(quiet, len(books))):
            if symbol not in latest:
                bids, asks = self._rest(books[symbol], rng.randint(1, EVENTS))
                if bids or asks:
                    out.append((symbol, bids, asks))
        return out

    def _move(
        self, book: _Book, bid: int, ask: int, price: int, volume: int
    ) -> tuple[list[Level], list[Level]]:
        self._requote(book.bids, bid)
        self._requote(book.asks, ask)
        if price != book.last:  # the trade lifted the offer (up) or hit the bid (down)
            hit = book.asks if price > book.last else book.bids
            touch = hit.levels[hit.best]
            hit.set(hit.best, max(LOT, touch - volume))  # the touch stays: it is the quote
        book.last = price
        return self._rest(book, self._rng.randint(0, EVENTS))

    def _rest(self, book: _Book, events: int) -> tuple[list[Level], list[Level]]:
        """``events`` resting-order events, then what the update changed."""
        rng = self._rng
        for _ in range(events):
            self._event(book.bids if rng.random() < 0.5 else book.asks)
        return book.bids.changes(self.grid), book.asks.changes(self.grid)

    def _requote(self, side: _Side, best: int) -> None:
        """Move a side's best to ``best``: the levels in front of it go, the window's far
        edge follows, and the new best has a size."""
        shift = side.sign * (best - side.best)  # > 0: towards the other side
        window = self.window
        if abs(shift) >= window:  # a jump past the whole window: a fresh side
            for price in list(side.levels):
                side.set(price, 0)
            side.best = best
            self._fill(side, 0, window)
        elif shift > 0:  # quotes stepped in front; the far end leaves the window
            for d in range(window - shift, window):
                side.set(side.at(d), 0)
            side.best = best
            self._fill(side, 1, shift)
        elif shift < 0:  # the front levels were eaten or pulled; the far end opens up
            for d in range(-shift):
                side.set(side.at(d), 0)
            side.best = best
            self._fill(side, window + shift, window)
        if best not in side.levels:
            side.set(best, self._size(0))

    def _fill(self, side: _Side, start: int, stop: int) -> None:
        """Put levels at the distances ``start`` to ``stop`` from the best (the best always)."""
        rng = self._rng
        for d in range(start, stop):
            if d == 0 or rng.random() < FILL:
                side.set(side.at(d), self._size(d))

    def _event(self, side: _Side) -> None:
        """One resting-order event: an add, a partial cancel or a pulled level (never the
        touch: the best is the tick's quote), a new level in a gap."""
        rng = self._rng
        d = min(int(rng.expovariate(1.0 / NEAR)), self.window - 1)
        price = side.at(d)
        size = side.levels.get(price)
        if size is None:
            side.set(price, self._size(d))
            return
        r = rng.random()
        if r < 0.45:
            side.set(price, min(size + LOT * rng.randint(1, 5), LOT * MAX_SIZE_LOTS))
        elif r < 0.9 or d == 0:
            side.set(price, max(LOT, size - LOT * rng.randint(1, 5)))
        else:
            side.set(price, 0)

    def _size(self, distance: int) -> int:
        """A new level's shares: a few lots at the touch, more deeper in the book."""
        lots = 1 + int(self._rng.expovariate(1.0) * (2 + distance))
        return LOT * min(lots, MAX_SIZE_LOTS)
