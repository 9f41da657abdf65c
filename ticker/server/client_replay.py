"""Replays on demand, the part without I/O: safe source names and one client's private replay.

Here, above the core, because it joins the core's mailbox to the recording's ``Replay``
schedule and ``TickTable``; ``ticker/server/replays.py`` does the loading and the pacing.

A client's replay goes into its own mailbox, the one live ticks go through, so it gets the
same conflation or byte bound and the same flusher. The replay also yields to the client:
it hands over the next batch only while fewer than ``HIGH_WATER`` ticks are pending, so
a slow reader slows its replay down instead of being cut off, and at speed 0 a replay
runs exactly as fast as the client reads. Replayed ticks carry ``"r": 1``, and their
mailbox keys are apart from the live symbols' (a replayed tick never conflates with a
live one, and unsubscribing a live symbol leaves the replay alone). The recording's book
rows go to the book topics the client follows (``replay_books.py``), on the same clock.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import orjson

from ticker.core.mailbox import Delivery, Follows
from ticker.core.protocol import RequestId, replay_state
from ticker.core.session import Session
from ticker.core.ticks import TickBatch
from ticker.recording.book_lines import BookLog
from ticker.recording.schedule import Replay, ReplayOptions, span
from ticker.recording.table import TickTable
from ticker.server.replay_books import ReplayBooks

REPLAY_BATCH = 2048
"""Ticks per delivery: well inside a mode ``all`` queue's default bound."""
HIGH_WATER = 2048
"""Pending ticks in the client's mailbox above which the replay waits for it."""
KEY_PREFIX = "\x00replay\x00"


def safe_parts(name: str) -> tuple[str, ...] | None:
    """The parts of a client's source name if it is a plain relative path, else None.

    No absolute path, no ``..`` or ``.hidden`` part, no backslash or NUL: a client's path is
    never trusted. (The server also checks that the path, symlinks resolved, stays under
    the replay directory.)
    """
    pure = PurePosixPath(name)
    parts = pure.parts
    if (
        pure.is_absolute()
        or "\\" in name
        or "\x00" in name
        or not parts
        or any(part in ("..", ".") or part.startswith(".") for part in parts)
    ):
        return None
    return parts


class _PrivateDelivery(Delivery):
    """A batch for one mailbox only: every key is taken, whatever the mailbox follows."""

    __slots__ = ()

    def _pick(self, follows: Follows) -> list[str]:
        return list(self.segments)


class ClientReplay:
    """One client's replay: the schedule, and delivery into that client's mailbox."""

    __slots__ = ("books", "replay", "sent", "session", "source")

    def __init__(
        self,
        session: Session,
        source: str,
        table: TickTable,
        options: ReplayOptions,
        *,
        now: float,
        wall_us: int,
        books: BookLog | None = None,
    ) -> None:
        self.session = session
        self.source = source
        log = books or BookLog()
        self.replay = Replay(
            table, options, now=now, wall_us=wall_us, span=span(table, log.times())
        )
        self.books = ReplayBooks(session, log)
        self.sent = 0

    @property
    def finished(self) -> bool:
        """Every tick and book row is out and the replay does not loop."""
        return self.replay.finished and self.books.done

    def step(self, now: float, rounds: int = 4, poll_s: float = 0.005) -> float | None:
        """Deliver what is due (at most ``rounds`` batches); seconds until the next step,
        or None when the replay is over."""
        mailbox, replay, books = self.session.mailbox, self.replay, self.books
        for _ in range(rounds):
            if len(mailbox) >= HIGH_WATER:
                return poll_s  # the client is behind: look again soon
            books.step(replay, now)  # what this pass has reached, before a new one begins
            loop_index = replay.loop_index
            batch = replay.batch(now, REPLAY_BATCH)
            if replay.loop_index != loop_index:
                books.new_pass()
            books.step(replay, now)
            if not batch:
                break
            self._deliver(batch)
        wait = replay.wait(now)
        book_wait = books.wait(replay, now)
        if wait is None and not books.done:
            wait = 3600.0 if book_wait is None else book_wait  # paused: woken on resume
        elif wait is not None and book_wait is not None:
            wait = min(wait, book_wait)
        if wait is None and len(mailbox):
            return poll_s  # control frames overtake ticks: "ended" waits for the last one
        return wait

    def _deliver(self, batch: TickBatch) -> None:
        dumps = orjson.dumps
        runs: dict[str, list[bytes]] = {}
        for tick in batch:
            tick["r"] = 1
            key = KEY_PREFIX + tick["s"]
            run = runs.get(key)
            if run is None:
                runs[key] = [dumps(tick)]
            else:
                run.append(dumps(tick))
        join = b",".join
        delivery = _PrivateDelivery(
            {key: join(run) for key, run in runs.items()},
            {key: len(run) for key, run in runs.items()},
            {key: run[-1] for key, run in runs.items()},
        )
        self.session.mailbox.offer(delivery)
        delivery.release()
        self.sent += len(batch)

    def control(self, args: dict[str, Any], now: float) -> None:
        """Apply a ``replay_control`` op's validated args: speed first, then the action."""
        replay = self.replay
        action = args["action"]
        if args["speed"] is not None:
            replay.set_speed(args["speed"], now)
        if action == "pause":
            replay.pause(now)
        elif action == "resume":
            replay.resume(now)
        elif action == "seek":
            replay.seek(args["to"], now)
            self.books.seek(replay.anchor_rec)

    def state(self, now: float, rid: RequestId = None) -> bytes:
        """The ``replay_state`` frame: playing, paused or ended, and where the replay is."""
        replay = self.replay
        state = "ended" if self.finished else "paused" if replay.paused else "playing"
        t = replay.table.t
        position: float
        if replay.speed == 0:  # flat out: where the next tick is
            position = int(t[replay.cursor]) if replay.cursor < len(t) else replay.last
        else:
            position = min(replay.position(now), replay.last)
        return replay_state(
            state,
            source=self.source,
            position=round(position),
            speed=replay.speed,
            sent=self.sent,
            rid=rid,
        )
