"""Kraken spot, websocket v2 (``--feed kraken:BTC/USD,ETH/USD``): channels ``trade``
(without its snapshot: those trades may be old) and ``ticker`` (best bid and ask).

Kraken sends a heartbeat every second once subscribed, so the watchdog allows 10 s. Its
``status`` channel says when the market is not ``online`` (``maintenance``,
``cancel_only``, ``post_only``): every pair is then ``halted`` until it is again. Each
symbol's subscribe is acknowledged on its own: a refused one (``success: false``) is
marked ``closed`` and the others go on. Prices and sizes come as JSON numbers, parsed by
orjson to the nearest double as a decimal string would be.

Books (``?books=1``, ``&depth=`` 10 (the default), 25, 100, 500 or 1000): the ``book``
channel, a snapshot then updates, each with a CRC32 of the top 10 levels as Kraken wrote
them. So book messages are parsed keeping each number's text (``Decimal``: ``0.10000000``
stays that, where a double would be ``0.1``), every update of a message is applied, the
book is cut to the subscribed depth (Kraken sends no removal for a level pushed out of
it: the cut is sent on as one), and only then is the checksum compared. A mismatch
resyncs that pair alone (unsubscribed and subscribed again: a new snapshot); the others
and the connection go on. Sources: docs.kraken.com/api/docs/websocket-v2/trade,
.../ticker, .../heartbeat, .../book; docs.kraken.com/exchange/guides/websockets/
book-checksum-v2.
"""

from __future__ import annotations

import json
import zlib
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from feeds.exchanges.numbers import decimal
from feeds.exchanges.venue import Venue
from ticker.core.books import Level
from ticker.core.ticks import Tick
from ticker.core.times import micros

SIDES = ("buy", "sell")
DEPTHS = (10, 25, 100, 500, 1000)
"""The depths Kraken's ``book`` channel offers."""
CHECKSUM_LEVELS = 10


def _exact(value: object) -> Decimal:
    """A book message's number as parsed (``Decimal``, or ``int`` for a whole one);
    ``TypeError`` for anything else (a string, ``NaN``, a bool)."""
    if type(value) is Decimal or type(value) is int:
        return Decimal(value)
    raise TypeError(f"not a number: {value!r}")


def _digits(number: Decimal) -> str:
    """A price or qty as the checksum writes it: its text without ``.`` and leading 0s."""
    return format(number, "f").replace(".", "").lstrip("0")


class PairBook:
    """One pair's book as Kraken keeps it: exact decimals, at most ``depth`` a side."""

    __slots__ = ("asks", "bids", "depth")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}

    def apply(self, bids: list[Any], asks: list[Any]) -> tuple[list[Level], list[Level]]:
        """Every level of a message, then the cut to ``depth``: what changed, as levels."""
        out: tuple[list[Level], list[Level]] = ([], [])
        for side, given, changed, high in (
            (self.bids, bids, out[0], True),
            (self.asks, asks, out[1], False),
        ):
            for level in given:
                price, qty = _exact(level["price"]), _exact(level["qty"])
                if qty:
                    side[price] = qty
                else:
                    side.pop(price, None)
                changed.append((decimal(format(price, "f")), decimal(format(qty, "f"))))
            if len(side) > self.depth:
                for price in sorted(side, reverse=high)[self.depth :]:
                    del side[price]
                    changed.append((decimal(format(price, "f")), 0.0))
        return out

    def checksum(self) -> int:
        """Kraken's CRC32: the top 10 asks low to high, then the top 10 bids high to low."""
        asks = sorted(self.asks)[:CHECKSUM_LEVELS]
        bids = sorted(self.bids, reverse=True)[:CHECKSUM_LEVELS]
        text = "".join(_digits(p) + _digits(self.asks[p]) for p in asks)
        text += "".join(_digits(p) + _digits(self.bids[p]) for p in bids)
        return zlib.crc32(text.encode())


