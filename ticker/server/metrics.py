"""The Prometheus metrics of a node, in a registry of its own (so tests can run many nodes).

Hot-path rule: the server counts in plain ints per frame or per batch (``stats.py``) and
the ``NodeCollector`` turns them into metric families at scrape time; nothing here is
touched per tick per client. The prometheus-client metrics below are bumped once per
connection or per handshake. Labels are bounded: transport, close code, error code,
reason, mode and feed, never a session or client, and a symbol only where the operator
chose it on the command line (an exchange feed's gaps: its products). docs/operations.md
says what each metric means and what to do when it moves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from feeds.base import ReportsProgress
from feeds.exchanges.feed import ExchangeFeed
from feeds.supervisor import FeedSupervisor
from ticker.core.bus import Bus
from ticker.core.codes import CloseCode, ErrorCode, Refusal
from ticker.core.mailbox import Mailbox
from ticker.core.session import MODES
from ticker.core.status import LIVE
from ticker.server.books import BookService
from ticker.server.candles import CandleService
from ticker.server.delayed import DelayPump
from ticker.server.stats import Buckets, Stats

# no ``*_created`` twin of every counter: half the series, no loss (the function is untyped)
cast(Callable[[], None], disable_created_metrics)()

QUEUE_BOUNDS_BYTES = (0, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
"""``ticker_queue_bytes`` buckets: empty, then 1 KiB to 16 MiB by fours."""


REJECTION_REASONS: tuple[Refusal, ...] = (
    Refusal.BAD_REQUEST,
    Refusal.SHUTTING_DOWN,
    Refusal.UNAUTHORIZED,
    Refusal.FORBIDDEN_ORIGIN,
    Refusal.TOO_MANY_CONNECTIONS,
    Refusal.TOO_MANY_FOR_SUBJECT,
    Refusal.TOO_MANY_FOR_IP,
    Refusal.TOO_MANY_HANDSHAKES,
    Refusal.TOO_MANY_DELAYS,
    Refusal.TOO_MANY_SESSIONS,
)
"""The ``reason`` labels of ``ticker_handshake_rejections_total``, each series there from the
start at 0: the refusals of the handshake gate (an op or a poll on another subject's
session counts as ``unauthorized``)."""


def close_label(code: int) -> str:
    """A close code as a label value: the protocol's codes, anything else is "other"."""
    return str(int(code)) if code in CloseCode._value2member_map_ else "other"


class Metrics:
    """The node's registry: the default process, platform and GC collectors, the
    per-connection metrics below and (registered by the node) its ``NodeCollector``."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.connections = Gauge(
            "ticker_connections", "Open client connections.", ["transport"], registry=registry
        )
        self.connections_opened = Counter(
            "ticker_connections_opened",
            "Client connections accepted.",
            ["transport"],
            registry=registry,
        )
        self.connections_closed = Counter(
            "ticker_connections_closed",
            "Client connections closed, by close code.",
            ["transport", "code"],
            registry=registry,
        )
        self.slow_consumer_closes = Counter(
            "ticker_slow_consumer_closes",
            "Clients closed with 4008 for falling behind, by mailbox mode.",
            ["transport", "mode"],
            registry=registry,
        )
        self.handshake_rejections = Counter(
            "ticker_handshake_rejections",
            "Connection attempts refused before the upgrade, by reason.",
            ["transport", "reason"],
            registry=registry,
        )

    def prepare(self, transport: str) -> None:
        """Create a transport's series at 0, so that rates and alerts see them from the start."""
        self.connections.labels(transport)
        self.connections_opened.labels(transport)
        for label in [*map(close_label, CloseCode), "other"]:
            self.connections_closed.labels(transport, label)
        for mode in MODES:
            self.slow_consumer_closes.labels(transport, mode)
        for reason in REJECTION_REASONS:
            self.handshake_rejections.labels(transport, reason.value)

    def opened(self, transport: str) -> None:
        """Count an accepted connection."""
        self.connections.labels(transport).inc()
        self.connections_opened.labels(transport).inc()

    def closed(self, transport: str, code: int, mode: str) -> None:
        """Count a finished connection."""
        self.connections.labels(transport).dec()
        self.connections_closed.labels(transport, close_label(code)).inc()
        if code == CloseCode.SLOW_CONSUMER:
            self.slow_consumer_closes.labels(transport, mode).inc()

    def rejected(self, transport: str, reason: Refusal) -> None:
        """Count a refused handshake (``reason``: one of ``REJECTION_REASONS``)."""
        self.handshake_rejections.labels(transport, reason.value).inc()


