"""The ARGS of an exchange ``--feed``: ``PRODUCT[,PRODUCT...][?prefix=TEXT]``.

The symbol of a product is the exchange's own product id (``BTC-USD``), with ``prefix``
in front when given (``?prefix=CB:`` makes ``CB:BTC-USD``), so two exchanges' products of
one name never collide.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from feeds.exchanges.binance import Binance
from feeds.exchanges.coinbase import Coinbase
from feeds.exchanges.feed import ExchangeFeed
from feeds.exchanges.kraken import Kraken
from feeds.exchanges.link import LinkOptions
from feeds.exchanges.venue import Venue
from ticker.core.symbols import symbol_problem

VENUES: dict[str, type[Venue]] = {v.name: v for v in (Coinbase, Binance, Kraken)}
OPTIONS = ("prefix",)


def exchange_feed(name: str, args: str, url: str | None = None) -> ExchangeFeed:
    """The feed of ``--feed NAME:ARGS``; ValueError with the one line to show."""
    venue = VENUES[name]
    listed, _, query = args.partition("?")
    given = dict(parse_qsl(query, keep_blank_values=True))
    if unknown := sorted(set(given) - set(OPTIONS)):
        raise ValueError(f"--feed {name}: unknown option {unknown[0]!r} (only ?prefix=TEXT)")
    products = list(dict.fromkeys(venue.product(p.strip()) for p in listed.split(",") if p.strip()))
    if not products:
        raise ValueError(f"--feed {name} needs its products, e.g. {name}:{EXAMPLES[name]}")
    prefix = given.get("prefix", "")
    names = {p: prefix + p for p in products}
    for symbol in names.values():
        if problem := symbol_problem(symbol):
            raise ValueError(f"--feed {name}: {problem}")
    options = LinkOptions(url or venue.url, venue.watchdog_s, rotate_after_s=venue.rotate_after_s)
    return ExchangeFeed(venue(names), products, options)


EXAMPLES = {"coinbase": "BTC-USD,ETH-USD", "binance": "btcusdt,ethusdt", "kraken": "BTC/USD"}
