"""Books from the live feeds, over real sockets: each exchange's fake, fed documented or
recorded messages, -> the feed (``?books=1``) -> a node -> a WebSocket client following
``SYMBOL@book``, whose book (``RefBook``: ``pu`` chain and ``cs`` checked on every frame)
must equal the exchange's. A Binance gap, a Coinbase update before its snapshot and a
Kraken checksum that does not match resync that symbol alone: the other symbols' books
and the connection carry on, and the symbol's status and the counter say so."""

from __future__ import annotations

import asyncio
import zlib
from decimal import Decimal
from typing import Any

import aiohttp
import orjson
import pytest

from feeds.exchanges.args import exchange_feed
from feeds.exchanges.binance import Binance
from feeds.exchanges.coinbase import Coinbase
from feeds.exchanges.feed import ExchangeFeed
from feeds.exchanges.kraken import Kraken, PairBook
from feeds.exchanges.link import LinkOptions
from tests.books_ref import RefBook, number
from tests.conftest import StartServer, frame
from tests.exchange_fakes import FakeExchange, coinbase_recording
from tests.scrape import scrape, value
from tests.test_books_server import subscribe
from tests.test_cli_serve import assert_one_line, serve
from ticker.core.status import LIVE, STALE

Levels = list[tuple[str, str]]


class Model:
    """The exchange's book as the test sends it, kept apart from the feed's own."""

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def apply(self, bids: Levels, asks: Levels, reset: bool = False) -> None:
        if reset:
            self.bids, self.asks = {}, {}
        for side, given in ((self.bids, bids), (self.asks, asks)):
            for price, size in given:
                if float(size):
                    side[float(price)] = float(size)
                else:
                    side.pop(float(price), None)

    def text(self) -> tuple[Levels, Levels]:
        """Both sides as decimal strings, best first."""
        bids = sorted(self.bids.items(), reverse=True)
        asks = sorted(self.asks.items())
        return (
            [(number(p), number(s)) for p, s in bids],
            [(number(p), number(s)) for p, s in asks],
        )


class Client:
    """A WebSocket client of the node following ``SYMBOL@book`` for several symbols."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.books: dict[str, RefBook] = {}
        self.statuses: list[tuple[str, str, str]] = []

    async def _read(self) -> None:
        got = await frame(self.ws)
        if got["type"] == "book":
            if got.get("snapshot"):
                self.books[got["s"]] = RefBook(got)
            else:
                self.books[got["s"]].apply(got)
        elif got["type"] == "status":
            self.statuses += [(s, v["status"], v["reason"]) for s, v in got["symbols"].items()]

    async def until_book(self, symbol: str, model: Model, timeout: float = 5.0) -> None:
        """Read frames until the symbol's book is the model's."""
        async with asyncio.timeout(timeout):
            while (book := self.books.get(symbol)) is None or (book.bids, book.asks) != (
                model.bids,
                model.asks,
            ):
                await self._read()

    async def until_status(self, symbol: str, status: str, timeout: float = 5.0) -> str:
        """Read frames until the symbol's latest status is ``status``; its reason."""
        async with asyncio.timeout(timeout):
            while True:
                mine = [(st, why) for s, st, why in self.statuses if s == symbol]
                if mine and mine[-1][0] == status:
                    return mine[-1][1]
                await self._read()

    def seen(self, symbol: str) -> list[str]:
        """The symbol's statuses in order, repeats folded."""
        out: list[str] = []
        for s, status, _ in self.statuses:
            if s == symbol and (not out or out[-1] != status):
                out.append(status)
        return out


