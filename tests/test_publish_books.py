"""Book change sets through the publish API, over real sockets: a publisher's reset and
changes reach ``@book10`` subscribers (checked frame by frame with ``RefBook``); a bad
book item refuses its whole request (ticks included) with a problem naming it; the
Python ``Publisher`` and ``ticker publish`` send books too."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.books_ref import RefBook
from tests.conftest import StartServer, next_of, require
from tests.redis_server import RedisServer
from tests.test_publish_cli import finish, ticker_publish
from tests.test_publish_http import SECRET, post, token
from tests.test_redis_cluster import config
from ticker.client.publisher import Publisher, PublishError, book_item
from ticker.cluster.redis import RedisBroker
from ticker.core.publish import NDJSON, PublishLimits, PublishRefused
from ticker.core.publish_books import MAX_CHANGE_LEVELS, check_items
from ticker.core.tokens import TokenVerifier
from ticker.server.app import create_app
from ticker.server.node import Node
from ticker.server.settings import Settings

LIMITS = PublishLimits(max_ticks=20_000, max_bytes=1 << 20)
PASS_BY_HAND = 3600.0
"""``book_interval_s``: the test runs the book passes (``pump``) itself."""

Side = dict[float, float]


class Expected:
    """The book a publisher means, kept apart from the server's engine: all levels."""

    def __init__(self) -> None:
        self.bids: Side = {}
        self.asks: Side = {}

    def change(self, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, size in levels:
                if size:
                    side[price] = size
                else:
                    side.pop(price, None)

    def reset(self, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> None:
        self.bids, self.asks = {}, {}
        self.change(bids, asks)

    def top(self, n: int | None = None) -> tuple[list[list[float]], list[list[float]]]:
        bids = sorted(self.bids.items(), reverse=True)[:n]
        asks = sorted(self.asks.items())[:n]
        return [list(b) for b in bids], [list(a) for a in asks]


async def follow(
    http: aiohttp.ClientSession, server: Any, topic: str
) -> tuple[aiohttp.ClientWebSocketResponse, RefBook]:
    """A subscriber of one book topic, holding its snapshot."""
    ws = await http.ws_connect(server.make_url("/ws"))
    await next_of(ws, "welcome")
    await ws.send_json({"op": "subscribe", "symbols": [topic], "id": 1})
    await next_of(ws, "subscribed")
    return ws, RefBook(await next_of(ws, "book"))


def pump(node: Node) -> None:
    """One book pass, as the timer would run it."""
    assert node.books is not None
    node.books.pump()


def nothing_published(node: Node) -> None:
    assert node.bus.published == 0
    assert node.books is not None
    assert node.books.changes == 0 and len(node.books.pending) == 0
    assert node.books.books.book("AAPL").u == 0


BIDS = [(100.0 - 0.5 * i, 10.0 + i) for i in range(12)]  # 12 levels: two below the top 10
ASKS = [(101.0 + 0.5 * i, 5.0 + i) for i in range(12)]


async def test_a_reset_then_changes_reach_a_book10_subscriber(start_server: StartServer) -> None:
    node, server = await start_server(publish=LIMITS, book_interval_s=PASS_BY_HAND)
    url = server.make_url("/publish")
    want = Expected()
    async with aiohttp.ClientSession() as http:
        ws, ref = await follow(http, server, "AAPL@book10")
        assert ref.u == 0 and ref.top() == ([], [])
        body = {"ticks": [{"s": "AAPL", "p": 100.5}, book_item("AAPL", BIDS, ASKS, reset=True)]}
        status, answer, _ = await post(http, url, body)
        assert (status, answer) == (200, {"accepted": 2, "q": {"AAPL": 1}, "books": 1})
        want.reset(BIDS, ASKS)
        pump(node)
        ref.apply(await next_of(ws, "book"))
        assert ref.top() == want.top(10)

        # two change sets in one NDJSON request, merged into one pass: the best bid goes,
        # a new best comes, 99.5 goes, so the 11th level enters the top 10
        first = ([(100.0, 0.0), (100.25, 3.0)], [(101.0, 7.0)])
        second = ([(99.5, 0.0)], [(101.5, 0.0), (100.75, 1.5)])
        lines = [orjson.dumps(book_item("AAPL", *change)) for change in (first, second)]
        status, answer, _ = await post(http, url, b"\n".join(lines), content_type=NDJSON)
        assert (status, answer) == (200, {"accepted": 2, "q": {}, "books": 2})
        want.change(*first)
        want.change(*second)
        pump(node)
        delta = await next_of(ws, "book")
        ref.apply(delta)
        assert ref.top() == want.top(10)
        assert 95.0 in ref.bids and 94.5 not in ref.bids  # the 11th level entered the top 10
        assert ref.frames == 3 and delta["u"] == delta["pu"] + 1  # one change set a pass

        async with http.get(server.make_url("/book?symbol=AAPL&depth=all")) as resp:
            assert RefBook(await resp.json()).top() == want.top()
        await ws.close()


GOOD_TICK = {"s": "AAPL", "p": 100.5}
GOOD_BOOK = book_item("AAPL", [(100.0, 1.0)], [(101.0, 2.0)])


@pytest.mark.parametrize(
    ("item", "field", "words"),
    [
        (book_item("AAPL", [(100.0, -1.0)]), "book.bids[0]", "the size must not be negative"),
        (book_item("AAPL", [], [(0.0, 1.0)]), "book.asks[0]", "the price 0.0 must be above 0"),
        (book_item("AAPL", [(-3, 1)]), "book.bids[0]", "must be above 0"),
        (
            {"book": {"s": "AAPL", "bids": [[100.0, "5"]]}},
            "book.bids[0]",
            "the size must be a number",
        ),
        (book_item("AAPL", [(True, 5)]), "book.bids[0]", "the price must be a number"),
        (book_item("AAPL", [(2**60, 5)]), "book.bids[0]", "the price must be at most 2^53"),
        (
            book_item("AAPL", [], [(100.0 + i, 1.0) for i in range(MAX_CHANGE_LEVELS + 1)]),
            "book.asks",
            f"{MAX_CHANGE_LEVELS + 1} levels, over the limit of {MAX_CHANGE_LEVELS} a side",
        ),
        ({"book": {"s": "AAPL", "bids": [[100.0]]}}, "book.bids[0]", "must be [price, size]"),
        ({"book": {"s": "AAPL", "bids": {"100": 1}}}, "book.bids", "must be a list of"),
        ({"book": [100.0, 1.0]}, "book", "must be an object"),
        ({"book": {"s": "AAPL", "bids": [[1, 1]], "side": "b"}}, "book.side", "unknown field"),
        ({**GOOD_BOOK, "p": 1.0}, "p", "unknown field: a book item is"),
        ({"book": {"bids": [[1.0, 1.0]]}}, "book.s", "missing"),
        (book_item("A B", [(1.0, 1.0)]), "book.s", "not a valid symbol"),
        ({"book": {"s": "AAPL", "bids": [[1, 1]], "reset": 1}}, "book.reset", "true or false"),
        (book_item("AAPL"), "book", "no levels"),
        (book_item("ZZZ", [(1.0, 1.0)]), "book.s", "the server does not know 'ZZZ'"),
    ],
)
async def test_a_bad_book_item_refuses_the_whole_request(
    start_server: StartServer, item: dict[str, Any], field: str, words: str
) -> None:
    node, server = await start_server(publish=LIMITS, book_interval_s=PASS_BY_HAND)
    body = {"ticks": [GOOD_TICK, GOOD_BOOK, item]}
    async with aiohttp.ClientSession() as http:
        status, answer, _ = await post(http, server.make_url("/publish"), body)
    assert (status, answer["error"]) == (400, "bad_request")
    assert answer["message"].endswith("nothing was published")
    [problem] = answer["problems"]
    assert (problem["index"], problem["field"]) == (2, field), problem
    assert words in problem["message"], problem
    pump(node)
    nothing_published(node)


async def test_a_book_for_a_new_symbol_comes_with_its_first_tick(start_server: StartServer) -> None:
    node, server = await start_server(publish=LIMITS, book_interval_s=PASS_BY_HAND)
    body = {"ticks": [book_item("NEW", [(5.0, 1.0)], reset=True), {"s": "NEW", "p": 5.5}]}
    async with aiohttp.ClientSession() as http:
        status, answer, _ = await post(http, server.make_url("/publish"), body)
    assert (status, answer) == (200, {"accepted": 2, "q": {"NEW": 1}, "books": 1})
    pump(node)
    assert node.books is not None and node.books.books.book("NEW").bids.levels == {5.0: 1.0}


async def test_nan_and_infinity_are_refused_whole(start_server: StartServer) -> None:
    node, server = await start_server(publish=LIMITS, book_interval_s=PASS_BY_HAND)
    nan_frame = (
        '{"op": "publish", "id": 1, "ticks": [{"s": "AAPL", "p": 1},'
        ' {"book": {"s": "AAPL", "bids": [[NaN, 1]]}}]}'
    )
    huge = b'{"s": "AAPL", "p": 1}\n{"book": {"s": "AAPL", "asks": [[101, 1e999]]}}\n'
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/publish")) as pub:
            await pub.send_str(nan_frame)
            error = orjson.loads((await pub.receive()).data)
        status, answer, _ = await post(http, server.make_url("/publish"), huge, content_type=NDJSON)
    assert (error["type"], error["code"]) == ("error", "bad_json")  # no id: it is not JSON
    assert (status, answer["problems"]) == (
        400,
        [{"index": 1, "message": "line 2 is not valid JSON"}],
    )
    pump(node)
    nothing_published(node)


def test_non_finite_levels_are_named_when_a_decoder_lets_them_through() -> None:
    nan, inf = float("nan"), float("inf")
    with pytest.raises(PublishRefused) as caught:
        check_items([GOOD_TICK, book_item("AAPL", [(nan, 1.0)], [(101.0, inf), (102.0, 1.0)])])
    assert [p.to_json() for p in caught.value.problems] == [
        {"index": 1, "field": "book.bids[0]", "message": "the price must be a finite number"},
        {"index": 1, "field": "book.asks[0]", "message": "the size must be a finite number"},
    ]


async def test_a_bad_tick_beside_good_books_refuses_the_books_too(
    start_server: StartServer,
) -> None:
    node, server = await start_server(publish=LIMITS, book_interval_s=PASS_BY_HAND)
    body = {"ticks": [GOOD_BOOK, {"s": "AAPL", "p": "x"}, GOOD_BOOK]}
    async with aiohttp.ClientSession() as http:
        status, answer, _ = await post(http, server.make_url("/publish"), body)
    assert (status, answer["problems"]) == (
        400,
        [{"index": 1, "field": "p", "message": "must be a number"}],
    )
    pump(node)
    nothing_published(node)


async def test_book_levels_count_as_ticks_against_the_size_bound(
    start_server: StartServer,
) -> None:
    node, server = await start_server(
        publish=PublishLimits(max_ticks=10), book_interval_s=PASS_BY_HAND
    )
    levels = [(100.0 - i, 1.0) for i in range(10)]
    body = {"ticks": [GOOD_TICK, book_item("AAPL", levels, reset=True)]}
    async with aiohttp.ClientSession() as http:
        status, answer, _ = await post(http, server.make_url("/publish"), body)
    assert (status, answer["error"]) == (413, "too_large")
    assert "1 ticks and 10 book levels" in answer["message"]
    assert "--max-publish-ticks" in answer["message"]
    pump(node)
    nothing_published(node)


async def test_a_publisher_may_publish_only_the_books_its_token_allows(
    start_server: StartServer,
) -> None:
    node, server = await start_server(
        publish=LIMITS, book_interval_s=PASS_BY_HAND, auth=TokenVerifier.from_secret(SECRET)
    )
    url = server.make_url("/publish")
    body = {"ticks": [GOOD_TICK, book_item("MSFT", [(1.0, 1.0)])]}
    auth = f"Bearer {token(publish=['AAPL'])}"
    async with aiohttp.ClientSession() as http:
        status, answer, _ = await post(http, url, body, Authorization=auth)
        assert (status, answer["error"], answer["symbols"]) == (403, "not_entitled", ["MSFT"])
        pump(node)
        nothing_published(node)
        status, answer, _ = await post(http, url, {"ticks": [GOOD_BOOK]}, Authorization=auth)
    assert (status, answer["books"]) == (200, 1)


async def test_a_node_without_books_refuses_book_items(start_server: StartServer) -> None:
    node, server = await start_server(publish=LIMITS, book_interval_s=0)
    assert node.books is None
    body = {"ticks": [GOOD_TICK, GOOD_BOOK]}
    async with aiohttp.ClientSession() as http:
        status, answer, _ = await post(http, server.make_url("/publish"), body)
    assert (status, answer["error"]) == (400, "bad_request")
    assert answer["problems"] == [
        {
            "index": 1,
            "field": "book",
            "message": "this server keeps no books (--book-interval-ms 0)",
        }
    ]
    assert node.bus.published == 0


async def test_the_python_publisher_publishes_books(start_server: StartServer) -> None:
    node, server = await start_server(publish=LIMITS, book_interval_s=PASS_BY_HAND)
    want = Expected()
    async with aiohttp.ClientSession() as http:
        ws, ref = await follow(http, server, "AAPL@book10")
        async with Publisher(str(server.make_url("/"))) as pub:
            ack = await pub.publish_book("AAPL", BIDS, ASKS, reset=True)
            assert (ack.accepted, ack.q, ack.books) == (1, {}, 1)
            want.reset(BIDS, ASKS)
            pump(node)
            ref.apply(await next_of(ws, "book"))
            change = ([(100.0, 0.0)], [(101.0, 0.0), (101.5, 9.0)])
            ack = await pub.publish([GOOD_TICK, book_item("AAPL", *change)])
            assert (ack.accepted, ack.q, ack.books) == (2, {"AAPL": 1}, 1)
            want.change(*change)
            pump(node)
            ref.apply(await next_of(ws, "book"))
            assert ref.top() == want.top(10)
            with pytest.raises(PublishError) as caught:
                await pub.publish([GOOD_TICK, book_item("AAPL", [(100.0, -2.0)])])
        await ws.close()
    assert caught.value.code == "bad_request"
    assert caught.value.problems == [
        {"index": 1, "field": "book.bids[0]", "message": "the size must not be negative"}
    ]
    assert node.bus.published == 1


async def test_ticker_publish_sends_book_lines(start_server: StartServer, tmp_path: Path) -> None:
    node, server = await start_server(publish=LIMITS, book_interval_s=PASS_BY_HAND)
    want = Expected()
    change = ([(100.0, 0.0)], [(101.0, 3.0)])
    lines = [
        orjson.dumps(GOOD_TICK),
        orjson.dumps(book_item("AAPL", BIDS, ASKS, reset=True)),
        orjson.dumps(book_item("AAPL", *change)),
    ]
    path = tmp_path / "books.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    code, err = await finish(await ticker_publish(str(server.make_url("/")), str(path)))
    assert code == 0, err
    assert err.strip().startswith("published 1 ticks and 2 book change(s) of 1 symbol(s)"), err
    want.reset(BIDS, ASKS)
    want.change(*change)
    pump(node)
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.make_url("/book?symbol=AAPL&depth=all")) as resp,
    ):
        assert RefBook(await resp.json()).top() == want.top()

    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(lines[0] + b"\n" + orjson.dumps(book_item("AAPL", [(99.0, -1.0)])) + b"\n")
    code, err = await finish(await ticker_publish(str(server.make_url("/")), str(bad)))
    assert code == 1 and "Traceback" not in err
    assert err.splitlines() == [
        "ticker publish: error: bad_request: 1 problem(s); nothing was published;"
        " published 0 ticks before it",
        "  line 2: book.bids[0]: the size must not be negative",
    ]
    assert node.bus.published == 1  # the first file's tick only


