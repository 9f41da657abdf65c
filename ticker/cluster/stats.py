"""The relay's plain counters: written by its parts, read by metrics and ``/readyz``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RedisStats:
    """Plain counters for metrics and ``/readyz``; gaps are in ``Continuity``."""

    link_up: bool = False
    link_losses: int = 0
    reconnects: int = 0
    messages_published: int = 0
    ticks_published: int = 0
    ticks_dropped: int = 0
    """Local ticks never published: the link was down or Redis too slow."""
    messages_received: int = 0
    ticks_received: int = 0
    ticks_from_hash: int = 0
    """Ticks taken from the last-values hash (newly followed symbols and healed gaps)."""
    bad_messages: int = 0


@dataclass(slots=True)
class BookRelayStats:
    """The book relay's counters (``book_relay.py``), for metrics and tests."""

    link_up: bool = False
    entries_sent: int = 0
    """Change sets (and whole books) this owner sent."""
    entries_received: int = 0
    gaps: int = 0
    """Change sets that did not follow their book's ``u``: the book was read from its list."""
    books_read: int = 0
    """Books' lists read (at start, after a reconnect, for a gap)."""
    bad_messages: int = 0
