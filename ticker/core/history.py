"""Per-symbol history: the last N encoded ticks of each symbol, for gap-free resume.

The bus appends each tick's bytes (already encoded, copied once to their exact size) to
its symbol's ring as it publishes; nothing is encoded again. A client that comes back
with the last ``q`` it saw of a symbol gets every tick after it from here, or nothing
at all if any of them has already left the ring: never a partial recovery.

Memory is bounded by ``depth`` ticks per symbol: about ``symbols x depth x (tick bytes +
130)`` bytes (a tuple, an int and a bytes header per tick), e.g. 100 symbols x 1000 ticks of
~85 bytes = 21 MB.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from ticker.core.ticks import MAX_SYMBOL_LENGTH

DEFAULT_DEPTH = 1000

Ring = deque[tuple[int, bytes]]
"""One symbol's history: (q, encoded tick), oldest first, at most ``depth`` of them."""

Positions = dict[str, int]
"""Symbol -> the last ``q`` a client has of it."""


def new_ring(depth: int) -> Ring:
    return deque(maxlen=depth)


def missed(ring: Ring, last_q: int, head_q: int) -> list[bytes] | None:
    """Every tick after ``last_q``, oldest first, if the ring still holds all of them;
    ``None`` if some are gone (or ``last_q`` is ahead of the stream: another stream).

    ``head_q`` is the symbol's latest ``q``. ``[]`` means nothing was missed.
    """
    if last_q == head_q:
        return []
    if last_q > head_q or not ring or ring[0][0] > last_q + 1:
        return None
    return [data for q, data in ring if q > last_q]


# -- the position token: "epoch AAPL:12,MSFT:40" ---------------------------------------------

MAX_TOKEN_CHARS = 64 * 1024


def format_positions(epoch: str, positions: Mapping[str, int]) -> str:
    """A resume position as text: an SSE ``id:`` or the query's ``since``/``epoch`` pair.

    Symbols never hold ``,`` in this protocol (the query string splits on it) and ``:``
    is found from the right, so the text parses back whatever the symbols hold otherwise.
    """
    return f"{epoch} " + ",".join(f"{s}:{q}" for s, q in positions.items())


def parse_since(text: str) -> Positions:
    """``AAPL:12,MSFT:40`` -> ``{"AAPL": 12, "MSFT": 40}``; ``ValueError`` on bad input."""
    if len(text) > MAX_TOKEN_CHARS:
        raise ValueError(f"since must be at most {MAX_TOKEN_CHARS} characters")
    out: Positions = {}
    for item in _items(text):
        symbol, sep, q = item.rpartition(":")
        if not sep or not symbol or len(symbol) > MAX_SYMBOL_LENGTH:
            raise ValueError(f"since: {item[:40]!r} is not SYMBOL:Q")
        if not q.isdigit() or int(q) > 2**53:
            raise ValueError(f"since: the q of {symbol!r} must be a whole number below 2^53")
        out[symbol] = int(q)
    return out


def parse_position(text: str) -> tuple[str, Positions]:
    """``"epoch AAPL:12,MSFT:40"`` (an SSE ``Last-Event-ID``) -> epoch and positions."""
    epoch, _, since = text.strip().partition(" ")
    if not epoch or len(epoch) > 64:
        raise ValueError("the resume position must start with the epoch")
    return epoch, parse_since(since)


def _items(text: str) -> Iterable[str]:
    return (item for item in text.split(",") if item)
