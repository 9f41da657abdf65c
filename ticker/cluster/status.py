"""Per-symbol status across the cluster: set on one node, the same on every node.

A status change (a feed's, its supervisor's, a publisher's) is rare, so it travels as it
is: one small JSON message on the ``ticker:status`` channel, ``since`` included, so every
node tells its clients the same status, reason and time. The hash of the same name keeps
each symbol's status that is not ``live``: a node that joins late, or whose link comes
back, reads it once its subscription to the channel is confirmed (nothing falls between)
and keeps, per symbol, the latest ``since`` (``StatusBoard.apply``). A change and its
hash entry are written in one transaction, so the hash is never behind the channel.

``StatusRelay`` listens to the node's board; the relay's link (``redis.py``) hands it the
channel's messages and runs its one task, ``run``, while the link is up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

from ticker.cluster.stats import RedisStats
from ticker.cluster.wire import BadMessage, Keys, valid_symbol
from ticker.core.status import LIVE, StatusBoard, SymbolStatus, statuses_from_json

if TYPE_CHECKING:  # only redis.py imports the optional package when it runs
    from redis.asyncio import Redis

log = logging.getLogger("ticker.cluster")


def decode_changes(data: bytes) -> tuple[str, dict[str, SymbolStatus]]:
    """(origin, symbol -> status) of a message on the status channel; ``BadMessage``."""
    try:
        message = orjson.loads(data)
        origin, symbols = message["o"], message["s"]
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise BadMessage(f"not a status message: {exc}") from None
    if type(origin) is not str or type(symbols) is not dict:
        raise BadMessage("not a status message: wrong field types")
    if not all(valid_symbol(s) for s in symbols):
        raise BadMessage("a status message with an invalid symbol")
    try:
        return origin, statuses_from_json(symbols)
    except ValueError as exc:
        raise BadMessage(str(exc)) from None


class StatusRelay:
    """Sends this node's status changes to the cluster, applies the others' to its board.

    What is not sent yet is one entry per symbol (the latest change wins), so it is never
    larger than the universe; it waits while the link is down. ``own`` keeps the latest
    status this node set for each symbol, sent again when the link returns (Redis may
    have been restarted empty) unless another node has set a later one since.
    """

    __slots__ = (
        "_applying",
        "_board",
        "_due",
        "_keys",
        "_load",
        "_origin",
        "_stats",
        "_wake",
        "own",
    )

    def __init__(self, keys: Keys, origin: str, stats: RedisStats) -> None:
        self._keys = keys
        self._origin = origin
        self._stats = stats
        self._board: StatusBoard | None = None
        self._applying = False
        self._load = False
        self._due: dict[str, SymbolStatus] = {}
        self.own: dict[str, SymbolStatus] = {}
        self._wake = asyncio.Event()

    @property
    def channel(self) -> str:
        """The status channel (named like the hash: Redis keeps the two apart)."""
        return self._keys.status

    def attach(self, board: StatusBoard) -> None:
        """Follow this board's changes from now on."""
        self._board = board
        board.listen(self)

    def detach(self) -> None:
        """Stop following the board."""
        if self._board is not None:
            self._board.leave(self)

    def status_changed(self, changes: dict[str, SymbolStatus]) -> None:
        """A change on this node (not one this relay applied): to send."""
        if self._applying:
            return
        self.own.update(changes)
        self._due.update(changes)
        self._wake.set()

    def link_up(self) -> None:
        """A new link: this node's statuses still current go out again."""
        board = self._board
        if board is not None:
            self._due.update((s, st) for s, st in self.own.items() if board.get(s) == st)

    def pubsub(self, kind: str, data: Any) -> None:
        """A message of the status channel, or the confirmation of its subscription."""
        if kind == "subscribe":
            self._load = True  # from now on no change is missed: read what came before
            self._wake.set()
        elif kind == "message" and isinstance(data, bytes):
            try:
                origin, changes = decode_changes(data)
            except BadMessage as exc:
                self._stats.bad_messages += 1
                log.debug("skipped a status message: %s", exc)
                return
            if origin != self._origin:
                self._apply(changes)

    def _apply(self, changes: dict[str, SymbolStatus]) -> None:
        if self._board is None or not changes:
            return
        self._applying = True
        try:
            self._board.apply(changes)
        finally:
            self._applying = False

    async def run(self, client: Redis) -> None:
        """The link's status task: the hash once subscribed, then every change."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._load:
                self._load = False
                await self._read_hash(client)
            if self._due:
                await self._send(client)

    async def _read_hash(self, client: Redis) -> None:
        raw = await client.hgetall(self._keys.status)
        changes: dict[str, SymbolStatus] = {}
        for key, value in raw.items():
            symbol = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
            try:
                if not valid_symbol(symbol):
                    raise BadMessage(f"an invalid symbol {symbol!r:.60}")
                changes.update(statuses_from_json({symbol: orjson.loads(value)}))
            except ValueError as exc:  # orjson's errors and BadMessage are ValueErrors
                self._stats.bad_messages += 1
                log.debug("skipped a status hash entry: %s", exc)
        self._apply(changes)

    async def _send(self, client: Redis) -> None:
        board = self._board
        due, self._due = self._due, {}
        if board is not None:  # one another node set later (read from the hash) is kept
            due = {s: st for s, st in due.items() if board.get(s) == st}
            if not due:
                return
        key = self._keys.status
        pipe = client.pipeline(transaction=True)
        live = [s for s, st in due.items() if st.status == LIVE]
        if live:
            pipe.hdel(key, *live)
        held = {s: orjson.dumps(st.to_json()) for s, st in due.items() if st.status != LIVE}
        if held:
            pipe.hset(key, mapping=held)  # type: ignore[arg-type]  # bytes are fine
        symbols = {s: st.to_json() for s, st in due.items()}
        pipe.publish(self.channel, orjson.dumps({"o": self._origin, "s": symbols}))
        try:
            await pipe.execute()
        except BaseException:
            self._due = {**due, **self._due}  # sent with the next link (newer ones kept)
            raise
