"""``ticker feed``: feeds into a bus whose only reader is the Redis relay (no server).

The bus is kept so the publisher stamps ``q`` and ``t`` and encodes each tick exactly as a
node does: every node then serves the same bytes, with the origin's ``q``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

from feeds.base import FeedAdapter
from feeds.supervisor import FeedSupervisor
from ticker.core.bus import Bus

if TYPE_CHECKING:
    from ticker.cluster.redis import RedisBroker

log = logging.getLogger("ticker.cluster")

PROGRESS_EVERY_S = 30.0


async def publish(
    feeds: list[FeedAdapter], broker: RedisBroker, stop: asyncio.Event, bus: Bus | None = None
) -> None:
    """Run the feeds into Redis until ``stop`` is set; then publish what is pending."""
    bus = bus or Bus()
    symbols = [s for feed in feeds for s in feed.symbols()]
    bus.add_symbols(symbols)
    await broker.start(bus, symbols, lambda: None)
    supervisors = [FeedSupervisor(feed, bus.publish, status=bus.status.set) for feed in feeds]
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
        await broker.stop()


def run(feeds: list[FeedAdapter], broker: RedisBroker) -> int:
    """The ``ticker feed`` process: until SIGINT or SIGTERM, then a clean exit (0)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await publish(feeds, broker, stop)

    asyncio.run(main())
    log.info("stopped")
    return 0
