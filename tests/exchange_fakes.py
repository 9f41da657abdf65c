"""A fake exchange for the feed tests: an aiohttp WebSocket server on 127.0.0.1 that
records what the client sends and sends what the test tells it to, per connection.

It speaks no protocol of its own: each test plays the exchange's part with messages from
a real recording (``tests/data/COINBASE.ws.28.0``) or from the exchange's documentation.
It also answers REST calls under ``/api/`` (Binance's depth snapshots) with the bodies
the test gives, in order, each call waiting until the test has given one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from feeds.exchanges.feed import ExchangeFeed
from ticker.core.ticks import Tick

DATA = Path(__file__).parent / "data"


class FakeConnection:
    """One client connection to the fake: what it sent, and how to talk back."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.transport = request.transport
        """Kept from the handshake: the request forgets it once the handler returns."""
        self.received: list[str] = []
        self.pongs = 0
        """Pongs the client sent back to the fake's pings."""
        self._got = asyncio.Condition()
        self.closed = asyncio.Event()

    async def _note(self, text: str) -> None:
        async with self._got:
            self.received.append(text)
            self._got.notify_all()

    async def wait_messages(self, count: int, timeout: float = 5.0) -> list[str]:
        """The first ``count`` messages the client sent, once it has sent them."""
        async with asyncio.timeout(timeout), self._got:
            await self._got.wait_for(lambda: len(self.received) >= count)
        return self.received[:count]

    async def send(self, *texts: str) -> None:
        """Send messages as the exchange would."""
        for text in texts:
            await self.ws.send_str(text)

    def drop(self) -> None:
        """Cut the connection without a close frame (a network drop)."""
        if self.transport is not None:
            self.transport.abort()


class FakeExchange:
    """The server; ``connections`` fills as clients connect, ``url`` is where."""

    def __init__(self) -> None:
        self.connections: list[FakeConnection] = []
        self._new = asyncio.Condition()
        self.rest_calls: list[str] = []
        """Path and query of every REST call, in order."""
        self._answers: dict[str, asyncio.Queue[bytes]] = {}
        app = web.Application()
        app.router.add_route("GET", "/api/{tail:.*}", self._rest)
        app.router.add_route("GET", "/{tail:.*}", self._handler)
        self.server = TestServer(app, host="127.0.0.1")

    async def __aenter__(self) -> FakeExchange:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for conn in self.connections:
            conn.drop()
        await self.server.close()

    @property
    def url(self) -> str:
        """The ws:// URL of the fake (give it to the feed as its endpoint)."""
        return f"ws://127.0.0.1:{self.server.port}/ws"

    @property
    def rest_url(self) -> str:
        """The http:// base of the fake's REST calls."""
        return f"http://127.0.0.1:{self.server.port}"

    def answer(self, path_qs: str, body: str) -> None:
        """The body of the next call to ``path_qs`` (``/api/v3/depth?symbol=..``)."""
        self._answers.setdefault(path_qs, asyncio.Queue()).put_nowait(body.encode())

    async def rest_call(self, count: int, timeout: float = 5.0) -> list[str]:
        """The first ``count`` REST calls, once they were made."""
        async with asyncio.timeout(timeout):
            while len(self.rest_calls) < count:
                await asyncio.sleep(0.005)
        return self.rest_calls[:count]

    async def _rest(self, request: web.Request) -> web.Response:
        self.rest_calls.append(request.path_qs)
        body = await self._answers.setdefault(request.path_qs, asyncio.Queue()).get()
        return web.Response(body=body, content_type="application/json")

    async def connection(self, number: int, timeout: float = 10.0) -> FakeConnection:
        """The ``number``-th connection (from 0), once the client has opened it."""
        async with asyncio.timeout(timeout), self._new:
            await self._new.wait_for(lambda: len(self.connections) > number)
        return self.connections[number]

    async def _handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False)  # so the client's pongs are seen
        await ws.prepare(request)
        conn = FakeConnection(ws, request)
        async with self._new:
            self.connections.append(conn)
            self._new.notify_all()
        async for msg in ws:  # a reader loop, so the client's close is answered
            if msg.type == WSMsgType.TEXT:
                await conn._note(msg.data)
            elif msg.type == WSMsgType.PONG:
                conn.pongs += 1
            elif msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
        conn.closed.set()
        return ws


def coinbase_recording() -> list[str]:
    """The messages Coinbase sent in the recording, as received (JSON text)."""
    out = []
    for line in (DATA / "COINBASE.ws.28.0").read_text().splitlines():
        stamp, sep, body = line.partition(": ")
        if sep and not stamp.startswith("wss://"):
            out.append(body)
    return out


class Statuses:
    """A status sink that keeps every report, and waits for one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self._changed = asyncio.Event()

    def __call__(self, symbols: Any, status: str, reason: str) -> None:
        self.seen += [(s, status, reason) for s in symbols]
        self._changed.set()

    def last(self, symbol: str) -> str | None:
        found = [status for s, status, _ in self.seen if s == symbol]
        return found[-1] if found else None

    async def until(self, symbol: str, status: str, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.last(symbol) != status:
                self._changed.clear()
                await self._changed.wait()


class Running:
    """A feed's stream consumed by a task, its ticks collected."""

    def __init__(self, feed: ExchangeFeed) -> None:
        self.ticks: list[Tick] = []
        self._task = asyncio.create_task(self._consume(feed.stream()))

    async def _consume(self, stream: AsyncIterator[list[Tick]]) -> None:
        async for batch in stream:
            self.ticks += batch

    async def until(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.ticks) < count:
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
