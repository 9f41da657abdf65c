"""``ticker feed``: feeds into a bus whose only reader is the Redis relay (no server).

The bus is kept so the publisher stamps ``q`` and ``t`` and encodes each tick exactly as a
node does: every node then serves the same bytes, with the origin's ``q``. Likewise its
feeds' books go into a ``BookService`` with no clients, whose passes number each change
set: the book relay (``book_relay.py``) takes them to every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from feeds.base import FeedAdapter
from feeds.supervisor import FeedSupervisor
from ticker.cluster.loader import book_relay
from ticker.core.bus import Bus

if TYPE_CHECKING:
    from ticker.cluster.book_wire import BookHost
    from ticker.cluster.redis import RedisBroker

log = logging.getLogger("ticker.cluster")

PROGRESS_EVERY_S = 30.0


async def publish(
    feeds: list[FeedAdapter],
    broker: RedisBroker,
    stop: asyncio.Event,
    bus: Bus | None = None,
    books: BookHost | None = None,
) -> None:
    """Run the feeds (and their books, into ``books``) into Redis until ``stop`` is set;
    then publish what is pending."""
    bus = bus or Bus()
    symbols = [s for feed in feeds for s in feed.symbols()]
    bus.add_symbols(symbols)
    await broker.start(bus, symbols, lambda: None)
    relay = book_relay(broker, books)
    if relay is not None:
        await relay.start()
    sink = None if books is None else books.submit
    supervisors = [
        FeedSupervisor(feed, bus.publish, status=bus.status.set, books=sink) for feed in feeds
    ]
    tasks = [asyncio.create_task(s.run(), name=f"feed:{s.adapter.name}") for s in supervisors]
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROGRESS_EVERY_S):
                    await stop.wait()
            stats = broker.stats
            log.info(
                "%d ticks published to redis in %d messages (%d dropped); link %s",
                stats.ticks_published,
                stats.messages_published,
                stats.ticks_dropped,
                "up" if stats.link_up else "down",
            )
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if books is not None:
            await books.stop()
        if relay is not None:
            await relay.stop()
        await broker.stop()


def run(
    feeds: list[FeedAdapter],
    broker: RedisBroker,
    books: Callable[[Bus], BookHost] | None = None,
) -> int:
    """The ``ticker feed`` process: until SIGINT or SIGTERM, then a clean exit (0).
    ``books``: builds the books of the feeds (given the bus, for their status)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        bus = Bus()
        await publish(feeds, broker, stop, bus, None if books is None else books(bus))

    asyncio.run(main())
    log.info("stopped")
    return 0
