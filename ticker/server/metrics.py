"""The Prometheus metrics of a node, in a registry of its own (so tests can run many nodes).

Hot-path rule: the server counts in plain ints per frame or per batch and these metrics
read them; nothing here is touched per tick per client.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)


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
