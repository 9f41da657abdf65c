"""One connection's life, written once for every transport.

``open_connection`` admits the handshake (its parameters, the node not shutting down),
passes the gate (Origin, token, bus, connection slot; for SSE and long polling a free
session), lets the transport open (the WebSocket upgrade, the SSE stream) inside it, then
joins the node and starts the session. ``serve`` runs the transport's own loop and, however
it ends, closes within the deadline and leaves. A long-polling session outlives its
requests, so it is opened here and closes through its polls instead of ``serve``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from ticker.core.codes import Refusal
from ticker.server.auth import GATE
from ticker.server.connection import CLIENTS, ClientConnection
from ticker.server.handshake import admit

Conn = TypeVar("Conn", bound=ClientConnection)


async def open_connection(request: web.Request, kind: type[Conn]) -> Conn:
    """A started connection of transport ``kind``, or the JSON refusal raised."""
    gate, clients = request.app[GATE], request.app[CLIENTS]
    transport = kind.TRANSPORT
    params = admit(gate, request, transport)
    with gate.handshake(request, transport) as admitted:
        if kind.HTTP_SESSION and len(clients.sessions) >= clients.settings.max_http_sessions:
            raise gate.refuse(
                transport, Refusal.TOO_MANY_SESSIONS, "too many sessions open: try again later"
            )
        conn = kind(clients, request, params, admitted)
        await conn.prepare(request)
    conn.start(params)
    return conn


async def serve(conn: ClientConnection, run: Callable[[], Awaitable[None]]) -> None:
    """Run the transport's loop until the session ends; then close it (aborted past the
    grace period) and leave the node, whether the loop returned, failed or was cancelled."""
    try:
        await run()
    except ConnectionError:
        pass
    finally:
        try:
            await conn.closed_by_deadline()
        finally:
            conn.finish()
