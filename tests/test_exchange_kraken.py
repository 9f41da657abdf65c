"""Kraken v2: documented messages to ticks, and a refused pair that leaves the others
running, against a fake Kraken."""

from __future__ import annotations

import orjson

from feeds.exchanges.feed import ExchangeFeed
from feeds.exchanges.kraken import Kraken
from feeds.exchanges.link import LinkOptions
from tests.exchange_fakes import FakeExchange, Running, Statuses
from ticker.core.status import CLOSED, HALTED, LIVE

# As in Kraken's docs (docs.kraken.com/api/docs/websocket-v2: trade, ticker, heartbeat,
# subscribe), the ticker cut to the fields read.
TRADES = (
    '{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"sell",'
    '"price":0.5117,"qty":40.0,"ord_type":"market","trade_id":4665906,'
    '"timestamp":"2023-09-25T07:49:37.708706Z"},{"symbol":"MATIC/USD","side":"buy",'
    '"price":0.5118,"qty":12.5,"ord_type":"limit","trade_id":4665907,'
    '"timestamp":"2023-09-25T07:49:38.000001Z"}]}'
)
TICKER = (
    '{"channel":"ticker","type":"update","data":[{"symbol":"MATIC/USD","bid":0.5116,'
    '"bid_qty":740.0,"ask":0.5119,"ask_qty":740.0,"last":0.5117}]}'
)
REFUSED = (
    '{"error":"Currency pair not supported","method":"subscribe","success":false,'
    '"symbol":"NOPE/USD","time_in":"2023-09-25T09:04:31.742599Z",'
    '"time_out":"2023-09-25T09:04:31.742648Z"}'
)


def test_trades_and_tickers_become_ticks() -> None:
    venue = Kraken({"MATIC/USD": "MATIC/USD"})
    assert venue.decode(TICKER, 0) == []
    assert venue.decode('{"channel":"heartbeat"}', 0) == []
    first, second = venue.decode(TRADES, 1695628178000000)
    assert first == {"s": "MATIC/USD", "p": 0.5117, "v": 40.0, "x": 4665906,
                     "et": 1695628177708706, "sd": "sell", "b": 0.5116, "a": 0.5119}  # fmt: skip
    assert second["sd"] == "buy" and second["x"] == 4665907
    assert venue.decode(TRADES, 0) == []  # replayed after a reconnect: dropped
    assert venue.stats.malformed == 0 and venue.stats.unknown == 0


def _started(fake: FakeExchange, products: list[str]) -> tuple[Statuses, Running]:
    feed = ExchangeFeed(Kraken({p: p for p in products}), products, LinkOptions(fake.url, 5.0))
    statuses = Statuses()
    feed.bind_status(statuses)
    return statuses, Running(feed)


async def test_a_refused_pair_is_closed_and_the_others_tick(fake_exchange: FakeExchange) -> None:
    products = ["MATIC/USD", "NOPE/USD"]
    statuses, running = _started(fake_exchange, products)
    try:
        conn = await fake_exchange.connection(0)
        trade_sub, ticker_sub = map(orjson.loads, await conn.wait_messages(2))
        assert trade_sub == {
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": products, "snapshot": False},
        }
        assert ticker_sub["params"] == {"channel": "ticker", "symbol": products}
        await conn.send(REFUSED, TICKER, TRADES)
        await running.until(2)
        await statuses.until("NOPE/USD", CLOSED)
        assert statuses.last("MATIC/USD") == LIVE
    finally:
        await running.stop()
    assert [t["x"] for t in running.ticks] == [4665906, 4665907]


def _system(state: str) -> str:
    return (
        '{"channel":"status","type":"update","data":[{"api_version":"v2",'
        f'"connection_id":1,"system":"{state}","version":"2.0.0"}}]}}'
    )


async def test_the_market_in_maintenance_halts_every_pair(fake_exchange: FakeExchange) -> None:
    products = ["MATIC/USD", "BTC/USD"]
    statuses, running = _started(fake_exchange, products)
    try:
        conn = await fake_exchange.connection(0)
        await conn.wait_messages(2)
        await conn.send(_system("online"))
        await statuses.until("BTC/USD", LIVE)
        await conn.send(_system("maintenance"))
        await statuses.until("BTC/USD", HALTED)
        assert statuses.seen[-1] == ("BTC/USD", HALTED, "kraken says the market is maintenance")
        await conn.send('{"channel":"heartbeat"}', _system("online"))
        await statuses.until("MATIC/USD", LIVE)
    finally:
        await running.stop()
