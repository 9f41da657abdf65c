"""Coinbase: the real recording through the venue, and the feed against a fake Coinbase
(drops, silence, malformed messages, a refused product)."""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import orjson

from feeds.exchanges.coinbase import Coinbase
from feeds.exchanges.feed import ExchangeFeed
from feeds.exchanges.link import LinkOptions
from tests.conftest import StartServer, next_of
from tests.exchange_fakes import FakeExchange, Running, Statuses, coinbase_recording
from tests.net import free_port
from tests.scrape import scrape, value
from tests.test_cli_serve import CLEAN_ENV
from ticker.core.status import CLOSED, HALTED, LIVE, STALE
from ticker.core.ticks import Tick

PRODUCTS = ["SKL-BTC", "SKL-USD", "DASH-BTC"]


def _recorded(kinds: tuple[str, ...] = ("match", "ticker", "last_match")) -> list[str]:
    return [
        text
        for text in coinbase_recording()
        if (m := orjson.loads(text))["type"] in kinds and m.get("product_id") in PRODUCTS
    ]


def test_recorded_matches_become_exact_ticks_with_the_aggressor_side() -> None:
    venue = Coinbase({p: p for p in PRODUCTS})
    ticks: list[Tick] = []
    for text in coinbase_recording():
        ticks += venue.decode(text, 1618677850_000000)
    matches = [m for t in _recorded(("match",)) if (m := orjson.loads(t))]
    assert [t["x"] for t in ticks] == [m["trade_id"] for m in matches]  # last_match skipped
    first = next(t for t in ticks if t["x"] == 280232)
    assert first["s"] == "SKL-BTC" and first["p"] == 0.00001305 and first["v"] == 985
    assert orjson.dumps(first["p"]) == b"0.00001305"  # no float drift on the wire
    assert first["sd"] == "buy"  # the maker sold: the aggressor bought
    assert first["et"] == 1618677817089723
    for tick, match in zip(ticks, matches, strict=True):
        assert tick["sd"] != match["side"]
        assert repr(tick["p"]) == repr(float(match["price"]))
    quoted = [t for t in ticks if "b" in t]
    assert quoted and all(t["b"] <= t["a"] for t in quoted)
    assert venue.stats.malformed == 0 and venue.stats.unknown > 0  # l2update is not read


def _feed(url: str, products: list[str] = PRODUCTS, watchdog_s: float = 5.0) -> ExchangeFeed:
    options = LinkOptions(url, watchdog_s, backoff_initial_s=0.05, backoff_max_s=0.1)
    return ExchangeFeed(Coinbase({p: p for p in products}), products, options)


async def test_a_drop_goes_stale_then_live_with_no_trade_lost_or_doubled(
    fake_exchange: FakeExchange,
) -> None:
    feed, statuses = _feed(fake_exchange.url), Statuses()
    feed.bind_status(statuses)
    messages = _recorded()
    half = len(messages) // 2
    running = Running(feed)
    try:
        first = await fake_exchange.connection(0)
        [subscribe] = await first.wait_messages(1, timeout=5.0)  # Coinbase wants it in 5 s
        assert orjson.loads(subscribe) == {
            "type": "subscribe",
            "product_ids": PRODUCTS,
            "channels": ["matches", "ticker", "heartbeat", "status"],
        }
        assert statuses.last("SKL-USD") == STALE  # connecting: nothing heard yet
        await first.send(*messages[:half])
        await statuses.until("SKL-USD", LIVE)
        first.drop()
        await statuses.until("SKL-USD", STALE)
        second = await fake_exchange.connection(1)
        assert await second.wait_messages(1) == [subscribe]  # resubscribed
        await second.send(*messages[half - 20 :])  # the fake resends recent trades
        await statuses.until("SKL-USD", LIVE)
        expected = [orjson.loads(m)["trade_id"] for m in messages if '"type":"match"' in m]
        await running.until(len(expected))
        await asyncio.sleep(0.05)
    finally:
        await running.stop()
    assert [t["x"] for t in running.ticks] == expected
    assert feed.venue.ids.duplicates > 0
    assert feed.venue.stats.reconnects == 1


async def test_a_silent_exchange_is_reconnected_by_the_watchdog(
    fake_exchange: FakeExchange,
) -> None:
    feed, statuses = _feed(fake_exchange.url, watchdog_s=0.3), Statuses()
    feed.bind_status(statuses)
    running = Running(feed)
    try:
        first = await fake_exchange.connection(0)
        await first.wait_messages(1)
        await first.send('{"type":"subscriptions","channels":[]}')
        await statuses.until("SKL-BTC", LIVE)
        await statuses.until("SKL-BTC", STALE, timeout=2.0)  # 0.3 s of silence
        reasons = [r for s, st, r in statuses.seen if s == "SKL-BTC" and st == STALE]
        assert "watchdog" in reasons[-1]
        await (await fake_exchange.connection(1)).wait_messages(1)
    finally:
        await running.stop()


