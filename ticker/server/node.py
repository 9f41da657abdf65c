"""The node: one broadcaster process — its bus, its feeds and its open connections.

The node starts the feeds under supervision and, at shutdown, stops them and closes every
client with 1001 at once (not one by one: one stuck client must not hold up the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from feeds.base import FeedAdapter
from feeds.supervisor import FeedSupervisor
from ticker.cluster.broker import Broker, LocalBroker
from ticker.core.admission import Admission
from ticker.core.bus import Bus
from ticker.core.codes import CloseCode
from ticker.server.delayed import DelayPump
from ticker.server.flusher import Flusher
from ticker.server.metrics import Metrics, NodeCollector
from ticker.server.probes import probe_loop_lag
from ticker.server.settings import Settings
from ticker.server.stats import Stats, Traffic

if TYPE_CHECKING:
    from ticker.core.session import ReplayHost
    from ticker.server.connection import ClientConnection

log = logging.getLogger("ticker.server")


class Node:
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
        self.connections: set[ClientConnection] = set()
        self.supervisors = [
            FeedSupervisor(
                feed,
                self.bus.publish,
                backoff_initial=settings.feed_backoff_s,
                backoff_max=settings.feed_backoff_max_s,
            )
            for feed in feeds
        ]
        self._local_symbols = [s for feed in feeds for s in feed.symbols()]
        self.bus.add_symbols(self._local_symbols)
        self._feed_tasks: list[asyncio.Task[None]] = []
        self.closing = False
        self.admission = Admission(settings.connection_limits)
        """Open connections in all, per IP and per token subject (``ticker/server/auth.py``)."""
        self.delays = DelayPump(self.bus, settings.delay_max_bytes)
        self.replays: ReplayHost | None = None
        """Serves the replay ops (``--replay-dir``); None: they answer "not enabled"."""
        self.metrics.registry.register(NodeCollector(self))
        self.broker.register(self.metrics.registry)

    @property
    def ready(self) -> bool:
        """Every feed has produced a tick; a node without feeds is ready when its broker is
        (at once without a cluster; an edge node once its Redis link is up)."""
        return all(s.ready for s in self.supervisors) and (
            bool(self.supervisors) or self.broker.ready
        )

    def transport(self, name: str) -> Traffic:
        """The counters of a transport (``ws``...), its metric series created at 0."""
        if name not in self.stats.traffic:
            self.metrics.prepare(name)
        return self.stats.transport(name)

    async def start(self) -> None:
        await self.broker.start(self.bus, self._local_symbols, self._restart_clients)
        self._feed_tasks = [
            asyncio.create_task(s.run(), name=f"feed:{s.adapter.name}") for s in self.supervisors
        ]
        self._feed_tasks.append(asyncio.create_task(self._heartbeats(), name="heartbeats"))
        self._feed_tasks.append(asyncio.create_task(self.delays.run(), name="delay-lines"))
        if self.settings.metrics:
            probe = probe_loop_lag(self.stats.loop_lag, self.settings.loop_lag_interval_s)
            self._feed_tasks.append(asyncio.create_task(probe, name="loop-lag"))

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
        for task in self._feed_tasks:
            task.cancel()
        for task in self._feed_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._feed_tasks = []
        await self.broker.stop()

    def _restart_clients(self) -> None:
        """The cluster's stream restarted (a new epoch): clients reconnect and resubscribe."""
        for conn in list(self.connections):
            conn.session.request_close(CloseCode.GOING_AWAY, "stream restarted: reconnect")

    async def shutdown(self) -> None:
        """Stop producing, then close every client with 1001 within the grace period."""
        self.closing = True
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
