"""Client operations over plain HTTP, for the transports whose stream runs one way only.

An SSE stream or a long-polling session cannot carry what the client sends, so its ops
come as ``POST /sse/{session}/{op}`` (or ``/poll/...``) with the rest of the op as the
JSON body. The body goes to the session as it came, the op named by the path: the same
parsing, limits and rate limit as a WebSocket text frame, and the replies arrive on the
stream (or the next poll).
"""

from __future__ import annotations

from aiohttp import web

from ticker.core.codes import Refusal
from ticker.server.auth import GATE
from ticker.server.connection import CLIENTS, ClientConnection
from ticker.server.refusals import refusal


def unknown_session() -> web.HTTPException:
    """404: the session ended (closed, expired, or the server restarted) or never was."""
    return refusal(Refusal.UNKNOWN_SESSION, "no such session: it ended or never was")


async def session_op(request: web.Request) -> web.Response:
    """``POST /{transport}/{session}/{op}``: 202 once the session has the op."""
    conn = request.app[CLIENTS].sessions.get(request.match_info["session"])
    transport = request.path.split("/", 2)[1]
    if conn is None or transport != conn.TRANSPORT or conn.session.close_request is not None:
        raise unknown_session()
    same_principal(request, conn)
    limit = conn.session.limits.max_message_bytes
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise refusal(Refusal.TOO_LARGE, f"an op must be at most {limit} bytes")
    conn.session.receive(body or b"{}", request.match_info["op"])
    return web.json_response({"type": "accepted", "session": conn.session.id}, status=202)


def same_principal(request: web.Request, conn: ClientConnection) -> None:
    """A request on an open session (an op, the next poll) passes the same gate as the
    session's handshake (Origin, token) and must come from the same token subject: the
    session id alone is not a credential (401/403 otherwise)."""
    gate = request.app[GATE]
    principal = gate.authorize(request, conn.TRANSPORT)
    if principal.sub != conn.session.principal.sub:
        raise gate.refuse(
            conn.TRANSPORT,
            Refusal.FORBIDDEN,
            "this session belongs to another token subject",
            counted_as=Refusal.UNAUTHORIZED,
        )


def add_route(app: web.Application, transport: str) -> None:
    """``POST /{transport}/{session}/{op}``, once for each transport that needs it."""
    app.router.add_post(f"/{transport}/{{session}}/{{op}}", session_op)
