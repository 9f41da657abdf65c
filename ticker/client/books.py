"""The client's local book of each book topic (``AAPL@book10``), rebuilt from frames and
checked on every one, without I/O.

A snapshot frame replaces the topic's book; a delta must chain (its ``pu`` is the ``u``
of the last frame of that topic), its levels are applied (size 0 removes), and then the
book must be within the topic's depth and its checksum must be the frame's ``cs``
(docs/protocol.md; ``ticker.core.books`` computes it, the same code the server uses). The
server guarantees all three, so a failure is a bug somewhere and ``BookError`` says which
topic and how, rather than the client showing a wrong book.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ticker.core.books import CHECKSUM_DEPTH, SUFFIXES, Level, Side, checksum
from ticker.core.topics import SEPARATOR


def book_topic(symbol: str, depth: int | None) -> str:
    """The topic a frame belongs to: ``AAPL@book10``, ``AAPL@book50``, ``AAPL@book``."""
    return f"{symbol}{SEPARATOR}book{depth or ''}"


def is_book_topic(topic: str) -> bool:
    """Whether a subscription name is a book topic (its frames are ``type: book``)."""
    base, _, suffix = topic.partition(SEPARATOR)
    return bool(base) and suffix in SUFFIXES


@dataclass(frozen=True, slots=True)
class OrderBook:
    """A book topic's book after one frame: both sides best first (bids high to low, asks
    low to high) as ``(price, size)``, the frame's ``u``, and its ``cs`` (verified)."""

    topic: str
    symbol: str
    depth: int | None
    """The topic's N (10 or 50); None for ``@book`` (every level)."""
    u: int
    cs: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    snapshot: bool
    """This frame replaced the book: the first of a subscription (also after a reconnect)."""

    @property
    def best_bid(self) -> Level | None:
        """The highest bid, None when there is no bid."""
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> Level | None:
        """The lowest ask, None when there is no ask."""
        return self.asks[0] if self.asks else None

    @property
    def spread(self) -> float | None:
        """Best ask minus best bid; None unless both sides have a level."""
        if not self.bids or not self.asks:
            return None
        return self.asks[0][0] - self.bids[0][0]


class BookError(Exception):
    """A book frame that does not follow from the client's book (``pu`` not chaining, a
    delta before any snapshot, more levels than the depth, a ``cs`` that differs, a
    malformed frame). It must never happen; the feed ends with it."""

    def __init__(self, topic: str, problem: str) -> None:
        super().__init__(f"{topic}: {problem}")
        self.topic = topic
        self.problem = problem


class _Local:
    """One topic's levels and the last ``u``, with the ``OrderBook`` of its last frame."""

    __slots__ = ("asks", "bids", "book")

    def __init__(self) -> None:
        self.bids = Side(bids=True)
        self.asks = Side(bids=False)
        self.book: OrderBook | None = None

    def apply(self, levels: Any, bids: bool) -> None:
        side = self.bids if bids else self.asks
        for price, size in levels:
            side.set(float(price), float(size))

    @staticmethod
    def _levels(side: Side) -> tuple[Level, ...]:
        levels = side.levels
        return tuple((p, levels[p]) for p in side.best(None))

    def seal(self, topic: str, frame: dict[str, Any], snapshot: bool) -> OrderBook:
        """Check the book against the frame, then its ``OrderBook``."""
        depth: int | None = frame.get("depth")
        if depth is not None and (len(self.bids) > depth or len(self.asks) > depth):
            raise BookError(
                topic,
                f"{len(self.bids)} bids and {len(self.asks)} asks after u={frame['u']}, "
                f"more than the depth {depth}",
            )
        bids, asks = self._levels(self.bids), self._levels(self.asks)
        cs = checksum(bids[:CHECKSUM_DEPTH], asks[:CHECKSUM_DEPTH])
        if cs != frame["cs"]:
            raise BookError(topic, f"cs {frame['cs']} at u={frame['u']}, the book's is {cs}")
        self.book = OrderBook(topic, frame["s"], depth, frame["u"], cs, bids, asks, snapshot)
        return self.book


class LocalBooks:
    """Every book topic's local book, fed the ``book`` frames in the order they came."""

    def __init__(self) -> None:
        self._books: dict[str, _Local] = {}

    def get(self, topic: str) -> OrderBook | None:
        """The topic's book after its last frame; None before its snapshot."""
        local = self._books.get(topic)
        return None if local is None else local.book

    def clear(self) -> None:
        """Forget every book: the link ended, and the next session starts from snapshots."""
        self._books.clear()

    def accept(self, frame: dict[str, Any]) -> OrderBook:
        """Apply one ``book`` frame; its topic's book after it, or ``BookError``."""
        topic = book_topic(str(frame.get("s")), frame.get("depth"))
        try:
            return self._accept(topic, frame)
        except (KeyError, TypeError, ValueError) as exc:
            raise BookError(topic, f"malformed book frame ({exc!r}): {frame}") from None

    def _accept(self, topic: str, frame: dict[str, Any]) -> OrderBook:
        if frame.get("snapshot"):
            local = self._books[topic] = _Local()
        else:
            old = self._books.get(topic)
            if old is None or old.book is None:
                raise BookError(topic, f"a delta (u={frame['u']}) before any snapshot")
            if frame["pu"] != old.book.u:
                raise BookError(
                    topic, f"pu {frame['pu']} does not chain to the last u {old.book.u}"
                )
            if frame["u"] <= old.book.u:
                raise BookError(topic, f"u {frame['u']} does not follow {old.book.u}")
            local = old
        local.apply(frame["bids"], bids=True)
        local.apply(frame["asks"], bids=False)
        return local.seal(topic, frame, bool(frame.get("snapshot")))
