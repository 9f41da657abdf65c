"""What the server needs of a market-data source, and nothing more.

The bus does not care where ticks come from: a simulator, an exchange socket or a replay
file all look the same to it once they are wrapped in a ``FeedAdapter``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from ticker.core.ticks import TickBatch


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
