"""The real exchanges, opt-in: ``pytest -m live tests/test_exchange_live.py`` (needs
internet access). Marked ``live``, which the default run deselects (pyproject.toml), so
neither an offline machine nor ``TICKER_REQUIRE_ALL=1`` turns it into a skip or a failure.
"""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import pytest

from feeds.exchanges.args import VENUES, exchange_feed
from tests.exchange_fakes import Running, Statuses
from ticker.core.status import LIVE

pytestmark = pytest.mark.live


@pytest.mark.parametrize(
    ("name", "args", "symbol"),
    [("coinbase", "BTC-USD", "BTC-USD"), ("binance", "btcusdt", "BTCUSDT"),
     ("kraken", "BTC/USD", "BTC/USD")],
)  # fmt: skip
async def test_a_real_exchange_goes_live_and_trades(name: str, args: str, symbol: str) -> None:
    where = urlsplit(VENUES[name].url)
    try:
        socket.create_connection((where.hostname, where.port or 443), timeout=5).close()
    except OSError as exc:
        pytest.skip(f"{where.hostname} cannot be reached ({exc}): no internet access")
    feed, statuses = exchange_feed(name, args), Statuses()
    feed.bind_status(statuses)
    running = Running(feed)
    try:
        await statuses.until(symbol, LIVE, timeout=20.0)
        await running.until(1, timeout=60.0)
    finally:
        await running.stop()
    tick = running.ticks[0]
    assert tick["s"] == symbol and tick["p"] > 0 and tick["sd"] in ("buy", "sell")


@pytest.mark.parametrize(
    ("name", "args", "symbol"),
    [("coinbase", "BTC-USD?books=1", "BTC-USD"), ("binance", "btcusdt?books=1", "BTCUSDT"),
     ("kraken", "BTC/USD?books=1", "BTC/USD")],
)  # fmt: skip
async def test_a_real_exchange_s_book_syncs(name: str, args: str, symbol: str) -> None:
    where = urlsplit(VENUES[name].url)
    try:
        socket.create_connection((where.hostname, where.port or 443), timeout=5).close()
    except OSError as exc:
        pytest.skip(f"{where.hostname} cannot be reached ({exc}): no internet access")
    feed, statuses = exchange_feed(name, args), Statuses()
    changes: list[tuple[str, bool]] = []
    feed.bind_status(statuses)
    feed.bind_books(lambda s, bids, asks, reset=False: changes.append((s, reset)))
    running = Running(feed)
    try:
        await statuses.until(symbol, LIVE, timeout=30.0)  # live: its book is in step
        async with asyncio.timeout(30.0):
            while not any(not reset for _, reset in changes):
                await asyncio.sleep(0.1)
    finally:
        await running.stop()
    assert changes[0] == (symbol, True)  # the snapshot first, then changes
    assert feed.venue.stats.book_resyncs == 0
