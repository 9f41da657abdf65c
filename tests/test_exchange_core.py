"""The exchange feeds' shared core without sockets: exact decimals, trade ids, ARGS."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from feeds.exchanges.args import exchange_feed
from feeds.exchanges.numbers import decimal
from feeds.exchanges.trades import DUPLICATE, NEW, TradeIds
from tests.test_cli_serve import assert_one_line, serve


@pytest.mark.parametrize(
    "text", ["0.00001305", "985.00000000", "9682", "14.7775", "0.1", "123456789.012345", "-1.5"]
)
def test_decimals_come_out_on_the_wire_as_they_came_in(text: str) -> None:
    assert Decimal(orjson.dumps(decimal(text)).decode()) == Decimal(text)


@pytest.mark.parametrize(
    "bad", ["nan", "inf", "1_000", "1e5", "", " 1", "0x10", "1.2345678901234567", None, True]
)
def test_anything_but_an_exact_decimal_is_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        decimal(bad)


def test_json_numbers_are_taken_as_the_nearest_double() -> None:
    assert decimal(0.5117) == 0.5117 and decimal(30000) == 30000.0
    with pytest.raises(ValueError):
        decimal(float("nan"))


def test_trade_ids_drop_replays_and_count_gaps_where_contiguous() -> None:
    ids = TradeIds(contiguous=True)
    assert [ids.check("A", i) for i in (5, 6, 6, 4, 9)] == [NEW, NEW, DUPLICATE, DUPLICATE, 2]
    assert ids.check("B", 1) == NEW  # per symbol
    assert ids.gaps == {"A": 2} and ids.duplicates == 2
    loose = TradeIds(contiguous=False)
    assert [loose.check("A", i) for i in (5, 9, 9)] == [NEW, NEW, DUPLICATE]
    assert loose.gaps == {}


def test_feed_args_name_products_with_an_optional_prefix() -> None:
    feed = exchange_feed("binance", "btcusdt, ETHUSDT,btcusdt?prefix=BIN:", "ws://127.0.0.1:1/x")
    assert feed.symbols() == ["BIN:BTCUSDT", "BIN:ETHUSDT"]
    assert feed.options.url == "ws://127.0.0.1:1/x"
    assert feed.options.rotate_after_s == 23 * 3600
    assert exchange_feed("kraken", "btc/usd").options.url == "wss://ws.kraken.com/v2"
    for args, why in [
        ("", "needs its products"),
        ("BTC-USD?venue=x", "unknown option 'venue'"),
        ("BTC USD", "not a valid symbol"),
    ]:
        with pytest.raises(ValueError, match=why):
            exchange_feed("coinbase", args)


def test_cli_mistakes_are_one_line() -> None:
    assert_one_line(serve("--feed", "kraken"), "feed 'kraken' needs its products")
    assert_one_line(serve("--feed", "coinbase:BTC-USD?size=2"), "unknown option 'size'")
    line = assert_one_line(serve("--feed", "sim", "--binance-url", "ws://127.0.0.1:1/ws"))
    assert "--binance-url is for --feed binance:PRODUCTS, not --feed sim: drop it" in line
