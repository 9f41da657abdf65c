"""Raw Coinbase WebSocket recordings (cryptofeed's format): ``<receive time>: <json>`` lines.

Each trade appears twice in such a recording: as a ``match`` and again inside the next
``ticker`` message (same ``trade_id``). So ticks come from ``match`` messages only, one
per trade, and ``ticker`` messages only update the product's best bid and ask, which the
following trades carry. ``last_match`` (the trade before subscribing, possibly older than
the recording) is skipped. Time is the exchange's ``time`` field; lines the client sent
(``... <- ts: {...}``) and connection markers (``... <-> ts``) are skipped.

Its ``level2`` channel becomes book rows (when the caller asks for them): a ``snapshot`` is
a reset, an ``l2update``'s ``changes`` (``[side, price, size]``, ``buy`` = bid) a change
set. Book rows are at the line's receive time: a snapshot has no exchange time, and the
products' messages come in the order received, not in their exchange times' order.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ticker.core.books import Level
from ticker.core.ticks import Tick, TickBatch
from ticker.core.times import micros
from ticker.recording.book_lines import BookLog, BookRow
from ticker.recording.importers.csvcolumns import read_text_lines
from ticker.recording.problems import Problems
from ticker.recording.table import TickTable, valid_symbol

RECEIVED = re.compile(r"(\d+(?:\.\d*)?): (\{.*)")


def matches_first_line(line: str) -> bool:
    """Sniffs the format from its first line, for files named without a hint."""
    return line.startswith("wss://") or RECEIVED.fullmatch(line.strip()) is not None


def read_coinbase(path: Path, problems: Problems, books: BookLog | None = None) -> TickTable:
    """Trades become ticks; ``ticker`` messages only update the bid/ask the next trade
    carries; ``level2`` messages go to ``books`` as rows (if given)."""
    ticks: TickBatch = []
    lines: list[int] = []
    quotes: dict[str, tuple[float, float]] = {}
    for number, line in enumerate(read_text_lines(path), 1):
        if not line.strip() or line.startswith("wss://"):
            continue
        found = RECEIVED.fullmatch(line.rstrip("\n"))
        if found is None:
            problems.bad(path, number, "expected '<receive time>: <json message>'")
            continue
        try:
            message = orjson.loads(found[2])
            tick = _tick(message, quotes)
            row = None if books is None else _book_row(message, float(found[1]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            problems.bad(path, number, f"bad message: {type(exc).__name__}: {exc}")
            continue
        if tick is not None:
            ticks.append(tick)
            lines.append(number)
        if row is not None and books is not None:
            books.add(row, number)
    table = TickTable.from_ticks(ticks)
    table.lines = np.array(lines, np.int64)
    return table


def _tick(message: Any, quotes: dict[str, tuple[float, float]]) -> Tick | None:
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    kind = message.get("type")
    if kind == "ticker":
        quotes[message["product_id"]] = (float(message["best_bid"]), float(message["best_ask"]))
        return None
    if kind != "match":
        return None
    symbol = message["product_id"]
    if not valid_symbol(symbol):
        raise ValueError(f"product_id {symbol!r} is not a symbol")
    tick: Tick = {
        "s": symbol,
        "p": float(message["price"]),
        "v": float(message["size"]),
        "t": micros(datetime.fromisoformat(message["time"])),
    }
    if symbol in quotes:
        tick["b"], tick["a"] = quotes[symbol]
    return tick


def _book_row(message: dict[str, Any], received_s: float) -> BookRow | None:
    """A ``snapshot`` (reset) or ``l2update`` as a book row at its receive time."""
    kind = message.get("type")
    if kind not in ("snapshot", "l2update"):
        return None
    symbol = message["product_id"]
    if not valid_symbol(symbol):
        raise ValueError(f"product_id {symbol!r} is not a symbol")
    t = round(received_s * 1_000_000)
    if kind == "snapshot":
        return BookRow(t, symbol, _levels(message["bids"]), _levels(message["asks"]), True)
    bids: list[Level] = []
    asks: list[Level] = []
    for side, price, size in message["changes"]:
        if side not in ("buy", "sell"):
            raise ValueError(f"a change's side must be buy or sell, got {side!r}")
        (bids if side == "buy" else asks).append(_level(price, size))
    return BookRow(t, symbol, bids, asks)


def _levels(levels: list[Any]) -> list[Level]:
    return [_level(price, size) for price, size in levels]


def _level(price: Any, size: Any) -> Level:
    p, s = float(price), float(size)
    if not (0 < p < float("inf") and 0 <= s < float("inf")):
        raise ValueError(f"a level needs a price > 0 and a size >= 0, got {price!r} {size!r}")
    return p, s
