"""An exchange feed as a ``FeedAdapter``: its products split into connections, each a
``Link``, their ticks merged into one stream of batches.

The links reconnect on their own and report each symbol's status, so ``stream()`` only
fails (and the supervisor restarts it) on a bug; the venue's state (trade ids, quotes)
lives here, on the feed, so a restarted stream still drops the trades it published.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

import aiohttp

from feeds.exchanges.link import Link, LinkOptions
from feeds.exchanges.venue import Venue
from ticker.core.books import BookSink
from ticker.core.status import STALE, StatusSink
from ticker.core.ticks import TickBatch

log = logging.getLogger("ticker.feeds")

QUEUE_BATCHES = 256
"""Batches waiting for the bus: past it the links stop reading (TCP pushes back)."""


def _ignore(symbols: object, status: str, reason: str) -> None:
    """The status sink of a feed nobody asked for status (``ticker feed``, tests)."""


class ExchangeFeed:
    """The ``FeedAdapter`` of one exchange; ``venue`` speaks its protocol."""

    def __init__(self, venue: Venue, products: list[str], options: LinkOptions) -> None:
        self.venue = venue
        self.name = venue.name
        self.products = products
        self.options = options
        self._status: StatusSink = _ignore

    def symbols(self) -> list[str]:
        """The products' symbols (prefixed when asked), in the order given."""
        return [self.venue.names[p] for p in self.products]

    def bind_status(self, sink: StatusSink) -> None:
        """Per-symbol status goes to ``sink`` (``ReportsStatus``)."""
        self._status = sink

    def bind_books(self, sink: BookSink) -> None:
        """Book changes go to ``sink`` (``ReportsBooks``; only with ``?books=1``)."""
        self.venue.book_sink = sink

    def resync_book(self, symbol: str, reason: str) -> None:
        """The node found the symbol's book wrong (``ResyncsBooks``): the venue resyncs
        it as it does its own faults, with the next message a link takes."""
        venue = self.venue
        for product, name in venue.names.items():
            if name == symbol and venue.books and product not in venue.resyncing:
                venue.refetch(product, reason)

    def connections(self) -> list[list[str]]:
        """The products of each connection: at most ``per_connection`` each."""
        size = self.venue.per_connection
        return [self.products[i : i + size] for i in range(0, len(self.products), size)]

    async def stream(self) -> AsyncGenerator[TickBatch, None]:
        """Every link's ticks, a batch per exchange message, until cancelled."""
        queue: asyncio.Queue[TickBatch | Exception] = asyncio.Queue(QUEUE_BATCHES)
        async with aiohttp.ClientSession() as http:
            links = [
                Link(self.venue, products, self.options, http, queue.put, self._status)
                for products in self.connections()
            ]
            tasks = [
                asyncio.create_task(_run(link, queue), name=f"feed:{self.name}") for link in links
            ]
            try:
                while True:
                    item = await queue.get()
                    if isinstance(item, Exception):
                        raise item
                    yield item
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._status(self.symbols(), STALE, f"feed {self.name} stopped")


async def _run(link: Link, queue: asyncio.Queue[TickBatch | Exception]) -> None:
    """A link ends only by a bug: hand it to the stream, which raises it for a restart."""
    try:
        await link.run()
    except Exception as exc:
        await queue.put(exc)
