"""The broker: what carries ticks between a node's bus and the rest of the cluster.

Centrifuge's shape: the hub (the bus and the sessions on it) never knows which broker it
has. ``LocalBroker`` is the single-process case (the bus is the whole world);
``RedisBroker`` (``ticker/cluster/redis.py``) relays through Redis. A broker attaches to
the bus through its two hooks: ``on_publish`` (forward what local feeds publish) and
``on_interest`` (follow upstream only the topics local clients want). ``WorkerBroker``
(``ticker/cluster/workers.py``) feeds one worker of ``serve --workers N`` from the feed
process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry

from ticker.cluster.sequencer import Idempotency, Sequenced
from ticker.core.bus import Bus
from ticker.core.ticks import TickBatch

if TYPE_CHECKING:
    from ticker.cluster.book_wire import BookHost

RestartClients = Callable[[], None]
"""Asks the node to close its clients with 1001: the cluster's stream restarted (a new
epoch), so their ``q`` values no longer compare; they reconnect and resubscribe."""

Sequencer = Callable[[TickBatch, Idempotency | None], Awaitable[Sequenced]]
"""Publishes a checked batch to the whole cluster, which numbers it (``sequencer.py``);
raises ``PublishRefused`` when the cluster cannot take it."""


class Broker(Protocol):
    """What a node needs of whatever carries ticks between it and the rest of the cluster."""

    name: str

    @property
    def ready(self) -> bool:
        """The broker can serve what it is for (a Redis broker: its link is up and synced)."""
        ...

    def take_publishes(self) -> Sequencer | None:
        """The node accepts publishers (``--publish``), called before ``start``: where their
        batches go. None: straight into the node's bus, which numbers them; else to the
        cluster, which gives ``q`` whichever node took them."""
        ...

    def bind_books(self, books: BookHost) -> None:
        """The node's books, called before ``start``: a broker that brings another
        process's books applies their change sets to them (a worker's, from the feed
        process). Redis carries books through a relay of its own (``book_relay.py``)."""
        ...

    async def start(
        self, bus: Bus, local_symbols: Iterable[str], restart_clients: RestartClients
    ) -> None:
        """Attach to the bus; return once local feeds may start publishing."""
        ...

    async def stop(self) -> None:
        """Forward what is still pending, then detach (idempotent)."""
        ...

    def health(self) -> dict[str, Any]:
        """Extra detail for ``/readyz`` (empty when there is nothing to say)."""
        ...

    def register(self, registry: CollectorRegistry) -> None:
        """Add the broker's metrics to the node's registry."""
        ...

    async def exposition(self, local: Callable[[], bytes]) -> bytes:
        """What ``/metrics`` serves, given this process's own rendering: that (one process
        is the node) or the whole node's (a worker of ``--workers``)."""
        ...


class LocalBroker:
    """One process, no cluster: the bus already delivers everything."""

    name = "local"
    ready = True

    def take_publishes(self) -> None:
        """One node numbers its publishes itself, in its bus."""
        return None

    def bind_books(self, books: BookHost) -> None:
        """The node's own books are the whole world's."""

    async def start(
        self, bus: Bus, local_symbols: Iterable[str], restart_clients: RestartClients
    ) -> None:
        """Nothing to attach: the bus is the whole world."""

    async def stop(self) -> None:
        """Nothing to detach."""

    def health(self) -> dict[str, Any]:
        """No link to report on ``/readyz``."""
        return {}

    def register(self, registry: CollectorRegistry) -> None:
        """No broker metrics to register."""

    async def exposition(self, local: Callable[[], bytes]) -> bytes:
        """This process is the whole node."""
        return local()
