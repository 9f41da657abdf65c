"""The node: one broadcaster process — its bus, its feeds and its open connections.

The node builds the parts and hands each handler the narrow one it needs (``Gate`` for
the handshake, ``Clients`` for connections, the metrics registry); it starts the feeds
under supervision and, at shutdown, stops them and closes every client with 1001 at once
(not one by one: one stuck client must not hold up the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from aiohttp import web

from feeds.base import FeedAdapter, FeedFatal
from feeds.supervisor import FeedSupervisor, book_resyncs
from ticker.cluster.broker import Broker, LocalBroker
from ticker.cluster.loader import book_relay, candle_store
from ticker.core.admission import Admission
from ticker.core.bus import Bus
from ticker.core.codes import CloseCode
from ticker.core.session import ReplayHost
from ticker.server.auth import Gate
from ticker.server.books import BookService
from ticker.server.candle_restore import restore
from ticker.server.candles import CandleService
from ticker.server.connection import ClientConnection, Clients
from ticker.server.delayed import DelayPump
from ticker.server.flusher import Flusher
from ticker.server.metrics import Metrics, NodeCollector
from ticker.server.probes import probe_loop_lag
from ticker.server.settings import Settings
from ticker.server.stats import Stats

log = logging.getLogger("ticker.server")


def supervise(
    feeds: Iterable[FeedAdapter],
    bus: Bus,
    settings: Settings,
    books: BookService | None = None,
) -> list[FeedSupervisor]:
    """A supervisor per feed, publishing into ``bus`` (and its books into ``books``,
    which asks a feed for a book afresh when one comes out crossed), whose universe gets
    their symbols."""
    feeds = list(feeds)
    bus.add_symbols([s for feed in feeds for s in feed.symbols()])
    if books is not None:
        books.on_crossed.append(book_resyncs(feeds))
    return [
        FeedSupervisor(
            feed,
            bus.publish,
            backoff_initial=settings.feed_backoff_s,
            backoff_max=settings.feed_backoff_max_s,
            status=bus.status.set,
            books=None if books is None else books.submit,
        )
        for feed in feeds
    ]


class Node:
    """One broadcaster process: builds its parts from ``Settings`` and runs their tasks."""

    def __init__(
        self,
        settings: Settings,
        feeds: Iterable[FeedAdapter] = (),
        bus: Bus | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus or Bus(history=settings.history)
        self.broker: Broker = broker or LocalBroker()
        """Carries ticks between this node's bus and the rest of the cluster, if any."""
        self.metrics = Metrics()
        self.stats = Stats(metrics=settings.metrics)
        self.flusher = Flusher(after_pass=self.stats.settle if settings.metrics else None)
        self.clients = Clients(settings, self.metrics, self.stats, self.flusher)
        self.books: BookService | None = None
        """The book topics (``SYMBOL@book10``); None with ``--book-interval-ms 0``."""
        if settings.book_interval_s:
            self.books = BookService(
                interval_s=settings.book_interval_s, status=self.bus.status.set
            )
            self.clients.derived[BookService.kind.name] = self.books
            self.broker.bind_books(self.books)
        self.book_relay = book_relay(self.broker, self.books)
        """Books through the cluster's Redis (``ticker/cluster/book_relay.py``), if any."""
        feeds = list(feeds)
        self.supervisors = supervise(feeds, self.bus, settings, self.books)
        self._local_symbols = [s for feed in feeds for s in feed.symbols()]
        self._feed_tasks: list[asyncio.Task[None]] = []
        self.exit_status = 0
        """2 once a feed proved it can never work (``FeedFatal``): ``serve`` exits with it."""
        self.on_fatal: Callable[[], None] = lambda: None
        """How the process stops on a ``FeedFatal`` (``serve``: as on SIGTERM)."""
        self.admission = Admission(settings.connection_limits)
        """Open connections in all, per IP and per token subject (``ticker/server/auth.py``)."""
        self.delays = DelayPump(self.bus, settings.delay_max_bytes)
        self.candles: CandleService | None = None
        """The candle topics (``SYMBOL@1m``); None with ``--candle-history 0``."""
        if settings.candle_history:
            self.candles = CandleService(
                self.bus,
                depth=settings.candle_history,
                update_s=settings.candle_update_s,
                # a node of a cluster may join a running stream: its first bars are partial
                partial_start=not isinstance(self.broker, LocalBroker),
            )
            self.clients.derived[CandleService.kind.name] = self.candles
        self.bar_store = (
            None if self.candles is None else candle_store(self.broker, self.candles.candles)
        )
        """The cluster's closed bars in Redis (``ticker/cluster/candle_store.py``), if any."""
        if self.candles is not None and self.bar_store is not None:
            self.candles.on_closed = self.bar_store.keep
        self.gate = Gate(settings, self.metrics, self.admission, self.bus, self.delays)
        collector = NodeCollector(
            self.stats,
            self.bus,
            self.supervisors,
            self.delays,
            self.clients.mailboxes,
            self.candles,
            self.books,
        )
        self.metrics.registry.register(collector)
        self.broker.register(self.metrics.registry)
        if self.book_relay is not None:
            self.book_relay.register(self.metrics.registry)

    @property
    def connections(self) -> set[ClientConnection]:
        """The open client connections, of every transport."""
        return self.clients.open

    @property
    def replays(self) -> ReplayHost | None:
        """Serves the replay ops (``--replay-dir``); None: they answer "not enabled"."""
        return self.clients.replays

    @replays.setter
    def replays(self, host: ReplayHost | None) -> None:
        """Set by ``serve`` once the replay directory is loaded."""
        self.clients.replays = host

    @property
    def closing(self) -> bool:
        """Shutting down: new sessions are refused."""
        return self.gate.closing

    @property
    def ready(self) -> bool:
        """Every feed has produced a tick; a node without feeds is ready when its broker is
        (at once without a cluster; an edge node once its Redis link is up)."""
        return all(s.ready for s in self.supervisors) and (
            bool(self.supervisors) or self.broker.ready
        )

    async def start(self) -> None:
        """Rebuild today's bars (``--record``), then start the broker, the feeds and the
        node's periodic tasks."""
        record_dir = self.settings.record_dir
        if self.candles is not None and record_dir is not None:
            await asyncio.to_thread(restore, self.candles.candles, record_dir)
        await self.broker.start(self.bus, self._local_symbols, self._restart_clients)
        if self.book_relay is not None:  # the cluster's books, before clients come
            await self.book_relay.start()
        self._feed_tasks = [
            asyncio.create_task(s.run(), name=f"feed:{s.adapter.name}") for s in self.supervisors
        ]
        for task in self._feed_tasks:
            task.add_done_callback(self._feed_ended)
        self._feed_tasks.append(asyncio.create_task(self._heartbeats(), name="heartbeats"))
        self._feed_tasks.append(asyncio.create_task(self.delays.run(), name="delay-lines"))
        if self.candles is not None:
            self.candles.start()
        if self.bar_store is not None:  # a late node's history, before it takes clients
            await self.bar_store.load()
            self.bar_store.start()
        if self.settings.metrics:
            probe = probe_loop_lag(self.stats.loop_lag, self.settings.loop_lag_interval_s)
            self._feed_tasks.append(asyncio.create_task(probe, name="loop-lag"))

    def _feed_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and isinstance(task.exception(), FeedFatal):
            self.exit_status = 2
            self.on_fatal()

    async def _heartbeats(self) -> None:
        """Heartbeat frames for connections that sent nothing for ``heartbeat_s``."""
        heartbeat_s = self.settings.heartbeat_s
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, heartbeat_s / 4))
            now = loop.time()
            for conn in list(self.connections):
                conn.heartbeat_due(now, heartbeat_s)
                conn.session.check_deadlines()  # token expiry, idle timeout

    async def stop_feeds(self) -> None:
        """Stop the feeds and the periodic tasks, then the broker."""
        for task in self._feed_tasks:
            task.cancel()
        for task in self._feed_tasks:
            with contextlib.suppress(asyncio.CancelledError, FeedFatal):  # logged already
                await task
        self._feed_tasks = []
        if self.candles is not None:
            await self.candles.stop()
        if self.books is not None:
            await self.books.stop()
        if self.book_relay is not None:
            await self.book_relay.stop()
        if self.bar_store is not None:
            await self.bar_store.stop()
        await self.broker.stop()

    def _restart_clients(self) -> None:
        """The cluster's stream restarted (a new epoch): clients reconnect and resubscribe
        (to books numbered anew, too)."""
        if self.book_relay is not None:
            self.book_relay.restart()
        for conn in list(self.connections):
            conn.session.request_close(CloseCode.GOING_AWAY, "stream restarted: reconnect")

    async def shutdown(self) -> None:
        """Stop producing, then close every client with 1001 within the grace period."""
        self.gate.closing = True
        await self.stop_feeds()
        connections = list(self.connections)
        for conn in connections:
            conn.session.request_close(CloseCode.GOING_AWAY, "server shutting down")
        if connections:
            log.info("closing %d client connection(s)", len(connections))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.close_grace_s + 0.5
            while self.connections and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # each handler leaves the set when it is done
        stuck = list(self.connections)  # did not take its close frame in time
        for conn in stuck:
            conn.abort()
        if stuck:
            log.info("aborted %d client connection(s) that did not read their close", len(stuck))


NODE_KEY = web.AppKey("node", Node)
"""The node, for the routes that report on all of it (health, readiness, metrics)."""
