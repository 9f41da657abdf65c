"""The ARGS of an exchange ``--feed``: ``PRODUCT[,PRODUCT...][?prefix=TEXT&books=1]``.

The symbol of a product is the exchange's own product id (``BTC-USD``), with ``prefix``
in front when given (``?prefix=CB:`` makes ``CB:BTC-USD``), so two exchanges' products of
one name never collide. ``books=1`` adds the exchange's order-book channel (``SYMBOL@book``
topics); Kraken's ``depth`` (10, 25, 100, 500, 1000) is how deep its book is, and
Binance's ``rest`` where its book snapshots come from (a proxy, a test's fake).
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
OPTIONS: dict[str, tuple[str, ...]] = {
    "coinbase": ("prefix", "books"),
    "binance": ("prefix", "books", "rest"),
    "kraken": ("prefix", "books", "depth"),
}
SWITCH = {"1": True, "0": False}


def exchange_feed(name: str, args: str, url: str | None = None) -> ExchangeFeed:
    """The feed of ``--feed NAME:ARGS``; ValueError with the one line to show."""
    venue = VENUES[name]
    listed, _, query = args.partition("?")
    given = dict(parse_qsl(query, keep_blank_values=True))
    if unknown := sorted(set(given) - set(OPTIONS[name])):
        known = " ".join(OPTIONS[name])
        raise ValueError(f"--feed {name}: unknown option {unknown[0]!r} (known: {known})")
    books = SWITCH.get(given.get("books", "0"))
    if books is None:
        raise ValueError(f"--feed {name}: books must be 1 or 0, not {given['books']!r}")
    book_options: dict[str, object] = {"books": books}
    if "depth" in given:
        if not books:
            raise ValueError(f"--feed {name}: depth is the depth of the books: add books=1")
        if not given["depth"].isdigit():
            raise ValueError(f"--feed {name}: depth must be a number, not {given['depth']!r}")
        book_options["depth"] = int(given["depth"])
    rest = given.get("rest")
    if rest is not None and not (books and rest.startswith(("http://", "https://"))):
        why = "add books=1" if not books else f"an http(s):// URL, not {rest[:40]!r}"
        raise ValueError(f"--feed {name}: rest is where book snapshots come from: {why}")
    products = list(dict.fromkeys(venue.product(p.strip()) for p in listed.split(",") if p.strip()))
    if not products:
        raise ValueError(f"--feed {name} needs its products, e.g. {name}:{EXAMPLES[name]}")
    prefix = given.get("prefix", "")
    names = {p: prefix + p for p in products}
    for symbol in names.values():
        if problem := symbol_problem(symbol):
            raise ValueError(f"--feed {name}: {problem}")
    try:
        adapter = venue(names, **book_options)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"--feed {name}: {exc}") from None
    options = LinkOptions(
        url or venue.url, venue.watchdog_s, rotate_after_s=venue.rotate_after_s, rest_url=rest
    )
    return ExchangeFeed(adapter, products, options)


EXAMPLES = {"coinbase": "BTC-USD,ETH-USD", "binance": "btcusdt,ethusdt", "kraken": "BTC/USD"}
