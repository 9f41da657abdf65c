"""What the server needs of a market-data source, and nothing more.

The bus does not care where ticks come from: a simulator, an exchange socket or a replay
file all look the same to it once they are wrapped in a ``FeedAdapter``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ticker.core.books import BookSink
from ticker.core.status import StatusSink
from ticker.core.ticks import TickBatch


class FeedFatal(Exception):
    """A feed that can never work as it was configured (an exchange refused every one of
    its products): not restarted; ``ticker serve`` stops and exits with status 2, the
    message its one line, rather than serve nothing for good."""


@runtime_checkable
class FeedAdapter(Protocol):
    """A source of tick batches; ``FeedSupervisor`` restarts it when it fails."""

    name: str
    """Short and stable: it labels logs and metrics."""

    def symbols(self) -> list[str]:
        """The feed's universe, known before the first tick so clients can subscribe early."""
        ...

    def stream(self) -> AsyncIterator[TickBatch]:
        """Yield batches forever (or until a finite source is done).

        Ticks carry ``s`` and ``p`` and optionally ``b``, ``a`` and ``v``; the bus stamps
        ``t`` and ``q``. Batches amortise the per-publish cost, so yield many ticks at once.
        Each call starts a fresh stream: that is how the supervisor restarts a failed feed.
        """
        ...


@dataclass(frozen=True, slots=True)
class FeedProgress:
    """Where a finite feed (a replay) is: what ``ReportsProgress.progress`` returns."""

    position_s: float
    """The source's own time of the last tick it yielded, in Unix seconds."""
    fraction: float | None = None
    """How much of the source is done, from 0 to 1, when its end is known."""


@runtime_checkable
class ReportsProgress(Protocol):
    """Optional for a ``FeedAdapter``: a feed that has this method (a replay) gets its
    position and progress exported as ``ticker_feed_replay_position_seconds`` and
    ``ticker_feed_replay_progress_ratio``. It is called at scrape time, so keep it cheap."""

    def progress(self) -> FeedProgress | None:
        """The current position, or ``None`` while there is none yet."""
        ...


@runtime_checkable
class ReportsStatus(Protocol):
    """Optional for a ``FeedAdapter``: a feed that knows each symbol's state itself (an
    exchange feed: which connection is down, which product the exchange refused) is given
    the node's ``StatusSink`` before it starts and reports through it. A feed without this
    method gets its status from its supervisor: all its symbols ``stale`` while it is
    failing, ``closed`` when it ends."""

    def bind_status(self, sink: StatusSink) -> None:
        """Report per-symbol status to ``sink`` from now on."""
        ...


@runtime_checkable
class ReportsBooks(Protocol):
    """Optional for a ``FeedAdapter``: a feed that knows order books (the simulator, a
    recording with books, an exchange's depth channel) is given the node's ``BookSink``
    before it starts and hands it absolute level changes (``ticker/core/books.py``); a
    restart of the feed must begin with a ``reset`` of each of its books."""

    def bind_books(self, sink: BookSink) -> None:
        """Hand level changes to ``sink`` from now on."""
        ...


@runtime_checkable
class ResyncsBooks(Protocol):
    """Optional for a ``ReportsBooks`` feed that can fetch a book afresh (an exchange
    feed): the node calls it when one of its books came out crossed or locked, which a
    sound source never gives; the feed brings a new snapshot (a ``reset``) for it."""

    def resync_book(self, symbol: str, reason: str) -> None:
        """Fetch ``symbol``'s whole book again, soon; its changes until then still count."""
        ...
