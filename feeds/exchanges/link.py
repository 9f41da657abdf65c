"""One WebSocket connection to an exchange, kept alive for good.

Connect, subscribe (paced to the exchange's message rate), read with a watchdog (no
message for ``watchdog_s``: the connection is dead even if TCP says otherwise), hand each
message to the ``Venue`` and its ticks to the feed. Whatever ends a connection (a close, an
error, the watchdog) marks its symbols ``stale`` and reconnects after a capped, jittered
backoff (``ticker/core/backoff.py``); the first message of the new connection marks them
``live`` again. Where the exchange cuts connections at an age (Binance, 24 h), the link
rotates before that: it opens the replacement, keeps reading the old one while the new
one's messages are held for ``overlap_s``, then closes the old one and lets the held
messages through the trade ids (duplicates dropped): no gap, no double.

Books: a new connection starts every book over (``Venue.connected``); a product whose
book the venue finds wrong is asked a fresh snapshot, by resubscribing it on this
connection or, where snapshots are REST calls (Binance), by a GET that one task per link
makes, one at a time, ``snapshot_spacing_s`` apart. Such a product is ``stale`` (with
the venue's reason) until its snapshot has come.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import orjson

from feeds.base import FeedFatal
from feeds.exchanges.venue import Venue
from ticker.core.backoff import Backoff
from ticker.core.status import CLOSED, HALTED, LIVE, STALE, StatusSink
from ticker.core.ticks import MicrosClock, TickBatch, now_us

log = logging.getLogger("ticker.feeds")

MAX_HELD = 100_000
"""Messages of a replacement connection held during an overlap: past it the overlap ends."""
CONNECT_TIMEOUT_S = 10.0
"""The TCP, TLS and WebSocket handshake of one connection must be done by then."""


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """How a link behaves; every value injectable so tests run in seconds."""

    url: str
    watchdog_s: float
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    rotate_after_s: float | None = None
    """Replace a connection this old (None: never)."""
    overlap_s: float = 5.0
    """How long old and new connections both run during a rotation."""
    rest_url: str | None = None
    """Where REST book snapshots are fetched (None: the venue's public ``rest_url``)."""


class ConnectionLost(Exception):
    """A connection ended: closed by the exchange, an error, or silent past the watchdog."""


class Link:
    """Keeps one connection for ``products`` open, forever; ``run`` until cancelled."""

    def __init__(
        self,
        venue: Venue,
        products: list[str],
        options: LinkOptions,
        http: aiohttp.ClientSession,
        emit: Callable[[TickBatch], Awaitable[None]],
        status: StatusSink,
        *,
        clock: Callable[[], float] = time.monotonic,
        clock_us: MicrosClock = now_us,
    ) -> None:
        self.venue = venue
        self.products = products
        self.options = options
        self._http = http
        self._emit = emit
        self._status = status
        self._clock = clock
        self._clock_us = clock_us
        self._backoff = Backoff(options.backoff_initial_s, options.backoff_max_s)
        self._live = False
        self._snapshots: asyncio.Queue[str] | None = None
        """Products whose REST snapshot is to be fetched (a venue with REST snapshots)."""
        if venue.books and venue.rest_url is not None:
            self._snapshots = asyncio.Queue()
        self._queued: set[str] = set()

    def _symbols(self) -> list[str]:
        refused = self.venue.refused
        return [self.venue.names[p] for p in self.products if p not in refused]

    async def run(self) -> None:
        """Connect, read, reconnect; returns only by cancellation."""
        fetcher = None
        if self._snapshots is not None:
            fetcher = asyncio.create_task(self._fetch_snapshots(self._snapshots))
        try:
            await self._run()
        finally:
            if fetcher is not None:
                fetcher.cancel()
                await asyncio.wait([fetcher])

    async def _run(self) -> None:
        venue, options = self.venue, self.options
        self._status(self._symbols(), STALE, f"connecting to {venue.name}")
        while True:
            try:
                ws = await self._open()
                venue.connected(self._wanted())
                while True:
                    ws = await self._pump(ws)
            except (ConnectionLost, aiohttp.ClientError, OSError, TimeoutError) as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                venue.stats.reconnects += 1
                delay = self._backoff.delay()
                log.warning(
                    "feed %s: no connection to %s (%s); trying again in %.2f s",
                    venue.name,
                    options.url,
                    reason,
                    delay,
                )
                self._live = False
                self._status(self._symbols(), STALE, f"reconnecting: {reason}")
                await asyncio.sleep(delay)

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        """A connected, subscribed socket (autoping answers the exchange's pings); a
        handshake that hangs (packets dropped) fails after ``CONNECT_TIMEOUT_S``."""
        venue = self.venue
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            ws = await self._http.ws_connect(
                self.options.url,
                autoping=True,
                compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            )
        try:
            await self._send(ws, venue.subscriptions(self._wanted()))
        except BaseException:
            await ws.close()
            raise
        return ws

    def _wanted(self) -> list[str]:
        return [p for p in self.products if p not in self.venue.refused]

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, messages: list[str]) -> None:
        """Send, never faster than the exchange's client message rate."""
        spacing = 1.0 / self.venue.messages_per_s
        for number, message in enumerate(messages):
            if number:
                await asyncio.sleep(spacing)
            await ws.send_str(message)

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, wait_s: float) -> str | bytes:
        """The next data message; ``ConnectionLost`` when the socket ends or stays silent."""
        try:
            msg = await ws.receive(timeout=wait_s)
        except TimeoutError:
            raise ConnectionLost(f"no message in {wait_s:g} s (watchdog)") from None
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            data: str | bytes = msg.data
            return data
        raise ConnectionLost(f"closed by the exchange ({msg.type.name.lower()} {ws.close_code})")

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> aiohttp.ClientWebSocketResponse:
        """Read ``ws`` until it must be replaced (the replacement is returned) or it ends."""
        opened = self._clock()
        rotate = self.options.rotate_after_s
        watchdog = self.options.watchdog_s
        try:
            while True:
                data = await self._receive(ws, watchdog)
                await self._handle(ws, data)
                if rotate is not None and self._clock() - opened >= rotate:
                    replacement = await self._rotate(ws)
                    if replacement is not None:
                        return replacement
                    opened = self._clock()  # the new one failed: try again one period on
        except BaseException:
            await ws.close()
            raise

    async def _handle(self, ws: aiohttp.ClientWebSocketResponse, data: str | bytes) -> None:
        venue = self.venue
        refused, halted, held = len(venue.refused), venue.halted, dict(venue.halted_products)
        resyncing = dict(venue.resyncing)
        ticks = venue.decode(data, self._clock_us())
        changed = venue.halted != halted or venue.halted_products != held
        if not self._live or changed or venue.resyncing != resyncing:
            if not self._live:
                self._live = True
                self._backoff.reset()
            self._report_halts()
        if len(venue.refused) != refused:
            self._refused()
            await self._send(ws, venue.after_refusal(self._wanted()))
        if due := venue.take_resyncs():
            if self._snapshots is None:
                await self._send(ws, venue.resubscriptions(due))
            else:
                self._ask_snapshots(due)
        if ticks:
            await self._emit(ticks)

    def _report_halts(self) -> None:
        """Every symbol live but those the exchange halts, all of them or one by one, and
        those whose book is resyncing (``stale``)."""
        venue = self.venue
        reasons: dict[tuple[str, str], list[str]] = {}
        for product in self._wanted():
            why = venue.halted or venue.halted_products.get(product, "")
            status = HALTED if why else LIVE
            if not why and product in venue.resyncing:
                why, status = venue.resyncing[product], STALE
            reasons.setdefault((status, why), []).append(venue.names[product])
        for (status, why), symbols in reasons.items():
            self._status(symbols, status, why)

    def _ask_snapshots(self, products: list[str]) -> None:
        """Queue REST snapshots, each product at most once (bounded by the products)."""
        queue = self._snapshots
        if queue is None:
            return
        for product in products:
            if product not in self._queued:
                self._queued.add(product)
                queue.put_nowait(product)

    async def _fetch_snapshots(self, queue: asyncio.Queue[str]) -> None:
        """The REST snapshots asked for, one at a time; a failed one is asked again after
        a backoff (an exchange answering 429 wants fewer calls, not the same ones)."""
        venue, options = self.venue, self.options
        base = options.rest_url or venue.rest_url
        backoff = Backoff(max(venue.snapshot_spacing_s, options.backoff_initial_s), 60.0)
        while True:
            product = await queue.get()
            self._queued.discard(product)
            path = venue.snapshot_path(product)
            resyncing = dict(venue.resyncing)
            wait = venue.snapshot_spacing_s
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    async with self._http.get(f"{base}{path}") as resp:
                        resp.raise_for_status()
                        body = orjson.loads(await resp.read())
                venue.rest_snapshot(product, body)
                backoff.reset()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                wait = backoff.delay()
                log.warning(
                    "feed %s: the snapshot of %s failed (%s); again in %.2f s",
                    venue.name,
                    product,
                    exc,
                    wait,
                )
                venue.ask_snapshot(product)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                wait = backoff.delay()
                venue.stats.malformed += 1
                log.warning("feed %s: a malformed snapshot of %s (%s)", venue.name, product, exc)
                venue.ask_snapshot(product)
            if self._live and venue.resyncing != resyncing:
                self._report_halts()
            self._ask_snapshots(venue.take_resyncs())
            await asyncio.sleep(wait)

    def _refused(self) -> None:
        """Mark what was refused; when it is every product of a feed that never published
        a trade (a startup with no valid product), stop it for good."""
        venue = self.venue
        if len(venue.refused) == len(venue.names) and not venue.ids.last:
            refused = ", ".join(f"{p} ({why})" for p, why in venue.refused.items())
            raise FeedFatal(f"{venue.name} refused every product: {refused}")
        for product, reason in venue.refused.items():
            if product in self.products:
                log.error("feed %s: the exchange refused %s: %s", venue.name, product, reason)
                self._status([venue.names[product]], CLOSED, f"refused by {venue.name}: {reason}")

    async def _rotate(
        self, old: aiohttp.ClientWebSocketResponse
    ) -> aiohttp.ClientWebSocketResponse | None:
        """Make before break: the replacement, subscribed, its first messages held until
        the old one closes; None when it cannot be opened (the old one stays)."""
        venue = self.venue
        try:
            new = await self._open()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning(
                "feed %s: rotation failed (%s); keeping the old connection", venue.name, exc
            )
            return None
        held: list[str | bytes] = []
        holder = asyncio.create_task(self._hold(new, held))  # one task per rotation
        try:
            end = self._clock() + self.options.overlap_s
            while (left := end - self._clock()) > 0 and not holder.done():
                try:
                    data = await self._receive(old, min(left, self.options.watchdog_s))
                except ConnectionLost:
                    break  # the overlap is over, or the old one went first: the new one follows
                await self._handle(old, data)
        finally:
            holder.cancel()
            await asyncio.wait([holder])
            await old.close()
        if not holder.cancelled() and holder.exception() is not None:
            await new.close()
            raise ConnectionLost("the replacement connection failed during the overlap")
        for data in held:
            await self._handle(new, data)
        log.info("feed %s: rotated a connection (%d messages overlapped)", venue.name, len(held))
        return new

    async def _hold(self, ws: aiohttp.ClientWebSocketResponse, held: list[str | bytes]) -> None:
        while len(held) < MAX_HELD:
            held.append(await self._receive(ws, self.options.watchdog_s))
