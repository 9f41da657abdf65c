"""Binance: documented messages to ticks, gaps counted, pings answered, and the 24 h
rotation (here after half a second) with zero gap and zero double, against a fake."""

from __future__ import annotations

import asyncio

import orjson

from feeds.exchanges.binance import Binance
from feeds.exchanges.feed import ExchangeFeed
from feeds.exchanges.link import LinkOptions
from tests.exchange_fakes import FakeConnection, FakeExchange, Running, Statuses
from ticker.core.status import LIVE, STALE

# Shaped as in Binance's docs (binance-spot-api-docs, web-socket-streams.md: Trade
# Streams, Individual Symbol Book Ticker Streams), wrapped as combined streams are.
TRADE = {"e": "trade", "E": 1672515782136, "s": "BNBBTC", "t": 12345, "p": "0.00001305",
         "q": "100", "T": 1672515782136, "m": True, "M": True}  # fmt: skip
BOOK = {"u": 400900217, "s": "BNBBTC", "b": "0.00001300", "B": "31.21000000",
        "a": "0.00001310", "A": "40.66000000"}  # fmt: skip


def trade(trade_id: int, *, buyer_maker: bool = False, symbol: str = "BNBBTC") -> str:
    data = {**TRADE, "t": trade_id, "m": buyer_maker, "s": symbol}
    return orjson.dumps({"stream": f"{symbol.lower()}@trade", "data": data}).decode()


def book() -> str:
    return orjson.dumps({"stream": "bnbbtc@bookTicker", "data": BOOK}).decode()


def test_trades_carry_the_aggressor_the_quote_and_gaps_are_counted() -> None:
    venue = Binance({"BNBBTC": "BIN:BNBBTC"})
    assert venue.decode(book(), 1672515782200000) == []  # a quote is not a tick on its own
    [tick] = venue.decode(trade(12345, buyer_maker=True), 1672515782200000)
    assert tick == {"s": "BIN:BNBBTC", "p": 0.00001305, "v": 100.0, "x": 12345,
                    "et": 1672515782136000, "sd": "sell",
                    "b": 0.000013, "a": 0.0000131}  # fmt: skip
    assert venue.decode(trade(12346), 0)[0]["sd"] == "buy"
    assert venue.decode(trade(12346), 0) == []  # the same trade again
    assert venue.decode(trade(12350), 0)[0]["x"] == 12350
    assert venue.ids.gaps == {"BIN:BNBBTC": 3}
    assert venue.decode('{"result":null,"id":1}', 0) == []
    assert venue.stats.malformed == 0 and venue.stats.unknown == 0


def test_symbols_past_a_connection_s_streams_open_more_connections() -> None:
    products = [f"S{i}USDT" for i in range(1100)]
    feed = ExchangeFeed(Binance({p: p for p in products}), products, LinkOptions("ws://x", 1.0))
    assert [len(c) for c in feed.connections()] == [512, 512, 76]  # 2 streams each, <= 1024
    [first, second] = Binance({}).subscriptions(products[:150])
    assert orjson.loads(first)["params"][:2] == ["s0usdt@trade", "s0usdt@bookTicker"]
    assert len(orjson.loads(first)["params"]) == 200 and orjson.loads(second)["id"] == 2


async def _subscribed(fake: FakeExchange, number: int) -> FakeConnection:
    conn = await fake.connection(number)
    [subscribe] = await conn.wait_messages(1)
    message = orjson.loads(subscribe)
    assert message["method"] == "SUBSCRIBE"
    assert message["params"] == ["bnbbtc@trade", "bnbbtc@bookTicker"]
    await conn.send(orjson.dumps({"result": None, "id": message["id"]}).decode())
    return conn


async def test_rotation_overlaps_with_zero_gap_and_zero_double(
    fake_exchange: FakeExchange,
) -> None:
    options = LinkOptions(fake_exchange.url, 5.0, rotate_after_s=0.5, overlap_s=0.3)
    feed, statuses = ExchangeFeed(Binance({"BNBBTC": "BNBBTC"}), ["BNBBTC"], options), Statuses()
    feed.bind_status(statuses)
    running = Running(feed)
    try:
        old = await _subscribed(fake_exchange, 0)
        await statuses.until("BNBBTC", LIVE)
        await old.ws.ping(b"are you there")
        await old.send(book(), *(trade(i) for i in range(100, 105)))
        await running.until(5)
        await asyncio.sleep(0.5)
        await old.send(trade(105))  # the first message past the age: the rotation starts
        new = await _subscribed(fake_exchange, 1)
        await new.send(*(trade(i) for i in range(108, 116)))  # held until the old one goes
        await old.send(*(trade(i) for i in range(106, 111)))  # 108 to 110: both sent them
        await asyncio.wait_for(old.closed.wait(), 2.0)
        await new.send(trade(116))
        await running.until(17)
        await asyncio.sleep(0.05)
        assert old.pongs == 1
        assert statuses.last("BNBBTC") == LIVE
    finally:
        await running.stop()
    assert [t["x"] for t in running.ticks] == list(range(100, 117))
    assert feed.venue.ids.gaps == {} and feed.venue.ids.duplicates == 3
    assert all(t["b"] == 0.000013 for t in running.ticks)
    assert feed.venue.stats.reconnects == 0  # a rotation is not an outage
    assert [status for _, status, _ in statuses.seen] == [STALE, LIVE, STALE]  # stale: stopped
