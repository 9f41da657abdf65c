"""Who may publish what, how fast, and how big the universe may grow: then the bus.

The transports (``POST /publish``, the publisher WebSocket) decode and check a request
with ``ticker.core.publish``, learn who sent it, and hand the batch here. The gate
refuses the whole batch or publishes the whole batch, in one synchronous call, so no
other publish can interleave with it and no subscriber ever sees part of a refused one.
It also keeps the plain counters the metrics collector reads at scrape time.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from ticker.core.bus import Bus
from ticker.core.entitlements import Entitlements
from ticker.core.idempotency import IdempotencyCache
from ticker.core.publish import PublishLimits, PublishRefused, accepted
from ticker.core.ratelimit import TokenBucket
from ticker.core.ticks import TickBatch

MAX_PUBLISHERS = 10_000
"""Rate buckets kept at once, least recently used dropped first (a dropped publisher
starts again with a full bucket: the bound costs at most one extra burst)."""


class PublishGate:
    """One node's publishing state: rate buckets, idempotency keys, counters."""

    def __init__(
        self, bus: Bus, limits: PublishLimits, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.bus = bus
        self.limits = limits
        self._clock = clock
        self.idempotency = IdempotencyCache(clock, ttl_s=limits.idempotency_ttl_s)
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.requests: Counter[tuple[str, str]] = Counter()
        """(transport, result) -> requests; result is "accepted", "replayed" or an error code."""
        self.ticks = 0
        """Ticks published through the gate."""
        self.rejected_ticks: Counter[str] = Counter()
        """Error code -> ticks in refused requests."""
        self.publishers = 0
        """Publisher WebSockets open now."""

    def publish(self, who: str, allowed: Entitlements, batch: TickBatch) -> dict[str, Any]:
        """Publishes the whole batch or raises ``PublishRefused``; returns the answer."""
        symbols = list(dict.fromkeys(tick["s"] for tick in batch))
        _, refused = allowed.split(symbols)
        if refused:
            raise PublishRefused(
                403,
                "not_entitled",
                f"this publisher may not publish {len(refused)} of the symbols (its token's pub)",
                symbols=refused[:100],
            )
        bus = self.bus
        new = sum(1 for symbol in symbols if not bus.known(symbol))
        if new and bus.symbol_count() + new > self.limits.max_universe:
            raise PublishRefused(
                400,
                "universe_full",
                f"{new} new symbol(s) would take the universe past {self.limits.max_universe}"
                " (--max-universe)",
            )
        bucket = self._bucket(who)
        if not bucket.take(len(batch)):
            wait = bucket.wait_s(len(batch))
            raise PublishRefused(
                429,
                "rate_limited",
                f"over {self.limits.ticks_per_s:g} ticks/s (--publish-ticks-per-s):"
                f" retry in {wait:.1f} s",
                retry_after_s=wait,
            )
        bus.publish(batch)
        self.ticks += len(batch)
        return accepted(batch)

    def _bucket(self, who: str) -> TokenBucket:
        buckets = self._buckets
        bucket = buckets.get(who)
        if bucket is None:
            rate = self.limits.ticks_per_s
            burst = max(rate, float(self.limits.max_ticks))
            bucket = buckets[who] = TokenBucket(rate, burst, clock=self._clock)
            if len(buckets) > MAX_PUBLISHERS:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(who)
        return bucket

    def count(self, transport: str, result: str, ticks: int = 0) -> None:
        """One request's outcome, for ``ticker_publish_requests_total`` and friends."""
        self.requests[transport, result] += 1
        if result not in ("accepted", "replayed"):
            self.rejected_ticks[result] += ticks


def retry_after(seconds: float) -> str:
    """``Retry-After`` takes whole seconds; never 0, or a client retries at once."""
    return str(max(1, math.ceil(seconds)))