def histogram(name: str, doc: str, buckets: Buckets) -> HistogramMetricFamily:
    """A histogram family of one unlabelled series, read from plain ``Buckets``."""
    family = HistogramMetricFamily(name, doc, labels=[])
    family.add_metric([], buckets.cumulative(), buckets.sum)
    return family


class NodeCollector(Collector):
    """Reads the node's plain counters at scrape time: no cost on the hot path.

    The walk over mailboxes (queue bytes, conflated ticks) is the scrape's only cost
    that grows with the number of clients: a couple of microseconds per connection.
    """

    def __init__(
        self,
        stats: Stats,
        bus: Bus,
        feeds: Sequence[FeedSupervisor],
        delays: DelayPump,
        mailboxes: Callable[[], Iterable[Mailbox]],
        candles: CandleService | None = None,
        books: BookService | None = None,
    ) -> None:
        self.stats = stats
        self.books = books
        self.candles = candles
        """The candle topics, whose tape is the node's own "*" subscriber, not a client."""
        self.bus = bus
        self.feeds = feeds
        self.delays = delays
        self.mailboxes = mailboxes
        """The mailbox of every open connection, walked at each scrape."""

    def collect(self) -> Iterator[Metric]:
        """Every family, read now from the plain counters."""
        yield from self._feeds()
        yield from self._exchanges()
        yield from self._statuses()
        yield from self._traffic()
        yield from self._mailboxes()
        yield from self._subscriptions()
        yield from self._delays()
        yield from self._candles()
        yield from self._books()
        errors = CounterMetricFamily(
            "ticker_client_errors", "Error frames sent to clients, by code.", labels=["code"]
        )
        counts = self.stats.errors
        for code in ErrorCode:
            errors.add_metric([code.value], counts.get(code.value, 0))
        yield errors
        yield histogram(
            "ticker_event_loop_lag_seconds",
            "How late the event loop ran a periodic probe: time it spent on other work.",
            self.stats.loop_lag,
        )

    def _feeds(self) -> Iterator[Metric]:
        published = CounterMetricFamily(
            "ticker_ticks_published", "Ticks published into the bus, by feed.", labels=["feed"]
        )
        restarts = CounterMetricFamily(
            "ticker_feed_restarts", "Feed adapter restarts after a failure.", labels=["feed"]
        )
        age = GaugeMetricFamily(
            "ticker_feed_last_tick_age_seconds",
            "Seconds since the feed's last tick (since its start while it has had none).",
            labels=["feed"],
        )
        position = GaugeMetricFamily(
            "ticker_feed_replay_position_seconds",
            "A replaying feed's position: its source's time of the last tick, Unix seconds.",
            labels=["feed"],
        )
        progress = GaugeMetricFamily(
            "ticker_feed_replay_progress_ratio",
            "How much of its source a replaying feed has done, 0 to 1.",
            labels=["feed"],
        )
        for sup in self.feeds:
            name = [sup.adapter.name]
            published.add_metric(name, sup.ticks)
            restarts.add_metric(name, sup.restarts)
            if (seconds := sup.tick_age()) is not None:
                age.add_metric(name, seconds)
            if (
                isinstance(sup.adapter, ReportsProgress)
                and (where := sup.adapter.progress()) is not None
            ):
                position.add_metric(name, where.position_s)
                if where.fraction is not None:
                    progress.add_metric(name, where.fraction)
        yield from (published, restarts, age, position, progress)

    def _exchanges(self) -> Iterator[Metric]:
        """What the exchange feeds count (``feeds/exchanges/stats.py``)."""
        exchanges = [s.adapter for s in self.feeds if isinstance(s.adapter, ExchangeFeed)]
        gaps = CounterMetricFamily(
            "ticker_feed_gaps",
            "Trades an exchange's contiguous trade ids say were never received.",
            labels=["feed", "symbol"],
        )
        counters = {
            "malformed": CounterMetricFamily(
                "ticker_feed_malformed_messages",
                "Exchange messages skipped: not JSON, or fields missing or wrong.",
                labels=["feed"],
            ),
            "unknown": CounterMetricFamily(
                "ticker_feed_unknown_messages",
                "Exchange messages skipped: a type the feed does not read.",
                labels=["feed"],
            ),
            "reconnects": CounterMetricFamily(
                "ticker_feed_reconnects",
                "Exchange connections lost (closed, failed, silent) and opened again.",
                labels=["feed"],
            ),
            "book_resyncs": CounterMetricFamily(
                "ticker_feed_book_resyncs",
                "Exchange books found wrong (a gap, a bad checksum) and fetched again.",
                labels=["feed"],
            ),
        }
        duplicates = CounterMetricFamily(
            "ticker_feed_duplicate_trades",
            "Trades dropped because their trade id was already published (replays).",
            labels=["feed"],
        )
        lag = HistogramMetricFamily(
            "ticker_feed_lag_seconds",
            "From a trade's exchange time et to its arrival at the feed.",
            labels=["feed"],
        )
        for feed in exchanges:
            venue = feed.venue
            for symbol, missed in venue.ids.gaps.items():
                gaps.add_metric([feed.name, symbol], missed)
            for attr, family in counters.items():
                family.add_metric([feed.name], getattr(venue.stats, attr))
            duplicates.add_metric([feed.name], venue.ids.duplicates)
            buckets = venue.stats.lag
            lag.add_metric([feed.name], buckets.cumulative(1e6), buckets.sum / 1e6)
        yield from (gaps, *counters.values(), duplicates, lag)

    def _statuses(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "ticker_symbols",
            "Symbols known to the bus, by status (live, stale, halted, closed).",
            labels=["status"],
        )
        counts = self.bus.status.counts()
        counts[LIVE] = self.bus.symbol_count() - sum(n for s, n in counts.items() if s != LIVE)
        for status, count in counts.items():
            family.add_metric([status], count)
        yield family

    def _traffic(self) -> Iterator[Metric]:
        ticks = CounterMetricFamily(
            "ticker_ticks_delivered", "Ticks handed to client transports.", labels=["transport"]
        )
        frames = CounterMetricFamily(
            "ticker_frames_sent",
            "Frames handed to client transports, control frames included.",
            labels=["transport"],
        )
        sent = CounterMetricFamily(
            "ticker_sent_bytes",
            "Bytes handed to client transports, frame headers included.",
            labels=["transport"],
        )
        latency = HistogramMetricFamily(
            "ticker_tick_latency_seconds",
            "From a frame's oldest tick's time t to the frame handed to the transport.",
            labels=["transport"],
        )
        for name, traffic in self.stats.traffic.items():
            ticks.add_metric([name], traffic.ticks)
            frames.add_metric([name], traffic.frames)
            sent.add_metric([name], traffic.bytes)
            if (buckets := traffic.latency_us) is not None:
                latency.add_metric([name], buckets.cumulative(1e6), buckets.sum / 1e6)
        yield from (ticks, frames, sent, latency)

    def _mailboxes(self) -> Iterator[Metric]:
        queues = {mode: Buckets(QUEUE_BOUNDS_BYTES) for mode in MODES}
        conflated = self.stats.conflated_gone
        for mailbox in self.mailboxes():
            queues[mailbox.mode].observe(mailbox.nbytes)
            conflated += mailbox.conflated
        yield CounterMetricFamily(
            "ticker_ticks_conflated",
            "Ticks replaced by a newer one of their symbol before they were sent (mode conflate).",
            value=conflated,
        )
        family = GaugeHistogramMetricFamily(
            "ticker_queue_bytes",
            "Open connections by bytes waiting in their mailbox, now, by mode.",
            labels=["mode"],
        )
        for mode, buckets in queues.items():
            family.add_metric([mode], buckets.cumulative(), buckets.sum)
        yield family

    def _delays(self) -> Iterator[Metric]:
        held = GaugeMetricFamily(
            "ticker_delay_held_bytes",
            "Bytes a delay line holds for delayed-data clients, by delay in seconds.",
            labels=["delay"],
        )
        dropped = CounterMetricFamily(
            "ticker_delay_dropped_ticks",
            "Ticks a full delay line dropped (a gap for its clients), by delay in seconds.",
            labels=["delay"],
        )
        for delay, line in self.delays.lines.items():  # at most MAX_DELAY_LINES
            held.add_metric([f"{delay:g}"], line.nbytes)
            dropped.add_metric([f"{delay:g}"], line.dropped)
        yield from (held, dropped)

    def _candles(self) -> Iterator[Metric]:
        if self.candles is None:
            return
        candles = self.candles.candles
        yield GaugeMetricFamily(
            "ticker_candle_series",
            "Candle series (symbol, interval) with closed bars kept.",
            value=candles.series(),
        )
        yield GaugeMetricFamily(
            "ticker_candle_bytes",
            "Bytes the candle rings and open bars take.",
            value=candles.nbytes(),
        )
        yield CounterMetricFamily(
            "ticker_candle_late_ticks",
            "Ticks left out of an interval's bars because their bar had closed.",
            value=candles.late,
        )
        yield CounterMetricFamily(
            "ticker_candle_dropped_ticks",
            "Ticks the candles never saw: more than the tape's bound waited for a pass.",
            value=self.candles.tape.dropped,
        )

    def _books(self) -> Iterator[Metric]:
        if self.books is None:
            return
        service = self.books
        yield GaugeMetricFamily(
            "ticker_books", "Symbols with an order book.", value=service.books.count()
        )
        yield GaugeMetricFamily(
            "ticker_book_levels",
            "Price levels held in all books (both sides).",
            value=service.books.levels(),
        )
        yield CounterMetricFamily(
            "ticker_book_level_changes",
            "Level changes sources handed to the books (before merging per pass).",
            value=service.changes,
        )
        yield CounterMetricFamily(
            "ticker_book_levels_applied",
            "Level changes applied to books, after merging each pass's per level.",
            value=service.applied,
        )
        yield CounterMetricFamily(
            "ticker_book_passes", "Passes that applied change sets to books.", value=service.passes
        )
        yield CounterMetricFamily(
            "ticker_book_crossed",
            "Times a source left a book crossed or locked (its symbol is stale until fixed).",
            value=service.crossed,
        )
        yield GaugeMetricFamily(
            "ticker_book_followers",
            "Book topics followed, summed over clients.",
            value=service.followers(),
        )

    def _subscriptions(self) -> Iterator[Metric]:
        bus = self.bus
        own = 0 if self.candles is None else 1  # the candle tape on "*"
        yield GaugeMetricFamily(
            "ticker_subscriptions",
            'Client subscriptions across all topics, "*" counting as one.',
            value=bus.subscriber_count() - own,
        )
        yield GaugeMetricFamily(
            "ticker_wildcard_subscribers",
            'Clients subscribed to "*" (every symbol).',
            value=bus.wildcard_count() - own,
        )
        yield GaugeMetricFamily(
            "ticker_symbols_followed",
            "Symbols that at least one client follows by name.",
            value=bus.followed_count(),
        )
