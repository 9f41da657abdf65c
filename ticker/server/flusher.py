"""One flush loop for every connection: the hot path from mailboxes to sockets.

A connection that gets something to send marks itself dirty (once, however many ticks
arrive); the flusher then writes each dirty connection at most once per pass. That is one
write per client per pass instead of one per tick, and no task switch per client.

Coalescing costs nothing when there is no pressure: a pass runs on the loop iteration
after the first mark, so a tick goes out as soon as the publish that brought it returns,
and everything published in the same iteration (a feed's batch, every publisher whose
request was read) shares the pass. Under load a pass takes time; what is published
meanwhile waits for the next one, so frames get fuller and the cost per tick falls
exactly when it has to. No timer ever holds a pass back: a hold buys fuller frames only
if more ticks arrive during it, and measured, it cost latency at every load and bought
no throughput the back-to-back passes of a saturated loop do not already get
(docs/performance.md).
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

    def __init__(self, after_pass: Callable[[], None] | None = None) -> None:
        self.after_pass = after_pass
        """Called at the end of every pass (the metrics settle their per-pass counts)."""
        self._dirty: list[Flushable] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def mark(self, conn: Flushable) -> None:
        """Queue ``conn`` for the next pass (callers mark each connection once per pass)."""
        self._dirty.append(conn)
        if self._scheduled:
            return
        self._scheduled = True
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """One pass: write every dirty connection once; a failing one is aborted alone."""
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        assert self._loop is not None
        start = self._loop.time()
        for conn in dirty:
            try:
                conn.flush(start)
            except Exception:  # a bug must cost one connection, never the whole pass
                log.exception("flush failed; aborting the connection")
                conn.abort()
        if self.after_pass is not None:
            self.after_pass()
