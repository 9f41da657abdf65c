"""``POST /publish`` (``--publish``): ticks in over HTTP, out like a feed's.

A thin adapter: who is asking (a token with a ``pub`` claim, or, without an auth key,
only a loopback client), the body read within its bound, then ``ticker.core.publish``
checks it and ``PublishGate`` publishes all of it or none. Every refusal is JSON
``{"error": code, "message": ..., ...}`` with the status docs/publishing.md lists.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import orjson
from aiohttp import hdrs, web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ticker.core.entitlements import EVERYTHING, Entitlements, TokenError
from ticker.core.idempotency import KeyReused, digest
from ticker.core.publish import PublishLimits, PublishRefused, parse_publish
from ticker.core.publish_gate import PublishGate, retry_after
from ticker.server.auth import token_from
from ticker.server.node import NODE_KEY

TRANSPORT = "http"
PUBLISH_GATE = web.AppKey("publish_gate", PublishGate)
MAX_IDEMPOTENCY_KEY = 255
REPLAYED = "Idempotent-Replayed"


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def publisher(request: web.Request) -> tuple[str, Entitlements]:
    """(who, what it may publish) of the request's sender, or a 401/403 refusal."""
    verifier = request.app[NODE_KEY].settings.auth
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
        batch = parse_publish(request.headers.get(hdrs.CONTENT_TYPE), body, gate.limits)
        ticks = len(batch)
        answer = orjson.dumps(gate.publish(who, allowed, batch))
    except PublishRefused as exc:
        gate.count(TRANSPORT, exc.code, ticks)
        return _refusal(exc)
    if key is not None:
        gate.idempotency.remember(who, key, body_digest, 200, answer)
    gate.count(TRANSPORT, "accepted")
    return web.Response(body=answer, content_type="application/json")


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
    """``POST /publish`` on the node's bus, and its metrics in the node's registry."""
    node = app[NODE_KEY]
    gate = app[PUBLISH_GATE] = PublishGate(node.bus, limits, clock=time.monotonic)
    node.metrics.registry.register(PublishCollector(gate))
    app.router.add_post("/publish", publish_handler)
