"""Books through a real Redis: every node serves the owner's book with the same ``u``, ``cs``
and levels; a node started late gets the current book; a lost message (a gap in ``u``) is
healed from the book's list; an owner that restarts numbers on; ``ticker feed`` carries
its feeds' books. Clients check every frame with ``RefBook`` (``tests/books_ref.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from tests.books_cluster import (
    SYMBOL,
    Client,
    Connect,
    Market,
    book_clients,
    books_of,
    run_market,
)
from tests.redis_server import RedisServer
from tests.test_redis_cluster import config, eventually
from ticker.cluster import publisher
from ticker.cluster.book_relay import BookRelay
from ticker.cluster.book_wire import (
    SNAPSHOT_EVERY,
    BookOutbox,
    Entry,
    decode_message,
    encode_message,
    message_prefix,
)
from ticker.cluster.redis import RedisBroker
from ticker.cluster.wire import BadMessage, Keys
from ticker.core.books import BookSink, Level
from ticker.core.bus import Bus
from ticker.core.ticks import TickBatch
from ticker.server.app import create_app
from ticker.server.books import BookService
from ticker.server.node import Node
from ticker.server.settings import Settings

# -- the wire and the owner's outbox, without Redis ----------------------------------------


def entry(u: int, reset: bool = False, bids: list[Level] | None = None) -> Entry:
    return Entry(SYMBOL, u, reset, bids or [(100.0, float(u))], [(101.0, 1.0)])


def test_a_message_round_trips_and_bad_ones_say_why() -> None:
    prefix = message_prefix("n1")
    data = encode_message(prefix, [entry(3).encode(), entry(4, reset=True).encode()])
    origin, entries = decode_message(data)
    assert origin == "n1" and entries == [entry(3), entry(4, reset=True)]
    bad = {
        b"nope": "not a books message",
        b'{"o":"n","c":[["AAPL",0,false,[],[]]]}': "u is not a positive integer",
        b'{"o":"n","c":[["AAPL",1,false,[[1,-2]],[]]]}': "size >= 0",
        b'{"o":"n","c":[["AAPL",1,false,[[1]],[]]]}': "not [price, size]",
        b'{"o":"n","c":[["",1,false,[],[]]]}': "invalid symbol",
        b'{"o":"n","c":[["AAPL",1]]}': "not [symbol, u, reset, bids, asks]",
    }
    for raw, why in bad.items():
        with pytest.raises(BadMessage, match=why.replace("[", r"\[").replace("]", r"\]")):
            decode_message(raw)


def test_the_outbox_sends_a_book_whole_first_then_its_entries_and_keeps_its_list_short() -> None:
    out = BookOutbox(every=3, max_levels=10)
    full = entry(99, reset=True)
    out.add(entry(1))
    out.add(entry(2))  # the book goes whole in the first round: its entries are not kept
    first = out.take(lambda s: full)
    assert first.entries == [full.encode()] and first.stores[SYMBOL].replace
    out.add(entry(3))
    out.add(entry(4))
    second = out.take(lambda s: full)
    assert second.entries == [entry(3).encode(), entry(4).encode()]
    assert not second.stores[SYMBOL].replace  # appended after the full book
    out.add(entry(5))  # the third entry after the full book: the list is the book again
    third = out.take(lambda s: full)
    assert third.entries == [entry(5).encode()]
    assert third.stores[SYMBOL].replace and third.stores[SYMBOL].items == [full.encode()]
    out.add(entry(6))
    out.add(entry(7, reset=True))  # a source's reset is a whole book: the list starts there
    out.add(entry(8))
    fourth = out.take(lambda s: full)
    assert fourth.stores[SYMBOL].items == [entry(7, reset=True).encode(), entry(8).encode()]
    for u in range(9, 20):  # 2 levels each: past 10 pending, the book goes whole instead
        out.add(entry(u))
    assert out.dropped == 6 and out.due == {SYMBOL}  # the 5 kept and the 6th
    assert out.take(lambda s: full).entries == [full.encode()]
    assert out.empty


def test_apply_with_u_skips_what_it_has_takes_the_next_and_refuses_a_gap() -> None:
    books = BookService()
    heard: list[int] = []
    books.on_applied.append(lambda s, r, b, a, u: heard.append(u))
    assert books.apply(SYMBOL, True, [(100.0, 1.0)], [(101.0, 1.0)], u=7)  # a catch-up
    book = books.books.book(SYMBOL)
    assert book.u == 7
    assert books.apply(SYMBOL, False, [(100.0, 2.0)], [], u=7)  # had it: skipped
    assert book.bids.levels == {100.0: 1.0}
    assert not books.apply(SYMBOL, False, [(100.0, 2.0)], [], u=9)  # a gap: refused
    assert books.apply(SYMBOL, False, [(100.0, 2.0)], [], u=8) and book.u == 8
    assert books.apply(SYMBOL, True, [(100.0, 2.0)], [(101.0, 1.0)], u=12)  # same levels
    assert book.u == 12  # a reset that changed nothing still takes the owner's number
    books.submit(SYMBOL, [(100.0, 2.0)], [])  # the same size again: nothing changes
    books.pump()
    assert heard == [7, 8, 12]  # a change set that changed nothing is not heard


# -- nodes through a real Redis ----------------------------------------------------------

StartNode = Callable[..., Awaitable[tuple[Node, TestServer]]]


@pytest.fixture
async def start_node(aiohttp_server: Any) -> StartNode:
    async def start(url: str, feeds: tuple[Any, ...] = ()) -> tuple[Node, TestServer]:
        settings = Settings(candle_history=0, book_interval_s=3600)  # passes by hand
        node = Node(settings, feeds, broker=RedisBroker(config(url)))
        node.bus.add_symbols([SYMBOL])
        server = await aiohttp_server(create_app(node))
        return node, server

    return start


@pytest.fixture
async def clients() -> AsyncIterator[Connect]:
    async with book_clients() as connect:
        yield connect


def relay_of(node: Node) -> BookRelay:
    assert node.book_relay is not None
    return node.book_relay


async def same_everywhere(owner: Node, nodes: list[Node], clients: list[Client]) -> None:
    """Every node's book and every client's equal the owner's: u, cs and levels."""
    book = books_of(owner).books.book(SYMBOL)
    await eventually(lambda: all(c.at(book.u) for c in clients))
    await eventually(lambda: all(books_of(n).books.book(SYMBOL).u == book.u for n in nodes))
    whole = book.snapshot(None)
    for node in nodes:
        assert books_of(node).snapshot(SYMBOL, None) == whole  # byte for byte, u and cs
    for client in clients:
        full, top = client.refs[None], client.refs[10]
        assert (full.bids, full.asks) == (book.bids.levels, book.asks.levels)
        assert top.top() == full.top(10)


