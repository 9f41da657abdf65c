"""Book topics (``SYMBOL@book10``) on a node: sources' level changes in, frames out.

Sources (the simulator, a replay, an exchange feed, a publisher) hand change sets to
``submit``; they wait in ``PendingChanges``, merged per level, and a pass every
``interval_s`` applies one change set per symbol to its ``Book`` (``ticker/core/books.py``)
and offers each followed depth's delta to its followers. A follower's frames are taken
when its client is next written to (``Session.frames_ready``), so a client that reads
slowly leaves them merging per level in its ``BookFollower``: never closed, never a
resync. The pass bounds the cost of a fast source: whatever it sends, each client gets
at most one frame per topic per pass.

What a pass applied goes to ``on_applied`` (the cluster, the recorder), so another node
applying the same change sets gets the same ``u`` and ``cs``; ``apply`` is how it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from ticker.core.books import (
    BOOKS,
    SUFFIXES,
    Applied,
    Book,
    BookDelta,
    BookFollower,
    Books,
    Level,
    PendingChanges,
)
from ticker.core.session import Session
from ticker.core.status import LIVE, STALE, StatusSink
from ticker.core.topics import DerivedTopic

log = logging.getLogger("ticker.books")

DEFAULT_INTERVAL_S = 0.05
"""A pass every 50 ms: a book topic updates at most 20 times a second per client
(Coinbase's batched level2 is 50 ms, Binance's fastest diff stream 100 ms)."""
CROSSED_REASON = "book crossed or locked: the source must resync"

Topic = tuple[str, int | None]
"""(symbol, depth): a book topic; depth None is every level."""


class BookService:
    """Serves the ``books`` kind of derived topic (a ``DerivedHost`` of the session)."""

    kind = BOOKS
    max_history = 0

    def __init__(
        self, *, interval_s: float = DEFAULT_INTERVAL_S, status: StatusSink | None = None
    ) -> None:
        self.books = Books()
        self.interval_s = interval_s
        self.pending = PendingChanges()
        self._status = status
        self._followers: dict[Topic, dict[Session, BookFollower]] = {}
        self._depths: dict[str, list[int | None]] = {}
        """Symbol -> the depths someone follows (what a pass builds deltas for)."""
        self._timer: asyncio.TimerHandle | None = None
        self._last_pass = 0.0
        self.on_applied: list[Applied] = []
        self.on_crossed: list[Callable[[str, str], None]] = []
        """Told ``(symbol, reason)`` when a book comes out crossed or locked: its feed's
        resync (``feeds.supervisor.book_resyncs``)."""
        self.changes = 0
        """Level changes submitted, for metrics."""
        self.applied = 0
        """Level changes applied: ``changes`` less those a later one of the same level in
        the same pass made moot."""
        self.passes = 0
        """Passes that applied something."""
        self.crossed = 0
        """Times a book became crossed or locked after a pass (a source's fault)."""
        self._stale: set[str] = set()

    # -- the way in -------------------------------------------------------------------

    def submit(
        self, symbol: str, bids: Iterable[Level], asks: Iterable[Level], reset: bool = False
    ) -> None:
        """A source's change set (a ``BookSink``): applied on the next pass."""
        bids, asks = list(bids), list(asks)
        self.changes += len(bids) + len(asks)
        self.pending.add(symbol, bids, asks, reset)
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a unit test): ``pump`` is called by hand
            delay = max(0.0, self._last_pass + self.interval_s - loop.time())
            self._timer = loop.call_later(delay, self.pump)

    def pump(self) -> None:
        """One pass: apply what is pending, one change set per symbol, and deliver."""
        self._timer = None
        with contextlib.suppress(RuntimeError):
            self._last_pass = asyncio.get_running_loop().time()
        if len(self.pending):
            self.passes += 1
        for symbol, reset, bids, asks in self.pending.take():
            self.apply(symbol, reset, bids, asks)

    def apply(
        self,
        symbol: str,
        reset: bool,
        bids: list[Level],
        asks: list[Level],
        u: int | None = None,
    ) -> bool:
        """Apply one change set now and deliver its frames; ``on_applied`` hears it if it
        changed the book. ``u``: the number the book's owner gave it (a node applying
        another's change sets, ``ticker/cluster/book_relay.py``): one this book already
        has is skipped; the next (``book.u + 1``) is applied under that number; a reset
        numbered further on is a catch-up: the book becomes the owner's, ``u`` included,
        and followers get one delta to it. Any other is a gap: False, nothing applied,
        and the caller must bring the owner's book. Only the owner reports a crossed book
        (statuses travel on their own)."""
        book = self.books.book(symbol)
        if u is not None:
            if u <= book.u:
                return True
            if u != book.u + 1 and not reset:
                return False
        before = book.u
        depths = self._depths.get(symbol, ())
        self.applied += len(bids) + len(asks)
        deltas = self.books.apply(symbol, bids, asks, depths, reset=reset, u=u)
        if u is None:
            self._check_crossed(book, reset)
        else:
            book.u = u  # a reset that changed nothing here still takes the owner's number
        for delta in deltas:
            self._deliver(delta)
        if book.u != before:
            for listener in self.on_applied:
                listener(symbol, reset, bids, asks, book.u)
        return True

    def forget(self, symbols: Iterable[str]) -> None:
        """Drop these books: their owner numbers them anew (the cluster restarted under a
        new epoch, and the node closes its clients so that they resubscribe)."""
        for symbol in symbols:
            self.books.forget(symbol)

    def renumber(self, symbol: str, u: int) -> None:
        """Number the book on from ``u`` (its owner restarted: the cluster's count of it is
        further on). Nothing changes, so no frame: the next delta chains from each
        follower's last frame."""
        book = self.books.book(symbol)
        book.u = max(book.u, u)

    def _check_crossed(self, book: Book, reset: bool) -> None:
        symbol = book.symbol
        if book.crossed and symbol not in self._stale:
            self.crossed += 1
            self._stale.add(symbol)
            log.warning("book %s crossed or locked at u=%d", symbol, book.u)
            if self._status is not None:
                self._status([symbol], STALE, CROSSED_REASON)
            for listener in self.on_crossed:
                listener(symbol, "the node found it crossed or locked")
        elif symbol in self._stale and not book.crossed:
            self._stale.discard(symbol)
            if self._status is not None:
                self._status([symbol], LIVE, "book uncrossed" if not reset else "book resynced")

    def _deliver(self, delta: BookDelta) -> None:
        followers = self._followers.get((delta.symbol, delta.depth))
        if not followers:
            return
        for session, follower in followers.items():
            if follower.offer(delta):
                session.frames_ready(follower)

    # -- the way out ------------------------------------------------------------------

    def snapshot(self, symbol: str, depth: int | None) -> bytes:
        """The snapshot frame of a topic as of the last pass (``GET /book`` too); a symbol
        no source gave a book has an empty one (``u`` 0), not kept."""
        book = self.books.get(symbol)
        return (book or Book(symbol)).snapshot(depth)

    def follow(self, session: Session, topics: list[DerivedTopic], history: int) -> None:
        """Queue each topic's snapshot, then follow it from that snapshot's ``u``."""
        for topic in topics:
            depth = SUFFIXES[topic.suffix]
            book = self.books.book(topic.base)
            followers = self._followers.setdefault((topic.base, depth), {})
            if session in followers:
                continue
            session.send_control(book.snapshot(depth))
            followers[session] = BookFollower(topic.base, depth, book.u)
            depths = self._depths.setdefault(topic.base, [])
            if depth not in depths:
                depths.append(depth)

    def unfollow(self, session: Session, topics: list[DerivedTopic]) -> None:
        """Send the session no more of these topics."""
        for topic in topics:
            depth = SUFFIXES[topic.suffix]
            key = (topic.base, depth)
            followers = self._followers.get(key)
            if followers is None or session not in followers:
                continue
            session.forget_frames(followers.pop(session))
            if not followers:
                del self._followers[key]
                depths = self._depths[topic.base]
                depths.remove(depth)
                if not depths:
                    del self._depths[topic.base]

    def followers(self) -> int:
        """(session, topic) pairs followed, for metrics."""
        return sum(map(len, self._followers.values()))

    async def stop(self) -> None:
        """Apply what is pending (nothing a source gave is lost) and stop the timer."""
        if self._timer is not None:
            self._timer.cancel()
        self.pump()
