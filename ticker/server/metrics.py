"""The Prometheus metrics of a node, in a registry of its own (so tests can run many nodes).

Hot-path rule: the server counts in plain ints per frame or per batch and these metrics
read them; nothing here is touched per tick per client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ticker.server.node import Node


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
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


class NodeCollector(Collector):
    """Reads the node's plain counters at scrape time: no cost on the hot path."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        node = self.node
        published = CounterMetricFamily(
            "ticker_ticks_published", "Ticks published into the bus, by feed.", labels=["feed"]
        )
        restarts = CounterMetricFamily(
            "ticker_feed_restarts", "Feed adapter restarts after a failure.", labels=["feed"]
        )
        for sup in node.supervisors:
            published.add_metric([sup.adapter.name], sup.ticks)
            restarts.add_metric([sup.adapter.name], sup.restarts)
        yield published
        yield restarts
        stats = node.stats
        yield CounterMetricFamily(
            "ticker_ticks_delivered",
            "Ticks handed to client transports.",
            value=stats.ticks_delivered,
        )
        yield CounterMetricFamily(
            "ticker_frames_sent", "Frames handed to client transports.", value=stats.frames_sent
        )
        errors = CounterMetricFamily(
            "ticker_client_errors", "Error frames sent to clients, by code.", labels=["code"]
        )
        for code, count in stats.errors.items():
            errors.add_metric([code], count)
        yield errors
        yield GaugeMetricFamily(
            "ticker_subscriptions",
            "Client subscriptions across all topics.",
            value=node.bus.subscriber_count(),
        )
        yield GaugeMetricFamily(
            "ticker_symbols", "Symbols known to the bus.", value=len(node.bus.symbols())
        )
