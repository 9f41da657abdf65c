"""``ticker serve --record DIR``: everything the bus publishes, logged off the hot path.

The recorder is one more bus subscriber: a mode ``all`` mailbox on "*", so a publish costs
it what it costs any client (a reference to the batch's bytes). A task drains the mailbox
and writes in a worker thread (decoding, compressing and disk I/O never run on the event
loop). The mailbox is bounded like any other: if the disk cannot keep up by more than
``queue_bytes``, what was queued is lost and logged (the broadcast itself never waits).
At shutdown, after the feeds have stopped, the rest is drained and the files closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from aiohttp import web

from ticker.core.bus import WILDCARD, Bus
from ticker.core.mailbox import QueueMailbox
from ticker.recording.rotating import RotatingRecorder

log = logging.getLogger("ticker.recorder")

QUEUE_BYTES = 64 * 1024 * 1024
DRAIN_BYTES = 4 * 1024 * 1024
"""Bytes of ticks handed to the writer thread at once."""


class BusRecorder:
    """The bus subscriber behind ``--record``: writes off the event loop, never slows a publish."""

    def __init__(
        self,
        bus: Bus,
        directory: Path,
        *,
        suffix: str = ".jsonl.gz",
        max_bytes: int = 1 << 30,
        queue_bytes: int = QUEUE_BYTES,
    ) -> None:
        self.bus = bus
        self.log = RotatingRecorder(directory, suffix=suffix, max_bytes=max_bytes)
        self._ready = asyncio.Event()
        self.mailbox = QueueMailbox(queue_bytes, self._ready.set)
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Subscribe to "*" and start the task that drains to disk."""
        self.bus.subscribe(self.mailbox, [WILDCARD])
        self._task = asyncio.create_task(self._run(), name="recorder")

    async def _run(self) -> None:
        while not self._closing:
            await self._ready.wait()
            self._ready.clear()
            await self._drain()

    async def _drain(self) -> None:
        mailbox = self.mailbox
        if mailbox.overflowed:
            log.error("recorder fell more than %d bytes behind: ticks lost", mailbox.limit_bytes)
            mailbox.overflowed = False
        while len(mailbox):
            segments, _ = mailbox.drain(DRAIN_BYTES)
            await asyncio.to_thread(self._write, segments)

    def _write(self, segments: list[bytes]) -> None:
        ticks = orjson.loads(b"[" + b",".join(segments) + b"]")
        self.log.write(ticks)

    async def close(self) -> None:
        """Drain what the bus already published, then close the files."""
        self.bus.unsubscribe(self.mailbox, [WILDCARD])
        self._closing = True
        self._ready.set()
        if self._task is not None:
            await self._task  # never cancelled mid-write: one writer thread at a time
        await self._drain()
        await asyncio.to_thread(self.log.close)
        log.info("recorded %d ticks in %d file(s)", self.log.ticks, len(self.log.files))

    def attach(self, app: web.Application) -> None:
        """Run with the app: started at startup, drained and closed at cleanup (by then
        ``Node.shutdown`` has stopped the feeds, so nothing published is left out)."""

        async def context(app: web.Application) -> AsyncIterator[None]:
            self.start()
            yield
            await self.close()

        app.cleanup_ctx.append(context)
