"""``/publish`` (``--publish``): ticks in over HTTP ``POST`` or a publisher WebSocket.

Thin adapters: who is asking (a token with a ``pub`` claim, or, without an auth key,
only a loopback client; a browser only from an allowed origin), the body read within its
bound, then ``ticker.core.publish`` checks it and ``PublishGate`` publishes all of it or
none. Every HTTP refusal is JSON ``{"error": code, "message": ..., ...}`` with the status
docs/publishing.md lists. The WebSocket handler answers each frame before it reads the
next, so a publisher that outruns the server is slowed by TCP, never buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Iterator

import orjson
from aiohttp import WSMsgType, hdrs, web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ticker.core.entitlements import EVERYTHING, Entitlements, TokenError
from ticker.core.idempotency import KeyReused, digest
from ticker.core.publish import PublishLimits, PublishRefused, check_ticks, decode_body
from ticker.core.publish_gate import WS, PublishGate, retry_after
from ticker.server.auth import BEARER_PROTOCOL, origin_allowed, token_from
from ticker.server.node import NODE_KEY

TRANSPORT = "http"
PUBLISH_GATE = web.AppKey("publish_gate", PublishGate)
PUBLISHER_SOCKETS = web.AppKey("publisher_sockets", set[web.WebSocketResponse[bool]])
MAX_IDEMPOTENCY_KEY = 255
REPLAYED = "Idempotent-Replayed"


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def publisher(request: web.Request) -> tuple[str, Entitlements]:
    """(who, what it may publish) of the request's sender, or a 401/403 refusal."""
    settings = request.app[NODE_KEY].settings
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


def _refusal(exc: PublishRefused) -> web.Response:
    headers = {}
    if exc.status == 401:
        headers[hdrs.WWW_AUTHENTICATE] = 'Bearer error="invalid_token"'
    if exc.retry_after_s is not None:
        headers[hdrs.RETRY_AFTER] = retry_after(exc.retry_after_s)
    return web.json_response(exc.to_json(), status=exc.status, headers=headers, dumps=_dumps)


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


async def publish_handler(request: web.Request) -> web.Response:
    """One request: every tick published, or none and every reason why."""
    gate = request.app[PUBLISH_GATE]
    ticks = 0
    try:
        who, allowed = publisher(request)
        key = _idempotency_key(request)
        body = await read_body(request, gate.limits.max_bytes)
        body_digest = digest(body)
        if key is not None:
            try:
                found = gate.idempotency.lookup(who, key, body_digest)
            except KeyReused:
                raise PublishRefused(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with another body: use a new key per request",
                ) from None
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
        batch = check_ticks(items)
        answer = orjson.dumps(gate.publish(who, allowed, batch))
    except PublishRefused as exc:
        gate.count(TRANSPORT, exc.code, ticks)
        return _refusal(exc)
    if key is not None:
        gate.idempotency.remember(who, key, body_digest, 200, answer)
    gate.count(TRANSPORT, "accepted")
    return web.Response(body=answer, content_type="application/json")


async def publisher_socket(request: web.Request) -> web.StreamResponse:
    """A long-lived publisher: one ``ack`` or ``error`` frame per ``publish`` frame."""
    gate = request.app[PUBLISH_GATE]
    node = request.app[NODE_KEY]
    try:
        who, allowed = publisher(request)
        if node.closing:
            raise PublishRefused(503, "shutting_down", "the server is shutting down")
    except PublishRefused as exc:
        gate.count(WS, exc.code)
        return _refusal(exc)
    ws = web.WebSocketResponse(
        heartbeat=node.settings.ping_interval_s,
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
                reply = gate.publish_frame(who, allowed, msg.data)
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


async def close_publishers(app: web.Application) -> None:
    """At shutdown: every publisher gets 1001 at once, within the close grace."""
    open_now = app[PUBLISHER_SOCKETS]
    sockets = list(open_now)
    if not sockets:
        return
    grace = app[NODE_KEY].settings.close_grace_s
    closing = [ws.close(code=1001, message=b"server shutting down") for ws in sockets]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            await asyncio.gather(*closing, return_exceptions=True)


class PublishCollector(Collector):
    """The gate's plain counters as metric families, read at scrape time."""

    def __init__(self, gate: PublishGate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[Metric]:
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


def add_routes(app: web.Application, limits: PublishLimits) -> None:
    """``/publish`` on the node's bus, and its metrics in the node's registry."""
    node = app[NODE_KEY]
    gate = app[PUBLISH_GATE] = PublishGate(node.bus, limits, clock=time.monotonic)
    app[PUBLISHER_SOCKETS] = set()
    node.metrics.registry.register(PublishCollector(gate))
    app.router.add_post("/publish", publish_handler)
    app.router.add_get("/publish", publisher_socket)
    app.on_shutdown.append(close_publishers)
