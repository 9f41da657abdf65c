"""Book topics over real sockets: snapshot then chained deltas on every transport, the
HTTP snapshot, errors, and a slow client getting one merged delta instead of a close."""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any

import aiohttp

from tests.books_ref import RefBook
from tests.conftest import StartServer, frame, next_of
from tests.rawws import RawWebSocket


async def subscribe(ws: aiohttp.ClientWebSocketResponse, topics: list[str]) -> dict:
    await next_of(ws, "welcome")
    await ws.send_json({"op": "subscribe", "symbols": topics, "id": 1})
    return await next_of(ws, "subscribed")


async def test_snapshot_then_deltas_rebuild_the_book_and_checksum(
    start_server: StartServer,
) -> None:
    node, server = await start_server(book_interval_s=3600)  # the test runs the passes
    books = node.books
    assert books is not None
    books.submit("AAPL", [(100.0, 5.0), (99.5, 2.0)], [(100.5, 1.0)], reset=True)
    books.pump()
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        got = await subscribe(ws, ["AAPL@book10", "AAPL@book"])
        assert got["symbols"] == ["AAPL@book", "AAPL@book10"]
        first = [await next_of(ws, "book"), await next_of(ws, "book")]
        refs = {f.get("depth"): RefBook(f) for f in first}
        assert refs[10].bids == {100.0: 5.0, 99.5: 2.0}
        books.submit("AAPL", [(100.0, 0.0), (99.8, 3.0)], [])
        books.submit("AAPL", [(99.8, 4.0)], [(100.4, 7.0)])
        books.pump()
        for _ in range(2):
            delta = await next_of(ws, "book")
            refs[delta.get("depth")].apply(delta)
        for ref in refs.values():
            assert ref.bids == {99.8: 4.0, 99.5: 2.0}
            assert ref.asks == {100.4: 7.0, 100.5: 1.0}
        async with http.get(server.make_url("/book?symbol=AAPL&depth=all")) as resp:
            snap: dict[str, Any] = await resp.json()
        assert snap["u"] == 2 and snap["snapshot"] and "depth" not in snap
        assert RefBook(snap).bids == refs[None].bids
        async with http.get(server.make_url("/book?symbol=MSFT")) as resp:  # no book: empty
            empty: dict[str, Any] = await resp.json()
        assert (empty["u"], empty["bids"], empty["asks"], empty["depth"]) == (0, [], [], 10)
        assert books.books.get("MSFT") is None  # asking keeps nothing
        async with http.get(server.make_url("/book?symbol=AAPL&depth=7")) as resp:
            assert resp.status == 400
            assert "depth must be one of 10 50 all" in (await resp.text())


async def test_bad_book_suffix_names_the_valid_ones(start_server: StartServer) -> None:
    _, server = await start_server()
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await next_of(ws, "welcome")
        await ws.send_json({"op": "subscribe", "symbols": ["AAPL@book7"], "id": 3})
        err = await frame(ws)
        assert err["type"] == "error" and "book10 book50 book" in err["message"]


async def test_history_for_candles_in_the_same_subscribe_does_not_refuse_a_book_topic(
    start_server: StartServer,
) -> None:
    _, server = await start_server(book_interval_s=3600)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await next_of(ws, "welcome")
        topics = ["AAPL@1m", "AAPL@book10"]
        await ws.send_json({"op": "subscribe", "symbols": topics, "history": 5, "id": 2})
        assert (await frame(ws))["symbols"] == topics
        kinds = {(await frame(ws))["type"], (await frame(ws))["type"]}
        assert kinds == {"candles", "book"}


