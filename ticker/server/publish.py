"""``/publish`` (``--publish``): ticks and book changes in over HTTP ``POST`` or a
publisher WebSocket.

Thin adapters: who is asking (a token with a ``pub`` claim, or, without an auth key,
only a loopback client; a browser only from an allowed origin), the body read within its
bound, then ``ticker.core.publish_books.check_items`` checks it and ``PublishGate``
publishes all of it or none: ticks into the node's bus, or, in a cluster, through the
broker's sequencer, which has Redis number them for every node; book change sets into
the node's books once the ticks are in. Every HTTP refusal is JSON ``{"error": code, "message":
..., ...}`` with the status of its code in ``HTTP_REFUSALS`` (``refusals.py``;
docs/publishing.md lists them). The WebSocket handler answers each frame before it reads
the next, so a publisher that outruns the server is slowed by TCP, never buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Iterator

import orjson
from aiohttp import WSMsgType, hdrs, web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ticker.cluster.broker import Sequencer
from ticker.cluster.sequencer import Idempotency
from ticker.core.books import BookSink
from ticker.core.bus import Bus
from ticker.core.codes import Refusal
from ticker.core.entitlements import EVERYTHING, Entitlements, TokenError
from ticker.core.idempotency import digest
from ticker.core.publish import JSON, PublishLimits, PublishRefused, decode_body
from ticker.core.publish_books import Batch, check_items
from ticker.core.publish_gate import WS, PublishGate, batch_answer
from ticker.core.status import parse_statuses
from ticker.server.auth import BEARER_PROTOCOL, GATE, origin_allowed, token_from
from ticker.server.refusals import refusal

TRANSPORT = "http"
PUBLISH_GATE = web.AppKey("publish_gate", PublishGate)
PUBLISHER_SOCKETS = web.AppKey("publisher_sockets", set[web.WebSocketResponse[bool]])
SEQUENCER: web.AppKey[Sequencer | None] = web.AppKey("sequencer")
MAX_IDEMPOTENCY_KEY = 255
REPLAYED = "Idempotent-Replayed"


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def publisher(request: web.Request) -> tuple[str, Entitlements]:
    """(who, what it may publish) of the request's sender, or a 401/403 refusal."""
    settings = request.app[GATE].settings
    if not origin_allowed(
        request.headers.get(hdrs.ORIGIN), request.headers.get(hdrs.HOST), settings.allowed_origins
    ):
        raise PublishRefused(
            403, "forbidden_origin", "this origin may not publish (the server's --allowed-origin)"
        )
    verifier = settings.auth
    if verifier is None:
        if not _loopback(request.remote):
            raise PublishRefused(
                403,
                "forbidden",
                "without an auth key (--auth-secret, --auth-public-key) only loopback"
                " clients may publish",
            )
        return f"ip:{request.remote}", EVERYTHING
    token = token_from(request)
    try:
        if token is None:
            raise TokenError("a token is required (Authorization: Bearer or ?token=)")
        principal = verifier.verify(token)
    except TokenError as exc:
        raise PublishRefused(401, "unauthorized", str(exc)) from None
    if principal.publish is None:
        raise PublishRefused(403, "not_entitled", "this token may not publish: it has no pub claim")
    return f"sub:{principal.sub}", principal.publish


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The body, refused as soon as it is over the bound (never read whole first)."""
    too_big = PublishRefused(
        413, "too_large", f"the body is over the limit of {max_bytes} bytes (--max-publish-bytes)"
    )
    if (request.content_length or 0) > max_bytes:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > max_bytes:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        raise PublishRefused(
            400,
            "bad_request",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters",
        )
    return key


def _refused(exc: PublishRefused) -> web.HTTPException:
    """The HTTP answer of a refused request, in the publish body shape."""
    return refusal(
        Refusal(exc.code), exc.message, body=exc.to_json(), retry_after_s=exc.retry_after_s
    )


async def publish_batch(
    app: web.Application,
    who: str,
    allowed: Entitlements,
    batch: Batch,
    idempotency: Idempotency | None,
) -> tuple[bytes, bool]:
    """Publish a checked batch, all or nothing: (the answer, whether an earlier request's
    answer is given again). One node: into its bus. A cluster: the gate's checks, then one
    call to the broker's sequencer for the ticks, which may find the key used on another
    node; the book changes go to this node's books only once the ticks are in."""
    gate = app[PUBLISH_GATE]
    sequencer = app[SEQUENCER]
    if sequencer is None:
        return orjson.dumps(gate.publish(who, allowed, batch)), False
    gate.admit(who, allowed, batch)
    if not batch.ticks:  # books only: nothing for the cluster to number
        return orjson.dumps(gate.published(batch, {})), False
    done = await sequencer(batch.ticks, idempotency)
    if done.replayed:
        return orjson.dumps(batch_answer(batch, done.q)), True
    return orjson.dumps(gate.published(batch, done.q)), False


