"""Prometheus metrics of the Redis link, read from the broker's plain counters at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ticker.cluster.book_wire import BookOutbox
from ticker.cluster.continuity import Continuity
from ticker.cluster.stats import BookRelayStats, RedisStats


class RedisCollector(Collector):
    """The ``ticker_redis_*`` metrics: given only the counters they read and a way to count
    the channels subscribed, not the relay (which would make an import circle)."""

    def __init__(
        self, stats: RedisStats, continuity: Continuity, channels: Callable[[], int]
    ) -> None:
        self.stats = stats
        self.continuity = continuity
        self.channels = channels

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Read at scrape time: nothing is counted twice, nothing on the hot path."""
        stats, continuity = self.stats, self.continuity
        yield GaugeMetricFamily(
            "ticker_redis_link_up",
            "1 while the link to Redis is up and synced.",
            value=int(stats.link_up),
        )
        counters = (
            ("ticker_redis_link_losses", "Times the link to Redis was lost.", stats.link_losses),
            ("ticker_redis_reconnects", "Times the link to Redis came back.", stats.reconnects),
            (
                "ticker_redis_gaps",
                "Jumps in a symbol's q seen on ticks from Redis (lost ticks).",
                continuity.gaps,
            ),
            (
                "ticker_redis_lost_messages",
                "Jumps in an origin's message numbers on a channel (lost messages).",
                continuity.lost_messages,
            ),
            (
                "ticker_redis_messages_published",
                "Messages published to Redis (one per channel per round).",
                stats.messages_published,
            ),
            (
                "ticker_redis_ticks_published",
                "Local ticks published to Redis.",
                stats.ticks_published,
            ),
            (
                "ticker_redis_ticks_dropped",
                "Local ticks not published: the link was down or Redis too slow.",
                stats.ticks_dropped,
            ),
            (
                "ticker_redis_messages_received",
                "Messages received from other origins.",
                stats.messages_received,
            ),
            (
                "ticker_redis_ticks_received",
                "Ticks received from other origins.",
                stats.ticks_received,
            ),
            (
                "ticker_redis_ticks_from_hash",
                "Ticks read from the last-values hash (newly followed symbols, healed gaps).",
                stats.ticks_from_hash,
            ),
            (
                "ticker_redis_bad_messages",
                "Messages on ticker channels that were not valid ticker messages.",
                stats.bad_messages,
            ),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "ticker_redis_channels",
            "Tick channels subscribed now (only those local clients need).",
            value=self.channels(),
        )


class BookRelayCollector(Collector):
    """The ``ticker_redis_book_*`` metrics of the book relay (``book_relay.py``)."""

    def __init__(self, stats: BookRelayStats, out: BookOutbox) -> None:
        self.stats = stats
        self.out = out

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Read at scrape time."""
        stats = self.stats
        yield GaugeMetricFamily(
            "ticker_redis_book_link_up",
            "1 while the book relay's link to Redis is up.",
            value=int(stats.link_up),
        )
        counters = (
            ("sent", "Book change sets (and whole books) this owner sent.", stats.entries_sent),
            (
                "dropped",
                "Book change sets not sent (Redis slow or away): their books went whole.",
                self.out.dropped,
            ),
            ("received", "Book change sets received from their owners.", stats.entries_received),
            (
                "gaps",
                "Book change sets that did not follow their book's u (a lost message).",
                stats.gaps,
            ),
            (
                "reads",
                "Books read from their lists (joined, reconnected, a gap).",
                stats.books_read,
            ),
            (
                "bad_messages",
                "Books messages or list entries that were not valid.",
                stats.bad_messages,
            ),
        )
        for name, doc, value in counters:
            yield CounterMetricFamily(f"ticker_redis_book_{name}", doc, value=value)
