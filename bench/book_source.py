"""A feed plugin for the ``books`` bench: level changes as fast as the node takes them.

``--feed bench.book_source:make:BOOKS,LEVELS[,WIDE]`` (default ``10,5``): BOOKS symbols
``B0``.. each with a book of 200 levels a side, then change sets of LEVELS absolute
level changes drawn from a pool made before the clock starts (so the bench measures
the node, not the random numbers), near the touch more often than far from it, as a
real book's changes are. With WIDE ``1`` the books start with 5 000 levels a side and
the changes (new sizes, never a removal) are spread evenly over all of them, so few of
a pass's changes land on one level: merging saves little, the passes apply nearly all.
It yields to the loop after every 100 change sets (what a socket reader does between
reads) and a tick per book every 100 ms.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

from ticker.core.books import MAX_LEVELS, BookSink, Level
from ticker.core.ticks import TickBatch

MID = 100.0
STEP = 0.01
DEPTH = 200
POOL = 20_000
PER_YIELD = 100


class BookBlaster:
    """The source: see the module docstring."""

    name = "book-blaster"

    def __init__(self, books: int, levels: int, wide: bool = False, seed: int = 1) -> None:
        self._symbols = [f"B{i}" for i in range(books)]
        self._depth = MAX_LEVELS if wide else DEPTH
        rng = random.Random(seed)

        def level(bid: bool) -> Level:
            if wide:
                away, size = rng.randrange(MAX_LEVELS), rng.randint(1, 9)
            else:
                away, size = min(int(rng.expovariate(1 / 12)), DEPTH - 1), rng.randint(0, 9)
            price = MID - STEP * (1 + away) if bid else MID + STEP * (1 + away)
            return round(price, 2), float(size)

        self._pool = [
            (
                [level(True) for _ in range(levels // 2)],
                [level(False) for _ in range(levels - levels // 2)],
            )
            for _ in range(POOL)
        ]
        self._sink: BookSink | None = None

    def symbols(self) -> list[str]:
        return list(self._symbols)

    def bind_books(self, sink: BookSink) -> None:
        self._sink = sink

    async def stream(self) -> AsyncIterator[TickBatch]:
        sink = self._sink
        assert sink is not None, "the node binds the books before the feed starts"
        depth = self._depth
        full_bids = [(round(MID - STEP * (1 + i), 2), 5.0) for i in range(depth)]
        full_asks = [(round(MID + STEP * (1 + i), 2), 5.0) for i in range(depth)]
        for symbol in self._symbols:
            sink(symbol, full_bids, full_asks, reset=True)
        loop = asyncio.get_running_loop()
        tick_at = 0.0
        pool, symbols = self._pool, self._symbols
        i = 0
        while True:
            for _ in range(PER_YIELD):
                bids, asks = pool[i % POOL]
                sink(symbols[i % len(symbols)], bids, asks)
                i += 1
            if loop.time() >= tick_at:
                tick_at = loop.time() + 0.1
                yield [{"s": s, "p": MID, "b": MID - STEP, "a": MID + STEP} for s in symbols]
            else:
                await asyncio.sleep(0)


def make(args: str) -> BookBlaster:
    """The factory ``--feed`` calls: ``BOOKS,LEVELS[,WIDE]``."""
    books, levels, wide = [*(args or "10,5").split(","), "", ""][:3]
    return BookBlaster(int(books), int(levels or 5), wide == "1")