async def stored_up_to(redis_server: RedisServer, u: int) -> list[bytes]:
    """The book's list in Redis, once its last entry is ``u``."""
    redis = Redis.from_url(redis_server.url)
    try:
        async with asyncio.timeout(5):
            while True:
                got = await redis.lrange(Keys().book(SYMBOL), 0, -1)
                stored = [b for b in got if isinstance(b, bytes)]
                if stored and orjson.loads(stored[-1])[1] == u:
                    return stored
                await asyncio.sleep(0.01)
    finally:
        await redis.aclose()


async def test_two_nodes_serve_the_owners_book_with_the_same_u_cs_and_levels(
    redis_server: RedisServer, start_node: StartNode, clients: Any
) -> None:
    owner, owner_server = await start_node(redis_server.url)
    edge, edge_server = await start_node(redis_server.url)
    watchers = [await clients(owner_server), await clients(edge_server)]
    await eventually(lambda: all(c.at(0) for c in watchers))
    market = Market(seed=20)
    books = books_of(owner)
    books.submit(SYMBOL, *market.first(), reset=True)
    books.pump()
    await run_market(books, market, 3 * SNAPSHOT_EVERY)
    await same_everywhere(owner, [edge], watchers)
    assert relay_of(edge).stats.gaps == 0 and relay_of(owner).stats.entries_sent > 0
    stored = await stored_up_to(redis_server, books.books.book(SYMBOL).u)
    assert len(stored) <= SNAPSHOT_EVERY  # the latest full book and what came after
    assert orjson.loads(stored[0])[2] is True  # a reset: the whole book


