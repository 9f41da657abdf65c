"""Clients and a seeded market for the tests of books across processes (Redis, workers)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp.test_utils import TestServer

from tests.books_ref import RefBook
from ticker.core.books import Level
from ticker.server.books import BookService
from ticker.server.node import Node

SYMBOL = "AAPL"
TOPICS = [f"{SYMBOL}@book10", f"{SYMBOL}@book"]


class Client:
    """A WebSocket client following the book topics, every frame checked by ``RefBook``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.refs: dict[int | None, RefBook] = {}
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            f = msg.json()
            if f["type"] != "book":
                continue
            if f.get("snapshot"):
                self.refs[f.get("depth")] = RefBook(f)
            else:
                self.refs[f.get("depth")].apply(f)

    def at(self, u: int) -> bool:
        if self.task.done():
            self.task.result()  # a RefBook assertion: raise it here
            raise AssertionError(f"the server closed the connection: {self.ws.close_code}")
        return len(self.refs) == len(TOPICS) and all(r.u == u for r in self.refs.values())


Connect = Callable[[TestServer], Awaitable[Client]]


@contextlib.asynccontextmanager
async def book_clients() -> AsyncIterator[Connect]:
    """Connects clients following ``TOPICS``; closes them after."""
    http = aiohttp.ClientSession()
    opened: list[Client] = []

    async def connect(server: TestServer) -> Client:
        ws = await http.ws_connect(server.make_url("/ws"))
        await ws.send_json({"op": "subscribe", "symbols": TOPICS, "id": 1})
        client = Client(ws)
        opened.append(client)
        return client

    try:
        yield connect
    finally:
        for client in opened:
            await client.ws.close()
            client.task.cancel()
        await http.close()


def books_of(node: Node) -> BookService:
    assert node.books is not None
    return node.books


class Market:
    """Seeded change sets on a 1-cent grid (bids under 100, asks over): adds, resizes,
    removals, levels entering and leaving the top 10."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def first(self) -> tuple[list[Level], list[Level]]:
        bids = [(round(99.99 - i * 0.01, 2), float(i + 1)) for i in range(30)]
        asks = [(round(100.01 + i * 0.01, 2), float(i + 1)) for i in range(30)]
        return bids, asks

    def changes(self) -> tuple[list[Level], list[Level]]:
        rng = self.rng

        def side(base: float, sign: int) -> list[Level]:
            return [
                (
                    round(base + sign * rng.randrange(40) * 0.01, 2),
                    0.0 if rng.random() < 0.3 else float(rng.randrange(1, 50)),
                )
                for _ in range(rng.randrange(1, 5))
            ]

        return side(99.99, -1), side(100.01, 1)


async def run_market(books: BookService, market: Market, passes: int) -> None:
    """``passes`` passes of the owner's, each applying a few change sets merged."""
    for i in range(passes):
        for _ in range(market.rng.randrange(1, 4)):
            books.submit(SYMBOL, *market.changes())
        books.pump()
        if i % 7 == 0:
            await asyncio.sleep(0)  # let a round go out now and then (rounds then batch)
