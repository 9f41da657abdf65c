"""How books travel between nodes through Redis: entries, messages, and the owner's outbox.

Pure and synchronous (no Redis client here), so it is unit-tested without a server.

A book has one owner: the node (or ``ticker feed``) whose source feeds it and whose
``BookService`` applies its change sets. Every change set the owner applies is an
**entry**, ``[symbol, u, reset, bids, asks]`` (levels ``[[price, size], ...]`` as the owner
applied them), and every other node applies exactly that entry under that ``u``
(``BookService.apply(..., u=u)``), never merged again, so ``u`` and ``cs`` are the same on
every node. A round of the owner's is one message on the books channel,
``{"o": origin, "c": [entry, ...]}``, and, in the same transaction, each symbol's list
(``PREFIX:book:SYMBOL``): its latest full book as a reset entry, then the entries after it.
A node that joins late or misses an entry (a gap in ``u``) reads the list and applies it.

The list stays short: after ``SNAPSHOT_EVERY`` entries, the owner writes its whole book
(a reset entry at its ``u``) in their place. A source's own reset is a whole book already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ticker.cluster.wire import BadMessage, valid_symbol
from ticker.core.books import Applied, Book, Books, Level

SNAPSHOT_EVERY = 100
"""Entries kept after a symbol's full book in its list; then the full book replaces them
(at 20 passes a second: one full book every 5 s of a busy book)."""
MAX_PENDING_LEVELS = 200_000
"""Levels waiting to be sent (Redis slow or away); past it they are dropped and each book
concerned is sent whole once the link can take it."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One change set as its owner applied it, numbered ``u``."""

    symbol: str
    u: int
    reset: bool
    bids: list[Level]
    asks: list[Level]

    def encode(self) -> bytes:
        """The entry's JSON (what the channel and the list carry)."""
        return orjson.dumps([self.symbol, self.u, self.reset, self.bids, self.asks])


class BookHost(Protocol):
    """What carrying books between processes needs of them (``ticker/server/books.py``'s
    ``BookService``: a node's, or one without clients in ``ticker feed`` and in the feed
    process of ``serve --workers``)."""

    books: Books
    on_applied: list[Applied]

    def submit(
        self, symbol: str, bids: Iterable[Level], asks: Iterable[Level], reset: bool = False
    ) -> None:
        """A source's change set, applied on the next pass (a ``BookSink``)."""
        ...

    def apply(
        self,
        symbol: str,
        reset: bool,
        bids: list[Level],
        asks: list[Level],
        u: int | None = None,
    ) -> bool:
        """Apply one change set, numbered ``u`` by its owner; False on a gap."""
        ...

    def renumber(self, symbol: str, u: int) -> None:
        """Number the book on from ``u`` (at least)."""
        ...

    def forget(self, symbols: Iterable[str]) -> None:
        """Drop these books (their owner numbers them anew)."""
        ...

    async def stop(self) -> None:
        """Apply what is pending."""
        ...


def whole(book: Book) -> Entry:
    """A book now, as a reset entry at its ``u``: what a late joiner applies."""
    bids = [(p, s) for p, s in book.bids.top(None)]
    asks = [(p, s) for p, s in book.asks.top(None)]
    return Entry(book.symbol, book.u, True, bids, asks)


def _levels(value: Any) -> list[Level]:
    if type(value) is not list:
        raise BadMessage("book levels are not a list")
    levels: list[Level] = []
    for level in value:
        if type(level) is not list or len(level) != 2:
            raise BadMessage("a book level is not [price, size]")
        price, size = level
        if type(price) not in (int, float) or type(size) not in (int, float) or size < 0:
            raise BadMessage("a book level's price or size is not a number (size >= 0)")
        levels.append((price, size))
    return levels


def decode_entry(value: Any) -> Entry:
    """An entry from its parsed JSON; ``BadMessage`` for anything else."""
    if type(value) is not list or len(value) != 5:
        raise BadMessage("a book entry is not [symbol, u, reset, bids, asks]")
    symbol, u, reset, bids, asks = value
    if not valid_symbol(symbol):
        raise BadMessage(f"a book entry with an invalid symbol {symbol!r:.60}")
    if type(u) is not int or u <= 0 or type(reset) is not bool:
        raise BadMessage("a book entry's u is not a positive integer or reset not a boolean")
    return Entry(symbol, u, reset, _levels(bids), _levels(asks))


def decode_stored(data: bytes) -> Entry:
    """One element of a symbol's list; ``BadMessage`` if it is not an entry."""
    try:
        return decode_entry(orjson.loads(data))
    except orjson.JSONDecodeError as exc:
        raise BadMessage(f"not a book entry: {exc}") from None


