"""Book topics over real sockets: snapshot then chained deltas on every transport, the
HTTP snapshot, errors, and a slow client getting one merged delta instead of a close."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.books_ref import RefBook
from tests.conftest import StartServer, frame, next_of


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