async def cluster_node(aiohttp_server: Any, redis_url: str) -> tuple[Node, Any]:
    node = Node(
        Settings(publish=LIMITS, book_interval_s=PASS_BY_HAND),
        (),
        broker=RedisBroker(config(redis_url)),
    )
    return node, await aiohttp_server(create_app(node))


async def test_in_a_cluster_books_go_in_once_the_script_took_the_ticks(
    aiohttp_server: Any, redis_server: RedisServer
) -> None:
    node, server = await cluster_node(aiohttp_server, redis_server.url)
    other, other_server = await cluster_node(aiohttp_server, redis_server.url)
    assert node.books is not None and other.books is not None
    url = server.make_url("/publish")
    body = {"ticks": [{"s": "NEW", "p": 5.5}, book_item("NEW", [(5.0, 1.0)], reset=True)]}
    key = {"Idempotency-Key": "k1"}
    async with aiohttp.ClientSession() as http:
        status, answer, _ = await post(http, url, body, **key)
        assert (status, answer) == (200, {"accepted": 2, "q": {"NEW": 1}, "books": 1})
        # the retry on another node: the script answers it as a replay
        status, again, headers = await post(http, other_server.make_url("/publish"), body, **key)
        assert (status, again, headers["Idempotent-Replayed"]) == (200, answer, "true")
        assert other.books.changes == 0  # the replay handed over nothing
        books_only = {"ticks": [book_item("NEW", [(4.5, 2.0)])]}  # no script call
        status, answer, _ = await post(http, url, books_only)
        assert (status, answer) == (200, {"accepted": 1, "q": {}, "books": 1})
    pump(node)
    assert node.books.books.book("NEW").bids.levels == {5.0: 1.0, 4.5: 2.0}


