"""Binance spot (``--feed binance:btcusdt,ethusdt``): the combined streams
``<symbol>@trade`` and ``<symbol>@bookTicker``, subscribed with ``SUBSCRIBE`` messages.

Binance's rules, and what the feed does about them: a connection carries at most 1024
streams (two per symbol, so 512 symbols; more symbols open more connections); a client
sends at most 5 messages per second (subscribes are paced at 4 per second, leaving room
for pongs); the server pings every 20 s and closes a connection that has not answered in
a minute (aiohttp answers every ping; the watchdog reconnects after 60 s without any
frame); a connection is cut at 24 h, so each one is replaced after 23 h, make before
break (``link.py``). Trade ids are contiguous per symbol: a jump is a gap, counted.
``m`` says the buyer was the maker, so the aggressor sold. Sources:
developers.binance.com/docs/binance-spot-api-docs/web-socket-streams.
"""

from __future__ import annotations

from typing import Any

import orjson

from feeds.exchanges.venue import Venue
from ticker.core.ticks import Tick

STREAMS_PER_MESSAGE = 200
"""Streams named in one ``SUBSCRIBE``: small enough for any message limit."""


class Binance(Venue):
    """The Binance spot websocket streams' protocol."""

    name = "binance"
    url = "wss://stream.binance.com:9443/stream"
    watchdog_s = 60.0
    per_connection = 512
    contiguous_ids = True
    messages_per_s = 4.0
    rotate_after_s = 23 * 3600.0

    def subscriptions(self, products: list[str]) -> list[str]:
        """``SUBSCRIBE`` messages of at most ``STREAMS_PER_MESSAGE`` streams each."""
        streams = [f"{p.lower()}@{kind}" for p in products for kind in ("trade", "bookTicker")]
        return [
            orjson.dumps(
                {
                    "method": "SUBSCRIBE",
                    "params": streams[i : i + STREAMS_PER_MESSAGE],
                    "id": i // STREAMS_PER_MESSAGE + 1,
                }
            ).decode()
            for i in range(0, len(streams), STREAMS_PER_MESSAGE)
        ]

    def read(self, message: Any, arrival_us: int, out: list[Tick]) -> None:
        """A combined-stream message (``{"stream", "data"}``) or a reply to a subscribe."""
        data = message.get("data")
        if data is None:
            if "result" in message:
                return  # a subscribe went through
            if "error" in message:
                raise ValueError(f"an error from binance: {message['error']}")
            self.unknown(message)
        elif data.get("e") == "trade":
            self.trade(
                out,
                data["s"],
                data["t"],
                data["p"],
                data["q"],
                "sell" if data["m"] else "buy",
                data["T"] * 1000,
                arrival_us,
            )
        elif "u" in data and "b" in data:  # bookTicker has no event type
            self.quote(data["s"], data["b"], data["a"])
        else:
            self.unknown(message)
