"""Keeps one feed running: a feed that fails is logged, backed off and restarted.

A feed's failure (a dropped socket, a parse error) must not take the server down, and a
feed that fails in a loop must neither flood the log nor hammer its upstream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable

from feeds.base import FeedAdapter, FeedFatal, ReportsBooks, ReportsStatus, ResyncsBooks
from ticker.core.backoff import Backoff
from ticker.core.books import BookSink
from ticker.core.status import CLOSED, LIVE, STALE, StatusSink
from ticker.core.ticks import TickBatch

log = logging.getLogger("ticker.feeds")


class FeedSupervisor:
    """Runs ``adapter.stream()`` into ``publish`` and restarts it with capped backoff.

    The attributes are for health checks and metrics.
    """

    def __init__(
        self,
        adapter: FeedAdapter,
        publish: Callable[[TickBatch], object],
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        status: StatusSink | None = None,
        books: BookSink | None = None,
    ) -> None:
        self.adapter = adapter
        self._publish = publish
        self._status: StatusSink | None = None
        """Set when the supervisor reports the feed's status (the feed does not itself)."""
        if status is not None:
            if isinstance(adapter, ReportsStatus):
                adapter.bind_status(status)
            else:
                self._status = status
        if books is not None and isinstance(adapter, ReportsBooks):
            adapter.bind_books(books)
        self._failing = False
        self._backoff = Backoff(backoff_initial, backoff_max, rng)
        self._sleep = sleep
        self._clock = clock
        self.restarts = 0
        """Times the feed failed and was restarted."""
        self.ticks = 0
        """Ticks published since start, across restarts."""
        self.last_tick_monotonic: float | None = None
        """``clock()`` at the last non-empty batch: a stale feed is visible by its age."""
        self.ready = False
        """True once at least one tick was published (the bus has something to serve)."""
        self.started_monotonic: float | None = None
        """``clock()`` when ``run`` began."""

    async def run(self) -> None:
        """Supervise until the feed ends on its own (a finite source: one log line says so,
        or a replay that stops would look like a stall) or the task is cancelled.

        Any ``Exception`` raised while streaming or publishing a batch counts as a failure of
        this feed, except ``FeedFatal``, which is logged and raised: no restart can help.
        Cancellation does not: ``CancelledError`` is not an ``Exception`` and propagates
        untouched.
        """
        self._backoff.reset()
        self.started_monotonic = self._clock()
        while True:
            try:
                async for batch in self.adapter.stream():
                    self._publish(batch)
                    self._backoff.reset()  # it ran healthily: forget past failures
                    if self._failing:
                        self._failing = False
                        self._report(LIVE, "")
                    if batch:
                        self.ticks += len(batch)
                        self.last_tick_monotonic = self._clock()
                        self.ready = True
                log.info(
                    "feed %s ended: %d tick(s) published; clients keep the last values",
                    self.adapter.name,
                    self.ticks,
                )
                self._report(CLOSED, "the feed ended")
                return
            except FeedFatal as exc:
                log.error("feed %s cannot work: %s", self.adapter.name, exc)
                raise
            except Exception as exc:
                self.restarts += 1
                delay = self._backoff.delay()
                # One line per failure; the traceback only when someone asked for debug.
                log.error(
                    "feed %s failed: %s: %s; restart #%d in %.2f s",
                    self.adapter.name,
                    type(exc).__name__,
                    exc,
                    self.restarts,
                    delay,
                    exc_info=log.isEnabledFor(logging.DEBUG),
                )
                self._failing = True
                self._report(STALE, f"feed {self.adapter.name} failed, restarting")
            await self._sleep(delay)

    def _report(self, status: str, reason: str) -> None:
        if self._status is not None:
            self._status(self.adapter.symbols(), status, reason)

    def tick_age(self) -> float | None:
        """Seconds since the last tick, or since the start while there has been none (a feed
        that never ticks is as stalled as one that stopped); ``None`` before ``run``."""
        since = self.last_tick_monotonic or self.started_monotonic
        return None if since is None else self._clock() - since


def book_resyncs(feeds: Iterable[FeedAdapter]) -> Callable[[str, str], None]:
    """Who to ask for a book afresh: ``(symbol, reason)`` goes to the feed that has the
    symbol, if it can (``ResyncsBooks``); a feed that cannot is left to its own resync."""
    owners = {
        symbol: feed
        for feed in feeds
        if isinstance(feed, ResyncsBooks)
        for symbol in feed.symbols()
    }

    def resync(symbol: str, reason: str) -> None:
        feed = owners.get(symbol)
        if feed is not None:
            feed.resync_book(symbol, reason)

    return resync
