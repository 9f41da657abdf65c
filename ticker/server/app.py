"""The aiohttp application: routes and lifecycle, wired to a ``Node``."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ticker.server import books_http, candles_http, poll, publish, sse
from ticker.server.auth import GATE
from ticker.server.connection import CLIENTS
from ticker.server.node import NODE_KEY, Node
from ticker.server.settings import url_host
from ticker.server.web import add_routes as add_dashboard_routes
from ticker.server.websocket import TRANSPORT, websocket_handler

log = logging.getLogger("ticker.server")
CleanupContext = Callable[[web.Application], AsyncIterator[None]]


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
    """The node's metrics, in the Prometheus text format."""
    node = request.app[NODE_KEY]
    body = await node.broker.exposition(lambda: generate_latest(node.metrics.registry))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_metrics_app(node: Node) -> web.Application:
    """``/metrics`` alone, for ``--metrics-port``."""
    app = web.Application()
    app[NODE_KEY] = node
    app.router.add_get("/metrics", metrics)
    return app


def metrics_site(sockets: Sequence[socket.socket] = ()) -> CleanupContext:
    """Serve ``create_metrics_app`` on its own port while the main app runs: on
    ``sockets`` when the caller bound them already (``ticker serve``, to report a port in
    use before it starts), else on ``metrics_host``:``metrics_port``."""

    async def site(app: web.Application) -> AsyncIterator[None]:
        node = app[NODE_KEY]
        settings = node.settings
        assert settings.metrics_port is not None
        runner = web.AppRunner(create_metrics_app(node), access_log=None)
        await runner.setup()
        host = settings.metrics_host or settings.host
        sites: list[web.BaseSite] = [web.SockSite(runner, sock) for sock in sockets]
        for started in sites or [web.TCPSite(runner, host, settings.metrics_port)]:
            await started.start()
        log.info("metrics on http://%s:%d/metrics", url_host(host), settings.metrics_port)
        try:
            yield
        finally:
            await runner.cleanup()

    return site


def create_app(
    node: Node, metrics_sockets: Sequence[socket.socket] = (), *, metrics_port_here: bool = True
) -> web.Application:
    """The routes and lifecycle of ``node``; ``metrics_sockets``: see ``metrics_site``;
    ``metrics_port_here`` False: another process serves ``--metrics-port`` (a worker's
    feed process)."""
    app = web.Application()
    app[NODE_KEY] = node
    app[GATE] = node.gate
    app[CLIENTS] = node.clients
    app.router.add_get("/ws", websocket_handler)
    node.clients.traffic(TRANSPORT)  # its metric series exist from the start
    for transport in (sse, poll):  # the same sessions over plain HTTP
        transport.add_routes(app)
        node.clients.traffic(transport.TRANSPORT)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    settings = node.settings
    if settings.metrics and settings.metrics_port is None:
        app.router.add_get("/metrics", metrics)
    elif settings.metrics and metrics_port_here:
        app.cleanup_ctx.append(metrics_site(metrics_sockets))
    if settings.publish is not None:
        publish.add_routes(
            app,
            node.bus,
            node.metrics.registry,
            settings.publish,
            node.broker.take_publishes(),
            None if node.books is None else node.books.submit,
        )
    if node.candles is not None:
        candles_http.add_routes(app, node.candles)
    if node.books is not None:
        books_http.add_routes(app, node.books)
    add_dashboard_routes(app)

    async def feeds(app: web.Application) -> AsyncIterator[None]:
        await node.start()
        yield
        await node.stop_feeds()

    async def close_clients(app: web.Application) -> None:
        await node.shutdown()

    app.cleanup_ctx.append(feeds)
    app.on_shutdown.append(close_clients)
    return app
