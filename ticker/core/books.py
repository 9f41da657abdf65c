"""Order books without I/O: one canonical L2 book per symbol, its deltas per depth, and
each client's pending frames of a book topic, merged per level when it falls behind.

A source gives absolute level changes (``size`` 0 removes the level). ``Book.apply``
takes one change set, numbers it with the book's own contiguous ``u`` and returns what
it changed; ``Book.delta`` turns that into the frame of a depth (``@book10``: only what
entered, left or changed in the top 10, so a client's book is always exactly the top 10).
A frame is encoded once and shared by every client that is in step; a client that is
not (it read slowly) gets its pending frames merged per level into one delta whose
``pu`` still chains to the last frame it got, so it never needs a resync and its state
is bounded by the levels of its depth.

The checksum ``cs`` is CRC32 (unsigned) of the top 10 levels of each side in a text any
client can rebuild from the parsed JSON numbers: see ``checksum_text`` and
docs/protocol.md.
"""

from __future__ import annotations

import bisect
import itertools
import zlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

import orjson

from ticker.core.topics import TopicKind

Level = tuple[float, float]
"""(price, size): size 0 removes the level."""

CHECKSUM_DEPTH = 10
DEPTHS = (10, 50)
"""The depths a topic may ask for (``@book10``, ``@book50``); ``@book`` is every level."""
MAX_LEVELS = 5_000
"""Levels kept per side: past it a source's farthest levels are dropped (and the drop is
sent as a removal), so a runaway source cannot grow a book without bound."""
MAX_PENDING = 8
"""Frames a follower keeps as shared bytes before it merges them per level."""
SUFFIXES: dict[str, int | None] = {"book10": 10, "book50": 50, "book": None}
"""Topic suffix -> depth (None: every level)."""
BOOKS = TopicKind("books", SUFFIXES.__contains__, " ".join(SUFFIXES))


Applied = Callable[[str, bool, list[Level], list[Level], int], None]
"""(symbol, reset, bids, asks, u): one change set a node applied to a book, numbered u."""


class BookSink(Protocol):
    """Where a source hands its level changes (``BookService.submit`` on a node)."""

    def __call__(
        self, symbol: str, bids: Iterable[Level], asks: Iterable[Level], reset: bool = False
    ) -> None:
        """One change set of absolute levels; ``reset``: the source's full book (a
        snapshot after a (re)sync): every level not in it is gone."""
        ...


_TEXTS: dict[float, str] = {}
"""``canonical`` of the numbers seen lately: prices and sizes repeat, and writing one
is most of a checksum's cost. Emptied when it holds ``_TEXTS_MAX``."""
_TEXTS_MAX = 100_000


def canonical(x: float) -> str:
    """A number as the checksum writes it: the shortest decimal that reads back as the
    same double (Python's ``repr``, JavaScript's ``String``), without an exponent, without
    trailing zeros after the point, without a trailing point: 100.0 -> ``100``,
    1.305e-05 -> ``0.00001305``, 189.10 -> ``189.1``."""
    text = _TEXTS.get(x)
    if text is None:
        if len(_TEXTS) >= _TEXTS_MAX:
            _TEXTS.clear()
        text = _TEXTS[x] = _canonical(x)
    return text


def _canonical(x: float) -> str:
    text = repr(float(x))
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def checksum_text(bids: Iterable[Level], asks: Iterable[Level]) -> str:
    """The text ``cs`` is the CRC32 of: the top 10 bids high to low, then ``|``, then the
    top 10 asks low to high, each level ``price:size`` and levels joined by ``,``."""

    def side(levels: Iterable[Level]) -> str:
        return ",".join(f"{canonical(p)}:{canonical(s)}" for p, s in levels)

    return f"{side(bids)}|{side(asks)}"


def checksum(bids: Iterable[Level], asks: Iterable[Level]) -> int:
    """CRC32 (zlib, unsigned) of ``checksum_text``; callers pass at most 10 levels a side."""
    return zlib.crc32(checksum_text(bids, asks).encode())