async def _client(
    start_server: StartServer, feed: ExchangeFeed, symbols: list[str]
) -> tuple[Any, aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    _, server = await start_server(feeds=(feed,), symbols=[], book_interval_s=0.005)
    http = aiohttp.ClientSession()
    ws = await http.ws_connect(server.make_url("/ws?symbols=" + ",".join(symbols)))
    await subscribe(ws, [f"{s}@book" for s in symbols])
    return server, http, ws


# -- Coinbase: the recorded level2 messages ------------------------------------------

PRODUCTS = ["NU-GBP", "SKL-GBP", "BAND-GBP"]


def _level2() -> list[dict[str, Any]]:
    """The recording's snapshots and l2updates of ``PRODUCTS``, in order."""
    return [
        m
        for text in coinbase_recording()
        if (m := orjson.loads(text))["type"] in ("snapshot", "l2update")
        and m["product_id"] in PRODUCTS
    ]


def _play(model: Model, message: dict[str, Any]) -> None:
    if message["type"] == "snapshot":
        model.apply(message["bids"], message["asks"], reset=True)
    else:
        changes = message["changes"]
        model.apply(
            [(p, s) for side, p, s in changes if side == "buy"],
            [(p, s) for side, p, s in changes if side == "sell"],
        )


async def test_coinbase_level2_and_an_update_before_its_snapshot_resyncs_one_product(
    fake_exchange: FakeExchange, start_server: StartServer
) -> None:
    venue = Coinbase({p: p for p in PRODUCTS}, books=True)
    feed = ExchangeFeed(venue, PRODUCTS, LinkOptions(fake_exchange.url, 5.0))
    server, http, ws = await _client(start_server, feed, PRODUCTS)
    models = {p: Model() for p in PRODUCTS}
    messages = _level2()
    half = len(messages) // 2
    try:
        client = Client(ws)
        conn = await fake_exchange.connection(0)
        [sub] = map(orjson.loads, await conn.wait_messages(1))
        assert sub["channels"][-1] == "level2_batch" and sub["product_ids"] == PRODUCTS
        sent = []
        for message in messages[:half]:
            _play(models[message["product_id"]], message)
            if (message["type"], message["product_id"]) != ("snapshot", "SKL-GBP"):
                sent.append(orjson.dumps(message).decode())  # SKL-GBP's snapshot is lost
        await conn.send(*sent)
        [_, unsub, resub] = map(orjson.loads, await conn.wait_messages(3))
        one = {"product_ids": ["SKL-GBP"], "channels": ["level2_batch"]}
        assert (unsub, resub) == ({"type": "unsubscribe", **one}, {"type": "subscribe", **one})
        for product in ("NU-GBP", "BAND-GBP"):
            await client.until_book(product, models[product])
        reason = await client.until_status("SKL-GBP", STALE)
        assert reason == "book resyncing: an update before its snapshot"
        bids, asks = models["SKL-GBP"].text()  # Coinbase answers with the book as it is
        snapshot = {"type": "snapshot", "product_id": "SKL-GBP", "bids": bids, "asks": asks}
        for message in messages[half:]:
            _play(models[message["product_id"]], message)
        await conn.send(orjson.dumps(snapshot).decode(), *map(_text, messages[half:]))
        for product in PRODUCTS:
            await client.until_book(product, models[product])
        await client.until_status("SKL-GBP", LIVE)
        assert client.seen("NU-GBP")[-1] == LIVE and STALE not in client.seen("NU-GBP")[2:]
    finally:
        await ws.close()
        await http.close()
    assert venue.stats.book_resyncs == 1 and venue.stats.malformed == 0
    assert len(fake_exchange.connections) == 1
    _, samples = await scrape(server.make_url("/metrics"))
    assert value(samples, "ticker_feed_book_resyncs_total", feed="coinbase") == 1


def _text(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


# -- Binance: diff depth + the REST snapshot, as documented ---------------------------


def _depth(symbol: str, first: int, last: int, bids: Levels, asks: Levels) -> str:
    """A diff depth event (web-socket-streams.md, Diff. Depth Stream), combined-stream."""
    data = {"e": "depthUpdate", "E": 1672515782136, "s": symbol, "U": first, "u": last,
            "b": bids, "a": asks}  # fmt: skip
    return orjson.dumps({"stream": f"{symbol.lower()}@depth@100ms", "data": data}).decode()


def _rest(last: int, bids: Levels, asks: Levels) -> str:
    """A ``GET /api/v3/depth`` answer (rest-api.md, Order book)."""
    return orjson.dumps({"lastUpdateId": last, "bids": bids, "asks": asks}).decode()


def _path(symbol: str) -> str:
    return f"/api/v3/depth?symbol={symbol}&limit=1000"


async def test_binance_depth_syncs_by_rest_and_a_gap_resyncs_that_symbol(
    fake_exchange: FakeExchange, start_server: StartServer
) -> None:
    symbols = ["BNBBTC", "ETHBTC"]
    venue = Binance({s: s for s in symbols}, books=True)
    venue.snapshot_spacing_s = 0.0
    options = LinkOptions(
        fake_exchange.url, 5.0, backoff_initial_s=0.01, rest_url=fake_exchange.rest_url
    )
    feed = ExchangeFeed(venue, symbols, options)
    server, http, ws = await _client(start_server, feed, symbols)
    bnb, eth = Model(), Model()
    try:
        client = Client(ws)
        conn = await fake_exchange.connection(0)
        [sub] = map(orjson.loads, await conn.wait_messages(1))
        assert sub["params"][:3] == ["bnbbtc@trade", "bnbbtc@bookTicker", "bnbbtc@depth@100ms"]
        await conn.send(orjson.dumps({"result": None, "id": sub["id"]}).decode())
        early = [("0.0024", "10"), ("0.0023", "0")]
        await conn.send(
            _depth("BNBBTC", 155, 156, [("0.0022", "1")], []),  # before the snapshot: dropped
            _depth("BNBBTC", 157, 160, early, [("0.0026", "100")]),
            _depth("ETHBTC", 20, 22, [("0.051", "2.5")], []),
        )
        assert await fake_exchange.rest_call(1) == [_path("BNBBTC")]
        snap = ([("0.0024", "5"), ("0.0023", "7"), ("0.0021", "3")], [("0.0026", "90")])
        fake_exchange.answer(_path("BNBBTC"), _rest(158, *snap))
        bnb.apply(*snap, reset=True)
        bnb.apply(early, [("0.0026", "100")])
        assert (await fake_exchange.rest_call(2))[1] == _path("ETHBTC")
        fake_exchange.answer(_path("ETHBTC"), '{"lastUpdateId":"21","bids":[],"asks":[]}')
        assert (await fake_exchange.rest_call(3))[2] == _path("ETHBTC")  # malformed: again
        fake_exchange.answer(_path("ETHBTC"), _rest(15, [("0.05", "1")], [("0.052", "1")]))
        assert (await fake_exchange.rest_call(4))[3] == _path("ETHBTC")  # older than U: again
        fake_exchange.answer(_path("ETHBTC"), _rest(21, [("0.05", "1")], [("0.052", "1")]))
        eth.apply([("0.05", "1"), ("0.051", "2.5")], [("0.052", "1")], reset=True)
        await client.until_book("BNBBTC", bnb)
        await client.until_book("ETHBTC", eth)
        assert await client.until_status("BNBBTC", LIVE) == ""

        await conn.send(_depth("BNBBTC", 170, 171, [("0.0021", "0")], []))  # 161-169 lost
        assert await client.until_status("BNBBTC", STALE) == (
            "book resyncing: a gap: U 170 after u 160"
        )
        await conn.send(_depth("ETHBTC", 23, 25, [("0.051", "0")], [("0.053", "4")]))
        eth.apply([("0.051", "0")], [("0.053", "4")])
        await client.until_book("ETHBTC", eth)  # the other symbol goes on meanwhile
        await conn.send(_depth("BNBBTC", 172, 174, [("0.0025", "8")], []))
        assert (await fake_exchange.rest_call(5))[4] == _path("BNBBTC")
        again = ([("0.0024", "6"), ("0.0020", "1")], [("0.0026", "50"), ("0.0027", "9")])
        fake_exchange.answer(_path("BNBBTC"), _rest(172, *again))
        bnb.apply(*again, reset=True)
        bnb.apply([("0.0025", "8")], [])
        await client.until_book("BNBBTC", bnb)
        await client.until_status("BNBBTC", LIVE)
        assert client.seen("ETHBTC")[-1] == LIVE and STALE not in client.seen("ETHBTC")[2:]
    finally:
        await ws.close()
        await http.close()
    assert venue.stats.book_resyncs == 1 and venue.stats.malformed == 1  # the bad snapshot
    assert len(fake_exchange.connections) == 1 and len(fake_exchange.rest_calls) == 5
    _, samples = await scrape(server.make_url("/metrics"))
    assert value(samples, "ticker_feed_book_resyncs_total", feed="binance") == 1


async def test_a_book_the_node_finds_crossed_is_fetched_afresh_from_the_exchange(
    fake_exchange: FakeExchange, start_server: StartServer
) -> None:
    """A Binance update in sequence that leaves the book crossed (a bid above the best
    ask: the exchange's fault, or ours) makes the node ask the feed for that book again:
    a new REST snapshot, and the symbol is live again once the book is sound."""
    venue = Binance({"BNBBTC": "BNBBTC"}, books=True)
    venue.snapshot_spacing_s = 0.0
    options = LinkOptions(
        fake_exchange.url, 5.0, backoff_initial_s=0.01, rest_url=fake_exchange.rest_url
    )
    feed = ExchangeFeed(venue, ["BNBBTC"], options)
    _, http, ws = await _client(start_server, feed, ["BNBBTC"])
    model = Model()
    try:
        client = Client(ws)
        conn = await fake_exchange.connection(0)
        [sub] = map(orjson.loads, await conn.wait_messages(1))
        await conn.send(orjson.dumps({"result": None, "id": sub["id"]}).decode())
        await conn.send(_depth("BNBBTC", 10, 11, [("0.0024", "1")], []))
        assert await fake_exchange.rest_call(1) == [_path("BNBBTC")]
        snap = ([("0.0024", "5")], [("0.0026", "9")])
        fake_exchange.answer(_path("BNBBTC"), _rest(10, *snap))
        model.apply(*snap, reset=True)
        model.apply([("0.0024", "1")], [])
        await client.until_book("BNBBTC", model)
        await conn.send(_depth("BNBBTC", 12, 12, [("0.0027", "3")], []))  # above the ask
        assert "crossed" in await client.until_status("BNBBTC", STALE)
        await conn.send(_depth("BNBBTC", 13, 13, [("0.0023", "2")], []))  # the next message
        assert (await fake_exchange.rest_call(2))[1] == _path("BNBBTC")
        sound = ([("0.0024", "4"), ("0.0023", "2")], [("0.0026", "9")])
        fake_exchange.answer(_path("BNBBTC"), _rest(13, *sound))
        await conn.send(_depth("BNBBTC", 14, 14, [("0.0022", "1")], []))  # bridges the id
        model.apply(*sound, reset=True)
        model.apply([("0.0022", "1")], [])
        await client.until_book("BNBBTC", model)
        await client.until_status("BNBBTC", LIVE)
    finally:
        await ws.close()
        await http.close()
    assert venue.stats.book_resyncs == 1


# -- Kraken: book with its CRC32, the guide's worked example ----------------------------

# docs.kraken.com/exchange/guides/websockets/book-checksum-v2: this book's checksum is
# 3310070434 (numbers as written on the wire: 0.10000000 keeps its zeros).
KRAKEN_BIDS = [("45283.5", "0.10000000"), ("45283.4", "1.54582015"), ("45282.1", "0.10000000"),
               ("45281.0", "0.10000000"), ("45280.3", "1.54592586"), ("45279.0", "0.07990000"),
               ("45277.6", "0.03310103"), ("45277.5", "0.30000000"), ("45277.3", "1.54602737"),
               ("45276.6", "0.15445238")]  # fmt: skip
KRAKEN_ASKS = [("45285.2", "0.00100000"), ("45286.4", "1.54571953"), ("45286.6", "1.54571109"),
               ("45289.6", "1.54560911"), ("45290.2", "0.15890660"), ("45291.8", "1.54553491"),
               ("45294.7", "0.04454749"), ("45296.1", "0.35380000"), ("45297.5", "0.09945542"),
               ("45299.5", "0.18772827")]  # fmt: skip


class KrakenModel(Model):
    """Kraken's book of one pair: the wire's texts, cut to depth 10, and its checksum."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: tuple[dict[Decimal, str], dict[Decimal, str]] = ({}, {})

    def play(self, bids: Levels, asks: Levels, reset: bool = False) -> None:
        if reset:
            self.texts = ({}, {})
        for side, given in zip(self.texts, (bids, asks), strict=True):
            for price, qty in given:
                if Decimal(qty):
                    side[Decimal(price)] = f"{price}|{qty}"
                else:
                    side.pop(Decimal(price), None)
        for side, high in zip(self.texts, (True, False), strict=True):
            for price in sorted(side, reverse=high)[10:]:
                del side[price]
        self.apply(*(self._levels(side) for side in self.texts), reset=True)

    @staticmethod
    def _levels(side: dict[Decimal, str], high: bool = False) -> Levels:
        texts = (side[p].split("|") for p in sorted(side, reverse=high))
        return [(p, q) for p, q in texts]

    def wire(self) -> tuple[Levels, Levels]:
        """Both sides as Kraken writes them, best first."""
        return self._levels(self.texts[0], high=True), self._levels(self.texts[1])

    def checksum(self) -> int:
        bids, asks = self.texts
        text = ""
        for side, high in ((asks, False), (bids, True)):
            for price in sorted(side, reverse=high)[:10]:
                text += "".join(t.replace(".", "").lstrip("0") for t in side[price].split("|"))
        return zlib.crc32(text.encode())


def _book(kind: str, symbol: str, bids: Levels, asks: Levels, checksum: int) -> str:
    """A v2 ``book`` message (websocket-v2/book), numbers written as given."""

    def side(levels: Levels) -> str:
        return ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in levels)

    return (
        f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{symbol}",'
        f'"bids":[{side(bids)}],"asks":[{side(asks)}],"checksum":{checksum},'
        '"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
    )


async def test_kraken_book_checksums_and_a_mismatch_resyncs_that_pair(
    fake_exchange: FakeExchange, start_server: StartServer
) -> None:
    pairs = ["BTC/USD", "MATIC/USD"]
    venue = Kraken({p: p for p in pairs}, books=True, depth=10)
    feed = ExchangeFeed(venue, pairs, LinkOptions(fake_exchange.url, 5.0))
    server, http, ws = await _client(start_server, feed, pairs)
    btc, matic = KrakenModel(), KrakenModel()
    try:
        client = Client(ws)
        conn = await fake_exchange.connection(0)
        *_, book_sub = map(orjson.loads, await conn.wait_messages(3))
        assert book_sub["params"] == {"channel": "book", "symbol": pairs, "depth": 10}
        btc.play(KRAKEN_BIDS, KRAKEN_ASKS)
        assert btc.checksum() == 3310070434  # the guide's own number
        matic.play([("0.5666", "4831.75496356")], [("0.5668", "4410.79769741")])
        await conn.send(
            _book("snapshot", "BTC/USD", KRAKEN_BIDS, KRAKEN_ASKS, btc.checksum()),
            _book("snapshot", "MATIC/USD", *matic.wire(), matic.checksum()),
        )
        # A bid inside the top 10 pushes the 10th out (no removal is sent for it), an ask
        # goes: all of a message is applied before its checksum is checked.
        update = ([("45283.1", "0.50000000"), ("45283.4", "1.00000000")], [("45285.2", "0.0")])
        btc.play(*update)
        assert 45276.6 not in btc.bids and len(btc.bids) == 10
        await conn.send(_book("update", "BTC/USD", *update, btc.checksum()))
        await client.until_book("BTC/USD", btc)
        await client.until_book("MATIC/USD", matic)
        assert await client.until_status("BTC/USD", LIVE) == ""

        await conn.send(_book("update", "BTC/USD", [("45284.0", "2.0")], [], 12345))
        [*_, unsub, resub] = map(orjson.loads, await conn.wait_messages(5))
        one = {"channel": "book", "symbol": ["BTC/USD"], "depth": 10}
        assert (unsub, resub) == (
            {"method": "unsubscribe", "params": one},
            {"method": "subscribe", "params": one},
        )
        reason = await client.until_status("BTC/USD", STALE)
        assert reason.startswith("book resyncing: checksum 12345 but the book's is ")
        matic.play([("0.5667", "100.5")], [])
        await conn.send(
            _book("update", "BTC/USD", [("45284.1", "1.0")], [], 1),  # before the unsubscribe
            _book("update", "MATIC/USD", [("0.5667", "100.5")], [], matic.checksum()),
        )
        await client.until_book("MATIC/USD", matic)  # the other pair goes on meanwhile
        btc.play([("45284.0", "2.0"), ("45284.1", "1.0")], [])
        await conn.send(_book("snapshot", "BTC/USD", *btc.wire(), btc.checksum()))
        await client.until_book("BTC/USD", btc)
        await client.until_status("BTC/USD", LIVE)
        assert STALE not in client.seen("MATIC/USD")[2:]
    finally:
        await ws.close()
        await http.close()
    assert venue.stats.book_resyncs == 1 and venue.stats.malformed == 0
    assert len(fake_exchange.connections) == 1
    _, samples = await scrape(server.make_url("/metrics"))
    assert value(samples, "ticker_feed_book_resyncs_total", feed="kraken") == 1


def test_books_are_opt_in_per_feed_and_their_options_are_checked() -> None:
    assert not exchange_feed("coinbase", "BTC-USD").venue.books
    binance = exchange_feed("binance", "btcusdt,ethusdt?books=1").venue
    assert binance.books and binance.per_connection == 341  # 3 streams a symbol
    rest = exchange_feed("binance", "btcusdt?books=1&rest=http://127.0.0.1:9").options
    assert rest.rest_url == "http://127.0.0.1:9"
    kraken = exchange_feed("kraken", "BTC/USD?books=1&depth=25").venue
    assert isinstance(kraken, Kraken) and kraken.depth == 25
    for name, args, why in [
        ("kraken", "BTC/USD?books=1&depth=7", "depth must be one of 10 25 100 500 1000"),
        ("kraken", "BTC/USD?depth=25", "add books=1"),
        ("coinbase", "BTC-USD?books=yes", "books must be 1 or 0"),
        ("binance", "btcusdt?books=1&depth=10", "unknown option 'depth'"),
        ("binance", "btcusdt?rest=http://127.0.0.1:9", "add books=1"),
        ("binance", "btcusdt?books=1&rest=ftp://x", "an http"),
    ]:
        with pytest.raises(ValueError, match=why):
            exchange_feed(name, args)
    line = serve("--feed", "binance:btcusdt?books=1", "--book-interval-ms", "0")
    assert_one_line(line, "books=1 but --book-interval-ms 0 serves no books")


def test_a_malformed_book_message_is_counted_and_skipped() -> None:
    kraken = Kraken({"BTC/USD": "BTC/USD"}, books=True)
    coinbase = Coinbase({"NU-GBP": "NU-GBP"}, books=True)
    binance = Binance({"BNBBTC": "BNBBTC"}, books=True)
    for venue in (kraken, coinbase, binance):
        venue.connected(list(venue.names))
    bad = [
        (kraken, _book("snapshot", "BTC/USD", [('"45283.5"', "1.0")], [], 1)),  # a string
        (kraken, _book("snapshot", "BTC/USD", [("NaN", "1.0")], [], 1)),
        (coinbase, '{"type":"l2update","product_id":"NU-GBP","changes":[["up","1","2"]]}'),
        (coinbase, '{"type":"snapshot","product_id":"NU-GBP","bids":[["1e5","2"]],"asks":[]}'),
        (binance, _depth("BNBBTC", 1, 2, [("0.1", "1", "x", "y")], []).replace('"U":1', '"U":"1"')),
    ]
    for venue, message in bad:
        assert venue.decode(message, 0) == []
    assert [v.stats.malformed for v in (kraken, coinbase, binance)] == [2, 2, 1]
    assert all(v.resyncing == dict.fromkeys(v.names, "book: waiting for its snapshot")
               for v in (kraken, coinbase, binance))  # fmt: skip


def test_a_refetched_book_ignores_its_updates_until_the_new_snapshot() -> None:
    """What the node's crossed-book resync does to the venues that resubscribe: one
    resync counted, the product stale, its old updates not passed on nor counted as
    faults, and the next snapshot taken as the book."""
    sent: list[tuple[str, list, list, bool]] = []
    for venue, update, snapshot in (
        (
            Coinbase({"NU-GBP": "NU-GBP"}, books=True),
            '{"type":"l2update","product_id":"NU-GBP","changes":[["buy","1.5","2"]]}',
            '{"type":"snapshot","product_id":"NU-GBP","bids":[["1.4","3"]],"asks":[["1.6","1"]]}',
        ),
        (
            Kraken({"BTC/USD": "BTC/USD"}, books=True),
            _book("update", "BTC/USD", [("45283.5", "1.0")], [], 0),
            _book("snapshot", "BTC/USD", [("45283.5", "1.0")], [], 0),
        ),
    ):
        sent.clear()
        venue.book_sink = lambda s, b, a, reset=False: sent.append((s, list(b), list(a), reset))
        venue.connected(list(venue.names))
        [product] = venue.names
        venue.refetch(product, "crossed")
        assert venue.take_resyncs() == [product] and venue.resubscriptions([product])
        assert venue.resyncing[product] == "book resyncing: crossed"
        venue.decode(update, 0)
        assert sent == [] and venue.stats.book_resyncs == 1 and not venue.take_resyncs()
        if isinstance(venue, Kraken):  # its checksum must hold: the book's own
            book = PairBook(10)
            book.apply([{"price": Decimal("45283.5"), "qty": Decimal("1.0")}], [])
            snapshot = snapshot.replace('"checksum":0', f'"checksum":{book.checksum()}')
        venue.decode(snapshot, 0)
        assert [reset for *_, reset in sent] == [True] and product not in venue.resyncing