async def publish_handler(request: web.Request) -> web.Response:
    """One request: every tick and book change published, or none and every reason why."""
    gate = request.app[PUBLISH_GATE]
    ticks = 0
    try:
        who, allowed = publisher(request)
        key = _idempotency_key(request)
        body = await read_body(request, gate.limits.max_bytes)
        body_digest = digest(body)
        if key is not None:
            found = gate.lookup(who, key, body_digest, "Idempotency-Key")
            if found is not None:
                gate.count(TRANSPORT, "replayed")
                return web.Response(
                    body=found.answer,
                    status=found.status,
                    content_type="application/json",
                    headers={REPLAYED: "true"},
                )
        items = decode_body(request.headers.get(hdrs.CONTENT_TYPE), body, gate.limits)
        ticks = len(items)  # a refused batch's ticks count as rejected, as on the WebSocket
        batch = check_items(items)
        idempotency = None
        if key is not None:
            idempotency = Idempotency(who, key, body_digest, gate.limits.idempotency_ttl_s)
        answer, replayed = await publish_batch(request.app, who, allowed, batch, idempotency)
    except PublishRefused as exc:
        gate.count(TRANSPORT, exc.code, ticks)
        raise _refused(exc) from None
    if key is not None:
        gate.idempotency.remember(who, key, body_digest, 200, answer)
    gate.count(TRANSPORT, "replayed" if replayed else "accepted")
    headers = {REPLAYED: "true"} if replayed else None
    return web.Response(body=answer, content_type="application/json", headers=headers)


async def status_handler(request: web.Request) -> web.Response:
    """``POST /publish/status``: a publisher says symbols it may publish are halted,
    stale, closed or live again; every subscriber of them is told."""
    gate = request.app[PUBLISH_GATE]
    try:
        _, allowed = publisher(request)
        body = await read_body(request, gate.limits.max_bytes)
        try:
            statuses = parse_statuses(orjson.loads(body))
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise PublishRefused(400, "bad_request", str(exc)) from None
        refused = [s for s in statuses if not allowed.allows(s) or not gate.bus.known(s)]
        if refused:
            raise PublishRefused(
                403,
                "not_entitled",
                f"not a symbol this publisher may publish: {', '.join(refused[:10])}",
                symbols=refused,
            )
    except PublishRefused as exc:
        gate.count(TRANSPORT, exc.code)
        raise _refused(exc) from None
    for symbol, (status, reason) in statuses.items():
        gate.bus.status.set([symbol], status, reason)
    gate.count(TRANSPORT, "status")
    return web.Response(body=orjson.dumps({"accepted": len(statuses)}), content_type=JSON)