class Kraken(Venue):
    """The Kraken websocket v2 protocol."""

    name = "kraken"
    url = "wss://ws.kraken.com/v2"
    watchdog_s = 10.0
    per_connection = 500
    contiguous_ids = False

    def __init__(self, names: dict[str, str], *, books: bool = False, depth: int = 10) -> None:
        super().__init__(names, books=books)
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {' '.join(map(str, DEPTHS))}")
        self.depth = depth
        self._books: dict[str, PairBook] = {}
        """Pairs whose book has had its snapshot on this connection."""

    def subscriptions(self, products: list[str]) -> list[str]:
        """One subscribe per channel, naming every pair."""
        if not products:
            return []
        channels: list[dict[str, Any]] = [
            {"channel": "trade", "symbol": products, "snapshot": False},
            {"channel": "ticker", "symbol": products},
        ]
        if self.books:
            channels.append(self._book_params(products))
        return [
            orjson.dumps({"method": "subscribe", "params": params}).decode() for params in channels
        ]

    def _book_params(self, products: list[str]) -> dict[str, Any]:
        return {"channel": "book", "symbol": products, "depth": self.depth}

    def resubscriptions(self, products: list[str]) -> list[str]:
        """Out of the book channel and back in: Kraken then sends a new snapshot."""
        params = self._book_params(products)
        return [
            orjson.dumps({"method": method, "params": params}).decode()
            for method in ("unsubscribe", "subscribe")
        ]

    def forget_books(self, products: list[str]) -> None:
        """A new connection: each book waits for the snapshot its subscribe brings."""
        for product in products:
            self._books.pop(product, None)
            self.asked.discard(product)

    def parse(self, data: str | bytes) -> Any:
        """Book messages keep each number's text (``Decimal``), as the checksum needs."""
        if self.books and ('"book"' in data if isinstance(data, str) else b'"book"' in data):
            return json.loads(data, parse_float=Decimal)
        return orjson.loads(data)

    def read(self, message: Any, arrival_us: int, out: list[Tick]) -> None:
        """Trades and tickers; acknowledgements, heartbeats and status are bookkeeping."""
        channel = message.get("channel")
        if channel == "trade":
            for trade in message["data"]:
                side = trade["side"]
                if side not in SIDES:
                    raise ValueError(f"side {side!r}")
                self.trade(
                    out,
                    trade["symbol"],
                    trade["trade_id"],
                    trade["price"],
                    trade["qty"],
                    side,
                    micros(datetime.fromisoformat(trade["timestamp"])),
                    arrival_us,
                )
        elif channel == "ticker":
            for quote in message["data"]:
                self.quote(quote["symbol"], quote["bid"], quote["ask"])
        elif channel == "book" and self.books:
            for book in message["data"]:
                self._book(message["type"], book)
        elif message.get("method") == "unsubscribe":
            return  # the first half of a resync
        elif message.get("method") == "subscribe":
            if message.get("success") is False:
                symbol = message.get("symbol") or message.get("result", {}).get("symbol")
                self.refuse(str(symbol), str(message.get("error", "refused")))
        elif channel == "status":
            system = message["data"][0]["system"]
            self.halted = None if system == "online" else f"kraken says the market is {system}"
        elif channel != "heartbeat":
            self.unknown(message)

    def _book(self, kind: str, data: dict[str, Any]) -> None:
        """A snapshot or an update of one pair, sent on only if its checksum holds."""
        product = data["symbol"]
        if product not in self.names:
            self.unknown(product)
            return
        if kind == "snapshot":
            book = PairBook(self.depth)
            self.asked.discard(product)
        elif kind == "update":
            found = self._books.get(product)
            if found is None:
                if product not in self.asked:  # else: old updates, before our resubscribe
                    self.asked.add(product)
                    self.resync(product, "an update before its snapshot")
                return
            book = found
        else:
            raise ValueError(f"book type {kind!r}")
        bids, asks = book.apply(data["bids"], data["asks"])
        if book.checksum() != data["checksum"]:
            self._books.pop(product, None)
            self.asked.add(product)
            self.resync(product, f"checksum {data['checksum']} but the book's is {book.checksum()}")
            return
        self._books[product] = book
        if kind == "snapshot":
            self.book_reset(product, bids, asks)
        else:
            self.book_change(product, bids, asks)
