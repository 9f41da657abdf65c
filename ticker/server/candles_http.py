"""``GET /candles``: a series' bars over plain HTTP, for charting libraries and notebooks.

``?symbol=AAPL&interval=1m&limit=500[&end=US][&format=csv]`` answers the same bars a
WebSocket subscribe with ``history`` gets first (the last ``limit`` closed bars and the
open one, oldest first; with ``end``, only bars that start before it), as the same
``candles`` frame or as CSV. It is entitled like the WebSocket: the same token, and the
base symbol's patterns decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ticker.core import protocol
from ticker.core.bus import Bus
from ticker.core.candles import INTERVALS, Key
from ticker.core.codes import Refusal
from ticker.core.times import parse_time
from ticker.server.auth import GATE
from ticker.server.candles import CandleService

TRANSPORT = "candles"
"""The label its refusals are counted under."""
DEFAULT_LIMIT = 500
CSV_HEADER = "ts,o,h,l,c,v,n,x\n"
CANDLES = web.AppKey("candles", CandleService)


@dataclass(frozen=True, slots=True)
class CandleQuery:
    """A checked ``/candles`` query."""

    key: Key
    limit: int
    end: int | None
    csv: bool


def parse_query(query: dict[str, str], bus: Bus, max_limit: int) -> CandleQuery:
    """The query, or ``ValueError`` saying what is wrong with it (and what is valid)."""
    symbol = query.get("symbol", "")
    if not bus.known(symbol):
        raise ValueError(f"symbol must be a symbol of this server; {symbol[:40]!r} is not")
    interval = query.get("interval", "")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {' '.join(INTERVALS)}")
    text = query.get("limit", str(min(DEFAULT_LIMIT, max_limit)))
    if not text.isdigit() or not 1 <= int(text) <= max_limit:
        raise ValueError(f"limit must be a whole number from 1 to {max_limit} (--candle-history)")
    end = query.get("end")
    if end is not None:
        try:
            end_us = int(end) if end.isdigit() else parse_time(end)
        except ValueError:
            end_us = -1
        if not 0 <= end_us <= 2**53:
            raise ValueError("end must be microseconds since 1970 or an ISO-8601 time")
    fmt = query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ValueError("format must be json or csv")
    return CandleQuery((symbol, interval), int(text), None if end is None else end_us, fmt == "csv")


def as_csv(bars: list[bytes]) -> str:
    """One line per bar, the header first; floats as they are in JSON."""
    fields = ("ts", "o", "h", "l", "c", "v", "n")
    lines = [CSV_HEADER]
    for bar in bars:
        row: dict[str, Any] = orjson.loads(bar)
        values = [repr(row[f]) for f in fields] + ["true" if row["x"] else "false"]
        lines.append(",".join(values) + "\n")
    return "".join(lines)


async def candles_handler(request: web.Request) -> web.Response:
    """The bars of one series; 400 naming the bad parameter, 401/403 as the WebSocket."""
    gate = request.app[GATE]
    service = request.app[CANDLES]
    gate.authorize(request, TRANSPORT)  # 401/403 before a bad query is even read
    try:
        query = parse_query(dict(request.query), gate.bus, service.max_history)
    except ValueError as exc:
        raise gate.refuse(TRANSPORT, Refusal.BAD_REQUEST, str(exc)) from None
    gate.authorize_live(request, TRANSPORT, query.key[0])
    bars = service.history(query.key, query.limit, query.end)
    if query.csv:
        return web.Response(text=as_csv(bars), content_type="text/csv")
    return web.Response(body=protocol.candles(bars), content_type="application/json")


def add_routes(app: web.Application, service: CandleService) -> None:
    """``GET /candles``, served by the node's candle service."""
    app[CANDLES] = service
    app.router.add_get("/candles", candles_handler)
