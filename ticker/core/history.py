"""Per-symbol history: the last N ticks of each symbol, for gap-free resume.

The bus hands each symbol's ticks of a batch to its ring as the one segment it already
joined for the mailboxes (``Ring.add``): per symbol and batch, never per tick, and
nothing encoded again. A client that comes back with the last ``q`` it saw of a symbol
gets every tick after it from here, or nothing at all if any of them has already left
the ring: never a partial recovery.

Memory is bounded: a ring drops its oldest runs while the rest still hold ``depth``
ticks, so it keeps at least the last ``depth`` ticks and fewer than ``depth`` plus one
batch's ticks of the symbol. That is about ``symbols x depth x (tick bytes + 110)``
bytes when every batch carries one tick of the symbol, less when batches carry several
(+45 with three, +15 with ten): e.g. 100 symbols x 1000 ticks of ~85 bytes = 10 to 20 MB.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping

import orjson

from ticker.core.ticks import MAX_SYMBOL_LENGTH

DEFAULT_DEPTH = 1000

Positions = dict[str, int]
"""Symbol -> the last ``q`` a client has of it."""


class Ring:
    """One symbol's last ticks, as the runs they were published in, oldest first.

    Flat deques, not a tuple per run: with a tick per batch (a quiet symbol) a tuple
    would cost more than the tick itself.
    """

    __slots__ = ("depth", "segments", "spans", "ticks")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.segments: deque[bytes] = deque()
        """Each run's encoded ticks, joined with commas."""
        self.spans: deque[int] = deque()
        """Three per run: its first q, its last q, how many ticks it holds."""
        self.ticks = 0

    def add(self, first_q: int, last_q: int, count: int, segment: bytes) -> None:
        """Keep one batch's segment of the symbol; drop the oldest past ``depth`` ticks."""
        spans = self.spans
        self.segments.append(segment)
        spans.extend((first_q, last_q, count))
        ticks = self.ticks + count
        while ticks - spans[2] >= self.depth:
            spans.popleft()
            spans.popleft()
            ticks -= spans.popleft()
            self.segments.popleft()
        self.ticks = ticks

    def runs(self) -> Iterator[tuple[int, int, bytes]]:
        """(first q, last q, segment) of each run, oldest first."""
        spans = iter(self.spans)
        for segment, first, last, _ in zip(self.segments, spans, spans, spans, strict=False):
            yield first, last, segment

    def __len__(self) -> int:
        return self.ticks


def missed(ring: Ring, last_q: int, head_q: int) -> list[bytes] | None:
    """Every tick after ``last_q``, oldest first, if the ring still holds all of them;
    ``None`` if some are gone (or ``last_q`` is ahead of the stream: another stream).

    ``head_q`` is the symbol's latest ``q``. ``[]`` means nothing was missed. The items
    are runs of encoded ticks joined with commas (ready for a frame); the one run that
    straddles ``last_q``, if any, is cut, the only re-encoding (of a resume, not of a
    publish).
    """
    if last_q == head_q:
        return []
    if last_q > head_q or not ring.spans or ring.spans[0] > last_q + 1:
        return None
    out: list[bytes] = []
    for first, last, segment in ring.runs():
        if last <= last_q:
            continue
        if first > last_q:
            out.append(segment)
        else:  # the run straddles last_q: keep its ticks after it
            ticks = orjson.loads(b"[" + segment + b"]")
            out.extend(orjson.dumps(tick) for tick in ticks if tick["q"] > last_q)
    return out


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
