"""The broker of one worker of ``ticker serve --workers N``: its bus is fed by the feed process.

The feed process (``ticker/server/primary.py``) runs the feeds and the one bus that
numbers the stream; every batch it publishes comes here over a Unix socket, encoded
once there (``ticker/cluster/pipe.py``), and goes into this worker's bus with its ``q``,
``t`` and bytes (``Bus.forward(..., numbered=True)``): snapshots and history are this
bus's own, and every worker's clients get the identical stream under the same epoch.
Before any client connects, the link brings the rings and last values (catch-up
batches) and the symbols not live, then the hello (epoch, universe, feed readiness);
status changes come as they happen, and go there when a publisher sets them here
(``POST /publish/status``), so every worker says the same. Books likewise: the feed
process's passes apply its feeds' change sets and each goes to every worker (its books
whole in the catch-up), applied here under its ``u``, so every worker serves the same
``u`` and ``cs``. A publisher's batch is
checked here and numbered there (``take_publishes``), so ``q`` stays one count per
symbol whichever worker took it. When the feed process goes away the worker stops: a
worker without its feed would serve a frozen stream.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterable
from typing import Any, cast

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from ticker.cluster.book_wire import BookHost, decode_stored
from ticker.cluster.broker import RestartClients
from ticker.cluster.pipe import (
    BadFrame,
    FrameReader,
    Kind,
    asked,
    decode_batch,
    decode_status,
    split_asked,
    status_frame,
)
from ticker.cluster.sequencer import Idempotency, Sequenced, unavailable
from ticker.core.bus import Bus
from ticker.core.publish import PublishRefused
from ticker.core.status import SymbolStatus
from ticker.core.ticks import TickBatch

log = logging.getLogger("ticker.workers")

MAX_FRAME = 1 << 30
"""The largest frame a link takes (a batch of the feed process's, a node's metrics)."""
MAX_IN_FLIGHT = 1000
"""Requests a worker may have waiting on the feed process; past it a publish gets 503."""
ANSWER_S = 5.0
"""How long a request waits for the feed process's answer."""
HELLO_S = 60.0
"""How long a starting worker waits for its hello (the catch-up of large rings first)."""