async def test_bad_messages_and_a_refused_product_leave_the_others_ticking(
    fake_exchange: FakeExchange,
) -> None:
    feed, statuses = _feed(fake_exchange.url, ["NOPE-USD", *PRODUCTS]), Statuses()
    feed.bind_status(statuses)
    trades = _recorded(("match",))
    running = Running(feed)
    try:
        conn = await fake_exchange.connection(0)
        await conn.wait_messages(1)
        await conn.send(
            "{not json",
            '{"type":"brand_new_type"}',
            '{"type":"match","product_id":"SKL-USD"}',  # fields missing
            '{"type":"error","message":"Failed to subscribe",'
            '"reason":"NOPE-USD is not a valid product"}',
        )
        [_, again] = await conn.wait_messages(2)
        assert orjson.loads(again)["product_ids"] == PRODUCTS  # subscribed again, without it
        await statuses.until("NOPE-USD", CLOSED)
        await conn.send(*trades)
        await running.until(len(trades))
        assert statuses.last("SKL-USD") == LIVE
    finally:
        await running.stop()
    assert statuses.last("SKL-USD") == STALE  # the stream ended: nobody vouches for it
    assert feed.venue.stats.malformed == 2 and feed.venue.stats.unknown == 1
    assert len(fake_exchange.connections) == 1  # never fatal: the same connection all along


def _status(**by_product: dict[str, object]) -> str:
    """A ``status`` channel message (docs.cdp.coinbase.com/exchange/websocket-feed/channels,
    status), its products cut to the fields read; ``online`` unless told otherwise."""
    products = [
        {"id": pid, "status": "online", "trading_disabled": False, "cancel_only": False,
         "auction_mode": False, **fields}
        for pid, fields in by_product.items()
    ]  # fmt: skip
    return orjson.dumps({"type": "status", "products": products, "currencies": []}).decode()


async def test_the_status_channel_halts_a_product_alone(fake_exchange: FakeExchange) -> None:
    feed, statuses = _feed(fake_exchange.url), Statuses()
    feed.bind_status(statuses)
    running = Running(feed)
    try:
        conn = await fake_exchange.connection(0)
        await conn.wait_messages(1)
        await conn.send(_status(**{p: {} for p in PRODUCTS}))
        await statuses.until("SKL-USD", LIVE)
        await conn.send(_status(**{"SKL-USD": {"trading_disabled": True}, "SKL-BTC": {},
                                   "DASH-BTC": {"status": "delisted"}, "BTC-USD": {}}))  # fmt: skip
        await statuses.until("SKL-USD", HALTED)
        await statuses.until("DASH-BTC", HALTED)
        assert ("SKL-USD", HALTED, "coinbase says SKL-USD is trading_disabled") in statuses.seen
        assert ("DASH-BTC", HALTED, "coinbase says DASH-BTC is delisted") in statuses.seen
        assert statuses.last("SKL-BTC") == LIVE
        await conn.send(_status(**{p: {} for p in PRODUCTS}))
        await statuses.until("SKL-USD", LIVE)
        await statuses.until("DASH-BTC", LIVE)
    finally:
        await running.stop()


async def test_a_node_serves_the_feed_status_ticks_and_metrics(
    fake_exchange: FakeExchange, start_server: StartServer
) -> None:
    feed = _feed(fake_exchange.url)
    _, server = await start_server(feeds=(feed,), symbols=[])
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.make_url("/ws?symbols=SKL-BTC")) as ws,
    ):
        stale = await next_of(ws, "status")  # the exchange not heard yet
        assert stale["symbols"]["SKL-BTC"]["status"] == "stale"
        conn = await fake_exchange.connection(0)
        await conn.wait_messages(1)
        await conn.send(*_recorded())
        live = await next_of(ws, "status")
        assert live["symbols"]["SKL-BTC"]["status"] == "live"
        ticks = (await next_of(ws, "ticks"))["ticks"]
        assert ticks[0]["x"] == 280232 and ticks[0]["sd"] == "buy" and ticks[0]["p"] == 0.00001305
        assert {"t", "q", "et", "v"} <= set(ticks[0])
    _, samples = await scrape(server.make_url("/metrics"))
    assert value(samples, "ticker_feed_lag_seconds_count", feed="coinbase") > 0
    assert value(samples, "ticker_feed_malformed_messages_total", feed="coinbase") == 0
    assert value(samples, "ticker_symbols", status="live") == 3


async def test_every_product_refused_stops_the_server_with_one_line_and_status_2(
    fake_exchange: FakeExchange,
) -> None:
    argv = ["--port", str(free_port()), "--feed", "coinbase:NOPE-USD,ZERO-USD"]
    server = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ticker", "serve", *argv),
        env={**CLEAN_ENV, "TICKER_COINBASE_URL": fake_exchange.url},
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        conn = await fake_exchange.connection(0, timeout=30.0)
        for number, product in enumerate(("NOPE-USD", "ZERO-USD"), 1):
            await conn.wait_messages(number)  # Coinbase refuses one product a subscribe
            await conn.send(
                orjson.dumps(
                    {"type": "error", "reason": f"{product} is not a valid product"}
                ).decode()
            )
        assert await asyncio.wait_for(server.wait(), 30.0) == 2
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    assert server.stderr is not None
    log = (await server.stderr.read()).decode()
    assert "Traceback" not in log
    *_, line = [line for line in log.splitlines() if "ERROR" in line]  # after the refusals
    assert line.endswith(
        "feed coinbase cannot work: coinbase refused every product:"
        " NOPE-USD (not a valid product), ZERO-USD (not a valid product)"
    )