class Side:
    """One side of a book: price -> size, and the prices kept sorted ascending."""

    __slots__ = ("bids", "levels", "prices", "texts")

    def __init__(self, bids: bool) -> None:
        self.bids = bids
        """Best is the highest price (bids) or the lowest (asks)."""
        self.levels: dict[float, float] = {}
        self.prices: list[float] = []
        self.texts: dict[float, str] = {}
        """Each level's ``price:size`` checksum text, written when the level changes."""

    def __len__(self) -> int:
        return len(self.prices)

    def set(self, price: float, size: float) -> bool:
        """Apply one absolute change; whether the side changed."""
        levels = self.levels
        if size == 0:
            if price not in levels:
                return False  # removing an unknown level is normal for a source
            del levels[price], self.texts[price]
            del self.prices[bisect.bisect_left(self.prices, price)]
            return True
        old = levels.get(price)
        if old == size:
            return False
        if old is None:
            bisect.insort(self.prices, price)
        levels[price] = size
        self.texts[price] = f"{canonical(price)}:{canonical(size)}"
        return True

    def best(self, n: int | None) -> list[float]:
        """The best ``n`` prices (all when None), best first."""
        prices = self.prices
        if self.bids:
            top = prices[-n:] if n is not None else prices[:]
            top.reverse()
            return top
        return prices[:n] if n is not None else prices[:]

    def worst(self) -> float:
        """The level farthest from the touch (the side is not empty)."""
        return self.prices[0] if self.bids else self.prices[-1]

    def top(self, n: int | None) -> list[list[float]]:
        """The best ``n`` levels as the JSON writes them: ``[[price, size], ...]``."""
        levels = self.levels
        return [[p, levels[p]] for p in self.best(n)]

    def in_top(self, price: float, n: int) -> bool:
        """Whether a change at ``price`` can touch the top ``n`` (before or after it)."""
        prices = self.prices
        if len(prices) < n:
            return True
        return price >= prices[-n] if self.bids else price <= prices[n - 1]

    def checksum_text(self) -> str:
        """This side's part of ``checksum_text``."""
        texts = self.texts
        return ",".join([texts[p] for p in self.best(CHECKSUM_DEPTH)])


@dataclass(slots=True)
class Change:
    """What one applied change set did: every level it changed (size 0: removed)."""

    u: int
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    before: dict[int, tuple[list[float], list[float]]] = field(default_factory=dict)
    """Depth -> the top ``depth`` prices of each side before the change, for the depths
    the change could touch (a depth missing here is unchanged)."""


class Book:
    """The canonical book of one symbol: levels, its own sequence ``u``, its checksum."""

    __slots__ = ("asks", "bids", "crossed", "cs", "symbol", "u")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = Side(bids=True)
        self.asks = Side(bids=False)
        self.u = 0
        """+1 per change set that changed something."""
        self.cs = checksum((), ())
        self.crossed = False
        """The best bid is at or above the best ask: the source is wrong until it resyncs."""

    def apply(
        self,
        bids: Iterable[Level],
        asks: Iterable[Level],
        depths: Collection[int] = DEPTHS,
        u: int | None = None,
    ) -> Change | None:
        """One change set of absolute levels; None when it changed nothing. ``depths``:
        those whose deltas will be asked for (``delta`` needs their top before it).
        ``u``: the number to give it (another node's, past ``self.u``); else ``u + 1``."""
        bids, asks = list(bids), list(asks)
        change = Change(self.u + 1 if u is None else u)
        for depth in depths:
            if self._touches(bids, asks, depth):
                change.before[depth] = (self.bids.best(depth), self.asks.best(depth))
        # only a change inside the top 10 (before it) can change what the checksum reads
        if CHECKSUM_DEPTH in depths:
            top10 = CHECKSUM_DEPTH in change.before
        else:
            top10 = self._touches(bids, asks, CHECKSUM_DEPTH)
        for side, levels, out in ((self.bids, bids, change.bids), (self.asks, asks, change.asks)):
            for price, size in levels:
                if side.set(price, size):
                    out[price] = size
            while len(side) > MAX_LEVELS:
                far = side.worst()
                side.set(far, 0)
                out[far] = 0
        if not change.bids and not change.asks:
            return None
        self.u = change.u
        top_bid, top_ask = self.bids.best(1), self.asks.best(1)
        self.crossed = bool(top_bid and top_ask and top_bid[0] >= top_ask[0])
        if top10:
            self.cs = zlib.crc32(
                f"{self.bids.checksum_text()}|{self.asks.checksum_text()}".encode()
            )
        return change

    def reset(
        self,
        bids: Iterable[Level],
        asks: Iterable[Level],
        depths: Collection[int] = DEPTHS,
        u: int | None = None,
    ) -> Change | None:
        """The source's new snapshot (after a resync): one change set to it, with every
        vanished level removed, so clients follow without a resync of their own."""
        new_bids = {p: s for p, s in bids if s}
        new_asks = {p: s for p, s in asks if s}
        gone_bids = [(p, 0.0) for p in self.bids.levels if p not in new_bids]
        gone_asks = [(p, 0.0) for p in self.asks.levels if p not in new_asks]
        to_bids = [*gone_bids, *new_bids.items()]
        return self.apply(to_bids, [*gone_asks, *new_asks.items()], depths, u)

    def _touches(self, bids: list[Level], asks: list[Level], depth: int) -> bool:
        """Whether a change set can change the top ``depth``: one of its levels is at or
        better than that top's worst before it (or that side is not that deep)."""
        return any(self.bids.in_top(p, depth) for p, _ in bids) or any(
            self.asks.in_top(p, depth) for p, _ in asks
        )

    def snapshot(self, depth: int | None) -> bytes:
        """The snapshot frame of a depth (None: every level)."""
        frame: dict[str, object] = {"type": "book", "s": self.symbol}
        if depth is not None:
            frame["depth"] = depth
        frame.update(
            u=self.u,
            snapshot=True,
            bids=self.bids.top(depth),
            asks=self.asks.top(depth),
            cs=self.cs,
        )
        return orjson.dumps(frame)

    def delta(self, change: Change, depth: int | None, pu: int) -> BookDelta | None:
        """The frame of ``change`` for a depth, chained to ``pu`` (the last frame of that
        topic); None when the top ``depth`` did not change."""
        if depth is None:
            bids, asks = change.bids, change.asks
        else:
            before = change.before.get(depth)
            if before is None:
                return None
            bids = _top_delta(self.bids, before[0], change.bids, depth)
            asks = _top_delta(self.asks, before[1], change.asks, depth)
            if not bids and not asks:
                return None
        return BookDelta(self.symbol, depth, change.u, pu, bids, asks, self.cs)


