"""The aiohttp application: routes and lifecycle, wired to a ``Node``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ticker.server.node import NODE_KEY, Node
from ticker.server.websocket import websocket_handler


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: every feed has produced a tick (an edge node: its Redis link is up)."""
    node = request.app[NODE_KEY]
    feeds = {s.adapter.name: s.ready for s in node.supervisors}
    ready = node.ready and not node.closing
    return web.json_response(
        {"status": "ready" if ready else "not ready", "feeds": feeds, **node.broker.health()},
        status=200 if ready else 503,
    )


async def metrics(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    body = generate_latest(node.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(node: Node) -> web.Application:
    app = web.Application()
    app[NODE_KEY] = node
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)

    async def feeds(app: web.Application) -> AsyncIterator[None]:
        await node.start()
        yield
        await node.stop_feeds()

    async def close_clients(app: web.Application) -> None:
        await node.shutdown()

    app.cleanup_ctx.append(feeds)
    app.on_shutdown.append(close_clients)
    return app
