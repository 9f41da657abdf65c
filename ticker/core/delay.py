"""Delayed data: a delay line holds the live stream back by D seconds for every client
whose token says ``delay: D``.

One line per delay value, not per client: the line is a single "*" subscriber of the
live bus that keeps each published batch (the live bus's own encoded bytes: nothing is
re-encoded) and forwards it, when ``now >= newest t of the batch + D``, into a bus of
its own. Delayed sessions subscribe to that bus, so they get its last values as their
snapshot (the last tick older than D, never the live one), the same conflation or
byte-bounded queue, and the original ``t`` and ``q`` of each tick, in order.

Memory: the line holds D seconds of the stream. Measured with tracemalloc (100 symbols,
ticks of ~75 bytes): 210 bytes per held tick in batches of 50, 230 in batches of 10, and
about 1 000 when every batch is a single tick (the batch's dicts dominate). At 1 000
ticks/s in batches of 10 and D = 900 s that is about 200 MB. The line counts its size
conservatively (bytes + ``PER_SYMBOL_BYTES`` per symbol + ``PER_BATCH_BYTES`` per batch,
above every figure measured) and is bounded by ``max_bytes``: past it the oldest held
batches are dropped (never released early) and counted in ``dropped``; the clients then
see a gap.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ticker.core.bus import Bus
from ticker.core.mailbox import Delivery, Follows
from ticker.core.ticks import MicrosClock, now_us

PER_SYMBOL_BYTES = 140
"""Bookkeeping a held batch costs per symbol besides its bytes (dict slots, counts)."""
PER_BATCH_BYTES = 900
"""...and per batch (the ``Delivery`` and its dicts)."""
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def _noop() -> None:
    pass


class DelayLine:
    """A "*" subscriber of the live bus that replays it ``delay_s`` later into ``bus``."""

    mode = "delay"
    overflowed = False

    __slots__ = (
        "_clock",
        "_held",
        "_last_due",
        "_wake",
        "bus",
        "delay_us",
        "dropped",
        "follows",
        "max_bytes",
        "nbytes",
    )

    def __init__(
        self,
        delay_s: float,
        live: Bus,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: MicrosClock = now_us,
        wake: Callable[[], None] = _noop,
    ) -> None:
        self.delay_us = round(delay_s * 1_000_000)
        self.bus = Bus(clock=clock, epoch=live.epoch)
        self.bus.add_symbols(live.symbols())
        self.bus.status = live.status  # a feed's outage is news now, not D seconds later
        self.max_bytes = max_bytes
        self._clock = clock
        self._wake = wake
        self._held: deque[tuple[int, Delivery, int]] = deque()
        self._last_due = 0
        self.follows: Follows = None  # every symbol: subscribed to "*" of the live bus
        self.nbytes = 0
        self.dropped = 0
        """Ticks dropped because the line was over ``max_bytes`` (a metric)."""

    def offer(self, delivery: Delivery) -> None:
        """Hold a live batch (called inside the live bus's publish)."""
        # due: D after the newest tick of the batch, and never before an earlier batch's
        due = max(self._clock(), delivery.newest) + self.delay_us
        due = self._last_due = max(due, self._last_due)
        segments = delivery.segments
        size = sum(map(len, segments.values())) + PER_SYMBOL_BYTES * len(segments) + PER_BATCH_BYTES
        held = self._held
        if not held:
            self._wake()
        held.append((due, delivery, size))
        self.nbytes += size
        while self.nbytes > self.max_bytes and len(held) > 1:
            _, old, old_size = held.popleft()
            self.nbytes -= old_size
            self.dropped += sum(old.counts.values())

    def release(self) -> float | None:
        """Forward every batch that is due; seconds until the next one (None: none held)."""
        now = self._clock()
        held = self._held
        forward = self.bus.forward
        while held and held[0][0] <= now:
            _, delivery, size = held.popleft()
            self.nbytes -= size
            forward(delivery)
        return (held[0][0] - now) / 1_000_000 if held else None

    def __len__(self) -> int:
        """Batches held."""
        return len(self._held)
