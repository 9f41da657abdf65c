"""Per-client mailboxes: what a client has not been sent yet, bounded by construction.

The bus puts pre-encoded ticks in; the client's writer drains one frame's worth at a time.
A mailbox never encodes and never blocks: its memory is bounded either by the number of
symbols (``ConflatingMailbox``) or by an explicit byte limit (``QueueMailbox``), whatever
the publish rate and however slowly the client reads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

MAX_FRAME_BYTES = 256 * 1024
"""A frame's worth of ticks: big enough to amortise a write, small enough to stay fair."""

Wake = Callable[[], None]


class Mailbox(Protocol):
    """What the bus and the writer need of a mailbox; the two modes implement it."""

    mode: str
    overflowed: bool

    def put(self, symbol: str, items: list[bytes], nbytes: int) -> None:
        """Take the encoded ticks of one symbol (publish order), ``nbytes`` their total size."""

    def drain(self, max_bytes: int = MAX_FRAME_BYTES) -> list[bytes]:
        """Remove and return up to ``max_bytes`` of ticks (at least one when not empty)."""

    def discard(self, symbols: Iterable[str]) -> None:
        """Drop whatever is pending for these symbols (they were unsubscribed)."""

    def clear(self) -> None: ...

    def __len__(self) -> int:
        """Number of pending ticks."""


def _noop() -> None:
    pass


def _fit(items: list[bytes], room: int) -> int:
    """How many leading items fit in ``room`` bytes (at least one: a frame is never empty)."""
    total = 0
    for n, item in enumerate(items):
        total += len(item)
        if total > room:
            return max(n, 1)
    return len(items)


class ConflatingMailbox:
    """At most one pending tick per symbol: the latest wins, first-pending order is kept.

    A dict keeps the position of a key when its value is replaced, which is exactly
    "latest value, first-pending order".
    """

    mode = "conflate"
    overflowed = False

    __slots__ = ("_pending", "_wake", "conflated")

    def __init__(self, wake: Wake = _noop) -> None:
        self._pending: dict[str, bytes] = {}
        self._wake = wake
        self.conflated = 0
        """Ticks replaced before they were sent (a counter for metrics)."""

    def put(self, symbol: str, items: list[bytes], nbytes: int) -> None:
        pending = self._pending
        was_empty = not pending
        self.conflated += len(items) - (symbol not in pending)
        pending[symbol] = items[-1]
        if was_empty:
            self._wake()

    def drain(self, max_bytes: int = MAX_FRAME_BYTES) -> list[bytes]:
        pending = self._pending
        items = list(pending.values())
        if len(items) * 128 > max_bytes:  # cheap pre-check: ticks are well under 128 bytes
            n = _fit(items, max_bytes)
            if n < len(items):
                for symbol in list(pending)[:n]:
                    del pending[symbol]
                return items[:n]
        pending.clear()
        return items

    def discard(self, symbols: Iterable[str]) -> None:
        for symbol in symbols:
            self._pending.pop(symbol, None)

    def clear(self) -> None:
        self._pending.clear()

    def __len__(self) -> int:
        return len(self._pending)


class QueueMailbox:
    """Every tick, FIFO per symbol, bounded in bytes; going over the bound is an overflow.

    On overflow the queue is emptied at once (its memory is released) and ``overflowed``
    stays set: the caller then closes the connection as a slow consumer (4008).
    """

    mode = "all"

    __slots__ = ("_chunks", "_wake", "limit_bytes", "nbytes", "ntick", "overflowed")

    def __init__(self, limit_bytes: int, wake: Wake = _noop) -> None:
        self._chunks: deque[tuple[str, list[bytes], int]] = deque()
        self._wake = wake
        self.limit_bytes = limit_bytes
        self.nbytes = 0
        self.ntick = 0
        self.overflowed = False

    def put(self, symbol: str, items: list[bytes], nbytes: int) -> None:
        if self.overflowed:
            return
        if self.nbytes + nbytes > self.limit_bytes:
            self.clear()
            self.overflowed = True
            self._wake()
            return
        was_empty = not self.ntick
        self._chunks.append((symbol, items, nbytes))
        self.nbytes += nbytes
        self.ntick += len(items)
        if was_empty:
            self._wake()

    def drain(self, max_bytes: int = MAX_FRAME_BYTES) -> list[bytes]:
        chunks = self._chunks
        out: list[bytes] = []
        room = max_bytes
        while chunks:
            symbol, items, nbytes = chunks[0]
            if nbytes <= room:
                chunks.popleft()
                out += items
                room -= nbytes
                continue
            n = _fit(items, room) if not out or len(items[0]) <= room else 0
            if n:
                head = items[:n]
                head_bytes = sum(map(len, head))
                chunks[0] = (symbol, items[n:], nbytes - head_bytes)
                out += head
                room -= head_bytes
            break
        self.nbytes -= max_bytes - room
        self.ntick -= len(out)
        return out

    def discard(self, symbols: Iterable[str]) -> None:
        drop = set(symbols)
        kept = [chunk for chunk in self._chunks if chunk[0] not in drop]
        self._chunks = deque(kept)
        self.nbytes = sum(chunk[2] for chunk in kept)
        self.ntick = sum(len(chunk[1]) for chunk in kept)

    def clear(self) -> None:
        self._chunks.clear()
        self.nbytes = 0
        self.ntick = 0

    def __len__(self) -> int:
        return self.ntick
