"""The simulated feed: ``MarketModel`` ticks paced in real time, in batches.

Pacing is against absolute time: each batch carries the ticks due since the stream
started minus those already sent, so a late wake-up makes a bigger batch, not a lower rate,
and errors in sleep never accumulate.

The first ``books`` symbols also have order books (``feeds/sim/book.py``) whose best bid
and ask are their ticks' ``b`` and ``a``: a stream begins with a reset of each, then each
batch hands the book sink what it changed, before the batch itself is yielded.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import numpy as np

from feeds.sim.book import SimBooks
from feeds.sim.model import MarketModel
from feeds.sim.symbols import reference_prices, symbol_names
from ticker.core.books import BookSink
from ticker.core.ticks import TickBatch

MAX_BATCH_SECONDS = 0.25
"""A batch holds at most this many seconds' worth of ticks. When the loop falls further
behind (a stall, or a machine too slow for the rate), the excess is skipped rather than
replayed: a real-time market simulation has no use for a burst of stale ticks, and a
backlog that can only grow must not. Skipped ticks are counted in ``skipped``."""
DEFAULT_BOOKS = 100
"""Symbols with an order book unless told: every symbol of the default universe. Books
cost per booked symbol that ticks in a batch, so a large universe keeps them to a few."""


class SimulatedFeed:
    """A ``FeedAdapter`` of ``n_symbols`` simulated stocks trading ``rate`` ticks per second.

    ``skew`` > 0 concentrates activity on a few symbols (Zipf-like, see ``MarketModel``).
    The first ``books`` symbols (all of them when fewer; 0: none) have order books, handed
    to the sink ``bind_books`` gives (``ReportsBooks``).
    ``clock`` and ``sleep`` are injectable so tests can run simulated seconds instantly;
    with the same ``seed`` and the same clock readings the stream is identical.
    """

    def __init__(
        self,
        n_symbols: int = 100,
        rate: float = 1000.0,
        *,
        skew: float = 0.0,
        seed: int | None = None,
        name: str = "sim",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        interval: float = 0.002,
        books: int = DEFAULT_BOOKS,
    ) -> None:
        if not rate > 0 or not interval > 0:
            raise ValueError("rate and interval must be > 0")
        if books < 0:
            raise ValueError("books must be >= 0")
        self.name = name
        self.rate = rate
        self.interval = interval
        self._names = symbol_names(n_symbols)
        self.model = MarketModel(
            n_symbols, seed=seed, skew=skew, start_prices=reference_prices(self._names)
        )
        self._name_array = np.array(self._names, dtype=object)  # idx -> the same str objects
        booked = dict(zip(self._names[:books], self.model.start_ticks.tolist(), strict=False))
        self.books = SimBooks(booked, self.model.grid, seed=seed)
        """The simulated order books; they move only while a sink is bound."""
        self._book_sink: BookSink | None = None
        self._clock = clock
        self._sleep = sleep
        self.skipped = 0
        """Ticks never emitted because the loop fell more than a max batch behind."""

    def symbols(self) -> list[str]:
        """The simulated symbols' names, declared before the first tick."""
        return list(self._names)

    def bind_books(self, sink: BookSink) -> None:
        """Hand the books' level changes to ``sink`` from the next stream on."""
        self._book_sink = sink

    async def stream(self) -> AsyncGenerator[TickBatch, None]:
        """Yield one batch per ``interval``, holding every tick due by then; never ends."""
        sink = self._book_sink if self.books else None
        if sink is not None:  # a (re)start: each book whole, whatever a sink had before
            for symbol in self.books.symbols():
                bids, asks = self.books.snapshot(symbol)
                sink(symbol, bids, asks, reset=True)
        clock, rate, interval = self._clock, self.rate, self.interval
        max_batch = max(1, round(rate * MAX_BATCH_SECONDS))
        start = last = clock()
        accounted = 0  # ticks emitted or skipped since start
        slot = 0  # wake-ups are at start + slot * interval
        while True:
            now = clock()
            due = round(rate * (now - start)) - accounted
            accounted += due
            if due > max_batch:
                self.skipped += due - max_batch
                due = max_batch
            if due > 0:
                batch = self._batch(due, now - last)
                if sink is not None:
                    for symbol, bids, asks in self.books.update(batch, now - last):
                        sink(symbol, bids, asks)
                yield batch
                last = now
            # The next slot still ahead; counting slots (rather than flooring elapsed /
            # interval) guarantees progress when a wake-up lands a hair before its slot.
            # A slow rate skips the slots before its next tick is due: an idle simulator
            # does not wake 500 times a second for nothing.
            elapsed = clock() - start
            next_due = (accounted + 0.5) / rate  # round() makes a tick due from here
            slot = max(slot + 1, int(elapsed / interval) + 1, math.ceil(next_due / interval))
            await self._sleep(max(0.0, slot * interval - elapsed))

    def _batch(self, n: int, dt: float) -> TickBatch:
        # .tolist() turns numpy scalars into Python floats and ints: orjson (without
        # OPT_SERIALIZE_NUMPY) rejects numpy scalars. Dict displays, not Tick(...): a
        # TypedDict call costs four times as much.
        idx, price, bid, ask, size = self.model.step(n, dt)
        ticks: TickBatch = [
            {"s": s, "p": p, "b": b, "a": a, "v": v}
            for s, p, b, a, v in zip(
                self._name_array[idx].tolist(),
                price.tolist(),
                bid.tolist(),
                ask.tolist(),
                size.tolist(),
                strict=True,
            )
        ]
        return ticks
