"""The handshake every transport shares: query parameters in, a refusal or a go-ahead out.

``admit`` is the first step of every connection's life (``lifecycle.py``: WebSocket
before the upgrade, SSE before the stream starts, long polling before a new session); the
second is ``Gate.handshake``, the gate (Origin, token, connection slot).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from ticker.core.codes import Refusal
from ticker.core.history import Positions, parse_position, parse_since
from ticker.core.session import MODES
from ticker.server.auth import Gate

MAX_HZ_LIMIT = 1000.0

Resume = tuple[str, Positions]
"""The epoch a reconnecting client counted in and the last ``q`` it has of each symbol."""


class ConnectError(ValueError):
    """A query parameter that makes the handshake fail with 400."""


@dataclass(frozen=True, slots=True)
class ConnectParams:
    """What a client asks for when it connects: its mode, rate and first symbols."""

    mode: str
    max_hz: float | None
    symbols: list[str]
    resume: Resume | None = None


def connect_params(query: Mapping[str, str], last_event_id: str | None = None) -> ConnectParams:
    """``mode``, ``max_hz``, ``symbols`` and a resume position (``since`` + ``epoch``, or
    an SSE ``Last-Event-ID``) from the handshake."""
    get = query.get
    mode = get("mode", "conflate")
    if mode not in MODES:
        raise ConnectError(f"mode must be one of: {', '.join(MODES)}")
    max_hz: float | None = None
    raw = get("max_hz", "")
    if raw:
        try:
            max_hz = float(raw)
        except ValueError:
            raise ConnectError("max_hz must be a number") from None
        if not 0 < max_hz <= MAX_HZ_LIMIT:
            raise ConnectError(f"max_hz must be above 0 and at most {MAX_HZ_LIMIT:g}")
    symbols = [s for s in get("symbols", "").split(",") if s]
    return ConnectParams(mode, max_hz, symbols, _resume(query, last_event_id))


def _resume(query: Mapping[str, str], last_event_id: str | None) -> Resume | None:
    try:
        if last_event_id:  # the browser's own reconnect wins: it is the newest position
            return parse_position(last_event_id)
        since, epoch = query.get("since"), query.get("epoch")
        if since is None and epoch is None:
            return None
        if not epoch or len(epoch) > 64:
            raise ValueError("since needs the epoch it counts in (epoch=..., 1 to 64 characters)")
        return epoch, parse_since(since or "")
    except ValueError as exc:
        raise ConnectError(str(exc)) from None


def admit(gate: Gate, request: web.Request, transport: str) -> ConnectParams:
    """Parse the handshake and decide whether this client may open a session; raises the
    HTTP answer of a refusal (400 bad parameters, 503 shutting down)."""
    try:
        params = connect_params(request.query, request.headers.get("Last-Event-ID"))
    except ConnectError as exc:
        raise gate.refuse(transport, Refusal.BAD_REQUEST, str(exc)) from None
    if gate.closing:
        raise gate.refuse(transport, Refusal.SHUTTING_DOWN, "server shutting down")
    return params