def _top_delta(
    side: Side, before: list[float], changed: dict[float, float], depth: int
) -> dict[float, float]:
    """Levels to send so a client holding the old top ``depth`` holds the new one: those
    that left (size 0), entered, or changed while in it.

    Found from the edges of the two tops rather than by comparing them whole: a level is
    in a top when it is at or better than that top's worst (or the top is not full), so
    what left or entered without changing itself is a tail of one top beyond the other's
    edge, and the rest is among ``changed``."""
    after = side.best(depth)
    levels = side.levels
    bids = side.bids
    edge_now = after[-1] if len(after) == depth else None
    edge_was = before[-1] if len(before) == depth else None
    out: dict[float, float] = {}
    for p, size in changed.items():
        if size and (edge_now is None or (p >= edge_now if bids else p <= edge_now)):
            out[p] = size  # in the top now: new or changed
        elif edge_was is None or (p >= edge_was if bids else p <= edge_was):
            out[p] = 0.0  # was in the top (or could have been): gone from it
    if edge_now is not None:  # unchanged levels pushed out past the new edge
        for p in reversed(before):
            if (p >= edge_now) if bids else (p <= edge_now):
                break
            out.setdefault(p, 0.0)
    if edge_was is not None:  # unchanged levels pulled in from past the old edge
        for p in reversed(after):
            if (p >= edge_was) if bids else (p <= edge_was):
                break
            if p not in out:
                out[p] = levels[p]
    return out


@dataclass(slots=True)
class BookDelta:
    """One frame of a book topic; ``data`` is encoded once, for every client in step."""

    symbol: str
    depth: int | None
    u: int
    pu: int
    bids: dict[float, float]
    asks: dict[float, float]
    cs: int
    _data: bytes | None = None

    @property
    def data(self) -> bytes:
        """The frame as sent to a client whose last frame of this topic was ``pu``."""
        if self._data is None:
            self._data = encode_delta(
                self.symbol, self.depth, self.u, self.pu, self.bids, self.asks, self.cs
            )
        return self._data


def encode_delta(
    symbol: str,
    depth: int | None,
    u: int,
    pu: int,
    bids: dict[float, float],
    asks: dict[float, float],
    cs: int,
) -> bytes:
    """A delta frame; levels in book order (bids high to low, asks low to high)."""
    frame: dict[str, object] = {"type": "book", "s": symbol}
    if depth is not None:
        frame["depth"] = depth
    frame.update(
        u=u,
        pu=pu,
        bids=[[p, bids[p]] for p in sorted(bids, reverse=True)],
        asks=[[p, asks[p]] for p in sorted(asks)],
        cs=cs,
    )
    return orjson.dumps(frame)


