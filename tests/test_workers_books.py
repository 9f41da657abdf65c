"""Books in ``serve --workers``, in-process over real socket pairs: the feed process's
passes number each change set, every worker applies exactly it (clients on every worker
end with the same ``u``, ``cs`` and levels, every frame checked by ``RefBook``), a worker
started late gets every book whole in its catch-up, and a change set out of order is a
bad frame, never a silent drop."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.books_cluster import SYMBOL, Connect, Market, book_clients, books_of, run_market
from tests.test_redis_cluster import eventually
from ticker.cluster.book_wire import Entry
from ticker.cluster.pipe import BadFrame, Kind
from ticker.cluster.workers import WorkerBroker
from ticker.core.bus import Bus
from ticker.server.app import create_app
from ticker.server.books import BookService
from ticker.server.fanout import FanOut
from ticker.server.node import Node
from ticker.server.settings import Settings


@pytest.fixture
async def clients() -> AsyncIterator[Connect]:
    async with book_clients() as connect:
        yield connect


async def test_every_worker_serves_the_feed_process_books_with_the_same_u_and_cs(
    aiohttp_server: Any, clients: Any
) -> None:
    bus = Bus()
    bus.add_symbols([SYMBOL])
    books = BookService(interval_s=3600)  # the feed process's; the test runs its passes
    fanout = FanOut(bus, [], CollectorRegistry(), 60.0, books)
    market = Market(seed=21)
    books.submit(SYMBOL, *market.first(), reset=True)
    books.pump()
    await run_market(books, market, 30)  # before any worker: its catch-up has the book

    async def worker(index: int) -> tuple[Node, Any]:
        ours, theirs = socket.socketpair()
        await fanout.join(ours, index)
        settings = Settings(candle_history=0, book_interval_s=3600)
        node = Node(settings, broker=WorkerBroker(theirs, index))
        return node, await aiohttp_server(create_app(node))

    workers = [await worker(0), await worker(1)]
    book = books.books.book(SYMBOL)
    for node, _ in workers:  # the catch-up came before the hello: served from the start
        assert books_of(node).snapshot(SYMBOL, None) == book.snapshot(None)
    watchers = [await clients(server) for _, server in workers]
    await run_market(books, market, 150)
    await eventually(lambda: all(c.at(book.u) for c in watchers))
    late = await worker(2)
    for node, _ in [*workers, late]:
        assert books_of(node).snapshot(SYMBOL, None) == book.snapshot(None)  # u, cs, levels
    for client in watchers:
        assert (client.refs[None].bids, client.refs[None].asks) == (
            book.bids.levels,
            book.asks.levels,
        )
    for _, server in [*workers, late]:
        await server.close()  # the workers leave first: a worker whose link ends stops
    await fanout.close()


def test_a_change_set_out_of_order_is_a_bad_frame() -> None:
    left, right = socket.socketpair()
    with left, right:
        broker = WorkerBroker(right, 0)
        books = BookService(interval_s=3600)
        broker.bind_books(books)
        first = Entry(SYMBOL, 5, True, [(100.0, 1.0)], [(101.0, 1.0)])
        broker._handle(Kind.BOOK, first.encode())
        assert books.books.book(SYMBOL).u == 5  # a book whole: numbered as it was there
        with pytest.raises(BadFrame, match=f"book {SYMBOL}: change set 7 out of order"):
            broker._handle(Kind.BOOK, Entry(SYMBOL, 7, False, [(100.0, 2.0)], []).encode())
        with pytest.raises(ValueError, match="not a book entry"):
            broker._handle(Kind.BOOK, b"[nope")