async def test_a_client_paused_5s_at_20k_changes_a_second_is_kept_and_gets_merged_deltas(
    start_server: StartServer,
) -> None:
    """The issue's slow reader: nothing read for 5 s while the book takes 20 000 level
    changes a second; never closed, its frames then chain from where it stopped in merged
    deltas (one pass's change is u + 1; a merged one spans many), its book right, and what
    the server holds for it bounded by the book's levels, not by the changes."""

    node, server = await start_server(book_interval_s=0.05)
    books = node.books
    assert books is not None
    rng = random.Random(7)
    prices = [round(100 - 0.01 * i, 2) for i in range(1, 301)]
    asks = [round(100 + 0.01 * i, 2) for i in range(1, 301)]
    books.submit("AAPL", [(p, 1.0) for p in prices], [(p, 1.0) for p in asks], reset=True)
    books.pump()
    slow = await RawWebSocket.connect(server.host, server.port, "/ws", rcvbuf=4096)
    slow.send(b'{"op":"subscribe","symbols":["AAPL@book","AAPL@book10"],"id":1}')
    refs: dict[int | None, RefBook] = {}
    while len(refs) < 2:
        got = await slow.json()
        if got["type"] == "book":
            refs[got.get("depth")] = RefBook(got)
    conn = next(iter(node.connections))
    # a slow network: the kernel holds little on the server's side either (loopback would
    # otherwise take megabytes before the transport feels anything)
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    held: list[int] = []

    async def drive(seconds: float) -> None:  # 1 000 changes each 50 ms: 20 000 a second
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            for _ in range(10):
                bids = [(rng.choice(prices), float(rng.randint(0, 9))) for _ in range(50)]
                asks_ = [(rng.choice(asks), float(rng.randint(0, 9))) for _ in range(50)]
                books.submit("AAPL", bids, asks_)
            held.append(conn.transport.get_write_buffer_size())
            await asyncio.sleep(0.05)

    changes = books.changes
    await drive(5.0)  # the client reads nothing meanwhile
    assert books.changes - changes >= 90_000
    assert conn.paused(), "the socket should be backed up by now"
    followers = [f for topic in books._followers.values() for f in topic.values()]
    assert followers and all(len(f._pending) <= 8 for f in followers)
    merged = [f for f in followers if f._bids is not None]
    assert merged, "a backed-up follower merges per level"
    assert all(len(f._bids or ()) + len(f._asks) <= 600 for f in merged)  # <= the levels
    assert max(held) < 1 << 20  # the transport's buffer: bounded, not the changes' size
    await asyncio.sleep(0.1)
    books.pump()
    book = books.books.book("AAPL")
    spans = []
    async with asyncio.timeout(10):
        while refs[None].u != book.u or refs[10].u != book.u:
            got = await slow.json()
            if got["type"] == "book":
                ref = refs[got.get("depth")]
                if ref.depth is None:
                    spans.append(got["u"] - got["pu"])
                ref.apply(got)
    assert conn.session.close_request is None
    assert max(spans) > 10, f"no merged delta among {spans}"
    assert len(spans) < 100  # fewer frames than the 100 passes
    bids, asks_now = refs[None].top()
    assert bids == book.bids.top(None) and asks_now == book.asks.top(None)
    assert refs[10].top() == (book.bids.top(10), book.asks.top(10))
    slow.close()


async def test_levels_entering_and_leaving_the_top_10_keep_the_client_at_exactly_the_top_10(
    start_server: StartServer,
) -> None:
    node, server = await start_server(book_interval_s=3600)
    books = node.books
    assert books is not None
    books.submit(
        "AAPL",
        [(100.0 - i, 1.0) for i in range(15)],
        [(101.0 + i, 1.0) for i in range(15)],
        reset=True,
    )
    books.pump()
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await subscribe(ws, ["AAPL@book10"])
        ref = RefBook(await next_of(ws, "book"))
        steps = [
            ([(100.5, 2.0)], []),  # enters at the top: 91 leaves
            ([(100.5, 0.0), (100.0, 0.0), (99.0, 0.0)], []),  # two leave: 91, 90 come back in
            ([], [(101.0, 0.0)] + [(101.0 + i, 0.0) for i in range(1, 6)]),  # asks thin out
            ([(85.0, 4.0)], []),  # deep: no frame for the top 10 (asks have 9 levels now)
            ([], [(100.75, 3.0)]),
        ]
        for bids, asks in steps:
            before = ref.u
            books.submit("AAPL", bids, asks)
            books.pump()
            book = books.books.book("AAPL")
            if (bids, asks) == steps[3]:
                continue  # nothing in the top 10 changed: nothing is sent
            ref.apply(await next_of(ws, "book"))
            assert ref.u == book.u and before < ref.u
            assert ref.top() == (book.bids.top(10), book.asks.top(10))


async def test_a_crossed_book_makes_its_symbol_stale_until_it_is_sound(
    start_server: StartServer,
) -> None:
    node, server = await start_server(book_interval_s=3600)
    books = node.books
    assert books is not None
    books.submit("AAPL", [(100.0, 1.0)], [(101.0, 1.0)], reset=True)
    books.pump()
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await subscribe(ws, ["AAPL", "AAPL@book10"])
        books.submit("AAPL", [(101.0, 2.0)], [])  # bid at the ask: locked
        books.pump()
        status = await next_of(ws, "status")
        assert status["symbols"]["AAPL"]["status"] == "stale"
        assert "crossed" in status["symbols"]["AAPL"]["reason"]
        assert books.crossed == 1
        books.submit("AAPL", [(100.0, 1.0)], [(101.0, 1.0)], reset=True)  # the source resyncs
        books.pump()
        status = await next_of(ws, "status")
        assert status["symbols"]["AAPL"]["status"] == "live"
        async with http.get(server.make_url("/metrics")) as resp:
            assert "ticker_book_crossed_total 1.0" in await resp.text()