async def publisher_socket(request: web.Request) -> web.StreamResponse:
    """A long-lived publisher: one ``ack`` or ``error`` frame per ``publish`` frame."""
    gate = request.app[PUBLISH_GATE]
    node_gate = request.app[GATE]
    try:
        who, allowed = publisher(request)
        if node_gate.closing:
            raise PublishRefused(503, "shutting_down", "the server is shutting down")
    except PublishRefused as exc:
        gate.count(WS, exc.code)
        raise _refused(exc) from None
    ws = web.WebSocketResponse(
        heartbeat=node_gate.settings.ping_interval_s,
        max_msg_size=gate.limits.max_bytes,  # aiohttp closes with 1009 past it
        compress=False,
        decode_text=False,
        protocols=(BEARER_PROTOCOL,),
    )
    await ws.prepare(request)
    sockets = request.app[PUBLISHER_SOCKETS]
    sockets.add(ws)
    gate.publishers += 1
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                reply = await _publish_frame(request.app, who, allowed, msg.data)
            elif msg.type is WSMsgType.BINARY:
                reply = b'{"type":"error","code":"bad_request","message":"send text frames"}'
            else:
                break
            with contextlib.suppress(ConnectionError):
                await ws.send_frame(reply, WSMsgType.TEXT)  # awaits drain: TCP slows the peer
    finally:
        sockets.discard(ws)
        gate.publishers -= 1
    return ws


async def _publish_frame(
    app: web.Application, who: str, allowed: Entitlements, data: bytes
) -> bytes:
    """The ``ack`` or ``error`` frame answering one publisher frame."""
    gate = app[PUBLISH_GATE]
    frame = gate.open_frame(who, data)
    if isinstance(frame, bytes):
        return frame
    idempotency = Idempotency(who, frame.key, frame.digest, gate.limits.idempotency_ttl_s)
    try:
        answer, replayed = await publish_batch(app, who, allowed, frame.batch, idempotency)
    except PublishRefused as exc:
        return gate.error_frame(frame.batch_id, exc, len(frame.batch))
    return gate.acked(who, frame, answer, replayed=replayed)


async def close_publishers(app: web.Application) -> None:
    """At shutdown: every publisher gets 1001 at once, within the close grace."""
    open_now = app[PUBLISHER_SOCKETS]
    sockets = list(open_now)
    if not sockets:
        return
    grace = app[GATE].settings.close_grace_s
    closing = [ws.close(code=1001, message=b"server shutting down") for ws in sockets]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            await asyncio.gather(*closing, return_exceptions=True)


class PublishCollector(Collector):
    """The gate's plain counters as metric families, read at scrape time."""

    def __init__(self, gate: PublishGate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[Metric]:
        """The publish families, read now from the gate."""
        gate = self.gate
        requests = CounterMetricFamily(
            "ticker_publish_requests",
            "Publish requests (HTTP) and batches (WebSocket), by result: accepted, replayed"
            " or the error code.",
            labels=["transport", "result"],
        )
        for (transport, result), n in sorted(gate.requests.items()):
            requests.add_metric([transport, result], n)
        yield requests
        yield CounterMetricFamily(
            "ticker_publish_ticks", "Ticks published by publishers.", value=gate.ticks
        )
        rejected = CounterMetricFamily(
            "ticker_publish_rejected_ticks",
            "Ticks in refused publish requests, by error code.",
            labels=["reason"],
        )
        for reason, n in sorted(gate.rejected_ticks.items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield GaugeMetricFamily(
            "ticker_publishers", "Publisher WebSockets open.", value=gate.publishers
        )
        yield GaugeMetricFamily(
            "ticker_publish_idempotency_keys",
            "Idempotency keys (and batch ids) remembered.",
            value=len(gate.idempotency),
        )


def add_routes(
    app: web.Application,
    bus: Bus,
    registry: CollectorRegistry,
    limits: PublishLimits,
    sequencer: Sequencer | None = None,
    books: BookSink | None = None,
) -> None:
    """``/publish`` on ``bus`` (the node's), and its metrics in ``registry``; with a
    ``sequencer`` (a cluster's broker), batches are numbered in Redis instead; ``books``:
    where book items go (None: the node keeps no books, and refuses them)."""
    gate = app[PUBLISH_GATE] = PublishGate(bus, limits, books=books, clock=time.monotonic)
    app[PUBLISHER_SOCKETS] = set()
    app[SEQUENCER] = sequencer
    registry.register(PublishCollector(gate))
    app.router.add_post("/publish", publish_handler)
    app.router.add_post("/publish/status", status_handler)
    app.router.add_get("/publish", publisher_socket)
    app.on_shutdown.append(close_publishers)
