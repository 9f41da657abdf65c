"""The Prometheus metrics of a node, in a registry of its own (so tests can run many nodes).

Hot-path rule: the server counts in plain ints per frame or per batch (``stats.py``) and
the ``NodeCollector`` turns them into metric families at scrape time; nothing here is
touched per tick per client. The prometheus-client metrics below are bumped once per
connection or per handshake. Labels are bounded: transport, close code, error code,
reason, mode and feed, never a symbol, session or client. docs/operations.md says what
each metric means and what to do when it moves.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import TYPE_CHECKING

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
from ticker.core.codes import CloseCode, ErrorCode
from ticker.core.session import MODES
from ticker.server.stats import Buckets

if TYPE_CHECKING:
    from ticker.server.node import Node

disable_created_metrics()  # no ``*_created`` twin of every counter: half the series, no loss

QUEUE_BOUNDS_BYTES = (0, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
"""``ticker_queue_bytes`` buckets: empty, then 1 KiB to 16 MiB by fours."""


class Rejection(StrEnum):
    """Why a handshake was refused (``ticker_handshake_rejections_total{reason}``).

    Add a member for a new kind of refusal (authentication, origin, connection limits):
    its series then exists from the start, at 0.
    """

    BAD_REQUEST = "bad_request"
    """A bad query parameter (``mode``, ``max_hz``): HTTP 400."""
    SHUTTING_DOWN = "shutting_down"
    """The node is closing: HTTP 503."""
    UNAUTHORIZED = "unauthorized"
    """No token, or a bad, expired or not yet valid one: HTTP 401."""
    FORBIDDEN_ORIGIN = "forbidden_origin"
    """A browser Origin not allowed (``--allowed-origin``): HTTP 403."""
    TOO_MANY_CONNECTIONS = "too_many_connections"
    """``--max-connections`` reached: HTTP 503."""
    TOO_MANY_FOR_SUBJECT = "too_many_for_subject"
    """The token's subject holds its ``max_conns``: HTTP 429."""
    TOO_MANY_FOR_IP = "too_many_for_ip"
    """``--max-connections-per-ip`` reached: HTTP 429."""
    TOO_MANY_HANDSHAKES = "too_many_handshakes"
    """``--max-handshakes`` in progress: HTTP 503."""
    TOO_MANY_DELAYS = "too_many_delays"
    """A token's delay would open one delay line too many: HTTP 503."""
    TOO_MANY_SESSIONS = "too_many_sessions"
    """SSE and long polling: ``max_http_sessions`` are open already: HTTP 503."""


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
        for reason in Rejection:
            self.handshake_rejections.labels(transport, reason.value)

    def opened(self, transport: str) -> None:
        self.connections.labels(transport).inc()
        self.connections_opened.labels(transport).inc()

    def closed(self, transport: str, code: int, mode: str) -> None:
        """Count a finished connection."""
        self.connections.labels(transport).dec()
        self.connections_closed.labels(transport, close_label(code)).inc()
        if code == CloseCode.SLOW_CONSUMER:
            self.slow_consumer_closes.labels(transport, mode).inc()

    def rejected(self, transport: str, reason: Rejection) -> None:
        self.handshake_rejections.labels(transport, reason.value).inc()


def histogram(name: str, doc: str, buckets: Buckets) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[])
    family.add_metric([], buckets.cumulative(), buckets.sum)
    return family


class NodeCollector(Collector):
    """Reads the node's plain counters at scrape time: no cost on the hot path.

    The walk over connections (queue bytes, conflated ticks) is the scrape's only cost
    that grows with the number of clients: a couple of microseconds per connection.
    """

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        yield from self._feeds()
        yield from self._traffic()
        yield from self._mailboxes()
        yield from self._subscriptions()
        yield from self._delays()
        node = self.node
        errors = CounterMetricFamily(
            "ticker_client_errors", "Error frames sent to clients, by code.", labels=["code"]
        )
        counts = node.stats.errors
        for code in ErrorCode:
            errors.add_metric([code.value], counts.get(code.value, 0))
        yield errors
        yield histogram(
            "ticker_event_loop_lag_seconds",
            "How late the event loop ran a periodic probe: time it spent on other work.",
            node.stats.loop_lag,
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
        for sup in self.node.supervisors:
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
        for name, traffic in self.node.stats.traffic.items():
            ticks.add_metric([name], traffic.ticks)
            frames.add_metric([name], traffic.frames)
            sent.add_metric([name], traffic.bytes)
            if (buckets := traffic.latency_us) is not None:
                latency.add_metric([name], buckets.cumulative(1e6), buckets.sum / 1e6)
        yield from (ticks, frames, sent, latency)

    def _mailboxes(self) -> Iterator[Metric]:
        queues = {mode: Buckets(QUEUE_BOUNDS_BYTES) for mode in MODES}
        conflated = self.node.stats.conflated_gone
        for conn in self.node.connections:
            mailbox = conn.session.mailbox
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
        for delay, line in self.node.delays.lines.items():  # at most MAX_DELAY_LINES
            held.add_metric([f"{delay:g}"], line.nbytes)
            dropped.add_metric([f"{delay:g}"], line.dropped)
        yield from (held, dropped)

    def _subscriptions(self) -> Iterator[Metric]:
        bus = self.node.bus
        yield GaugeMetricFamily(
            "ticker_subscriptions",
            'Client subscriptions across all topics, "*" counting as one.',
            value=bus.subscriber_count(),
        )
        yield GaugeMetricFamily(
            "ticker_wildcard_subscribers",
            'Clients subscribed to "*" (every symbol).',
            value=bus.wildcard_count(),
        )
        yield GaugeMetricFamily(
            "ticker_symbols", "Symbols known to the bus.", value=len(bus.symbols())
        )
        yield GaugeMetricFamily(
            "ticker_symbols_followed",
            "Symbols that at least one client follows by name.",
            value=bus.followed_count(),
        )
