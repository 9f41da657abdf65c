"""The tick: the one unit of data that flows from feeds to clients.

A tick is a plain dict (the cheapest thing to build in a feed and to hand to orjson).
Feeds fill ``s`` and ``p`` and may fill ``b``, ``a`` and ``v``; ``t`` and ``q`` are stamped
by the bus unless the tick already carries them (a replay, another node).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NotRequired, TypedDict


class Tick(TypedDict):
    """One update of one symbol, keyed as on the wire (protocol.md, Ticks)."""

    s: str
    p: float
    b: NotRequired[float]
    a: NotRequired[float]
    v: NotRequired[float]
    x: NotRequired[int]
    """The source's trade id (an exchange feed's)."""
    et: NotRequired[int]
    """The source's own event time, µs since the epoch (``t`` is when the bus took it)."""
    sd: NotRequired[str]
    """The aggressor's side of a trade: ``buy`` or ``sell``."""
    t: NotRequired[int]
    q: NotRequired[int]
    r: NotRequired[int]
    """1 on a tick of a client's own on-demand replay."""


MAX_SYMBOL_LENGTH = 32

TickBatch = list[Tick]
"""What a feed hands the bus at once: many ticks, any symbols, in publish order."""

MicrosClock = Callable[[], int]
"""Wall-clock time in integer microseconds since the Unix epoch (injectable for tests)."""


def now_us() -> int:
    """Wall-clock microseconds, the unit of ``t``; inject a ``MicrosClock`` in tests."""
    return time.time_ns() // 1000