async def test_a_node_started_late_serves_the_current_book_then_follows_it(
    redis_server: RedisServer, start_node: StartNode, clients: Any
) -> None:
    owner, _ = await start_node(redis_server.url)
    market = Market(seed=7)
    books = books_of(owner)
    books.submit(SYMBOL, *market.first(), reset=True)
    books.pump()
    await run_market(books, market, SNAPSHOT_EVERY + 30)  # a full book and entries after it
    u = books.books.book(SYMBOL).u
    await stored_up_to(redis_server, u)
    late, late_server = await start_node(redis_server.url)
    url = late_server.make_url(f"/book?symbol={SYMBOL}&depth=all")
    async with aiohttp.ClientSession() as http, http.get(url) as resp:  # before any entry
        assert await resp.read() == books.snapshot(SYMBOL, None)
    assert books_of(late).books.book(SYMBOL).u == u and relay_of(late).stats.books_read == 1
    watcher = await clients(late_server)
    await run_market(books, market, 40)
    await same_everywhere(owner, [late], [watcher])


async def test_a_lost_message_is_a_gap_healed_from_the_books_list(
    redis_server: RedisServer, start_node: StartNode, clients: Any
) -> None:
    owner, _ = await start_node(redis_server.url)
    edge, edge_server = await start_node(redis_server.url)
    watcher = await clients(edge_server)
    market = Market(seed=3)
    books = books_of(owner)
    books.submit(SYMBOL, *market.first(), reset=True)
    books.pump()
    await run_market(books, market, 20)
    await same_everywhere(owner, [edge], [watcher])

    relay = relay_of(edge)
    receive = relay._receive
    lost: list[bytes] = []

    def lose_one(data: bytes) -> None:  # the next message never arrives
        if not lost:
            lost.append(data)
            return
        receive(data)

    relay._receive = lose_one  # type: ignore[method-assign]
    books.submit(SYMBOL, *market.changes())
    books.pump()
    await eventually(lambda: bool(lost))
    await run_market(books, market, 20)
    await same_everywhere(owner, [edge], [watcher])  # the client's deltas chained throughout
    assert relay.stats.gaps == 1 and relay.stats.books_read == 1  # no book at its start
    async with aiohttp.ClientSession() as http, http.get(edge_server.make_url("/metrics")) as r:
        metrics = await r.text()
    assert "ticker_redis_book_gaps_total 1.0" in metrics
    assert "ticker_redis_book_reads_total 1.0" in metrics


async def test_an_owner_that_restarts_numbers_on_from_the_cluster(
    redis_server: RedisServer, start_node: StartNode, clients: Any
) -> None:
    owner, _ = await start_node(redis_server.url)
    edge, edge_server = await start_node(redis_server.url)
    watcher = await clients(edge_server)
    market = Market(seed=11)
    books = books_of(owner)
    books.submit(SYMBOL, *market.first(), reset=True)
    books.pump()
    await run_market(books, market, 30)
    await same_everywhere(owner, [edge], [watcher])
    before = books.books.book(SYMBOL).u
    await owner.stop_feeds()

    again, _ = await start_node(redis_server.url)  # a new process: its own count from 0
    fresh = books_of(again)
    fresh.submit(SYMBOL, [(99.5, 1.0)], [(100.5, 2.0)], reset=True)  # the source resyncs
    fresh.pump()
    await eventually(lambda: relay_of(again).out.empty and not relay_of(again).out.unchecked)
    assert fresh.books.book(SYMBOL).u > before  # on from the cluster's, not from 1
    await run_market(fresh, market, 20)
    await same_everywhere(again, [edge], [watcher])


async def test_after_a_redis_outage_every_node_has_the_owners_book_again(
    redis_server: RedisServer, start_node: StartNode, clients: Any
) -> None:
    owner, _ = await start_node(redis_server.url)
    edge, edge_server = await start_node(redis_server.url)
    watcher = await clients(edge_server)
    market = Market(seed=13)
    books = books_of(owner)
    books.submit(SYMBOL, *market.first(), reset=True)
    books.pump()
    await run_market(books, market, 20)
    await same_everywhere(owner, [edge], [watcher])
    redis_server.stop()
    await eventually(lambda: not relay_of(owner).stats.link_up)
    await run_market(books, market, 20)  # the owner's book goes on, the edge's waits
    redis_server.start()  # empty: the owner writes its books whole, the edge reads them
    await eventually(lambda: relay_of(edge).stats.link_up and relay_of(owner).stats.link_up)
    await run_market(books, market, 20)
    await same_everywhere(owner, [edge], [watcher])  # the client's deltas chained throughout


