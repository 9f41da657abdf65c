"""What an exchange feed counts, as plain numbers the metrics read at scrape time."""

from __future__ import annotations

from dataclasses import dataclass, field

from ticker.server.stats import Buckets

LAG_BOUNDS_US = (
    *(1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000),
    *(1_000_000, 2_500_000, 5_000_000, 10_000_000),
)
"""Exchange-to-ticker lag buckets, 1 ms to 10 s, in microseconds (the unit of ``et``)."""


@dataclass(slots=True)
class ExchangeStats:
    """Counters of one exchange feed, across its connections and reconnects."""

    malformed: int = 0
    """Messages skipped: not JSON, or a known type with fields missing or wrong."""
    unknown: int = 0
    """Messages skipped: a type we do not read (exchanges add types; never fatal)."""
    reconnects: int = 0
    """Connections lost (closed, failed, or silent past the watchdog) and tried again."""
    book_resyncs: int = 0
    """Books found wrong (a gap, a bad checksum) and fetched again, one product each."""
    lag: Buckets = field(default_factory=lambda: Buckets(LAG_BOUNDS_US))
    """Arrival time minus the exchange's event time ``et`` of each trade."""
