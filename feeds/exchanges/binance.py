"""Binance spot (``--feed binance:btcusdt,ethusdt``): the combined streams
``<symbol>@trade`` and ``<symbol>@bookTicker``, subscribed with ``SUBSCRIBE`` messages.

Binance's rules, and what the feed does about them: a connection carries at most 1024
streams (two per symbol, so 512 symbols; more symbols open more connections); a client
sends at most 5 messages per second (subscribes are paced at 4 per second, leaving room
for pongs); the server pings every 20 s and closes a connection that has not answered in
a minute (aiohttp answers every ping; the watchdog reconnects after 60 s without any
frame); a connection is cut at 24 h, so each one is replaced after 23 h, make before
break (``link.py``). Trade ids are contiguous per symbol: a jump is a gap, counted.
``m`` says the buyer was the maker, so the aggressor sold.

Books (``?books=1``): ``<symbol>@depth@100ms`` (a third stream per symbol, so 341
symbols a connection), synced with a REST snapshot as Binance says to: the stream's
events are buffered, ``GET /api/v3/depth?symbol=..&limit=1000`` is asked for after the
first one (weight 50: one a second per connection, well inside 6000 a minute), events
with ``u`` <= the snapshot's ``lastUpdateId`` are dropped, and from then on each event
must start at most one past the book's id (``U`` <= id + 1; ``u`` <= id is a duplicate,
dropped). Anything else is a gap: that symbol alone gets a new snapshot, sent on as a
reset. Sources: developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
(Diff. Depth Stream, How to manage a local order book correctly).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from feeds.exchanges.venue import Venue, levels
from ticker.core.books import Level
from ticker.core.ticks import Tick

STREAMS_PER_MESSAGE = 200
"""Streams named in one ``SUBSCRIBE``: small enough for any message limit."""
STREAMS_PER_CONNECTION = 1024
SNAPSHOT_LIMIT = 1000
"""Levels a side of the REST snapshot: the most that costs weight 50."""
MAX_BUFFERED = 1000
"""Depth events kept per symbol while its snapshot is on the way (100 s of them)."""

Event = tuple[int, int, list[Level], list[Level]]
"""A depth event: first and last update ids (``U``, ``u``), bids, asks."""


@dataclass(slots=True)
class Depth:
    """One symbol's sync: the events before its snapshot, then the book's update id."""

    buffer: deque[Event] = field(default_factory=lambda: deque(maxlen=MAX_BUFFERED))
    u: int | None = None
    """The update id of the book as sent on (None: waiting for a snapshot)."""


class Binance(Venue):
    """The Binance spot websocket streams' protocol."""

    name = "binance"
    url = "wss://stream.binance.com:9443/stream"
    watchdog_s = 60.0
    contiguous_ids = True
    messages_per_s = 4.0
    rotate_after_s = 23 * 3600.0
    rest_url = "https://api.binance.com"

    def __init__(self, names: dict[str, str], *, books: bool = False) -> None:
        super().__init__(names, books=books)
        self.kinds = ("trade", "bookTicker", "depth@100ms") if books else ("trade", "bookTicker")
        self.per_connection = STREAMS_PER_CONNECTION // len(self.kinds)
        self._depth: dict[str, Depth] = {}

    def subscriptions(self, products: list[str]) -> list[str]:
        """``SUBSCRIBE`` messages of at most ``STREAMS_PER_MESSAGE`` streams each."""
        streams = [f"{p.lower()}@{kind}" for p in products for kind in self.kinds]
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
        elif "u" in data and "b" in data and "e" not in data:  # bookTicker has no event type
            self.quote(data["s"], data["b"], data["a"])
        elif data.get("e") == "depthUpdate" and self.books:
            self._event(data["s"], (data["U"], data["u"], levels(data["b"]), levels(data["a"])))
        else:
            self.unknown(message)

    def forget_books(self, products: list[str]) -> None:
        """A new connection: each symbol buffers its events again until a snapshot."""
        for product in products:
            self._depth[product] = Depth()

    def snapshot_path(self, product: str) -> str:
        """Binance's REST depth snapshot of the symbol."""
        return f"/api/v3/depth?symbol={product}&limit={SNAPSHOT_LIMIT}"

    def rest_snapshot(self, product: str, body: Any) -> None:
        """A REST snapshot: the book, then the buffered events that follow it."""
        state = self._depth.setdefault(product, Depth())
        if state.u is not None:
            return  # synced since it was asked for (a new connection's first event)
        buffer = state.buffer
        if not buffer:
            return  # asked for on a connection since replaced: the new one asks again
        last = body["lastUpdateId"]
        if type(last) is not int:
            raise TypeError("lastUpdateId must be an integer")
        bids, asks = levels(body["bids"]), levels(body["asks"])
        while buffer and buffer[0][1] <= last:
            buffer.popleft()
        if buffer and buffer[0][0] > last + 1:
            self.ask_snapshot(product)  # older than the first event kept: another one
            return
        self.book_reset(product, bids, asks)
        state.u = last
        events = list(buffer)
        buffer.clear()
        for event in events:
            self._event(product, event)

    def _event(self, product: str, event: Event) -> None:
        """One depth event: buffered before the snapshot, applied if it follows on."""
        if product not in self.names:
            self.unknown(product)
            return
        first, last, bids, asks = event
        if type(first) is not int or type(last) is not int:
            raise TypeError("U and u must be integers")
        state = self._depth.setdefault(product, Depth())
        if state.u is None:
            if not state.buffer:
                self.ask_snapshot(product)
            state.buffer.append(event)
        elif last <= state.u:
            return  # already in the book (a rotation's overlap)
        elif first > state.u + 1:
            self.resync(product, f"a gap: U {first} after u {state.u}")
            state.u = None
            state.buffer.append(event)
        else:
            self.book_change(product, bids, asks)
            state.u = last
