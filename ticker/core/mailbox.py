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
from typing import NamedTuple

MAX_FRAME_BYTES = 256 * 1024
"""A frame's worth of ticks: big enough to amortise a write, small enough to stay fair."""

Wake = Callable[[], None]
Follows = frozenset[str] | None
"""The symbols a mailbox follows; ``None`` means every symbol ("*")."""


class Share(NamedTuple):
    """What one set of followed symbols takes from one batch."""

    symbols: list[str]
    segments: list[bytes]
    nbytes: int
    """Bytes the segments take in a frame, a separating comma each included."""
    ticks: int
    latest: list[tuple[str, bytes]]
    """(symbol, its last tick in the batch): all a conflating client needs."""


class Delivery:
    """One published batch as the mailboxes see it; built once by the bus."""

    __slots__ = ("_shares", "counts", "latest", "segments")

    def __init__(
        self, segments: dict[str, bytes], counts: dict[str, int], latest: dict[str, bytes]
    ) -> None:
        self.segments = segments
        """Symbol -> its ticks of this batch, encoded and joined with commas, in order."""
        self.counts = counts
        """Symbol -> how many ticks its segment holds."""
        self.latest = latest
        """Symbol -> its last tick of this batch."""
        self._shares: dict[Follows, Share] = {}

    def share(self, follows: Follows) -> Share:
        """The part of this batch for ``follows``, computed once per distinct set."""
        share = self._shares.get(follows)
        if share is None:
            share = self._shares[follows] = self.share_of(self._pick(follows))
        return share

    def _pick(self, follows: Follows) -> list[str]:
        segments = self.segments
        if follows is None:
            return list(segments)
        if len(follows) < len(segments):
            return [s for s in follows if s in segments]
        return [s for s in segments if s in follows]

    def share_of(self, symbols: list[str]) -> Share:
        segments, counts, latest = self.segments, self.counts, self.latest
        picked = [segments[s] for s in symbols]
        return Share(
            symbols,
            picked,
            sum(map(len, picked)) + len(picked),
            sum([counts[s] for s in symbols]),
            [(s, latest[s]) for s in symbols],
        )


def _noop() -> None:
    pass


class ConflatingMailbox:
    """At most one pending tick per symbol: the latest wins, first-pending order is kept.

    A dict keeps the position of a key when its value is replaced, which is exactly
    "latest value, first-pending order".
    """

    mode = "conflate"
    overflowed = False

    __slots__ = ("_pending", "_wake", "conflated", "follows")

    def __init__(self, wake: Wake = _noop) -> None:
        self.follows: Follows = frozenset()
        self._pending: dict[str, bytes] = {}
        self._wake = wake
        self.conflated = 0
        """Ticks replaced before they were sent (a counter for metrics)."""

    def offer(self, delivery: Delivery) -> None:
        share = delivery.share(self.follows)
        if not share.ticks:
            return
        pending = self._pending
        before = len(pending)
        pending.update(share.latest)
        self.conflated += share.ticks - (len(pending) - before)
        if not before:
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
        self._pending.clear()

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

    __slots__ = ("_shares", "_wake", "follows", "limit_bytes", "nbytes", "ntick", "overflowed")

    def __init__(self, limit_bytes: int, wake: Wake = _noop) -> None:
        self.follows: Follows = frozenset()
        self._shares: deque[tuple[Share, Delivery]] = deque()
        self._wake = wake
        self.limit_bytes = limit_bytes
        self.nbytes = 0
        self.ntick = 0
        self.overflowed = False

    def offer(self, delivery: Delivery) -> None:
        share = delivery.share(self.follows)
        if not share.ticks or self.overflowed:
            return
        if self.nbytes + share.nbytes > self.limit_bytes:
            self.clear()
            self.overflowed = True
            self._wake()
            return
        was_empty = not self.ntick
        self._shares.append((share, delivery))
        self.nbytes += share.nbytes
        self.ntick += share.ticks
        if was_empty:
            self._wake()

    def drain(self, max_bytes: int = MAX_FRAME_BYTES) -> tuple[list[bytes], int]:
        """Whole segments up to ``max_bytes`` (at least one) and how many ticks they hold.

        A segment is never split: it is one symbol's share of one batch, bounded by the
        batch, so a frame may exceed ``max_bytes`` by at most one segment.
        """
        shares = self._shares
        out: list[bytes] = []
        taken = ticks = 0
        while shares and taken < max_bytes:
            share, delivery = shares[0]
            if taken + share.nbytes <= max_bytes or (not out and len(share.symbols) == 1):
                shares.popleft()  # the common case: the whole batch fits
                out += share.segments
                taken += share.nbytes
                ticks += share.ticks
                continue
            symbols, segments = share.symbols, share.segments
            n = 0  # split the batch: take whole segments while they fit, at least one
            while n < len(symbols) and (not out or taken + len(segments[n]) < max_bytes):
                out.append(segments[n])
                taken += len(segments[n]) + 1
                n += 1
            if n:
                ticks += delivery.share_of(symbols[:n]).ticks
                shares[0] = (delivery.share_of(symbols[n:]), delivery)
            break
        self.nbytes -= taken
        self.ntick -= ticks
        return out, ticks

    def discard(self, symbols: Iterable[str]) -> None:
        """Drop what is pending for these symbols (they were unsubscribed)."""
        drop = set(symbols)
        kept: deque[tuple[Share, Delivery]] = deque()
        for share, delivery in self._shares:
            rest = [s for s in share.symbols if s not in drop]
            if rest:
                kept.append((delivery.share_of(rest), delivery))
        self._shares = kept
        self.nbytes = sum(share.nbytes for share, _ in kept)
        self.ntick = sum(share.ticks for share, _ in kept)

    def clear(self) -> None:
        self._shares.clear()
        self.nbytes = 0
        self.ntick = 0

    def __len__(self) -> int:
        """Pending ticks."""
        return self.ntick


Mailbox = ConflatingMailbox | QueueMailbox
