"""The feed: a live stream of ticks that survives disconnects, restarts and slow starts.

One task per feed runs the connection: connect, subscribe (with ``since`` after a
reconnect, so the server replays what was missed), read, and on a loss wait a jittered
exponential backoff and start again. What it reads goes through a bounded queue to the
iterator: a consumer that falls behind stops the reading, and the server's backpressure
(conflation, or 4008 and a resume in mode ``all``) takes over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from ticker.client.books import BookError, LocalBooks, OrderBook, is_book_topic
from ticker.client.links import Link, LinkError, SslOption, open_link, transport_of
from ticker.client.state import (
    Backoff,
    Candle,
    CandleContinuity,
    Connected,
    Continuity,
    Disconnected,
    Event,
    Refusals,
    ServerError,
    Status,
    SubscriptionRefused,
    Tick,
)
from ticker.core.codes import ABNORMAL, CloseCode

log = logging.getLogger("ticker.client")

MODES = ("conflate", "all")
_REFUSED = {400, 401, 403, 404}
"""A handshake refused for good (bad parameters, not authorized, no such endpoint)."""


def _close_code_of(status: int) -> int:
    """1008 (do not retry) for an answer retrying would not change: one of ``_REFUSED``,
    or a success that is no WebSocket upgrade (the URL is not a ticker endpoint)."""
    return CloseCode.POLICY if status < 400 or status in _REFUSED else ABNORMAL


_SUBSCRIBE_ID = "ticker.client"


class FeedClosed(Exception):
    """The server ended the feed with a code that says not to reconnect."""

    def __init__(self, code: int, reason: str, status: int | None = None) -> None:
        super().__init__(f"closed by the server with {code}: {reason or '-'}")
        self.code = code
        self.reason = reason
        self.status = status
        """The HTTP status when the handshake was refused (401: no valid token), else None."""


class _End:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Feed:
    """Live ticks of ``symbols``: ``async with connect(...) as feed: async for tick in feed``.

    ``url``: ``ws://host:port/ws`` (or ``wss://``), ``http(s)://host:port/sse`` or
    ``http(s)://host:port/poll``. ``mode``: ``conflate`` (latest values) or ``all`` (every
    tick; gaps that could not be recovered are reported as ``Gap`` events).
    ``max_hz``: at most this many frames per second. ``token``: sent as
    ``Authorization: Bearer``. ``ssl``: an ``ssl.SSLContext`` (or False to skip
    verification) for ``wss://`` and ``https://``. Reconnects wait ``backoff_initial``
    seconds, doubling up to ``backoff_max``, each randomised by ±20 %. ``max_pending``:
    events held for a slow consumer before reading stops. ``history``: closed bars each
    candle topic of ``symbols`` (``AAPL@1m``) starts with; its bars come out of
    ``events()`` (or ``candles()``) as ``Candle``, each closed bar once even across
    reconnects. A book topic in ``symbols`` (``AAPL@book10``) is kept as a local book,
    checked on every frame: ``book(topic)``, and ``OrderBook`` events (``books()``).
    """

    def __init__(
        self,
        url: str,
        symbols: Sequence[str],
        *,
        mode: str = "conflate",
        max_hz: float | None = None,
        token: str | None = None,
        ssl: SslOption = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_pending: int = 10_000,
        history: int = 0,
    ) -> None:
        transport_of(url)  # a ValueError now rather than at the first connect
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not symbols:
            raise ValueError("symbols: name at least one symbol (or '*')")
        if max_hz is not None and not 0 < max_hz <= 1000:
            raise ValueError("max_hz must be above 0 and at most 1000")
        self.url = url
        self.symbols = list(symbols)
        self.mode = mode
        self.max_hz = max_hz
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self._ssl = ssl
        self._backoff = Backoff(backoff_initial, backoff_max)
        self.continuity = Continuity(mode)
        self.history = history
        """Closed bars each candle topic (``AAPL@1m`` in ``symbols``) starts with."""
        self._candles = CandleContinuity()
        self._books = LocalBooks()
        self._queue: asyncio.Queue[Event | _End] = asyncio.Queue(max_pending)
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._ended = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Feed:
        self._http = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name=f"ticker-feed:{self.url}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the connection; iteration ends once what was received is consumed."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            self._put_nowait(_End(None))
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- what the user reads ------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Tick]:
        return self._ticks()

    async def _ticks(self) -> AsyncIterator[Tick]:
        async for event in self.events():
            if isinstance(event, Tick):
                yield event

    async def candles(self) -> AsyncIterator[Candle]:
        """The bars of the candle topics only (history first, then as they change)."""
        async for event in self.events():
            if isinstance(event, Candle):
                yield event

    async def books(self) -> AsyncIterator[OrderBook]:
        """The book topics' books, after each frame (a snapshot first, then per delta)."""
        async for event in self.events():
            if isinstance(event, OrderBook):
                yield event

    def book(self, topic: str) -> OrderBook | None:
        """The latest book of a book topic of this feed, as read from the server (it may
        be ahead of the events not consumed yet); None before its snapshot and while
        disconnected (a reconnect starts from a new snapshot)."""
        if topic not in self.symbols or not is_book_topic(topic):
            raise ValueError(f"{topic!r} is not a book topic of this feed")
        return self._books.get(topic)

    async def events(self) -> AsyncIterator[Event]:
        """Every event: ticks, gaps (mode ``all``), connects, disconnects, the server's
        error frames (``ServerError``: symbols refused while others stream), symbol
        status changes (``Status``: ``stale`` while a symbol's source is down), bars
        (``Candle``) and books (``OrderBook``).

        Ends when the feed is closed; raises ``FeedClosed`` when the server ended it for
        good (1000, 1008, 1009, or a handshake refused with 400, 401, 403 or 404, or
        answered with no upgrade), ``SubscriptionRefused`` when it refused every symbol,
        ``BookError`` when a book frame does not check out (which must never happen).
        """
        while not self._ended:
            event = await self._queue.get()
            if isinstance(event, _End):
                self._ended = True
                if event.error is not None:
                    raise event.error
                return
            yield event

    def _put_nowait(self, item: Event | _End) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:  # closing while the consumer lags: make room for the end
            self._queue.get_nowait()
            self._queue.put_nowait(item)

    # -- the connection -----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._connect_until_closed()
        except BookError as exc:  # the server's bug (or a proxy's): no book is better
            log.error("book check failed: %s", exc)
            self._put_nowait(_End(exc))
        except Exception as exc:  # a bug, or a server that breaks the protocol: say so
            log.exception("the feed failed")
            self._put_nowait(_End(exc))

    async def _connect_until_closed(self) -> None:
        assert self._http is not None
        while True:
            link: Link | None = None
            status: int | None = None
            refused: SubscriptionRefused | None = None
            try:
                link = await open_link(
                    self._http, self.url, self._query(), ssl=self._ssl, headers=self._headers
                )
                await self._read(link)
                code, reason = link.close_code or ABNORMAL, link.close_reason
            except SubscriptionRefused as exc:  # the same subscribe would be refused again
                code, reason, refused = CloseCode.NORMAL, str(exc), exc
            except LinkError as exc:
                code, reason, status = _close_code_of(exc.status), str(exc), exc.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                code, reason = ABNORMAL, str(exc) or type(exc).__name__
            finally:
                self._books.clear()  # nothing stale: the next session sends snapshots
                if link is not None:
                    await link.close()
            delay = None if refused else self._backoff.next(code)
            if delay is None:
                await self._queue.put(Disconnected(code, reason, None))
                await self._queue.put(_End(refused or FeedClosed(code, reason, status)))
                return
            log.info("disconnected (%s %s); reconnecting in %.1f s", code, reason, delay)
            await self._queue.put(Disconnected(code, reason, delay))
            await asyncio.sleep(delay)

    def _query(self) -> dict[str, str]:
        query = {"mode": self.mode}
        if self.max_hz is not None:
            query["max_hz"] = f"{self.max_hz:g}"
        return query

    async def _read(self, link: Link) -> None:
        """One session: subscribe after the welcome (resuming if the stream is the same),
        then hand on what arrives. Silence past twice the heartbeat ends it.

        The server's errors about the subscription are held until it says ``subscribed``
        (then they come out before ``Connected``); if it refuses everything, no
        ``subscribed`` comes and ``SubscriptionRefused`` ends the session."""
        silence: float | None = None
        connected = Connected("", "", False)
        refusals: Refusals | None = None
        put = self._queue.put
        continuity = self.continuity
        while True:
            async with asyncio.timeout(silence):
                message = await link.recv()
            if message is None:
                return
            kind = message.get("type")
            if kind in ("ticks", "snapshot"):
                snapshot = kind == "snapshot"
                for raw in message["ticks"]:
                    tick, gap = continuity.accept(raw, snapshot)
                    if gap is not None:
                        log.warning(
                            "%s: %d tick(s) missed, not recoverable", gap.symbol, gap.missed
                        )
                        await put(gap)
                    if tick is not None:
                        await put(tick)
            elif kind == "candles":
                for bar in message["candles"]:
                    if (candle := self._candles.accept(bar)) is not None:
                        await put(candle)
            elif kind == "book" and "r" not in message:  # "r": an on-demand replay's book
                await put(self._books.accept(message))
            elif kind == "welcome":
                self._backoff.reset()
                if transport_of(self.url) != "poll":  # a held poll is silent by design
                    silence = 2 * float(message["heartbeat_s"]) + 1
                await link.send(self._subscribe(message["epoch"]))
                refusals = Refusals(self.symbols)
                connected = Connected(
                    message["session"], message["epoch"], continuity.welcome(message["epoch"])
                )
            elif kind == "subscribed" and message.get("id") == _SUBSCRIBE_ID:
                for error in refusals.errors if refusals else ():
                    await self._report(error)
                refusals = None
                await put(connected)  # streaming now: what was published since is coming
            elif kind == "status":
                for status in Status.from_wire(message):
                    await put(status)
            elif kind == "error":
                error = ServerError.from_wire(message)
                if refusals is None or message.get("id") != _SUBSCRIBE_ID:
                    await self._report(error)
                elif refusals.add(error):
                    raise SubscriptionRefused(refusals.errors)

    async def _report(self, error: ServerError) -> None:
        log.warning("server error %s: %s", error.code, error.message)
        await self._queue.put(error)

    def _subscribe(self, epoch: str) -> dict[str, Any]:
        op: dict[str, Any] = {"op": "subscribe", "symbols": self.symbols, "id": _SUBSCRIBE_ID}
        if self.history:
            op["history"] = self.history
        continuity = self.continuity
        if epoch == continuity.epoch and continuity.last_q:
            op["since"] = dict(continuity.last_q)
            op["epoch"] = epoch
        return op


connect = Feed
"""``async with connect(url, symbols) as feed: async for tick in feed``: see ``Feed``."""