def message_prefix(origin: str) -> bytes:
    """The first bytes of every books message of this origin (to skip its own)."""
    return b'{"o":' + orjson.dumps(origin) + b',"c":['


def encode_message(prefix: bytes, entries: list[bytes]) -> bytes:
    """One round's message: already-encoded entries after ``message_prefix``."""
    return b"".join((prefix, b",".join(entries), b"]}"))


def decode_message(data: bytes) -> tuple[str, list[Entry]]:
    """(origin, entries) of a books message; ``BadMessage`` for anything else."""
    try:
        message = orjson.loads(data)
        origin, entries = message["o"], message["c"]
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise BadMessage(f"not a books message: {exc}") from None
    if type(origin) is not str or type(entries) is not list:
        raise BadMessage("not a books message: wrong field types")
    return origin, [decode_entry(e) for e in entries]


@dataclass(slots=True)
class Store:
    """What a round writes to one symbol's list: ``items`` appended, after emptying it
    first when ``replace`` (they begin with a full book)."""

    replace: bool
    items: list[bytes]


@dataclass(slots=True)
class Round:
    """One round of the owner's: the channel's entries, and each symbol's list."""

    entries: list[bytes] = field(default_factory=list)
    stores: dict[str, Store] = field(default_factory=dict)


FullBook = Callable[[str], Entry]
"""A symbol's book now, as a reset entry at its ``u``."""


class BookOutbox:
    """The owner's side: entries of the books it owns, waiting for the next round.

    A symbol is ``due`` when its next round must send the whole book instead of entries:
    the first round of a book this process owns (the cluster may hold an older one), and
    after entries were lost (dropped over ``max_levels``, or with the link). Entries of
    a due symbol are not kept: the whole book taken at the round covers them.
    """

    __slots__ = (
        "_levels",
        "_pending",
        "_since",
        "dropped",
        "due",
        "every",
        "max_levels",
        "owned",
        "unchecked",
    )

    def __init__(
        self, *, every: int = SNAPSHOT_EVERY, max_levels: int = MAX_PENDING_LEVELS
    ) -> None:
        self.every = every
        self.max_levels = max_levels
        self.owned: set[str] = set()
        """The symbols whose change sets this process applied itself."""
        self.unchecked: set[str] = set()
        """Owned symbols whose ``u`` in the cluster this process has not read yet."""
        self.due: set[str] = set()
        self._pending: dict[str, list[Entry]] = {}
        self._levels = 0
        self._since: dict[str, int] = {}
        """Entries in a symbol's list after its full book."""
        self.dropped = 0
        """Entries dropped over ``max_levels`` (their books went whole instead)."""

    @property
    def empty(self) -> bool:
        """Nothing to send."""
        return not self._pending and not self.due

    def add(self, entry: Entry) -> None:
        """A change set this process applied to a book (it owns that book from now on)."""
        symbol = entry.symbol
        if symbol not in self.owned:
            self.owned.add(symbol)
            self.unchecked.add(symbol)
            self.due.add(symbol)
        if symbol in self.due:
            return
        size = len(entry.bids) + len(entry.asks)
        if self._levels + size > self.max_levels:
            self.dropped += 1 + sum(map(len, self._pending.values()))
            self.lost()
            return
        self._pending.setdefault(symbol, []).append(entry)
        self._levels += size

    def lost(self) -> None:
        """Entries could not go out (or the link is new: Redis may have restarted empty):
        every owned book is sent whole next."""
        self.due |= self.owned
        self._pending.clear()
        self._levels = 0

    def take(self, full: FullBook) -> Round:
        """What to send now; ``full`` is called for the books sent whole."""
        out = Round()
        for symbol in self.due:
            item = full(symbol).encode()
            out.entries.append(item)
            out.stores[symbol] = Store(True, [item])
            self._since[symbol] = 0
        for symbol, entries in self._pending.items():
            items = [e.encode() for e in entries]
            out.entries += items
            resets = [i for i, e in enumerate(entries) if e.reset]
            if resets:  # a source's reset is a whole book: the list starts there
                out.stores[symbol] = Store(True, items[resets[-1] :])
                self._since[symbol] = len(items) - 1 - resets[-1]
                continue
            since = self._since.get(symbol, 0) + len(items)
            if since >= self.every:
                out.stores[symbol] = Store(True, [full(symbol).encode()])
                since = 0
            else:
                out.stores[symbol] = Store(False, items)
            self._since[symbol] = since
        self.due = set()
        self._pending.clear()
        self._levels = 0
        return out
