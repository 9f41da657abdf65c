"""Who may publish what, how fast, and how big the universe may grow: then the bus
(and the node's books, for a request's book change sets).

The transports (``POST /publish``, the publisher WebSocket) decode and check a request
with ``ticker.core.publish``, learn who sent it, and hand the batch here. The gate
refuses the whole batch or publishes the whole batch, in one synchronous call, so no
other publish can interleave with it and no subscriber ever sees part of a refused one.
In a cluster the transport asks ``admit`` only and hands the batch to the cluster's
sequencer instead (``ticker/cluster/sequencer.py``), which numbers it for every node.
It also keeps the plain counters the metrics collector reads at scrape time.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ticker.core.books import BookSink
from ticker.core.bus import Bus
from ticker.core.entitlements import Entitlements
from ticker.core.idempotency import IdempotencyCache, KeyReused, Remembered, digest
from ticker.core.publish import Problems, PublishLimits, PublishRefused, bad_request
from ticker.core.publish_books import Batch, check_items
from ticker.core.ratelimit import TokenBucket

MAX_BATCH_ID = 64
MAX_PUBLISHERS = 10_000
"""Rate buckets kept at once, least recently used dropped first (a dropped publisher
starts again with a full bucket: the bound costs at most one extra burst)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """A publisher WebSocket's frame, decoded and checked, not yet published."""

    batch_id: object
    key: str
    """The frame's idempotency key (scoped to the publisher like an ``Idempotency-Key``)."""
    digest: bytes
    batch: Batch


def batch_answer(batch: Batch, last_q: dict[str, int]) -> dict[str, Any]:
    """A published batch's answer: its items, each symbol's last ``q``, its book items."""
    out: dict[str, Any] = {"accepted": len(batch), "q": last_q}
    if batch.books:
        out["books"] = len(batch.books)
    return out


def key_reused(what: str) -> PublishRefused:
    """The refusal of a retry key seen before with another body."""
    return PublishRefused(
        422, "idempotency_key_reused", f"this {what} was used for another batch: use a new one"
    )