class BookFollower:
    """One client's pending frames of one book topic. In step, it hands out the shared
    frames as they are; behind by more than ``MAX_PENDING`` frames, it merges them per
    level (the latest size wins), so what it holds is bounded by the topic's levels."""

    __slots__ = ("_asks", "_bids", "_cs", "_pending", "_u", "depth", "last_u", "symbol")

    def __init__(self, symbol: str, depth: int | None, last_u: int) -> None:
        self.symbol = symbol
        self.depth = depth
        self.last_u = last_u
        """The ``u`` of the last frame this client got (its snapshot's, at first)."""
        self._pending: list[BookDelta] = []
        self._bids: dict[float, float] | None = None
        self._asks: dict[float, float] = {}
        self._u = last_u
        self._cs = 0

    def __bool__(self) -> bool:
        return bool(self._pending) or self._bids is not None

    def offer(self, delta: BookDelta) -> bool:
        """Keep a frame of the topic until the client is written to; whether it is the
        first one waiting (the session is then to be told, ``Session.frames_ready``)."""
        if delta.u <= self.last_u or delta.u <= self._u:
            return False  # already covered (a snapshot taken after it)
        self._u, self._cs = delta.u, delta.cs
        if self._bids is not None:
            self._bids.update(delta.bids)
            self._asks.update(delta.asks)
            return False
        first = not self._pending
        self._pending.append(delta)
        if len(self._pending) > MAX_PENDING:
            self._bids, self._asks = {}, {}
            for d in self._pending:
                self._bids.update(d.bids)
                self._asks.update(d.asks)
            self._pending.clear()
        return first

    def take(self) -> list[bytes]:
        """The frames to write now: the shared ones when they chain from ``last_u``,
        else one merged delta from ``last_u`` to the latest."""
        pending = self._pending
        if self._bids is None and pending and pending[0].pu == self.last_u:
            chained = all(a.u == b.pu for a, b in itertools.pairwise(pending))
            if chained:
                frames = [d.data for d in pending]
                self.last_u = pending[-1].u
                pending.clear()
                return frames
        if not self:
            return []
        bids, asks = self._bids or {}, self._asks
        for d in pending:
            bids.update(d.bids)
            asks.update(d.asks)
        frame = encode_delta(self.symbol, self.depth, self._u, self.last_u, bids, asks, self._cs)
        self.last_u = self._u
        pending.clear()
        self._bids, self._asks = None, {}
        return [frame]


class Books:
    """Every symbol's book, and the ``u`` of the last frame of each of its topics."""

    __slots__ = ("_books", "_last")

    def __init__(self) -> None:
        self._books: dict[str, Book] = {}
        self._last: dict[tuple[str, int | None], int] = {}

    def book(self, symbol: str) -> Book:
        """The symbol's book (empty until a source gives it levels)."""
        book = self._books.get(symbol)
        if book is None:
            book = self._books[symbol] = Book(symbol)
        return book

    def get(self, symbol: str) -> Book | None:
        """The symbol's book if a source ever gave it one."""
        return self._books.get(symbol)

    def count(self) -> int:
        """Books held."""
        return len(self._books)

    def levels(self) -> int:
        """Levels held in every book, both sides."""
        return sum(len(b.bids) + len(b.asks) for b in self._books.values())

    def symbols(self) -> list[str]:
        """The symbols that have a book."""
        return list(self._books)

    def forget(self, symbol: str) -> None:
        """Drop the symbol's book (numbered anew from 0 if it comes back)."""
        self._books.pop(symbol, None)
        for key in [k for k in self._last if k[0] == symbol]:
            del self._last[key]

    def apply(
        self,
        symbol: str,
        bids: Iterable[Level],
        asks: Iterable[Level],
        depths: Iterable[int | None],
        *,
        reset: bool = False,
        u: int | None = None,
    ) -> list[BookDelta]:
        """Apply a change set (or a source's snapshot, ``reset``) and return its frames
        for the ``depths`` someone follows; ``u`` numbers it (see ``Book.apply``)."""
        book = self.book(symbol)
        depths = list(depths)
        tops = [d for d in depths if d is not None]  # every level needs no top kept
        take = book.reset if reset else book.apply
        change = take(bids, asks, tops, u)
        if change is None:
            return []
        out = []
        last = self._last
        for depth in depths:
            key = (symbol, depth)
            delta = book.delta(change, depth, last.get(key, 0))
            if delta is not None:
                last[key] = delta.u
                out.append(delta)
        return out


class PendingChanges:
    """Change sets a source gave since the last pass, merged per level (the latest size
    wins), so a pass applies one change set per symbol however fast the source is."""

    __slots__ = ("_sets",)

    def __init__(self) -> None:
        self._sets: dict[str, tuple[bool, dict[float, float], dict[float, float]]] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def add(
        self, symbol: str, bids: Iterable[Level], asks: Iterable[Level], reset: bool = False
    ) -> None:
        """Merge one change set; a ``reset`` replaces what was pending for the symbol."""
        pending = self._sets.get(symbol)
        if reset or pending is None:
            pending = self._sets[symbol] = (reset, {}, {})
        was_reset, pbids, pasks = pending
        for merged, levels in ((pbids, bids), (pasks, asks)):
            if was_reset:  # a snapshot being built: removals just leave it
                for price, size in levels:
                    if size:
                        merged[price] = size
                    else:
                        merged.pop(price, None)
            else:
                merged.update(levels)

    def take(self) -> list[tuple[str, bool, list[Level], list[Level]]]:
        """Everything pending, one ``(symbol, reset, bids, asks)`` per symbol."""
        sets, self._sets = self._sets, {}
        return [
            (symbol, reset, list(bids.items()), list(asks.items()))
            for symbol, (reset, bids, asks) in sets.items()
        ]
