"""The gate every transport's handshake goes through, before any upgrade.

``handshake`` is the whole gate: it counts the handshake in progress, checks the browser
Origin (cross-site WebSocket hijacking), then the token (``Authorization: Bearer``,
``?token=`` or ``Sec-WebSocket-Protocol: bearer, <token>``), picks the bus (live, or the
delay line of the token's delay) and takes a connection slot. Each refusal is an HTTP
error with a JSON body, counted in ``ticker_handshake_rejections_total{reason}``. The SSE
and long-polling handshakes use it too, so the same rules hold there; their connections
join ``node.connections`` so that the node checks each session's token expiry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
from aiohttp import hdrs, web

from ticker.core.admission import Refusal
from ticker.core.bus import Bus
from ticker.core.entitlements import ANONYMOUS, Principal
from ticker.core.tokens import TokenError
from ticker.server.metrics import Rejection
from ticker.server.node import NODE_KEY, Node

BEARER_PROTOCOL = "bearer"
"""Offer ``["bearer", token]`` as WebSocket subprotocols; the server answers "bearer"."""


def json_error(
    cls: type[web.HTTPException], code: str, message: str, **headers: str
) -> web.HTTPException:
    body = orjson.dumps({"type": "error", "code": code, "message": message}).decode()
    return cls(text=body, content_type="application/json", headers=headers)


def token_from(request: web.Request) -> str | None:
    """The token a client presents, wherever it put it (never logged)."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if token := request.query.get("token"):
        return token
    offered = [p.strip() for p in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(",")]
    if BEARER_PROTOCOL in offered:
        at = offered.index(BEARER_PROTOCOL) + 1
        if at < len(offered) and offered[at]:
            return offered[at]
    return None


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """No Origin (not a browser) passes; a browser's passes when it is this server's own
    (same host and port as the Host header) or listed (``*`` lists every origin)."""
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    if "*" in allowed or origin in allowed:
        return True
    if origin == "null" or host is None:
        return False
    return urlsplit(origin).netloc == host.strip().lower()


def authorize(request: web.Request, transport: str) -> Principal:
    """The client's principal, or an HTTP error (403 origin, 401 token) to return as is."""
    node: Node = request.app[NODE_KEY]
    settings = node.settings
    if not origin_allowed(
        request.headers.get(hdrs.ORIGIN), request.headers.get(hdrs.HOST), settings.allowed_origins
    ):
        node.metrics.rejected(transport, Rejection.FORBIDDEN_ORIGIN)
        raise json_error(
            web.HTTPForbidden,
            "forbidden_origin",
            "this origin may not connect (the server's --allowed-origin)",
        )
    verifier = settings.auth
    if verifier is None:
        return ANONYMOUS
    token = token_from(request)
    try:
        if token is None:
            raise TokenError("a token is required (Authorization: Bearer, ?token= or subprotocol)")
        return verifier.verify(token)
    except TokenError as exc:
        node.metrics.rejected(transport, Rejection.UNAUTHORIZED)
        raise json_error(
            web.HTTPUnauthorized,
            "unauthorized",
            str(exc),
            **{hdrs.WWW_AUTHENTICATE: 'Bearer error="invalid_token"'},
        ) from None


_STATUS: dict[Refusal, type[web.HTTPException]] = {
    Refusal.TOO_MANY_CONNECTIONS: web.HTTPServiceUnavailable,
    Refusal.TOO_MANY_HANDSHAKES: web.HTTPServiceUnavailable,
    Refusal.TOO_MANY_FOR_IP: web.HTTPTooManyRequests,
    Refusal.TOO_MANY_FOR_SUBJECT: web.HTTPTooManyRequests,
}


def refused(node: Node, transport: str, refusal: Refusal) -> web.HTTPException:
    node.metrics.rejected(transport, Rejection(refusal.value))
    return json_error(
        _STATUS[refusal],
        refusal.value,
        f"connection refused: {refusal.value.replace('_', ' ')}; retry later",
        **{hdrs.RETRY_AFTER: "5"},
    )


def take_slot(request: web.Request, principal: Principal, transport: str) -> Callable[[], None]:
    """Take a connection slot (or raise 503/429); returns what frees it."""
    node: Node = request.app[NODE_KEY]
    ip = request.remote or ""
    refusal = node.admission.admit(ip, principal.sub, principal.max_conns)
    if refusal is not None:
        raise refused(node, transport, refusal)
    return lambda: node.admission.leave(ip, principal.sub)


@dataclass(frozen=True, slots=True)
class Admitted:
    principal: Principal
    bus: Bus
    """The bus the client's session reads: the live one or its delay's line."""
    leave: Callable[[], None]
    """Gives the connection slot back: call it once the connection is over."""


@contextmanager
def handshake(request: web.Request, transport: str) -> Iterator[Admitted]:
    """The gate, then the transport's own upgrade or first response inside the block
    (counted as a handshake in progress until it ends); a failure there frees the slot."""
    node: Node = request.app[NODE_KEY]
    admission = node.admission
    if (refusal := admission.start_handshake()) is not None:
        raise refused(node, transport, refusal)
    try:
        principal = authorize(request, transport)
        bus = session_bus_for(request, principal, transport)
        leave = take_slot(request, principal, transport)
        try:
            yield Admitted(principal, bus, leave)
        except BaseException:
            leave()
            raise
    finally:
        admission.end_handshake()


def session_bus_for(request: web.Request, principal: Principal, transport: str) -> Bus:
    """The bus a session reads: the live one, or the delay line of the token's delay."""
    node: Node = request.app[NODE_KEY]
    if not principal.delay_s:
        return node.bus
    try:
        return node.delays.bus(principal.delay_s)
    except LookupError as exc:
        node.metrics.rejected(transport, Rejection.TOO_MANY_DELAYS)
        raise json_error(web.HTTPServiceUnavailable, "too_many_delays", str(exc)) from None
