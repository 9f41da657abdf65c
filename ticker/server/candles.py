"""Candle topics (``SYMBOL@1m``) on a node: the bus feeds the bars, one task sends them.

The bars are built from the live bus by a ``Tape`` on "*" (a publish costs it a
reference, like any subscriber) and ``Candles`` (``ticker/core/candles.py``). One task
aggregates what the tape held every 20 ms, and every ``update_s`` closes the quiet
symbols' bars that are due and sends each follower one ``candles`` frame with the bars
of its topics that changed: closed bars once with ``x: true``, the open bar at most once per
pass (that is the conflation). Frames go to the session's control outbox, so they keep
its order and its bound, over every transport.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from ticker.core import protocol
from ticker.core.bus import WILDCARD, Bus
from ticker.core.candles import BAR, CANDLES, Candles, Key, encode
from ticker.core.session import Session
from ticker.core.tape import Tape
from ticker.core.topics import DerivedTopic

log = logging.getLogger("ticker.candles")

DEFAULT_UPDATE_S = 0.25
AGGREGATE_S = 0.02
"""The tape is aggregated this often between sends: decoding a quarter of a second of a
busy stream at once held the loop for milliseconds (every client's p99); in 20 ms
slices the same work never holds it for long."""
_NONE = np.zeros(0, BAR)


class CandleService:
    """Serves the ``candles`` kind of derived topic (a ``DerivedHost`` of the session)."""

    kind = CANDLES

    def __init__(
        self,
        bus: Bus,
        *,
        depth: int,
        update_s: float = DEFAULT_UPDATE_S,
        partial_start: bool = False,
    ) -> None:
        self.bus = bus
        self.candles = Candles(depth=depth, partial_start=partial_start)
        self.max_history = depth
        self.update_s = update_s
        self.tape = Tape()
        self._followers: dict[Key, set[Session]] = {}
        self._closed: dict[Key, list[np.ndarray]] = {}
        """Bars closed since the last pass, by series (followed ones only)."""
        self._seen: dict[tuple[Session, Key], int] = {}
        """How many of ``_closed`` a new follower's history already held."""
        self._task: asyncio.Task[None] | None = None
        self.on_closed: Callable[[list[tuple[Key, np.ndarray]]], None] | None = None
        """Given every bar closed, followed or not (the cluster's store of bars)."""

    def start(self) -> None:
        """Follow the whole bus and start the task that sends the bars."""
        self.bus.subscribe(self.tape, [WILDCARD])
        self._task = asyncio.create_task(self._run(), name="candles")

    async def stop(self) -> None:
        """Stop sending (the node is shutting down)."""
        self.bus.unsubscribe(self.tape, [WILDCARD])
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        send_at = loop.time() + self.update_s
        while True:
            await asyncio.sleep(max(0.0, min(AGGREGATE_S, send_at - loop.time())))
            if loop.time() >= send_at:
                self.pump()
                send_at = max(send_at + self.update_s, loop.time())
            else:
                self._aggregate()

    def _aggregate(self) -> None:
        """Aggregate what the tape holds; the bars it closed wait for the next pass."""
        if len(self.tape):
            closed = self.candles.add(self.tape.take())
            self._keep(closed)
            for key, rows in closed:
                if key in self._followers:
                    self._closed.setdefault(key, []).append(rows)

    def _keep(self, closed: list[tuple[Key, np.ndarray]]) -> None:
        if closed and self.on_closed is not None:
            self.on_closed(closed)

    def pump(self) -> None:
        """One pass: aggregate what the bus published, close what is due, send changes."""
        self._aggregate()
        closed, self._closed = self._closed, {}
        due = self.candles.close_due()
        self._keep(due)
        for key, rows in due:
            if key in self._followers:
                closed.setdefault(key, []).append(rows)
        opened = {key: row for key, row in self.candles.take_dirty() if key in self._followers}
        seen, self._seen = self._seen, {}
        frames: dict[Session, list[bytes]] = {}
        for key in closed.keys() | opened.keys():
            rows = np.concatenate(closed[key]) if key in closed else _NONE
            bars = encode(key, rows, opened.get(key, _NONE))
            for session in self._followers[key]:
                skip = seen.get((session, key), 0)  # in the history it was sent already
                frames.setdefault(session, []).extend(bars[skip:])
        for session, bars in frames.items():
            if bars:
                session.send_control(protocol.candles(bars))

    def history(self, key: Key, limit: int, end: int | None = None) -> list[bytes]:
        """The last ``limit`` closed bars of a series and its open one, encoded, as of
        now: what the tape holds is aggregated first (its closed bars still go to the
        followers on the next pass)."""
        self._aggregate()
        closed, opened = self.candles.history(key, limit, end)
        return encode(key, closed, opened)

    def follow(self, session: Session, topics: list[DerivedTopic], history: int) -> None:
        """Queue each topic's history (``history`` closed bars and the open one), then
        follow it: a bar closed by bringing it up to date goes to the older followers on
        the next pass, not again to this one."""
        for topic in topics:
            key = (topic.base, topic.suffix)
            bars = self.history(key, history)
            self._followers.setdefault(key, set()).add(session)
            pending = sum(map(len, self._closed.get(key, ())))
            if pending:
                self._seen[session, key] = pending
            session.send_control(protocol.candles(bars))

    def unfollow(self, session: Session, topics: list[DerivedTopic]) -> None:
        """Send the session no more of these topics."""
        for topic in topics:
            key = (topic.base, topic.suffix)
            followers = self._followers.get(key)
            if followers is not None:
                followers.discard(session)
                if not followers:
                    del self._followers[key]
