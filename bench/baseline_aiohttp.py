"""The naive reference: the aiohttp broadcaster one writes first, and what ticker must beat.

Just enough of protocol v1 for the load generator: a welcome frame, ``?symbols=`` (or
``*``) subscribed at connect, then one ``{"type":"ticks","ticks":[tick]}`` frame per tick,
sent to each subscriber in turn with ``await ws.send_str(msg)``. No mailbox, no batching,
no backpressure policy: one client that stops reading stalls everyone (that is the point).

Ticks come from the same ``SimulatedFeed`` ticker uses, at the same rate and seed; ``t``
(µs) and ``q`` (per symbol) are stamped here. Each tick is encoded once (orjson, as in
ticker), so the comparison is about fan-out, not JSON. compress=False, as in ticker: a
fair baseline does not pay for permessage-deflate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from feeds.sim.adapter import SimulatedFeed


class Hub:
    def __init__(self, symbols: list[str]) -> None:
        self.subscribers: dict[str, set[web.WebSocketResponse]] = {s: set() for s in symbols}
        self.wildcard: set[web.WebSocketResponse] = set()
        self.seq = dict.fromkeys(symbols, 0)

    def drop(self, ws: web.WebSocketResponse) -> None:
        self.wildcard.discard(ws)
        for subs in self.subscribers.values():
            subs.discard(ws)


HUB = web.AppKey("hub", Hub)


def now_us() -> int:
    return time.time_ns() // 1000


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    hub = request.app[HUB]
    wanted = [s for s in request.query.get("symbols", "").split(",") if s]
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    welcome = {"type": "welcome", "protocol": 1, "mode": "all", "server_time": now_us()}
    await ws.send_str(orjson.dumps(welcome).decode())
    if "*" in wanted:
        hub.wildcard.add(ws)
    else:
        wanted = [s for s in wanted if s in hub.subscribers]
        for s in wanted:
            hub.subscribers[s].add(ws)
    await ws.send_str(orjson.dumps({"type": "subscribed", "symbols": wanted}).decode())
    try:
        async for _ in ws:
            pass  # nothing a client says matters here
    finally:
        hub.drop(ws)
    return ws


async def pump(hub: Hub, feed: SimulatedFeed) -> None:
    """For each tick, for each subscriber, await the send: the naive fan-out."""
    seq = hub.seq
    async for batch in feed.stream():
        now = now_us()
        for tick in batch:
            s = tick["s"]
            q = seq[s] = seq[s] + 1
            tick["t"] = now
            tick["q"] = q
            msg = orjson.dumps({"type": "ticks", "ticks": [tick]}).decode()
            for ws in (*hub.subscribers[s], *hub.wildcard):
                try:
                    await ws.send_str(msg)
                except Exception:  # closed under us: forget it
                    hub.drop(ws)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="naive aiohttp broadcaster (benchmark baseline)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--symbols", type=int, default=100)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    feed = SimulatedFeed(args.symbols, args.rate, seed=args.seed)
    hub = Hub(feed.symbols())
    app = web.Application()
    app[HUB] = hub
    app.router.add_get("/ws", ws_handler)

    async def run_feed(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(pump(hub, feed))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(run_feed)
    web.run_app(
        app, host=args.host, port=args.port, access_log=None, print=None, shutdown_timeout=1.0
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
