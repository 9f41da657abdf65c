"""The feed process's side of the worker links: every batch of its bus to every worker.

``FanOut`` is a "*" subscriber of the feed process's bus: each batch is encoded into one
``BATCH`` frame (``ticker/cluster/pipe.py``) and the same bytes are written to every
worker's Unix socket, a ``transport.write`` each, never awaited. A worker that stops
reading must not grow this process's memory: past ``max_behind_bytes`` unsent, its link
is cut and the worker killed (the supervisor restarts it; only its clients reconnect).
A worker joins with a catch-up (the rings and last values, the symbols not live, then
the hello) written in the same loop step in which it starts getting live batches:
nothing falls between. Every status change of this process's board goes to every
worker, and a worker's (a publisher's ``POST /publish/status``) comes here first. The
books of this process's feeds are applied here, in passes, and every change set a pass
applies goes to every worker as it was applied, numbered (a ``BOOK`` frame): each worker
applies exactly it, so every worker's books have the same ``u`` and ``cs``; a joining one
gets every book whole, in its catch-up.

The links also answer the workers' requests: a publisher's batch is numbered here, in
this bus (idempotency keys kept here, so a retry on any worker is answered), and a
scrape of ``/metrics`` on any worker is gathered here from every process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Sequence
from typing import cast

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from feeds.supervisor import FeedSupervisor
from ticker.cluster.book_wire import Entry, whole
from ticker.cluster.pipe import (
    BadFrame,
    FrameReader,
    Kind,
    asked,
    decode_status,
    encode_batch,
    frame,
    json_frame,
    split_asked,
    status_frame,
)
from ticker.cluster.workers import MAX_FRAME
from ticker.core.books import Level
from ticker.core.bus import WILDCARD, Bus
from ticker.core.idempotency import IdempotencyCache, KeyReused
from ticker.core.mailbox import Delivery, Follows
from ticker.core.publish import PublishRefused
from ticker.core.publish_gate import key_reused
from ticker.core.status import SymbolStatus
from ticker.server.books import BookService
from ticker.server.merged import merge

log = logging.getLogger("ticker.workers")

MAX_BEHIND_BYTES = 64 << 20
"""Bytes a worker may leave unread (beyond its catch-up) before it is cut off."""
SCRAPE_S = 2.0
"""How long a gathering scrape waits for each worker."""


class WorkerLink(asyncio.Protocol):
    """The feed process's end of one worker's socket."""

    def __init__(self, fanout: FanOut, index: int) -> None:
        self.fanout = fanout
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.allowance = MAX_BEHIND_BYTES
        self.cut = False
        """Cut off for falling behind (the supervisor kills the worker)."""
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done when the link is gone, whatever the reason."""
        self._reader = FrameReader(MAX_FRAME)
        self._scrapes: dict[int, asyncio.Future[bytes]] = {}
        self._number = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The socket is wrapped; the fan-out adds the link after its catch-up."""
        # a stream transport; uvloop's are not subclasses of asyncio.Transport
        self.transport = cast(asyncio.Transport, transport)

    def send(self, data: bytes) -> None:
        """Write without waiting; past the allowance the link is cut, never buffered on."""
        transport = self.transport
        if transport is None:
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.allowance:
            log.error(
                "worker %d is %d bytes behind the feed: cutting it off (it is restarted)",
                self.index,
                transport.get_write_buffer_size(),
            )
            self.cut = True
            self.close()

    def close(self) -> None:
        """Drop the link now (what is unsent is dropped with it)."""
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        """A worker's requests: publishes, its metrics, a node-wide scrape."""
        try:
            for kind, payload in self._reader.feed(data):
                if kind is Kind.STATUS:  # a publisher's, through that worker: for all
                    self.fanout.bus.status.apply(decode_status(payload))
                    continue
                number, rest = split_asked(payload)
                if kind is Kind.PUBLISH:
                    self.send(asked(Kind.ACK, number, self.fanout.publish(rest)))
                elif kind is Kind.METRICS:
                    waiting = self._scrapes.pop(number, None)
                    if waiting is not None and not waiting.done():
                        waiting.set_result(rest)
                elif kind is Kind.GATHER:
                    self.fanout.answer_gather(self, number)
                else:
                    raise BadFrame(f"the feed process does not take {kind.name} frames")
        except (BadFrame, ValueError, KeyError, TypeError) as exc:
            log.error("bad frame from worker %d (%s): dropping its link", self.index, exc)
            self.close()

    async def scrape(self) -> bytes:
        """The worker's own metrics, rendered by it."""
        self._number += 1
        number = self._number
        waiting: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._scrapes[number] = waiting
        self.send(asked(Kind.SCRAPE, number))
        try:
            async with asyncio.timeout(SCRAPE_S):
                return await waiting
        finally:
            self._scrapes.pop(number, None)

    def connection_lost(self, exc: Exception | None) -> None:
        """The worker is gone (or was cut off): no more batches for it."""
        self.transport = None
        self.fanout.links.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)
        for waiting in self._scrapes.values():
            if not waiting.done():
                waiting.cancel()


