"""Plain counters that the hot path bumps: per frame, per batch or per connection.

The metrics collector (``metrics.py``) reads them at scrape time. Bumping an int costs a
few tens of nanoseconds and takes no lock; a prometheus-client metric costs about a
microsecond per call, too much per frame at millions of ticks per second.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ticker.core.ticks import MicrosClock, now_us

LATENCY_BOUNDS_US = (
    *(100, 250, 500),
    *(1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000),
    *(1_000_000, 2_500_000, 5_000_000, 10_000_000),
)
"""Tick latency buckets, 100 µs to 10 s, in microseconds (the unit of a tick's ``t``)."""

LOOP_LAG_BOUNDS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Buckets:
    """A histogram kept as plain numbers: an observation is a bisect and two additions.

    ``counts[i]`` holds the observations ``<= bounds[i]`` and above the bound before it;
    the last slot holds those above every bound (Prometheus' ``+Inf`` bucket).
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must increase strictly")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum: float = 0

    def observe(self, value: float, times: int = 1) -> None:
        """Count a value ``times`` times: a batch of frames costs one bisect."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times

    @property
    def count(self) -> int:
        """Observations so far, over all buckets."""
        return sum(self.counts)

    def cumulative(self, unit: float = 1.0) -> list[tuple[str, int]]:
        """(upper bound, observations at or below it) pairs as Prometheus exposes them,
        the bounds divided by ``unit`` (1e6: microseconds to seconds)."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, None), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound is None else repr(bound / unit), total))
        return out


@dataclass(slots=True)
class Traffic:
    """What one transport (``ws``; later SSE, polling) handed to its clients' sockets."""

    frames: int = 0
    ticks: int = 0
    bytes: int = 0
    """Bytes written, frame headers and control frames included."""
    latency_us: Buckets | None = None
    """Tick ``t`` to frame handed to the transport, once per ticks frame."""
    handed: list[int] | None = None
    """The oldest tick time (µs) of each ticks frame handed over in the current flush
    pass: a transport appends, ``Stats.settle`` observes them all at the end of the pass
    (an append per frame instead of a clock read and a bisect). ``None`` when metrics
    are off."""

    def settle(self, now: int) -> None:
        """Observe the pass's frame latencies at once, at the pass's end."""
        handed, latency = self.handed, self.latency_us
        if not handed or latency is None:
            return
        for since, frames in Counter(handed).items():  # a few distinct batches per pass
            latency.observe(max(now - since, 0), frames)
        handed.clear()


@dataclass(slots=True)
class Stats:
    """Every hot-path counter of one node."""

    metrics: bool = True
    traffic: dict[str, Traffic] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    """Error frames sent, by error code."""
    conflated_gone: int = 0
    """Ticks conflated by mailboxes of connections that have closed (the live ones are
    summed at scrape time, so the total only ever grows)."""
    loop_lag: Buckets = field(default_factory=lambda: Buckets(LOOP_LAG_BOUNDS_S))
    clock_us: MicrosClock = now_us

    def transport(self, name: str) -> Traffic:
        """The counters of one transport; a connection keeps the object it got."""
        traffic = self.traffic.get(name)
        if traffic is None:
            traffic = self.traffic[name] = Traffic()
            if self.metrics:
                traffic.latency_us, traffic.handed = Buckets(LATENCY_BOUNDS_US), []
        return traffic

    def settle(self) -> None:
        """End of a flush pass: the frames it handed over count as handed over now."""
        now = self.clock_us()
        for traffic in self.traffic.values():
            traffic.settle(now)