async def test_in_a_cluster_a_request_redis_never_took_hands_over_no_books(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    absent = RedisServer(require("redis-server"), tmp_path)  # never started
    node, server = await cluster_node(aiohttp_server, absent.url)
    body = {"ticks": [{"s": "NEW", "p": 5.5}, book_item("NEW", [(5.0, 1.0)], reset=True)]}
    async with aiohttp.ClientSession() as http:
        status, answer, _ = await post(http, server.make_url("/publish"), body)
    assert (status, answer["error"]) == (503, "cluster_unavailable")
    assert node.books is not None and node.books.changes == 0 and len(node.books.pending) == 0


_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**54), max_value=2**54),
    st.booleans(),
    st.text(max_size=2),
    st.none(),
)
_good_level = st.tuples(
    st.floats(min_value=1e-9, max_value=1e12), st.floats(min_value=0, max_value=1e12)
).map(list)
_any_level = st.one_of(_good_level, st.lists(_numbers, min_size=1, max_size=3))
_levels = st.one_of(st.lists(_good_level, max_size=4), st.lists(_any_level, max_size=4))
_books = st.fixed_dictionaries(
    {"s": st.sampled_from(["AAPL", "AAPL", "A B"])},
    optional={
        "bids": _levels,
        "asks": _levels,
        "reset": st.sampled_from([True, False, False, None]),
    },
)


@given(st.lists(_books, max_size=3))
def test_what_the_check_accepts_is_a_valid_change_set(bodies: list[dict[str, Any]]) -> None:
    try:
        batch = check_items([{"book": body} for body in bodies])
    except PublishRefused as refused:
        assert refused.problems and all(p.field for p in refused.problems)
        return
    assert len(batch.books) == len(bodies) and not batch.ticks
    for change, body in zip(batch.books, bodies, strict=True):
        assert change.symbol == "AAPL" and change.reset is body.get("reset", False)
        assert len(change.bids) == len(body.get("bids", []))
        for price, size in change.bids + change.asks:
            assert math.isfinite(price) and price > 0 and math.isfinite(size) and size >= 0
