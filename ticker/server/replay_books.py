"""The books of one client's on-demand replay: the recording's book rows, for the book
topics the client follows when the replay starts.

The replay keeps books of its own (the engine's ``Books``, apart from the node's live
ones), so its frames chain among themselves: a snapshot when the replay starts, then
deltas, each marked ``"r": 1`` like replayed ticks, which is how a client keeps the
replayed book apart from the live one of the same topic. A slow reader gets them merged
per level (``BookFollower``), as live book frames are: bounded whatever the speed. A new
pass and a seek start each book over with a reset (the book as it stood at that point
of the recording), sent as an ordinary delta.
"""

from __future__ import annotations

from ticker.core.books import BOOKS, SUFFIXES, Book, BookDelta, BookFollower, Books, Level
from ticker.core.session import Session
from ticker.recording.book_lines import BookLog, whole
from ticker.recording.schedule import Replay, Timed

REPLAYED = b',"r":1}'


def _mark(frame: bytes) -> bytes:
    """A book frame (a JSON object) with ``"r": 1`` added."""
    return frame[:-1] + REPLAYED


class ReplayedFollower(BookFollower):
    """A ``BookFollower`` whose frames say they are replayed."""

    __slots__ = ()

    def take(self) -> list[bytes]:
        """The frames to write now, each marked ``"r": 1``."""
        return [_mark(frame) for frame in super().take()]


class ReplayBooks:
    """The replay's books and the client's followers of them (one per topic)."""

    __slots__ = ("_begun", "_depths", "_followers", "books", "log", "rows", "session")

    def __init__(self, session: Session, log: BookLog) -> None:
        self.session = session
        self.log = log
        self.rows = Timed(log.times())
        self.books = Books()
        symbols = log.symbols()
        topics = [
            (t.base, SUFFIXES[t.suffix])
            for t in session.derived.values()
            if t.kind == BOOKS.name and t.base in symbols
        ]
        self._depths: dict[str, list[int | None]] = {}
        for base, depth in topics:
            self._depths.setdefault(base, []).append(depth)
        self._followers = {
            (base, depth): ReplayedFollower(base, depth, 0) for base, depth in topics
        }
        self._begun: set[str] = set()

    def start(self) -> None:
        """Send each followed topic's snapshot of the replay (empty: its rows come next)."""
        for base, depth in self._followers:
            self.session.send_control(_mark(self.books.book(base).snapshot(depth)))

    def __bool__(self) -> bool:
        return bool(self._followers)

    def step(self, replay: Replay, now: float) -> None:
        """Apply the rows the replay has reached and offer their frames."""
        for i in self.rows.reached(replay.reached(now)):
            row = self.log.rows[i]
            self._apply(row.s, row.bids, row.asks, row.reset or row.s not in self._begun)

    def new_pass(self) -> None:
        """A loop's next pass: the rows come again, each book starting over."""
        self.rows.done = 0
        self._begun.clear()

    def seek(self, t_us: int) -> None:
        """Go on from recording time ``t_us``: each book reset to what it was there."""
        rows = self.log.rows
        held: dict[str, Book] = {}
        done = 0
        while done < len(rows) and rows[done].t < t_us:
            row = rows[done]
            book = held.setdefault(row.s, Book(row.s))
            (book.reset if row.reset else book.apply)(row.bids, row.asks, ())
            done += 1
        self.rows.done = done
        self._begun = set(held)
        for symbol in self._depths:
            book = held.get(symbol) or Book(symbol)
            self._apply(symbol, *whole(book), True)

    def wait(self, replay: Replay, now: float) -> float | None:
        """Seconds until the next row is due (None: none left, or the clock stands)."""
        return self.rows.wait(replay, now) if self else None

    @property
    def done(self) -> bool:
        """Every row of this pass is out (or the client follows none of the books)."""
        return not self or self.rows.done >= len(self.log)

    def stop(self) -> None:
        """The replay ended or was replaced: nothing more is written of it."""
        for follower in self._followers.values():
            self.session.forget_frames(follower)
        self._followers = {}

    def _apply(self, symbol: str, bids: list[Level], asks: list[Level], reset: bool) -> None:
        self._begun.add(symbol)
        depths = self._depths.get(symbol)
        if depths is None:
            return  # a book the client does not follow
        for delta in self.books.apply(symbol, bids, asks, depths, reset=reset):
            self._offer(delta)

    def _offer(self, delta: BookDelta) -> None:
        follower = self._followers[(delta.symbol, delta.depth)]
        if follower.offer(delta):
            self.session.frames_ready(follower)
