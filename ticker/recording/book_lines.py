"""Book change sets in a recording: one JSON line each, among the tick lines.

``{"type":"book","s":"AAPL","t":1340280000000000,"bids":[[p,size],...],"asks":[...]}``
with ``"reset":true`` when the change set is the source's whole book (a snapshot). Tick
lines have no ``type``, so a reader tells them apart by that key, and a recording of
books and ticks replays both in the order of its lines (``t`` ascending).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ticker.core.books import Level

TYPE = "book"


@dataclass(frozen=True, slots=True)
class BookRow:
    """One recorded change set: absolute levels (size 0 removes), at ``t`` (µs)."""

    t: int
    s: str
    bids: list[Level]
    asks: list[Level]
    reset: bool = False


def encode(row: BookRow) -> bytes:
    """The row's line, without its newline."""
    obj: dict[str, Any] = {"type": TYPE, "s": row.s, "t": row.t, "bids": row.bids, "asks": row.asks}
    if row.reset:
        obj["reset"] = True
    return orjson.dumps(obj)


def is_book(obj: Any) -> bool:
    """Whether a parsed line is a book row (rather than a tick)."""
    return isinstance(obj, dict) and obj.get("type") == TYPE


def _levels(value: Any, name: str) -> list[Level]:
    if not isinstance(value, list):
        raise ValueError(f"{name} must be a list of [price, size]")
    out: list[Level] = []
    for level in value:
        if (
            not isinstance(level, list)
            or len(level) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in level)
        ):
            raise ValueError(f"each of {name} must be [price, size], numbers")
        price, size = float(level[0]), float(level[1])
        if not (price > 0 and size >= 0) or price == float("inf") or size == float("inf"):
            raise ValueError(f"{name}: price must be > 0 and size >= 0, finite")
        out.append((price, size))
    return out


def parse(obj: dict[str, Any]) -> BookRow:
    """A book row from its parsed line, or ``ValueError`` saying what is wrong."""
    symbol, t = obj.get("s"), obj.get("t")
    if not isinstance(symbol, str) or not symbol:
        raise ValueError("a book row needs s, its symbol")
    if not isinstance(t, int) or isinstance(t, bool) or t < 0:
        raise ValueError("a book row needs t, microseconds since 1970")
    reset = obj.get("reset", False)
    if not isinstance(reset, bool):
        raise ValueError("reset must be true or false")
    return BookRow(
        t, symbol, _levels(obj.get("bids", []), "bids"), _levels(obj.get("asks", []), "asks"), reset
    )
