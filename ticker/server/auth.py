"""The gate every transport's handshake goes through, before any upgrade.

``Gate.handshake`` is the whole gate: it counts the handshake in progress, checks the
browser Origin (cross-site WebSocket hijacking), then the token (``Authorization: Bearer``,
``?token=`` or ``Sec-WebSocket-Protocol: bearer, <token>``), picks the bus (live, or the
delay line of the token's delay) and takes a connection slot. Each refusal is an HTTP
error with a JSON body (``refusals.py``), counted in
``ticker_handshake_rejections_total{reason}``. The SSE and long-polling handshakes use it
too, so the same rules hold there (``lifecycle.py`` calls it for every transport).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from ticker.core.admission import Admission
from ticker.core.bus import Bus
from ticker.core.codes import Refusal
from ticker.core.entitlements import ANONYMOUS, Principal
from ticker.core.tokens import TokenError
from ticker.server.delayed import DelayPump
from ticker.server.metrics import Metrics
from ticker.server.refusals import refusal
from ticker.server.settings import Settings

BEARER_PROTOCOL = "bearer"
"""Offer ``["bearer", token]`` as WebSocket subprotocols; the server answers "bearer"."""


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


@dataclass(frozen=True, slots=True)
class Admitted:
    """A handshake through the gate: who the client is and what its session reads."""

    principal: Principal
    bus: Bus
    """The bus the client's session reads: the live one or its delay's line."""
    leave: Callable[[], None]
    """Gives the connection slot back: call it once the connection is over."""


class Gate:
    """What every handshake is checked against (settings, connection slots, buses), and
    where its refusals are counted: the node's, handed to the handlers instead of the node."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        admission: Admission,
        bus: Bus,
        delays: DelayPump,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.admission = admission
        """Open connections in all, per IP and per token subject."""
        self.bus = bus
        self.delays = delays
        self.closing = False
        """The node is shutting down: every new session is refused with 503."""

    def refuse(
        self, transport: str, code: Refusal, message: str, *, counted_as: Refusal | None = None
    ) -> web.HTTPException:
        """Count a refusal (as ``counted_as`` when its metric reason differs) and build it."""
        self.metrics.rejected(transport, counted_as or code)
        return refusal(code, message)

    def authorize(self, request: web.Request, transport: str) -> Principal:
        """The client's principal, or an HTTP error (403 origin, 401 token) to raise."""
        settings = self.settings
        if not origin_allowed(
            request.headers.get(hdrs.ORIGIN),
            request.headers.get(hdrs.HOST),
            settings.allowed_origins,
        ):
            raise self.refuse(
                transport,
                Refusal.FORBIDDEN_ORIGIN,
                "this origin may not connect (the server's --allowed-origin)",
            )
        verifier = settings.auth
        if verifier is None:
            return ANONYMOUS
        token = token_from(request)
        try:
            if token is None:
                raise TokenError(
                    "a token is required (Authorization: Bearer, ?token= or subprotocol)"
                )
            return verifier.verify(token)
        except TokenError as exc:
            raise self.refuse(transport, Refusal.UNAUTHORIZED, str(exc)) from None

    def authorize_live(self, request: web.Request, transport: str, symbol: str) -> Principal:
        """``authorize``, then refuse (403) a principal not entitled to ``symbol`` live: a
        derived topic over HTTP (``/candles``, ``/book``) is entitled by its base symbol and
        is live data, which a delayed token never gets."""
        principal = self.authorize(request, transport)
        if not principal.entitlements.allows(symbol) or principal.delay_s:
            why = "derived topics are live data" if principal.delay_s else "not entitled to"
            raise self.refuse(transport, Refusal.NOT_ENTITLED, f"{why}: {symbol}")
        return principal

    def _busy(self, transport: str, code: Refusal) -> web.HTTPException:
        return self.refuse(
            transport, code, f"connection refused: {code.value.replace('_', ' ')}; retry later"
        )

    def _take_slot(
        self, request: web.Request, principal: Principal, transport: str
    ) -> Callable[[], None]:
        """Take a connection slot (or raise 503/429); returns what frees it."""
        ip = request.remote or ""
        admission = self.admission
        code = admission.admit(ip, principal.sub, principal.max_conns)
        if code is not None:
            raise self._busy(transport, code)
        return lambda: admission.leave(ip, principal.sub)

    def _bus_for(self, principal: Principal, transport: str) -> Bus:
        """The bus a session reads: the live one, or the delay line of the token's delay."""
        if not principal.delay_s:
            return self.bus
        try:
            return self.delays.bus(principal.delay_s)
        except LookupError as exc:
            raise self.refuse(transport, Refusal.TOO_MANY_DELAYS, str(exc)) from None

    @contextmanager
    def handshake(self, request: web.Request, transport: str) -> Iterator[Admitted]:
        """The gate, then the transport's own upgrade or first response inside the block
        (counted as a handshake in progress until it ends); a failure there frees the slot."""
        admission = self.admission
        if (code := admission.start_handshake()) is not None:
            raise self._busy(transport, code)
        try:
            principal = self.authorize(request, transport)
            bus = self._bus_for(principal, transport)
            leave = self._take_slot(request, principal, transport)
            try:
                yield Admitted(principal, bus, leave)
            except BaseException:
                leave()
                raise
        finally:
            admission.end_handshake()


GATE = web.AppKey("gate", Gate)
"""The node's gate, as the handlers find it."""
