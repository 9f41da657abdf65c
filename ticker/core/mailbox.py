"""Per-client mailboxes: what a client has not been sent yet, bounded by construction.

The bus offers each published batch once per mailbox, as a ``Delivery``: every symbol's
ticks already encoded and comma-joined. A mailbox takes the share of the symbols it
follows and keeps references to those bytes: nothing is encoded or copied here, and the
work per client is per batch, not per tick. Clients that follow the same set of symbols
(a default watchlist, "*") share one computed share per batch, so routing a batch to them
costs a dictionary lookup each.

Memory is bounded whatever the publish rate and however slowly the client reads: by the
number of symbols (``ConflatingMailbox``) or by an explicit byte limit (``QueueMailbox``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol, TypeVar

MAX_FRAME_BYTES = 256 * 1024
"""A frame's worth of ticks: big enough to amortise a write, small enough to stay fair."""


def _pick_key(symbols: list[str]) -> str:
    """The symbols a mailbox picks from a batch, as a cache key: the symbol itself when
    it is one (its hash is cached), else joined by a control character, which no symbol
    holds. A string, not a tuple: freed small tuples stay on CPython's free list, which a
    lagging queue's memory bound would count."""
    return symbols[0] if len(symbols) == 1 else "\x00".join(symbols)


Wake = Callable[[], None]
_T = TypeVar("_T")
Follows = frozenset[str] | None
"""The symbols a mailbox follows; ``None`` means every symbol ("*")."""


class Share(NamedTuple):
    """What one set of followed symbols takes from one batch, in a mode ``all`` queue.

    It holds references to the batch's bytes and nothing else of the batch, so a client
    that lags keeps alive only what it will send.
    """

    symbols: list[str]
    segments: list[bytes]
    counts: list[int]
    last_qs: list[int | None]
    """Each segment's last ``q`` (None where the batch did not say): an SSE id without
    reading the bytes back."""
    nbytes: int
    """Bytes the segments take in a frame, a separating comma each included."""
    ticks: int
    t: int
    """The batch's oldest tick time (µs): what the latency metric measures from."""

    def split(self, n: int) -> tuple[Share, Share]:
        """The first ``n`` symbols' part and the rest."""
        head = _share(
            self.symbols[:n], self.segments[:n], self.counts[:n], self.last_qs[:n], self.t
        )
        rest = _share(
            self.symbols[n:], self.segments[n:], self.counts[n:], self.last_qs[n:], self.t
        )
        return head, rest

    def without(self, drop: set[str]) -> Share:
        """This share less the symbols in ``drop`` (they were unsubscribed)."""
        keep = [i for i, s in enumerate(self.symbols) if s not in drop]
        return _share(
            [self.symbols[i] for i in keep],
            [self.segments[i] for i in keep],
            [self.counts[i] for i in keep],
            [self.last_qs[i] for i in keep],
            self.t,
        )


def _share(
    symbols: list[str],
    segments: list[bytes],
    counts: list[int],
    last_qs: list[int | None],
    t: int,
) -> Share:
    nbytes = sum(map(len, segments)) + len(segments)
    return Share(symbols, segments, counts, last_qs, nbytes, sum(counts), t)


