"""Client operations over plain HTTP, for the transports whose stream runs one way only.

An SSE stream or a long-polling session cannot carry what the client sends, so its ops
come as ``POST /sse/{session}/{op}`` (or ``/poll/...``) with the rest of the op as the
JSON body. The op goes to the session like a WebSocket text frame would: the same
parsing, limits and rate limit, and the replies arrive on the stream (or the next poll).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from ticker.core.codes import ErrorCode
from ticker.server.auth import authorize, json_error
from ticker.server.connection import ClientConnection
from ticker.server.metrics import Rejection
from ticker.server.node import Node

SESSIONS = web.AppKey("http_sessions", dict[str, ClientConnection])
"""Open SSE and long-polling sessions by session id (their ops find them here)."""


def _answer(status: int, code: str, message: str) -> web.Response:
    body = {"type": "error", "code": code, "message": message}
    return web.json_response(body, status=status)


def unknown_session() -> web.Response:
    """404: the session ended (closed, expired, or the server restarted) or never was."""
    return _answer(404, ErrorCode.UNKNOWN_SESSION, "no such session: it ended or never was")


async def session_op(request: web.Request) -> web.Response:
    """``POST /{transport}/{session}/{op}``: 202 once the session has the op."""
    conn = request.app[SESSIONS].get(request.match_info["session"])
    transport = request.path.split("/", 2)[1]
    if conn is None or transport != conn.TRANSPORT or conn.session.close_request is not None:
        return unknown_session()
    same_principal(request, conn)
    limit = conn.session.limits.max_message_bytes
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        return _answer(413, ErrorCode.BAD_REQUEST, f"an op must be at most {limit} bytes")
    try:
        obj = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):  # the op comes from the path; otherwise the session says why
        obj["op"] = request.match_info["op"]
        body = orjson.dumps(obj)
    conn.session.receive(body)
    return web.json_response({"type": "accepted", "session": conn.session.id}, status=202)


def same_principal(request: web.Request, conn: ClientConnection) -> None:
    """A request on an open session (an op, the next poll) passes the same gate as the
    session's handshake (Origin, token) and must come from the same token subject: the
    session id alone is not a credential (401/403 otherwise)."""
    principal = authorize(request, conn.TRANSPORT)
    if principal.sub != conn.session.principal.sub:
        conn.node.metrics.rejected(conn.TRANSPORT, Rejection.UNAUTHORIZED)
        raise json_error(
            web.HTTPForbidden, "forbidden", "this session belongs to another token subject"
        )


def make_room(node: Node, sessions: dict[str, ClientConnection], transport: str) -> None:
    """Refuse a new session (503) when ``max_http_sessions`` are open."""
    if len(sessions) >= node.settings.max_http_sessions:
        node.metrics.rejected(transport, Rejection.TOO_MANY_SESSIONS)
        raise web.HTTPServiceUnavailable(text="too many sessions open: try again later")


def add_route(app: web.Application, transport: str) -> None:
    if SESSIONS not in app:
        app[SESSIONS] = {}
    app.router.add_post(f"/{transport}/{{session}}/{{op}}", session_op)
