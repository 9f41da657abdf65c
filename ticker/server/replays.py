"""Replays on demand (``--replay-dir``): the ops' server side and the one task that paces
every client's replay.

Sources are the recordings under the directory, named by their relative path. Loading
runs in a worker thread (a big JSON Lines file must not stall the loop), at most
``MAX_LOADS`` at a time, and loaded tables are cached (by path, size and mtime) for the
next client. One task steps every active replay: each is due at its own time, and the
task sleeps until the earliest, or until an op changes something. That is one task for
all clients, and nothing per tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from feeds.replay.adapter import select
from ticker.core import protocol
from ticker.core.codes import ErrorCode
from ticker.core.protocol import Op, ProtocolError, RequestId
from ticker.core.session import Session
from ticker.core.ticks import MicrosClock, now_us
from ticker.recording.book_lines import BookLog
from ticker.recording.columnar import is_columnar_dir
from ticker.recording.formats import load
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.schedule import ReplayOptions
from ticker.recording.table import TickTable
from ticker.server.client_replay import ClientReplay, safe_parts

log = logging.getLogger("ticker.replays")

MAX_LOADS = 2
CACHED_TABLES = 4
MAX_LISTED = 1000
"""Sources listed at most (a directory of many files must not make a huge reply)."""


def resolve_source(root: Path, name: str, rid: RequestId = None) -> Path:
    """The recording ``name`` stands for under ``root``, or ``unknown_source``."""
    parts = safe_parts(name)
    if parts is not None:
        path = root.joinpath(*parts)
        if path.resolve().is_relative_to(root.resolve()) and path.exists():
            return path
    raise ProtocolError(
        ErrorCode.UNKNOWN_SOURCE, f"no replay source {name[:80]!r}; see list_replays", id=rid
    )


class ReplayPump:
    """The ``ReplayHost`` of a node: sessions hand it their replay ops."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: MicrosClock = now_us,
    ) -> None:
        if not directory.is_dir():
            raise ValueError(f"{directory} is not a directory")
        self.directory = directory
        self._clock = clock
        self._wall_clock = wall_clock
        self.active: dict[Session, ClientReplay] = {}
        self._loading: dict[Session, asyncio.Task[None]] = {}
        self._loads = asyncio.Semaphore(MAX_LOADS)
        self._cache: OrderedDict[tuple[str, int, int], tuple[TickTable, BookLog]] = OrderedDict()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the ops --------------------------------------------------------------------------

    def handle(self, session: Session, op: Op) -> None:
        """The replay ops of one session; a bad op is an error frame, not a raise."""
        try:
            if op.op == "list_replays":
                session.send_control(protocol.replays(self.sources(), op.id))
            elif op.op == "replay":
                self._start(session, op)
            else:
                self._control(session, op)
        except ProtocolError as exc:
            session.send_error(exc)

    def stop(self, session: Session) -> None:
        """End the session's replay, or its load in progress (it left, or replays)."""
        replay = self.active.pop(session, None)
        if replay is not None:
            replay.books.stop()
        task = self._loading.pop(session, None)
        if task is not None:
            task.cancel()

    def busy(self, session: Session) -> bool:
        """A replaying session is not idle, whatever it has subscribed."""
        return session in self.active or session in self._loading

    def sources(self) -> list[dict[str, Any]]:
        """What ``list_replays`` answers: the recordings under the directory."""
        found: list[dict[str, Any]] = []
        for path in sorted(self.directory.rglob("*")):
            if len(found) >= MAX_LISTED:
                break
            relative = path.relative_to(self.directory)
            if any(part.startswith(".") for part in relative.parts):
                continue
            if is_columnar_dir(path):
                size = sum(f.stat().st_size for f in path.iterdir())
            elif path.is_file() and not is_columnar_dir(path.parent):
                size = path.stat().st_size
            else:
                continue
            found.append({"name": relative.as_posix(), "bytes": size})
        return found

    def _start(self, session: Session, op: Op) -> None:
        path = resolve_source(self.directory, op.args["source"], op.id)
        self.stop(session)  # one replay per connection: a new one replaces the old
        self._loading[session] = asyncio.create_task(
            self._load_and_start(session, op, path), name=f"replay-load:{session.id}"
        )

    async def _load_and_start(self, session: Session, op: Op, path: Path) -> None:
        args = op.args
        try:
            async with self._loads:
                table, log = await asyncio.to_thread(self._table, path)
            names = [*table.symbols, *sorted(log.symbols())]
            symbols, end = self._allowed(session, names, op.symbols, args["to"])
            books = BookLog(log.rows, log.lines)  # the window replaces its lists, not these
            table = select(table, args["source"], symbols, args["from"], end, books)
        except (RecordingError, OSError) as exc:
            self._loading.pop(session, None)
            session.send_error(ProtocolError(ErrorCode.BAD_SOURCE, str(exc), id=op.id))
            return
        if self._loading.pop(session, None) is None or session.close_request is not None:
            return
        options = ReplayOptions(args["speed"], args["loop"], args["keep_time"])
        now = self._clock()
        replay = ClientReplay(
            session,
            args["source"],
            table,
            options,
            now=now,
            wall_us=self._wall_clock(),
            books=books,
        )
        ticked = {table.symbols[i] for i in set(table.sym.tolist())}
        session.send_control(
            protocol.replay_started(
                source=args["source"],
                ticks=len(table),
                symbols=sorted(ticked | books.symbols()),
                start=replay.replay.first,
                end=replay.replay.last,
                speed=options.speed,
                rid=op.id,
            )
        )
        replay.books.start()
        self.active[session] = replay
        self._changed.set()

    def _allowed(
        self, session: Session, names: list[str], symbols: list[str], end: int | None
    ) -> tuple[list[str] | None, int | None]:
        """What the client's token lets it replay: its entitled symbols (the session has
        already refused named ones it is not entitled to) and, for a delayed client,
        nothing newer than its delay (a recording being written is nearly live)."""
        principal = session.principal
        entitlements = principal.entitlements
        chosen = symbols or (None if entitlements.everything else entitlements.filter(names))
        if principal.delay_s:
            cutoff = self._wall_clock() - round(principal.delay_s * 1_000_000)
            end = cutoff if end is None else min(end, cutoff)
        return chosen, end

    def _table(self, path: Path) -> tuple[TickTable, BookLog]:
        """Load (in a worker thread), or take from the cache if the file has not changed."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        cached = self._cache.get(key)
        if cached is None:
            log = BookLog()
            cached = load([path], Problems(), books=log), log
            self._cache[key] = cached
            while len(self._cache) > CACHED_TABLES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return cached

    def _control(self, session: Session, op: Op) -> None:
        replay = self.active.get(session)
        if replay is None:
            raise ProtocolError(
                ErrorCode.NO_REPLAY, "no replay is running on this connection", id=op.id
            )
        now = self._clock()
        replay.control(op.args, now)
        session.send_control(replay.state(now, op.id))
        self._changed.set()

    # -- pacing -------------------------------------------------------------------------

    async def run(self) -> None:
        """The one task for every replay: step each, sleep until the earliest is due."""
        while True:
            now = self._clock()
            earliest: float | None = None
            for session, replay in list(self.active.items()):
                wait = replay.step(now)
                if wait is None:
                    del self.active[session]
                    session.send_control(replay.state(now))  # "ended"
                    continue
                earliest = wait if earliest is None else min(earliest, wait)
            self._changed.clear()
            if earliest == 0:
                await asyncio.sleep(0)
                continue
            try:
                async with asyncio.timeout(earliest):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def attach(self, app: web.Application) -> None:
        """Run the task for the app's life; cancel it and any loads at cleanup."""

        async def context(app: web.Application) -> AsyncIterator[None]:
            self._task = asyncio.create_task(self.run(), name="replays")
            yield
            self._task.cancel()
            for task in self._loading.values():
                task.cancel()

        app.cleanup_ctx.append(context)