class FanOut:
    """A "*" subscriber of the feed process's bus that writes each batch to every worker."""

    follows: Follows = None

    def __init__(
        self,
        bus: Bus,
        supervisors: Sequence[FeedSupervisor],
        registry: CollectorRegistry,
        idempotency_ttl_s: float,
        books: BookService | None = None,
    ) -> None:
        self.bus = bus
        self.books = books
        """The books of this process's feeds (no clients here: every worker has them)."""
        self.supervisors = supervisors
        self.registry = registry
        self.links: set[WorkerLink] = set()
        self.batches = 0
        self.bytes = 0
        self.ticks_published = 0
        self._idempotency = IdempotencyCache(time.monotonic, ttl_s=idempotency_ttl_s)
        self._feeds = self._feeds_ready()
        self._gathers: set[asyncio.Task[None]] = set()
        bus.subscribe(self, [WILDCARD])
        bus.status.listen(self)
        if books is not None:
            books.on_applied.append(self._book_applied)

    def _feeds_ready(self) -> dict[str, bool]:
        return {s.adapter.name: s.ready for s in self.supervisors}

    def offer(self, delivery: Delivery) -> None:
        """One batch of the bus: one frame, the same bytes to every worker."""
        data = encode_batch(delivery)
        self.batches += 1
        self.bytes += len(data)
        for link in list(self.links):
            link.send(data)
        feeds = self._feeds_ready()
        if feeds != self._feeds:
            self._feeds = feeds
            self.broadcast(json_frame(Kind.FEEDS, feeds))

    def status_changed(self, changes: dict[str, SymbolStatus]) -> None:
        """Symbols' status changed here (a feed, a worker's publisher): every worker
        hears it, ``since`` and all (the one that sent it finds nothing new)."""
        self.broadcast(status_frame(changes))

    def _book_applied(
        self, symbol: str, reset: bool, bids: list[Level], asks: list[Level], u: int
    ) -> None:
        """A change set a pass applied: the same to every worker, numbered."""
        self.broadcast(frame(Kind.BOOK, Entry(symbol, u, reset, bids, asks).encode()))

    def broadcast(self, data: bytes) -> None:
        """A frame for every worker."""
        for link in list(self.links):
            link.send(data)

    async def join(self, sock: socket.socket, index: int) -> WorkerLink:
        """Link a worker that was just started: its catch-up, its hello, then live."""
        loop = asyncio.get_running_loop()
        _, link = await loop.connect_accepted_socket(lambda: WorkerLink(self, index), sock)
        # From here to the end, synchronous: no batch can be published in between.
        bus = self.bus
        hello = {"epoch": bus.epoch, "symbols": bus.symbols(), "feeds": self._feeds}
        data = encode_batch(bus.catch_up())
        if not_live := bus.status.not_live(bus.symbols()):
            data += status_frame(not_live)
        if self.books is not None:
            books = self.books.books
            for symbol in bus.symbols():
                book = books.get(symbol)
                if book is not None and book.u:
                    data += frame(Kind.BOOK, whole(book).encode())
        data += json_frame(Kind.HELLO, hello)
        link.allowance = len(data) + MAX_BEHIND_BYTES
        link.send(data)
        self.links.add(link)
        return link

    def publish(self, request: bytes) -> bytes:
        """A publisher's checked batch, from a worker: numbered here, in this bus (its
        ticks go out to every worker before this answer does); the answer as JSON."""
        message = orjson.loads(request)
        batch, key = message["b"], message["i"]
        try:
            if key is not None:
                who, name, digest = key[0], key[1], bytes.fromhex(key[2])
                try:
                    found = self._idempotency.lookup(who, name, digest)
                except KeyReused:
                    raise key_reused("Idempotency-Key (or batch id)") from None
                if found is not None:
                    return b'{"r":true,"q":' + found.answer + b"}"
            try:
                q = orjson.dumps(self.bus.publish(batch))
            except ValueError as exc:
                raise PublishRefused(400, "bad_request", str(exc)) from None
        except PublishRefused as exc:
            refusal = {"status": exc.status, "code": exc.code, "message": exc.message}
            return orjson.dumps({"e": refusal})
        self.ticks_published += len(batch)
        if key is not None:
            self._idempotency.remember(who, name, digest, 200, q)
        return b'{"r":false,"q":' + q + b"}"

    def answer_gather(self, link: WorkerLink, number: int) -> None:
        """A worker was scraped: gather the node and answer it (a task per scrape)."""

        async def answer() -> None:
            link.send(asked(Kind.GATHERED, number, await self.gather()))

        task = asyncio.create_task(answer())
        self._gathers.add(task)
        task.add_done_callback(self._gathers.discard)

    async def gather(self) -> bytes:
        """The whole node's metrics: this process's and every worker's, each sample
        labelled with its ``worker`` (``feed`` for this one)."""
        links = sorted(self.links, key=lambda link: link.index)
        answers = await asyncio.gather(*(link.scrape() for link in links), return_exceptions=True)
        parts = [("feed", generate_latest(self.registry))]
        for link, answer in zip(links, answers, strict=True):
            if isinstance(answer, bytes):
                parts.append((str(link.index), answer))
            else:
                log.warning("worker %d did not answer a scrape", link.index)
        return merge(parts)

    async def close(self) -> None:
        """Drop every link; gathers still running are cancelled."""
        for link in list(self.links):
            link.close()
        for task in list(self._gathers):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
