"""One flush loop for every connection: the hot path from mailboxes to sockets.

A connection that gets something to send marks itself dirty (once, however many ticks
arrive); the flusher then writes each dirty connection at most once per pass. That is one
write per client per pass instead of one per tick, and no task switch per client.

Coalescing adapts to load. When the server is idle a pass runs on the next loop
iteration, so a tick goes out at once. Under load a pass takes time, and the next one is
held back by as long as the last one took (at most ``max_linger``): ticks accumulate,
frames get fuller and the cost per tick falls — exactly when it has to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("ticker.server")


class Flushable(Protocol):
    """What the flusher needs of a connection, whatever its transport."""

    def flush(self, now: float) -> None:
        """Write what is pending, as far as the transport takes it without buffering."""

    def abort(self) -> None:
        """Drop the connection (used when its flush failed unexpectedly)."""


class Flusher:
    """The one flush loop of a node: one write per dirty connection per pass."""

    def __init__(
        self, max_linger: float = 0.005, after_pass: Callable[[], None] | None = None
    ) -> None:
        self.max_linger = max_linger
        self.after_pass = after_pass
        """Called at the end of every pass (the metrics settle their per-pass counts)."""
        self._dirty: list[Flushable] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_end = 0.0
        self._last_duration = 0.0

    def mark(self, conn: Flushable) -> None:
        """Queue ``conn`` for the next pass (callers mark each connection once per pass)."""
        self._dirty.append(conn)
        if self._scheduled:
            return
        self._scheduled = True
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        hold = min(self._last_duration, self.max_linger) - (loop.time() - self._last_end)
        if hold > 0:
            loop.call_later(hold, self.flush)
        else:
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """One pass: write every dirty connection once; a failing one is aborted alone."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        assert self._loop is not None
        time = self._loop.time
        start = time()
        for conn in dirty:
            try:
                conn.flush(start)
            except Exception:  # a bug must cost one connection, never the whole pass
                log.exception("flush failed; aborting the connection")
                conn.abort()
        if self.after_pass is not None:
            self.after_pass()
        end = time()
        self._last_end = end
        self._last_duration = end - start