class PublishGate:
    """One node's publishing state: rate buckets, idempotency keys, counters."""

    def __init__(
        self,
        bus: Bus,
        limits: PublishLimits,
        *,
        books: BookSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.limits = limits
        self.books = books
        """The node's ``BookService.submit``; None: the node keeps no books."""
        self._clock = clock
        self.idempotency = IdempotencyCache(clock, ttl_s=limits.idempotency_ttl_s)
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.requests: Counter[tuple[str, str]] = Counter()
        """(transport, result) -> requests; result is "accepted", "replayed" or an error code."""
        self.ticks = 0
        """Ticks published through the gate."""
        self.rejected_ticks: Counter[str] = Counter()
        """Error code -> ticks in refused requests."""
        self.publishers = 0
        """Publisher WebSockets open now."""

    def publish(self, who: str, allowed: Entitlements, batch: Batch) -> dict[str, Any]:
        """Publishes the whole batch into the bus and the books or raises
        ``PublishRefused``; returns the answer."""
        self.admit(who, allowed, batch)
        return self.published(batch, self.bus.publish(batch.ticks))

    def published(self, batch: Batch, last_q: dict[str, int]) -> dict[str, Any]:
        """After its ticks are in (``q`` their last numbers): the batch's book change
        sets to the books, the tick counter, and the answer."""
        books = self.books
        for change in batch.books:
            assert books is not None, "admit refuses book items without books"
            books(change.symbol, change.bids, change.asks, change.reset)
        self.ticks += len(batch.ticks)
        return batch_answer(batch, last_q)

    def admit(self, who: str, allowed: Entitlements, batch: Batch) -> None:
        """Raises ``PublishRefused`` unless this publisher may publish all of it, now."""
        if batch.books:
            self._admit_books(batch)
        symbols = batch.symbols()
        _, refused = allowed.split(symbols)
        if refused:
            raise PublishRefused(
                403,
                "not_entitled",
                f"this publisher may not publish {len(refused)} of the symbols (its token's pub)",
                symbols=refused[:100],
            )
        bus = self.bus
        if batch.books:
            self._known_books(batch)
        new = sum(1 for symbol in symbols if not bus.known(symbol))
        if new and bus.symbol_count() + new > self.limits.max_universe:
            raise PublishRefused(
                400,
                "universe_full",
                f"{new} new symbol(s) would take the universe past {self.limits.max_universe}"
                " (--max-universe)",
            )
        bucket = self._bucket(who)
        cost = batch.cost
        if not bucket.take(cost):
            wait = bucket.wait_s(cost)
            raise PublishRefused(
                429,
                "rate_limited",
                f"over {self.limits.ticks_per_s:g} ticks/s (--publish-ticks-per-s):"
                f" retry in {wait:.1f} s",
                retry_after_s=wait,
            )

    def _admit_books(self, batch: Batch) -> None:
        """Book items need a node with books, and count a tick a level against the size."""
        if self.books is None:
            problems = Problems()
            for change in batch.books:
                problems.add(
                    change.index, "book", "this server keeps no books (--book-interval-ms 0)"
                )
            raise bad_request(problems)
        cost, limit = batch.cost, self.limits.max_ticks
        if cost > limit:
            raise PublishRefused(
                413,
                "too_large",
                f"{len(batch.ticks)} ticks and {cost - len(batch.ticks)} book levels in one"
                f" request, over the limit of {limit} (--max-publish-ticks, a level counts as"
                " a tick): split it",
            )

    def _known_books(self, batch: Batch) -> None:
        """A book is for a symbol the server knows (or one a tick of the batch adds): a
        book alone never grows the universe."""
        bus = self.bus
        ticked = {tick["s"] for tick in batch.ticks}
        problems = Problems()
        for change in batch.books:
            if change.symbol not in ticked and not bus.known(change.symbol):
                problems.add(
                    change.index,
                    "book.s",
                    f"the server does not know {change.symbol!r}: publish a tick of it first"
                    " (before or in this request)",
                )
        if problems.found:
            raise bad_request(problems)

    def _bucket(self, who: str) -> TokenBucket:
        buckets = self._buckets
        bucket = buckets.get(who)
        if bucket is None:
            rate = self.limits.ticks_per_s
            burst = max(rate, float(self.limits.max_ticks))
            bucket = buckets[who] = TokenBucket(rate, burst, clock=self._clock)
            if len(buckets) > MAX_PUBLISHERS:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(who)
        return bucket

    def lookup(self, who: str, key: str, body_digest: bytes, what: str) -> Remembered | None:
        """The first answer to a retried key, None for a new one; 422 for another body."""
        try:
            return self.idempotency.lookup(who, key, body_digest)
        except KeyReused:
            raise key_reused(what) from None

    def open_frame(self, who: str, data: bytes) -> Frame | bytes:
        """A publisher WebSocket frame, checked and ready to publish, or its answer now
        (an ``error`` frame, or the first ``ack`` again).

        ``{"op": "publish", "id": ID, "ticks": [...]}``; an id acked before within the TTL
        (the same frame resent after a reconnect) gets its first ack again, marked
        ``"replayed": true``, and nothing is published.
        """
        batch_id: object = None
        ticks = 0
        try:
            batch_id, items = self._publish_op(data)
            ticks = len(items)
            key, body_digest = f"ws:{batch_id}", digest(data)
            found = self.lookup(who, key, body_digest, "batch id")
            if found is not None:
                self.count(WS, "replayed")
                return _ack(batch_id, found.answer, replayed=True)
            return Frame(batch_id, key, body_digest, check_items(items))
        except PublishRefused as exc:
            return self.error_frame(batch_id, exc, ticks)

    def acked(self, who: str, frame: Frame, answer: bytes, *, replayed: bool = False) -> bytes:
        """The ``ack`` of a published frame (remembered for its retries)."""
        self.idempotency.remember(who, frame.key, frame.digest, 200, answer)
        self.count(WS, "replayed" if replayed else "accepted")
        return _ack(frame.batch_id, answer, replayed=replayed)

    def error_frame(self, batch_id: object, exc: PublishRefused, ticks: int) -> bytes:
        """The ``error`` frame of a refused batch (counted)."""
        self.count(WS, exc.code, ticks)
        frame: dict[str, Any] = {"type": "error"}
        if batch_id is not None:
            frame["id"] = batch_id
        body = exc.to_json()
        frame["code"] = body.pop("error")
        frame.update(body)
        if exc.retry_after_s is not None:
            frame["retry_after"] = round(exc.retry_after_s, 3)
        return orjson.dumps(frame)

    def _publish_op(self, data: bytes) -> tuple[object, list[Any]]:
        try:
            op = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise PublishRefused(400, "bad_json", "the frame is not valid JSON") from None
        if type(op) is not dict:
            raise PublishRefused(400, "bad_request", "a frame must be a JSON object")
        batch_id = op.get("id")
        if not (
            (type(batch_id) is str and 0 < len(batch_id) <= MAX_BATCH_ID)
            or (type(batch_id) is int and abs(batch_id) <= 2**53)
        ):
            raise PublishRefused(
                400, "bad_request", f"id must be a string of 1 to {MAX_BATCH_ID} or an integer"
            )
        if op.get("op") != "publish":
            raise PublishRefused(400, "unknown_op", 'a publisher sends {"op": "publish", ...}')
        items = op.get("ticks")
        if type(items) is not list:
            raise PublishRefused(400, "bad_request", "ticks must be a list of ticks and books")
        if len(items) > self.limits.max_ticks:
            raise PublishRefused(
                413,
                "too_large",
                f"{len(items)} ticks in one batch, over the limit of {self.limits.max_ticks}"
                " (--max-publish-ticks): split it",
            )
        return batch_id, items

    def count(self, transport: str, result: str, ticks: int = 0) -> None:
        """One request's outcome, for ``ticker_publish_requests_total`` and friends."""
        self.requests[transport, result] += 1
        if result not in ("accepted", "replayed"):
            self.rejected_ticks[result] += ticks


WS = "ws"
"""The transport label of publisher WebSockets."""


def _ack(batch_id: object, answer: bytes, *, replayed: bool) -> bytes:
    head = b'{"type":"ack","id":' + orjson.dumps(batch_id)
    return head + (b',"replayed":true,' if replayed else b",") + answer[1:]


def retry_after(seconds: float) -> str:
    """``Retry-After`` takes whole seconds; never 0, or a client retries at once."""
    return str(max(1, math.ceil(seconds)))
