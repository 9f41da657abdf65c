"""The Python client's local books: the pure state against the engine's frames and bad
frames, then a real node driven pass by pass with the real client on every transport."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.books_ref import RefBook, ref_checksum
from tests.conftest import StartServer
from ticker.client import BookError, Connected, Disconnected, OrderBook, connect
from ticker.client.books import LocalBooks, book_topic
from ticker.core.books import Book, BookFollower, Books, Level

SYMBOL = "AAPL"
DEPTHS: tuple[int | None, ...] = (10, 50, None)


def changes(rng: random.Random, n: int) -> tuple[list[Level], list[Level]]:
    """``n`` random level changes a side, on a 0.01 grid that never crosses (bids under
    100, asks over), a third of them removals."""

    def side(sign: int) -> list[Level]:
        return [
            (
                round(100 + sign * rng.randint(1, 80) * 0.01, 2),
                0.0 if rng.random() < 0.3 else round(rng.uniform(0.1, 9), 3),
            )
            for _ in range(n)
        ]

    return side(-1), side(1)


def wire(frame: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(frame)
    return parsed


def expected(book: Book, depth: int | None) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
    """What the client's book of a depth must be: the engine's top, best first."""

    def side(levels: list[list[float]]) -> tuple[Level, ...]:
        return tuple((p, s) for p, s in levels)

    return side(book.bids.top(depth)), side(book.asks.top(depth))


def test_the_local_books_follow_the_engines_frames_at_every_depth() -> None:
    """A seeded run through the engine and one follower per depth (the server's path):
    after every frame the client's book is the engine's top, and an independent rebuild
    (RefBook) agrees with the client."""
    rng = random.Random(2020)
    engine = Books()
    bids, asks = changes(rng, 60)
    engine.apply(SYMBOL, bids, asks, DEPTHS, reset=True)
    book = engine.book(SYMBOL)
    local = LocalBooks()
    followers, refs = {}, {}
    for depth in DEPTHS:
        snapshot = wire(book.snapshot(depth))
        got = local.accept(snapshot)
        assert got.snapshot and got.u == book.u and got.depth == depth
        assert (got.bids, got.asks) == expected(book, depth)
        followers[depth] = BookFollower(SYMBOL, depth, book.u)
        refs[depth] = RefBook(snapshot)
    frames = 0
    for _ in range(400):
        for delta in engine.apply(SYMBOL, *changes(rng, rng.randint(1, 6)), DEPTHS):
            followers[delta.depth].offer(delta)
        if rng.random() < 0.8:  # the client reads late, at times past MAX_PENDING: merged
            continue
        for depth, follower in followers.items():
            for frame in map(wire, follower.take()):
                got = local.accept(frame)
                refs[depth].apply(frame)
                frames += 1
                assert not got.snapshot and got.u == frame["u"]
                assert (list(map(list, got.bids)), list(map(list, got.asks))) == refs[depth].top()
            now = local.get(book_topic(SYMBOL, depth))
            assert now is not None and (now.bids, now.asks) == expected(book, depth)
    assert frames > 150


def test_levels_entering_and_leaving_the_top_10_keep_exactly_the_top_10() -> None:
    engine = Books()
    engine.apply(SYMBOL, [(99.0 + i / 100, 1.0) for i in range(12)], [(101.0, 1.0)], [10])
    book = engine.book(SYMBOL)
    local = LocalBooks()
    local.accept(wire(book.snapshot(10)))
    follower = BookFollower(SYMBOL, 10, book.u)

    def change(bids: list[Level]) -> OrderBook:
        for delta in engine.apply(SYMBOL, bids, [], [10]):
            follower.offer(delta)
        (frame,) = map(wire, follower.take())
        got = local.accept(frame)
        assert len(got.bids) == 10 and (got.bids, got.asks) == expected(book, 10)
        return got

    entered = change([(99.5, 2.0)])  # above the best: 99.02 leaves the top 10
    assert entered.best_bid == (99.5, 2.0) and entered.bids[-1] == (99.03, 1.0)
    left = change([(99.5, 0.0), (99.11, 0.0)])  # two leave: 99.02 and 99.01 come back
    assert left.bids[0] == (99.1, 1.0) and left.bids[-2:] == ((99.02, 1.0), (99.01, 1.0))
    assert left.spread == pytest.approx(1.9)


def frame(
    u: int,
    bids: list[list[float]],
    asks: list[list[float]],
    *,
    pu: int | None = None,
    depth: int | None = 10,
    cs: int | None = None,
) -> dict[str, Any]:
    """A frame written by hand, its ``cs`` by the independent formula unless given."""
    out: dict[str, Any] = {"type": "book", "s": SYMBOL, "u": u, "bids": bids, "asks": asks}
    if depth is not None:
        out["depth"] = depth
    if pu is None:
        out["snapshot"] = True
    else:
        out["pu"] = pu
    out["cs"] = cs
    return out


def with_cs(
    f: dict[str, Any], bids: dict[float, float], asks: dict[float, float]
) -> dict[str, Any]:
    if f["cs"] is None:
        f["cs"] = ref_checksum(bids, asks)
    return f


def test_a_snapshot_replaces_the_book_and_size_0_removes() -> None:
    local = LocalBooks()
    local.accept(
        with_cs(frame(5, [[10.0, 1.0], [9.0, 2.0]], [[11.0, 3.0]]), {10: 1, 9: 2}, {11: 3})
    )
    got = local.accept(
        with_cs(frame(6, [[10.0, 0]], [[11.5, 1.0]], pu=5), {9: 2}, {11: 3, 11.5: 1})
    )
    assert (got.bids, got.asks, got.u) == (((9.0, 2.0),), ((11.0, 3.0), (11.5, 1.0)), 6)
    fresh = local.accept(with_cs(frame(9, [[8.0, 4.0]], []), {8: 4}, {}))
    assert fresh.snapshot and (fresh.bids, fresh.asks) == (((8.0, 4.0),), ())
    assert fresh.best_ask is None and fresh.spread is None
    local.clear()
    assert local.get("AAPL@book10") is None


@pytest.mark.parametrize(
    ("second", "problem"),
    [
        (frame(7, [], [], pu=4, cs=0), "AAPL@book10: pu 4 does not chain to the last u 5"),
        (frame(5, [], [], pu=5, cs=0), "AAPL@book10: u 5 does not follow 5"),
        (frame(6, [[9.5, 1.0]], [], pu=5, cs=12345), "cs 12345 at u=6, the book's is "),
        (frame(6, [], [], pu=5, depth=1, cs=0), "AAPL@book1: a delta (u=6) before any"),
        (
            frame(6, [[10.0, 1.0], [9.5, 1.0]], [], depth=1, cs=0),
            "AAPL@book1: 2 bids and 0 asks after u=6, more than the depth 1",
        ),
        ({"type": "book", "s": SYMBOL, "depth": 10, "u": 6, "pu": 5}, "malformed book frame"),
    ],
)
def test_a_frame_that_does_not_check_out_is_a_book_error(
    second: dict[str, Any], problem: str
) -> None:
    local = LocalBooks()
    local.accept(with_cs(frame(5, [[10.0, 1.0]], []), {10: 1}, {}))
    with pytest.raises(BookError) as caught:
        local.accept(second)
    assert problem in str(caught.value)


@pytest.mark.parametrize("path", ["ws", "sse", "poll"])
async def test_the_clients_book_is_the_nodes_after_every_pass_and_after_a_reconnect(
    start_server: StartServer, path: str
) -> None:
    node, server = await start_server(book_interval_s=3600, poll_hold_s=0.5)
    books = node.books
    assert books is not None
    rng = random.Random(7)
    books.submit(SYMBOL, *changes(rng, 40), reset=True)
    books.pump()
    engine = books.books.book(SYMBOL)
    scheme = "ws" if path == "ws" else "http"
    url = f"{scheme}://{server.host}:{server.port}/{path}"
    topics = [book_topic(SYMBOL, depth) for depth in DEPTHS]
    touch = 1.0

    def one_pass() -> None:
        nonlocal touch
        touch += 1  # the best bid's size changes each pass: every depth gets a frame
        for _ in range(rng.randint(1, 4)):
            books.submit(SYMBOL, *changes(rng, 5))
        books.submit(SYMBOL, [(99.995, touch)], [])
        books.pump()

    async def in_step(stream: Any, snapshot: bool) -> None:
        """Read until every topic's book is at the node's ``u``; it must equal the node's."""
        behind = set(topics)
        while behind:
            event = await anext(stream)
            if not isinstance(event, OrderBook):
                continue
            assert event.snapshot is snapshot or event.u < engine.u
            if event.u == engine.u:
                assert (event.bids, event.asks) == expected(engine, event.depth)
                behind.discard(event.topic)
        for topic in topics:
            assert feed.book(topic).u == engine.u  # type: ignore[union-attr]

    async with connect(url, topics, backoff_initial=0.05) as feed:
        stream = feed.events()
        async with asyncio.timeout(20):
            await in_step(stream, snapshot=True)
            for _ in range(15):
                one_pass()
                await in_step(stream, snapshot=False)
            for conn in list(node.connections):
                conn.session.request_close(1011, "test: dropped")
            while not isinstance(await anext(stream), Disconnected):
                pass
            for _ in range(3):  # while it is away: what it held is stale
                one_pass()
            while not isinstance(await anext(stream), Connected):
                pass
            await in_step(stream, snapshot=True)  # a new snapshot, at the node's u
            one_pass()
            await in_step(stream, snapshot=False)
    with pytest.raises(ValueError, match="not a book topic of this feed"):
        feed.book("AAPL@book7")


def unchained_book_server() -> web.Application:
    """A server whose second frame of ``AAPL@book10`` does not chain to the first."""

    async def broken(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "welcome", "session": "s", "epoch": "e", "heartbeat_s": 5})
        await ws.receive()  # the subscribe
        subscribed = {"type": "subscribed", "symbols": ["AAPL@book10"], "id": "ticker.client"}
        await ws.send_json(subscribed)
        await ws.send_json(frame(3, [[10.0, 1.0]], [], cs=ref_checksum({10.0: 1.0}, {})))
        # an on-demand replay's frame of the same topic is not the live book's: skipped
        await ws.send_json({**frame(1, [[9.0, 1.0]], [], cs=ref_checksum({9.0: 1.0}, {})), "r": 1})
        await ws.send_json(frame(5, [[10.0, 0.0]], [], pu=4, cs=ref_checksum({}, {})))
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/ws", broken)
    return app


async def test_a_server_whose_book_does_not_chain_ends_the_feed_with_a_book_error(
    aiohttp_server: Any,
) -> None:
    server = await aiohttp_server(unchained_book_server())
    seen: list[object] = []
    async with connect(f"ws://{server.host}:{server.port}/ws", ["AAPL@book10"]) as feed:
        with pytest.raises(BookError, match="pu 4 does not chain to the last u 3"):
            async with asyncio.timeout(5):
                async for event in feed.events():
                    seen.append(event)
    assert [type(e) for e in seen] == [Connected, OrderBook]
