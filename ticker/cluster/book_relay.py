"""Books through Redis: the same ``u``, ``cs`` and levels on every node of a cluster.

The owner of a book (the node, or ``ticker feed``, whose source feeds it) hears every
change set its ``BookService`` applies (``on_applied``) and sends them, one round per
pass, on the books channel, with each symbol's list in the same transaction
(``book_wire.py``): the list is never behind the channel. Every other node applies the
entries as they come, under their ``u`` (``BookService.apply(..., u=u)``). A node reads
the lists of every book once its subscription is confirmed (it joined, or its link came
back), and a book's list again when an entry does not follow its ``u`` (a gap): the
list's full book, a reset numbered as the owner numbered it, then the entries after it.

An owner that restarts reads its books' ``u`` in the cluster before its first round and
numbers on from there (``BookService.renumber``); each of its books goes out whole first.
When the whole cluster restarts (a new epoch), the books owned elsewhere are forgotten and
read again (``restart``). Every node keeps every book of the cluster (a book is changed
at most once a pass).

Faults: every Redis error ends the link; local clients keep their books; the relay logs
once, reconnects with capped jittered backoff and re-syncs (the owner sends its books
whole, the others read the lists).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from ticker.cluster.book_wire import (
    BookHost,
    BookOutbox,
    Entry,
    decode_message,
    decode_stored,
    encode_message,
    message_prefix,
    whole,
)
from ticker.cluster.config import RedisConfig, redacted
from ticker.cluster.metrics import BookRelayCollector
from ticker.cluster.redis import finish, link_client, until_first_ends, write_rounds
from ticker.cluster.stats import BookRelayStats
from ticker.cluster.wire import BadMessage, Keys, valid_symbol
from ticker.core.backoff import Backoff
from ticker.core.books import Level

log = logging.getLogger("ticker.cluster")

SYMBOLS_PER_CALL = 256
"""Books read per round trip."""
MAX_HELD = 10_000
"""Entries of a book kept while its list is read; past it the list is read again after."""


class BookRelay:
    """Carries a ``BookService``'s books to and from the cluster's Redis."""

    def __init__(self, config: RedisConfig, books: BookHost, origin: str) -> None:
        self.config = config
        self.books = books
        self.origin = origin
        self.keys = Keys(config.prefix, config.shards)
        self.stats = BookRelayStats()
        self.out = BookOutbox()
        self._prefix = message_prefix(origin)
        self._applying = False  # entries from elsewhere: not sent back out
        self._read_all = False
        self._to_read: set[str] = set()
        self._reading: dict[str, list[Entry]] = {}
        """Books whose lists are being read -> the entries that came meanwhile."""
        self._foreign: set[str] = set()  # owned here and elsewhere: warned once
        self._sync = asyncio.Event()
        self._send = asyncio.Event()
        self._stop = asyncio.Event()
        self._synced = asyncio.Event()
        self._stopping = False
        self._warned = False
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(config.backoff_initial, config.backoff_max)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the books, and wait (at most ``timeout``) for the cluster's to be read."""
        self.books.on_applied.append(self._applied)
        self._task = asyncio.create_task(self._run(), name="books-redis")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.timeout + 1.0):
                await self._synced.wait()

    async def stop(self) -> None:
        """Send what is pending (within 2 s), then close the link."""
        task, self._task = self._task, None
        if task is None:
            return
        self.books.on_applied.remove(self._applied)
        self._stopping = True
        self._stop.set()
        self._send.set()
        if not await finish(task):
            log.warning("the book relay did not stop within 3 s; leaving it")

    def restart(self) -> None:
        """The cluster's stream restarted (a new epoch: Redis and the owners started
        afresh), so the books owned elsewhere are numbered anew: forget them (the node
        closes their followers, who resubscribe) and read them again."""
        symbols = self.books.books.symbols()
        self.books.forget(s for s in symbols if s not in self.out.owned)
        self._read_all = True
        self._sync.set()

    def register(self, registry: CollectorRegistry) -> None:
        """The ``ticker_redis_book_*`` metrics, read from the relay's counters at scrape."""
        registry.register(BookRelayCollector(self.stats, self.out))

    # -- the way out ------------------------------------------------------------------

    def _applied(
        self, symbol: str, reset: bool, bids: list[Level], asks: list[Level], u: int
    ) -> None:
        """A change set the book service applied: this node's own, to send."""
        if self._applying:
            return
        self.out.add(Entry(symbol, u, reset, bids, asks))
        self._send.set()

    def _full(self, symbol: str) -> Entry:
        return whole(self.books.books.book(symbol))

    async def _write(self, client: Redis) -> None:
        await write_rounds(
            self._send, lambda: self._flush(client), lambda: self._stopping, lambda: self.out.empty
        )

    async def _flush(self, client: Redis) -> None:
        out, keys = self.out, self.keys
        if out.unchecked:
            await self._continue_numbering(client)
        if out.empty:
            return
        taken = out.take(self._full)
        pipe = client.pipeline(transaction=True)
        for symbol, store in taken.stores.items():
            key = keys.book(symbol)
            if store.replace:
                pipe.delete(key)
                pipe.sadd(keys.books, symbol)
            pipe.rpush(key, *store.items)
        pipe.publish(keys.books, encode_message(self._prefix, taken.entries))
        try:
            await pipe.execute()
        except BaseException:
            out.lost()
            raise
        self.stats.entries_sent += len(taken.entries)

    async def _continue_numbering(self, client: Redis) -> None:
        """Books this process owns from now: number on from the cluster's ``u`` of them."""
        symbols = sorted(self.out.unchecked)
        pipe = client.pipeline(transaction=False)
        for symbol in symbols:
            pipe.lindex(self.keys.book(symbol), -1)
        for symbol, last in zip(symbols, await pipe.execute(), strict=True):
            if isinstance(last, bytes):
                try:  # the cluster has that book at u: this process's next is a new number
                    self.books.renumber(symbol, decode_stored(last).u + 1)
                except BadMessage as exc:
                    self.stats.bad_messages += 1
                    log.warning("books: the list of %s holds a bad entry (%s)", symbol, exc)
        self.out.unchecked.difference_update(symbols)

    # -- the way in -------------------------------------------------------------------

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None:
                continue
            kind = message["type"]
            if kind == "subscribe":
                self._read_all = True  # from now on nothing is missed: read what came before
                self._sync.set()
            elif kind == "message":
                data = message["data"]
                if isinstance(data, bytes) and not data.startswith(self._prefix):
                    self._receive(data)

    def _receive(self, data: bytes) -> None:
        try:
            _, entries = decode_message(data)
        except BadMessage as exc:
            self.stats.bad_messages += 1
            log.debug("skipped a books message: %s", exc)
            return
        self.stats.entries_received += len(entries)
        for entry in entries:
            held = self._reading.get(entry.symbol)
            if held is not None:  # its list is being read: after it
                if len(held) < MAX_HELD:
                    held.append(entry)
                else:
                    self._gap(entry.symbol)  # too many: read the list once more after
            elif not self._take(entry):
                self._gap(entry.symbol)

    def _gap(self, symbol: str) -> None:
        if symbol not in self._to_read:
            self.stats.gaps += 1
            self._to_read.add(symbol)
            self._sync.set()

    def _take(self, entry: Entry) -> bool:
        """Apply an entry from another node; False on a gap."""
        symbol = entry.symbol
        if symbol in self.out.owned:
            if symbol not in self._foreign:
                self._foreign.add(symbol)
                log.warning(
                    "books: %s has another owner in the cluster; keeping this node's", symbol
                )
            return True
        self._applying = True
        try:
            return self.books.apply(symbol, entry.reset, entry.bids, entry.asks, u=entry.u)
        finally:
            self._applying = False

    async def _sync_task(self, client: Redis) -> None:
        """Read the lists of the books that need it: all once subscribed, then gaps."""
        while True:
            await self._sync.wait()
            self._sync.clear()
            if self._read_all:
                self._read_all = False
                members = await client.smembers(self.keys.books)
                names = (m.decode(errors="replace") for m in members if isinstance(m, bytes))
                self._to_read |= {n for n in names if valid_symbol(n)}
            symbols = sorted(self._to_read - self.out.owned)
            self._to_read = set()
            for first in range(0, len(symbols), SYMBOLS_PER_CALL):
                await self._read_lists(client, symbols[first : first + SYMBOLS_PER_CALL])
            self._synced.set()

    async def _read_lists(self, client: Redis, symbols: list[str]) -> None:
        """Apply these books' lists, then the entries that came while they were read."""
        pipe = client.pipeline(transaction=False)
        for symbol in symbols:
            pipe.lrange(self.keys.book(symbol), 0, -1)
            self._reading[symbol] = []
        try:
            replies = await pipe.execute()
        finally:
            reading = {s: self._reading.pop(s) for s in symbols}
        for symbol, items in zip(symbols, replies, strict=True):
            try:
                entries = [decode_stored(item) for item in items]
                if any(e.symbol != symbol for e in entries) or (entries and not entries[0].reset):
                    raise BadMessage("it does not start with a full book of its symbol")
            except BadMessage as exc:
                self.stats.bad_messages += 1
                log.warning("books: the list of %s is not a book (%s): skipped", symbol, exc)
                entries = []
            else:
                self.stats.books_read += 1
            for entry in entries:
                self._take(entry)
            for entry in reading[symbol]:
                if not self._take(entry):
                    self._gap(symbol)
                    break

    # -- the link ---------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._session()
            except Exception as exc:  # Redis away (or a bug): log, start over
                self._lost(exc)
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._backoff.delay()):
                    await self._stop.wait()

    async def _session(self) -> None:
        config = self.config
        client = link_client(config)
        pubsub = client.pubsub()
        try:
            await client.ping()
            await pubsub.subscribe(self.keys.books)
            self.out.lost()  # a new link: Redis may have restarted empty
            self._link_up()
            self._send.set()
            await until_first_ends(self._read(pubsub), self._write(client), self._sync_task(client))
        finally:
            self.stats.link_up = False
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    def _link_up(self) -> None:
        if self._warned:
            log.warning("books: back on redis: re-syncing books")
        self.stats.link_up = True
        self._warned = False
        self._backoff.reset()

    def _lost(self, exc: Exception) -> None:
        """One log line per outage; a bug is logged with its traceback."""
        self._synced.set()  # a node that cannot reach Redis starts with its own books
        if self._warned:
            log.debug("books: redis still unreachable: %r", exc)
            return
        self._warned = True
        log.error(
            "books: lost redis at %s (%r): local books go on; reconnecting",
            redacted(self.config.url),
            exc,
            exc_info=not isinstance(exc, RedisError | OSError | TimeoutError),
        )
