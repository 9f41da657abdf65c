"""Kraken spot, websocket v2 (``--feed kraken:BTC/USD,ETH/USD``): channels ``trade``
(without its snapshot: those trades may be old) and ``ticker`` (best bid and ask).

Kraken sends a heartbeat every second once subscribed, so the watchdog allows 10 s. Its
``status`` channel says when the market is not ``online`` (``maintenance``,
``cancel_only``, ``post_only``): every pair is then ``halted`` until it is again. Each
symbol's subscribe is acknowledged on its own: a refused one (``success: false``) is
marked ``closed`` and the others go on. Prices and sizes come as JSON numbers, parsed by
orjson to the nearest double as a decimal string would be. Sources:
docs.kraken.com/api/docs/websocket-v2/trade, .../ticker, .../heartbeat.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from feeds.exchanges.venue import Venue
from ticker.core.ticks import Tick
from ticker.core.times import micros

SIDES = ("buy", "sell")


class Kraken(Venue):
    """The Kraken websocket v2 protocol."""

    name = "kraken"
    url = "wss://ws.kraken.com/v2"
    watchdog_s = 10.0
    per_connection = 500
    contiguous_ids = False

    def subscriptions(self, products: list[str]) -> list[str]:
        """One subscribe per channel, naming every pair."""
        if not products:
            return []
        return [
            orjson.dumps({"method": "subscribe", "params": params}).decode()
            for params in (
                {"channel": "trade", "symbol": products, "snapshot": False},
                {"channel": "ticker", "symbol": products},
            )
        ]

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
        elif message.get("method") == "subscribe":
            if message.get("success") is False:
                symbol = message.get("symbol") or message.get("result", {}).get("symbol")
                self.refuse(str(symbol), str(message.get("error", "refused")))
        elif channel == "status":
            system = message["data"][0]["system"]
            self.halted = None if system == "online" else f"kraken says the market is {system}"
        elif channel != "heartbeat":
            self.unknown(message)