class Delivery:
    """One published batch as the mailboxes see it; built once by the bus.

    What each distinct set of followed symbols takes is computed once and cached for the
    routing of this batch only: ``release()`` drops the caches when routing is done.
    """

    __slots__ = (
        *("_latest", "_latest_picked", "_picked", "_queued", "counts", "last_q", "latest"),
        *("newest", "segments", "t"),
    )

    def __init__(
        self,
        segments: dict[str, bytes],
        counts: dict[str, int],
        latest: dict[str, bytes],
        t: int = 0,
        newest: int = 0,
        last_q: dict[str, int] | None = None,
    ) -> None:
        self.segments = segments
        """Symbol -> its ticks of this batch, encoded and joined with commas, in order."""
        self.counts = counts
        """Symbol -> how many ticks its segment holds."""
        self.latest = latest
        """Symbol -> its last tick of this batch."""
        self.last_q = {} if last_q is None else last_q
        """Symbol -> the ``q`` of its last tick of this batch (the bus knows it: no parse)."""
        self.t = t
        """The oldest tick time of the batch, µs since the epoch (for the latency metric)."""
        self.newest = newest
        """The newest tick time of the batch, µs (a delay line holds the batch until it +D)."""
        self._queued: dict[Follows, Share] = {}
        self._picked: dict[str, Share] = {}
        self._latest: dict[Follows, tuple[list[tuple[str, bytes]], int]] = {}
        self._latest_picked: dict[str, tuple[list[tuple[str, bytes]], int]] = {}

    def share(self, follows: Follows) -> Share:
        """The part of this batch for a mode ``all`` client following ``follows``."""
        share = self._queued.get(follows)
        if share is None:
            share = self._queued[follows] = self._cached(self._picked, follows, self._share)
        return share

    def latest_of(self, follows: Follows) -> tuple[list[tuple[str, bytes]], int]:
        """(symbol, last tick) pairs for a conflating client, and how many ticks they
        stand for."""
        entry = self._latest.get(follows)
        if entry is None:
            entry = self._latest[follows] = self._cached(
                self._latest_picked, follows, self._latest_entry
            )
        return entry

    def _cached(
        self, picked: dict[str, _T], follows: Follows, build: Callable[[list[str]], _T]
    ) -> _T:
        """What a subscription set takes, on a miss by the set (the callers' first cache):
        by the symbols it picks. Clients that each follow their own 10 of 100 symbols
        mostly pick the same one or two of a small batch, and share what they pick
        instead of building it each."""
        symbols = self._pick(follows)
        key = _pick_key(symbols)
        found = picked.get(key)
        if found is None:
            found = picked[key] = build(symbols)
        return found

    def _share(self, symbols: list[str]) -> Share:
        segments, counts, last_q = self.segments, self.counts, self.last_q
        return _share(
            symbols,
            [segments[s] for s in symbols],
            [counts[s] for s in symbols],
            [last_q.get(s) for s in symbols],
            self.t,
        )

    def _latest_entry(self, symbols: list[str]) -> tuple[list[tuple[str, bytes]], int]:
        latest, counts = self.latest, self.counts
        return [(s, latest[s]) for s in symbols], sum([counts[s] for s in symbols])

    def _pick(self, follows: Follows) -> list[str]:
        segments = self.segments
        if follows is None:
            return list(segments)
        if len(follows) < len(segments):
            return [s for s in follows if s in segments]
        return [s for s in segments if s in follows]

    def release(self) -> None:
        """Drop the cached shares once every mailbox has its own: a lagging client
        must keep alive only what it will send."""
        self._queued.clear()
        self._picked.clear()
        self._latest.clear()
        self._latest_picked.clear()


def _noop() -> None:
    pass


class ConflatingMailbox:
    """At most one pending tick per symbol: the latest wins, first-pending order is kept.

    A dict keeps the position of a key when its value is replaced, which is exactly
    "latest value, first-pending order".
    """

    mode = "conflate"
    overflowed = False

    __slots__ = ("_pending", "_wake", "conflated", "follows", "oldest_t")

    def __init__(self, wake: Wake = _noop) -> None:
        self.follows: Follows = frozenset()
        self._pending: dict[str, bytes] = {}
        self._wake = wake
        self.conflated = 0
        """Ticks replaced before they were sent (a counter for metrics)."""
        self.oldest_t = 0
        """Time (µs) of the batch that last made the mailbox non-empty: the client has
        had news waiting since then (the pending ticks themselves may be newer)."""

    def offer(self, delivery: Delivery) -> None:
        """Keep each followed symbol's latest tick; older pending ones are
        replaced (counted as conflated), so memory is bounded by symbols."""
        latest, ticks = delivery.latest_of(self.follows)
        if not ticks:
            return
        pending = self._pending
        before = len(pending)
        pending.update(latest)
        self.conflated += ticks - (len(pending) - before)
        if not before:
            self.oldest_t = delivery.t
            self._wake()

    def drain(self, max_bytes: int = MAX_FRAME_BYTES) -> tuple[list[bytes], int]:
        """Up to ``max_bytes`` of pending ticks (at least one) and how many there are."""
        pending = self._pending
        items = list(pending.values())
        if sum(map(len, items)) + len(items) > max_bytes:
            total = n = 0
            for n, item in enumerate(items):  # noqa: B007 - n is used after the loop
                total += len(item) + 1
                if total > max_bytes:
                    break
            n = max(n, 1)
            for symbol in list(pending)[:n]:
                del pending[symbol]
            return items[:n], n
        pending.clear()
        return items, len(items)

    def discard(self, symbols: Iterable[str]) -> None:
        """Drop what is pending for these symbols (they were unsubscribed)."""
        for symbol in symbols:
            self._pending.pop(symbol, None)

    def clear(self) -> None:
        """Drop what is pending (the session is closing or ended)."""
        self._pending.clear()

    @property
    def nbytes(self) -> int:
        """Bytes pending (for metrics: computed when asked, never on the hot path)."""
        return sum(map(len, self._pending.values()))

    def __len__(self) -> int:
        """Pending ticks."""
        return len(self._pending)