class WorkerBroker(asyncio.Protocol):
    """A ``Broker`` fed by the feed process over ``sock``; ``index`` names the worker."""

    name = "workers"

    def __init__(self, sock: socket.socket, index: int) -> None:
        self.index = index
        self._sock = sock
        self._reader = FrameReader(MAX_FRAME)
        self._transport: asyncio.Transport | None = None
        self._bus = Bus()
        self._registry: CollectorRegistry | None = None
        self._feeds: dict[str, bool] = {}
        self._hello: asyncio.Future[None] | None = None
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._numbers = itertools.count(1)
        self._stopping = False
        self._applying = False  # the feed process's status changes, not to send back
        self._books: BookHost | None = None

    # -- Broker -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Linked to the feed process, whose feeds have all produced a tick."""
        return self._transport is not None and all(self._feeds.values())

    def take_publishes(self) -> WorkerBroker:
        """Publishers' batches go to the feed process, which numbers them (``__call__``)."""
        return self

    async def __call__(self, batch: TickBatch, idempotency: Idempotency | None) -> Sequenced:
        """Have the feed process publish a checked batch: its ``q`` values, or its refusal.
        The idempotency key is kept there, so a retry on another worker is answered."""
        key = None
        if idempotency is not None:
            i = idempotency
            key = [i.who, i.key, i.digest.hex(), i.ttl_s]
        answer = orjson.loads(await self._ask(Kind.PUBLISH, orjson.dumps({"b": batch, "i": key})))
        if "e" in answer:
            raise PublishRefused(**answer["e"])
        return Sequenced(answer["q"], replayed=answer["r"])

    def bind_books(self, books: BookHost) -> None:
        """The worker's books take the feed process's change sets, numbered there."""
        self._books = books

    async def start(
        self, bus: Bus, local_symbols: Iterable[str], restart_clients: RestartClients
    ) -> None:
        """Link up and take the catch-up and the hello: then clients may come."""
        self._bus = bus
        bus.status.listen(self)
        loop = asyncio.get_running_loop()
        self._hello = loop.create_future()
        await loop.connect_accepted_socket(lambda: self, self._sock)
        async with asyncio.timeout(HELLO_S):
            await self._hello

    async def stop(self) -> None:
        """Close the link (idempotent); the feed process then sees this worker leave."""
        self._stopping = True
        if self._transport is not None:
            self._transport.close()

    def health(self) -> dict[str, Any]:
        """The feed process's feeds (this process has none of its own), which worker
        answered and its link, for ``/readyz``."""
        link = "up" if self._transport is not None else "down"
        worker = {"index": self.index, "pid": os.getpid(), "link": link}
        return {"feeds": self._feeds, "worker": worker}

    def register(self, registry: CollectorRegistry) -> None:
        """Keep the registry: the feed process asks for it when the node is scraped."""
        self._registry = registry

    async def exposition(self, local: Callable[[], bytes]) -> bytes:
        """The whole node's metrics (every worker's and the feed process's), gathered by
        the feed process; this worker's own if it does not answer."""
        try:
            return await self._ask(Kind.GATHER, b"")
        except PublishRefused:
            log.warning("the feed process did not gather the metrics: serving this worker's")
            return local()

    # -- the link (asyncio.Protocol) ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Linked to the feed process."""
        # a stream transport; uvloop's are not subclasses of asyncio.Transport
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Frames from the feed process, handled as they come (batches into the bus)."""
        try:
            for kind, payload in self._reader.feed(data):
                self._handle(kind, payload)
        except (BadFrame, ValueError, KeyError, TypeError) as exc:
            log.error("bad frame from the feed process (%s): dropping the link", exc)
            if self._transport is not None:
                self._transport.abort()

    def _handle(self, kind: Kind, payload: bytes) -> None:
        if kind is Kind.BATCH:
            self._bus.forward(decode_batch(payload), numbered=True)
        elif kind is Kind.ACK or kind is Kind.GATHERED:
            number, rest = split_asked(payload)
            waiting = self._waiting.pop(number, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(rest)
        elif kind is Kind.SCRAPE:
            number, _ = split_asked(payload)
            body = generate_latest(self._registry) if self._registry is not None else b""
            self._write(asked(Kind.METRICS, number, body))
        elif kind is Kind.STATUS:
            self._applying = True
            try:
                self._bus.status.apply(decode_status(payload))
            finally:
                self._applying = False
        elif kind is Kind.BOOK:
            self._book(payload)
        elif kind is Kind.FEEDS:
            self._feeds = orjson.loads(payload)
        elif kind is Kind.HELLO:
            hello = orjson.loads(payload)
            self._bus.epoch = hello["epoch"]
            self._bus.add_symbols(hello["symbols"])
            self._feeds = hello["feeds"]
            if self._hello is not None and not self._hello.done():
                self._hello.set_result(None)
        else:
            raise BadFrame(f"a worker does not take {kind.name} frames")

    def _book(self, payload: bytes) -> None:
        """A change set the feed process's books applied: the same here, same ``u``."""
        entry = decode_stored(payload)
        books = self._books
        if books is None:
            return  # this worker serves no book topics (``--book-interval-ms 0``)
        if not books.apply(entry.symbol, entry.reset, entry.bids, entry.asks, u=entry.u):
            raise BadFrame(f"book {entry.symbol}: change set {entry.u} out of order")

    def connection_lost(self, exc: Exception | None) -> None:
        """The feed process is gone (or this worker stops): without it the stream would
        freeze, so the worker stops too (its clients reconnect to the others)."""
        self._transport = None
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(unavailable("the feed process went away; retry"))
        self._waiting.clear()
        if self._hello is not None and not self._hello.done():
            self._hello.set_exception(ConnectionError("the feed process closed the link"))
        if not self._stopping:
            log.error("worker %d lost its feed process: stopping", self.index)
            signal.raise_signal(signal.SIGTERM)

    def status_changed(self, changes: dict[str, SymbolStatus]) -> None:
        """A publisher set status here: the feed process tells every worker."""
        if not self._applying:
            self._write(status_frame(changes))

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    async def _ask(self, kind: Kind, payload: bytes) -> bytes:
        """One request to the feed process and its answer; 503 when it cannot answer."""
        if self._transport is None:
            raise unavailable("the feed process is unreachable: nothing was done; retry")
        if len(self._waiting) >= MAX_IN_FLIGHT:
            raise unavailable("too many requests wait on the feed process; retry")
        number = next(self._numbers)
        waiting: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[number] = waiting
        self._write(asked(kind, number, payload))
        try:
            async with asyncio.timeout(ANSWER_S):
                return await waiting
        except TimeoutError:
            raise unavailable(
                "the feed process did not answer: the batch may or may not have been"
                " published; retry with the same Idempotency-Key or batch id"
            ) from None
        finally:
            self._waiting.pop(number, None)