class TickFeed:
    """A feed of one tick: it makes its node an origin (it sets the cluster's epoch)."""

    name = "tick"

    def symbols(self) -> list[str]:
        return [SYMBOL]

    async def stream(self) -> AsyncIterator[TickBatch]:
        yield [{"s": SYMBOL, "p": 100.0}]
        await asyncio.Event().wait()


async def test_when_the_whole_cluster_restarts_nodes_take_the_books_numbered_anew(
    redis_server: RedisServer, start_node: StartNode, clients: Any
) -> None:
    owner, _ = await start_node(redis_server.url, (TickFeed(),))
    edge, edge_server = await start_node(redis_server.url)
    watcher = await clients(edge_server)
    market = Market(seed=17)
    books = books_of(owner)
    books.submit(SYMBOL, *market.first(), reset=True)
    books.pump()
    await run_market(books, market, 30)
    await same_everywhere(owner, [edge], [watcher])
    await owner.stop_feeds()
    redis_server.stop()
    redis_server.start()  # empty: no epoch, no lists

    again, _ = await start_node(redis_server.url, (TickFeed(),))  # a new epoch
    fresh = books_of(again)
    fresh.submit(SYMBOL, *market.first(), reset=True)
    fresh.pump()
    await run_market(fresh, market, 10)
    assert fresh.books.book(SYMBOL).u < books.books.book(SYMBOL).u  # numbered from 1 again
    await eventually(lambda: watcher.ws.closed)  # the edge closed it (1001): it resubscribes
    assert watcher.ws.close_code == 1001
    await same_everywhere(again, [edge], [await clients(edge_server)])


class BookFeed:
    """A feed with a book: a reset, then seeded change sets, and one tick."""

    name = "books"

    def __init__(self, market: Market, changes: int) -> None:
        self.market = market
        self.changes = changes
        self.sink: BookSink | None = None
        self.go = asyncio.Event()
        self.done = asyncio.Event()

    def symbols(self) -> list[str]:
        return [SYMBOL]

    def bind_books(self, sink: BookSink) -> None:
        self.sink = sink

    async def stream(self) -> AsyncIterator[TickBatch]:
        assert self.sink is not None
        yield [{"s": SYMBOL, "p": 100.0}]
        await self.go.wait()
        self.sink(SYMBOL, *self.market.first(), reset=True)
        for i in range(self.changes):
            self.sink(SYMBOL, *self.market.changes())
            if i % 5 == 0:
                await asyncio.sleep(0.002)  # several passes
        self.done.set()
        await asyncio.Event().wait()


async def test_ticker_feed_carries_its_feeds_books_to_every_node(
    redis_server: RedisServer, start_node: StartNode, clients: Any
) -> None:
    bus = Bus()
    books = BookService(interval_s=0.001, status=bus.status.set)
    feed = BookFeed(Market(seed=5), 300)
    stop = asyncio.Event()
    broker = RedisBroker(config(redis_server.url))
    task = asyncio.create_task(publisher.publish([feed], broker, stop, bus, books))
    await eventually(lambda: broker.stats.ticks_published > 0)  # the cluster's epoch is set
    edges = [await start_node(redis_server.url) for _ in range(2)]
    watchers = [await clients(server) for _, server in edges]
    await eventually(lambda: all(c.at(0) for c in watchers))
    feed.go.set()
    await asyncio.wait_for(feed.done.wait(), 10)
    books.pump()  # what the last pass had not taken yet
    book = books.books.book(SYMBOL)
    assert book.u > 20  # many passes, each a change set every node applied
    await eventually(lambda: all(c.at(book.u) for c in watchers))
    for node, _ in edges:
        assert books_of(node).snapshot(SYMBOL, None) == book.snapshot(None)
    stop.set()
    await task
