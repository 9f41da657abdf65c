"""Coinbase Exchange (``--feed coinbase:BTC-USD,ETH-USD``): ``matches`` for trades,
``ticker`` for the best bid and ask, ``heartbeat`` so a quiet product still proves the
connection alive (one message per product per second; the watchdog allows 10 s), and
``status``, whose products list says which products cannot trade now: one not
``online``, or with ``trading_disabled``, ``cancel_only`` or ``auction_mode`` set, is
``halted`` until the list says otherwise.

A ``match``'s ``side`` is the *maker's* side: the aggressor, the tick's ``sd``, is the
other one. ``last_match`` (the latest trade, replayed at subscribe time, perhaps long
past) is skipped. One unknown product makes Coinbase refuse the whole subscribe: the
refused product is marked ``closed`` and the others are subscribed again without it.

Books (``?books=1``): the public ``level2_batch`` channel (``level2`` itself now needs a
key; the batch one is the same messages, 50 ms at a time): a ``snapshot`` of the whole
book per product, then ``l2update``s of absolute sizes. Coinbase guarantees their
delivery and numbers none of them, so the one inconsistency to see is an update before
its product's snapshot: that product alone is unsubscribed and subscribed again, which
brings a new snapshot. Sources: docs.cdp.coinbase.com/exchange/websocket-feed (channels,
subscribe within 5 s).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import orjson

from feeds.exchanges.numbers import decimal
from feeds.exchanges.venue import Venue, levels
from ticker.core.books import Level
from ticker.core.ticks import Tick
from ticker.core.times import micros

AGGRESSOR = {"buy": "sell", "sell": "buy"}
"""A match's maker side to the aggressor's."""
HALTING = ("trading_disabled", "cancel_only", "auction_mode")
"""Flags of a product in the status channel under which it does not trade normally."""
_NOT_VALID = re.compile(r"(\S+) is not a valid product")
BOOK_CHANNEL = "level2_batch"


class Coinbase(Venue):
    """The Coinbase Exchange websocket feed's protocol."""

    name = "coinbase"
    url = "wss://ws-feed.exchange.coinbase.com"
    watchdog_s = 10.0
    per_connection = 100
    contiguous_ids = False

    def __init__(self, names: dict[str, str], *, books: bool = False) -> None:
        super().__init__(names, books=books)
        self._synced: set[str] = set()
        """Products whose book has had its snapshot on this connection."""

    def subscriptions(self, products: list[str]) -> list[str]:
        """One subscribe, sent at once (Coinbase drops a client silent for 5 s)."""
        if not products:
            return []
        channels = ["matches", "ticker", "heartbeat", "status"]
        if self.books:
            channels.append(BOOK_CHANNEL)
        message = {"type": "subscribe", "product_ids": products, "channels": channels}
        return [orjson.dumps(message).decode()]

    def resubscriptions(self, products: list[str]) -> list[str]:
        """Out of the book channel and back in: Coinbase then sends a new snapshot."""
        return [
            orjson.dumps(
                {"type": kind, "product_ids": products, "channels": [BOOK_CHANNEL]}
            ).decode()
            for kind in ("unsubscribe", "subscribe")
        ]

    def forget_books(self, products: list[str]) -> None:
        """A new connection: each book waits for the snapshot its subscribe brings."""
        self._synced.difference_update(products)
        self.asked.difference_update(products)

    def after_refusal(self, products: list[str]) -> list[str]:
        """Coinbase refused the whole subscribe for one product: again, without it."""
        return self.subscriptions(products)

    def read(self, message: Any, arrival_us: int, out: list[Tick]) -> None:
        """``match`` -> a trade tick; ``ticker`` -> the quote; the rest is bookkeeping."""
        kind = message["type"]
        if kind == "match":
            self.trade(
                out,
                message["product_id"],
                message["trade_id"],
                message["price"],
                message["size"],
                AGGRESSOR[message["side"]],
                micros(datetime.fromisoformat(message["time"])),
                arrival_us,
            )
        elif kind == "ticker":
            self.quote(message["product_id"], message["best_bid"], message["best_ask"])
        elif kind == "l2update" and self.books:
            self._update(message["product_id"], message["changes"])
        elif kind == "snapshot" and self.books:
            self._snapshot(message["product_id"], message["bids"], message["asks"])
        elif kind == "status":
            self._halts(message["products"])
        elif kind == "error":
            found = _NOT_VALID.search(str(message.get("reason", "")))
            if found is None:
                raise ValueError(f"an error from coinbase: {message.get('message')}")
            self.refuse(found.group(1), "not a valid product")
        elif kind not in ("last_match", "heartbeat", "subscriptions"):
            self.unknown(message)

    def _snapshot(self, product: str, bids: list[Any], asks: list[Any]) -> None:
        """A product's whole book: its resync, if any, is over."""
        if product not in self.names:
            self.unknown(product)
            return
        book = levels(bids), levels(asks)
        self._synced.add(product)
        self.asked.discard(product)
        self.book_reset(product, *book)

    def _update(self, product: str, changes: list[list[str]]) -> None:
        """Apply an ``l2update`` (``[side, price, size]`` each, ``buy`` the bids)."""
        if product not in self.names:
            self.unknown(product)
            return
        bids: list[Level] = []
        asks: list[Level] = []
        for side, price, size in changes:
            if side not in AGGRESSOR:
                raise ValueError(f"side {side!r}")
            (bids if side == "buy" else asks).append((decimal(price), decimal(size)))
        if product in self._synced:
            self.book_change(product, bids, asks)
        elif product not in self.asked:  # else: old updates, before our resubscribe
            self.asked.add(product)
            self.resync(product, "an update before its snapshot")

    def _halts(self, products: list[dict[str, Any]]) -> None:
        """The products of ours the status channel says cannot trade now, and why."""
        halted: dict[str, str] = {}
        for product in products:
            pid = product["id"]
            if pid not in self.names:
                continue
            if product.get("status") != "online":
                halted[pid] = f"coinbase says {pid} is {product.get('status')}"
            elif flags := [flag for flag in HALTING if product.get(flag)]:
                halted[pid] = f"coinbase says {pid} is {', '.join(flags)}"
        self.halted_products = halted