class QueueMailbox:
    """Every tick, in publish order per symbol, bounded in bytes; over the bound = overflow.

    On overflow the queue is emptied at once (its memory is released), ``overflowed``
    stays set and the wake callback runs: the owner then closes the client as a slow
    consumer (4008).
    """

    mode = "all"
    conflated = 0  # every tick is kept, or the client is closed

    __slots__ = (
        "_shares",
        "_wake",
        "follows",
        "limit_bytes",
        "nbytes",
        "ntick",
        "oldest_t",
        "overflowed",
    )

    def __init__(self, limit_bytes: int, wake: Wake = _noop) -> None:
        self.follows: Follows = frozenset()
        self._shares: deque[Share] = deque()
        self._wake = wake
        self.limit_bytes = limit_bytes
        self.nbytes = 0
        self.ntick = 0
        self.overflowed = False
        self.oldest_t = 0
        """Time (µs) of the oldest batch still queued; 0 when empty. An attribute kept up
        to date, not a property: it is read once per frame."""

    def offer(self, delivery: Delivery) -> None:
        """Queue this batch's share; past ``limit_bytes`` drop everything and
        flag overflow, so the session closes the client with 4008."""
        share = delivery.share(self.follows)
        if not share.ticks or self.overflowed:
            return
        if self.nbytes + share.nbytes > self.limit_bytes:
            self.clear()
            self.overflowed = True
            self._wake()
            return
        was_empty = not self.ntick
        self._shares.append(share)
        self.nbytes += share.nbytes
        self.ntick += share.ticks
        if was_empty:
            self.oldest_t = share.t
            self._wake()

    def drain(
        self, max_bytes: int = MAX_FRAME_BYTES, positions: dict[str, int] | None = None
    ) -> tuple[list[bytes], int]:
        """Whole segments up to ``max_bytes`` (at least one) and how many ticks they hold;
        ``positions`` (if given) gets the ``q`` of the last tick taken of each symbol.

        A segment is never split: it is one symbol's share of one batch, bounded by the
        batch, so a frame may exceed ``max_bytes`` by at most one segment.
        """
        shares = self._shares
        out: list[bytes] = []
        taken = ticks = 0
        while shares and taken < max_bytes:
            share = shares[0]
            if taken + share.nbytes <= max_bytes:
                shares.popleft()  # the common case: the whole batch fits
                if positions is not None:
                    _note(positions, share.symbols, share.last_qs)
                out += share.segments
                taken += share.nbytes
                ticks += share.ticks
                continue
            segments = share.segments  # split the batch: whole segments while they fit
            n = 0
            while n < len(segments) and (not out or taken + len(segments[n]) < max_bytes):
                out.append(segments[n])
                taken += len(segments[n]) + 1
                n += 1
            if positions is not None:
                _note(positions, share.symbols[:n], share.last_qs[:n])
            if n == len(segments):  # one segment bigger than a frame: it goes whole
                shares.popleft()
                ticks += share.ticks
            elif n:
                head, shares[0] = share.split(n)
                ticks += head.ticks
            break
        self.nbytes -= taken
        self.ntick -= ticks
        self.oldest_t = shares[0].t if shares else 0
        return out, ticks

    def discard(self, symbols: Iterable[str]) -> None:
        """Drop what is pending for these symbols (they were unsubscribed)."""
        drop = set(symbols)
        kept = (share.without(drop) for share in self._shares)
        self._shares = deque(share for share in kept if share.symbols)
        self.nbytes = sum(share.nbytes for share in self._shares)
        self.ntick = sum(share.ticks for share in self._shares)
        self.oldest_t = self._shares[0].t if self._shares else 0

    def clear(self) -> None:
        """Drop what is queued (overflow, or the session is closing)."""
        self._shares.clear()
        self.nbytes = 0
        self.ntick = 0
        self.oldest_t = 0

    def __len__(self) -> int:
        """Pending ticks."""
        return self.ntick


def _note(positions: dict[str, int], symbols: list[str], last_qs: list[int | None]) -> None:
    """Each symbol's last ``q`` taken, as the batch carried it."""
    for symbol, q in zip(symbols, last_qs, strict=True):
        if q is not None:
            positions[symbol] = q


Mailbox = ConflatingMailbox | QueueMailbox


class Subscriber(Protocol):
    """What the bus routes to: a client's mailbox, or a delay line that publishes again."""

    follows: Follows

    def offer(self, delivery: Delivery) -> None:
        """Take this batch's share; called inside the bus's publish, so never blocks."""
