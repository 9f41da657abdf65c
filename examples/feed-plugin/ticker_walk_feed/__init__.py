"""An example feed plugin: each symbol walks randomly from the price it is given.

``--feed walk:AAPL=190,MSFT=420[;rate=50]`` — the part after the feed name is this
plugin's to read; ticker passes it as one string. Replace the walk with a socket to a
vendor or a queue consumer and nothing else changes: ticker stamps ``q`` and ``t``,
fans out, records and restarts the feed when ``stream`` raises.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

from ticker.core.ticks import TickBatch


class WalkFeed:
    """A ``FeedAdapter``: ``name``, ``symbols()`` known up front, ``stream()`` of batches."""

    name = "walk"

    def __init__(self, prices: dict[str, float], rate: float) -> None:
        self.prices = prices
        self.interval = 1.0 / rate

    def symbols(self) -> list[str]:
        """Known before the first tick, so clients can subscribe at once."""
        return list(self.prices)

    async def stream(self) -> AsyncIterator[TickBatch]:
        """One batch per interval with a tick for every symbol; each call starts afresh."""
        prices = dict(self.prices)
        while True:
            batch: TickBatch = []
            for symbol, price in prices.items():
                price = round(price * (1 + random.gauss(0, 0.0005)), 2)
                prices[symbol] = price
                batch.append({"s": symbol, "p": price, "b": price - 0.01, "a": price + 0.01})
            yield batch
            await asyncio.sleep(self.interval)


def make_feed(args: str) -> WalkFeed:
    """The entry point: ``SYMBOL=PRICE,...[;rate=N]`` -> a feed (ValueError says what is wrong)."""
    spec, _, options = args.partition(";")
    prices: dict[str, float] = {}
    for item in filter(None, spec.split(",")):
        symbol, sep, price = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r}: expected SYMBOL=PRICE")
        prices[symbol.strip()] = float(price)
    if not prices:
        raise ValueError("give at least one SYMBOL=PRICE, e.g. walk:AAPL=190")
    rate = float(options.removeprefix("rate=")) if options else 10.0
    if not rate > 0:
        raise ValueError("rate must be > 0")
    return WalkFeed(prices, rate)
