"""The WebSocket transport: a thin adapter between an aiohttp socket and a ``Session``.

Two tasks per connection, each with one job. The reader hands every frame the client sends
to the session. The writer is the only task that writes: it waits until the session has
something, sends control frames first, then one frame of ticks, and does not send the next
frame before the transport has drained below its high-water mark. So backpressure comes
from the socket: while a client is slow its mailbox conflates (or its queue fills and it
is closed with 4008), and nothing else waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSMsgType, web

from ticker.core import protocol
from ticker.core.codes import CloseCode
from ticker.core.session import MODES, Session
from ticker.core.ticks import now_us
from ticker.server.node import NODE_KEY, Node

log = logging.getLogger("ticker.server")

TRANSPORT = "ws"
MAX_HZ_LIMIT = 1000.0


class ConnectError(ValueError):
    """A query parameter that makes the handshake fail with 400 (before the upgrade)."""


def connect_params(query: dict[str, str] | object) -> tuple[str, float | None, list[str]]:
    """``mode``, ``max_hz`` and ``symbols`` from the handshake's query string."""
    get = query.get  # type: ignore[attr-defined]
    mode = get("mode", "conflate")
    if mode not in MODES:
        raise ConnectError(f"mode must be one of: {', '.join(MODES)}")
    max_hz: float | None = None
    raw = get("max_hz")
    if raw not in (None, ""):
        try:
            max_hz = float(raw)
        except ValueError:
            raise ConnectError("max_hz must be a number") from None
        if not 0 < max_hz <= MAX_HZ_LIMIT:
            raise ConnectError(f"max_hz must be above 0 and at most {MAX_HZ_LIMIT:g}")
    symbols = [s for s in get("symbols", "").split(",") if s]
    return mode, max_hz, symbols


def bad_handshake(message: str) -> web.Response:
    return web.json_response(
        {"type": "error", "code": "bad_request", "message": message}, status=400
    )


class Connection:
    """One WebSocket client: its session, its socket and its two tasks."""

    def __init__(
        self,
        node: Node,
        ws: web.WebSocketResponse,
        request: web.Request,
        *,
        mode: str,
        max_hz: float | None,
    ) -> None:
        self.node = node
        self.ws = ws
        self.transport = request.transport
        self.peer = request.remote
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._deadline: asyncio.TimerHandle | None = None
        self.session = Session(
            node.bus,
            mode=mode,
            limits=node.settings.limits,
            wake=self.wake,
            error_counts=node.stats.errors,
        )
        self.min_interval = 1.0 / max_hz if max_hz else 0.0
        self.closed = asyncio.Event()
        self.opened_at = time.monotonic()
        self.frames = 0
        self.ticks = 0

    def wake(self) -> None:
        """The session has something to write, or wants to close.

        A close must finish within the grace period even when the writer is stuck behind
        a client that reads nothing: past the deadline the socket is aborted.
        """
        self._ready.set()
        if self.session.close_request is not None and self._deadline is None:
            self._deadline = self._loop.call_later(
                self.node.settings.close_grace_s + 0.5, self.abort
            )

    def abort(self) -> None:
        """Drop the connection now, unsent data and all: the only way to free a stuck writer."""
        if self.transport is not None:
            self.transport.abort()

    async def _send(self, frame: bytes, ticks: int = 0) -> None:
        await self.ws.send_frame(frame, WSMsgType.TEXT)
        self.frames += 1
        self.ticks += ticks
        stats = self.node.stats
        stats.frames_sent += 1
        stats.ticks_delivered += ticks

    async def read_loop(self) -> None:
        ws, session = self.ws, self.session
        while session.close_request is None:
            try:
                msg = await ws.receive()
            except asyncio.CancelledError:
                # aiohttp shares one drain future between the tasks writing to a socket
                # (our writer, and its own pong): when the writer's wait is cut short the
                # reader sees the cancellation too. Only a real cancellation propagates.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                session.request_close(CloseCode.GOING_AWAY, "connection lost")
                return
            if msg.type is WSMsgType.TEXT:
                session.receive(msg.data)
            elif msg.type is WSMsgType.BINARY:
                session.receive_binary()
            elif msg.type is WSMsgType.CLOSE:  # echo the peer's code, as RFC 6455 asks
                code = msg.data if isinstance(msg.data, int) else CloseCode.NORMAL
                session.request_close(code, "closed by client")
            elif msg.type is WSMsgType.ERROR and ws.close_code == CloseCode.TOO_BIG:
                session.request_close(CloseCode.TOO_BIG, "message too big")
            else:  # CLOSING, CLOSED, or an ERROR such as a missed pong
                session.request_close(CloseCode.GOING_AWAY, "connection lost")

    async def write_loop(self) -> None:
        session, ready, heartbeat_s = self.session, self._ready, self.node.settings.heartbeat_s
        loop = self._loop
        last_send = next_ticks = loop.time()
        try:
            while session.close_request is None:
                if session.has_control():
                    for frame in session.take_control():
                        await self._send(frame)
                    last_send = loop.time()
                    continue
                now = loop.time()
                timeout = last_send + heartbeat_s - now
                if session.has_ticks():
                    if now >= next_ticks:
                        frame, count = session.take_ticks()
                        await self._send(frame, count)
                        last_send = loop.time()
                        next_ticks = last_send + self.min_interval
                        continue
                    timeout = min(timeout, next_ticks - now)
                elif timeout <= 0:
                    await self._send(protocol.heartbeat(now_us()))
                    last_send = loop.time()
                    continue
                ready.clear()
                try:
                    async with asyncio.timeout(timeout):
                        await ready.wait()
                except TimeoutError:
                    pass
            await self._close()
        except ConnectionError:
            pass  # the peer went away (or we aborted); the reader notices too

    def finish(self) -> None:
        """Leave the node: unsubscribe, count and log the close. Synchronous on purpose,
        so that it runs to the end even when the handler is being cancelled."""
        session, node, metrics = self.session, self.node, self.node.metrics
        request = session.close_request
        if self._deadline is not None:
            self._deadline.cancel()
        session.end()
        node.connections.discard(self)
        self.closed.set()
        code = request.code if request else CloseCode.GOING_AWAY
        label = str(code) if code in CloseCode._value2member_map_ else "other"
        metrics.connections.labels(TRANSPORT).dec()
        metrics.connections_closed.labels(TRANSPORT, label).inc()
        log.info(
            "close session=%s code=%s reason=%s frames=%d ticks=%d duration=%.1fs",
            session.id,
            code,
            (request.reason if request else "") or "-",
            self.frames,
            self.ticks,
            time.monotonic() - self.opened_at,
        )

    async def _close(self) -> None:
        request = self.session.close_request
        assert request is not None
        try:
            async with asyncio.timeout(self.node.settings.close_grace_s):
                await self.ws.close(code=request.code, message=request.reason.encode())
        except TimeoutError:
            self.abort()


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE_KEY]
    settings = node.settings
    try:
        mode, max_hz, symbols = connect_params(request.query)
    except ConnectError as exc:
        return bad_handshake(str(exc))
    if node.closing:
        raise web.HTTPServiceUnavailable(text="server shutting down")

    ws = web.WebSocketResponse(
        heartbeat=settings.ping_interval_s,
        max_msg_size=settings.limits.max_message_bytes,
        compress=False,
        autoclose=False,
        writer_limit=0,  # check the transport's pause state after every frame
    )
    await ws.prepare(request)
    conn = Connection(node, ws, request, mode=mode, max_hz=max_hz)
    session = conn.session
    metrics = node.metrics
    node.connections.add(conn)
    metrics.connections.labels(TRANSPORT).inc()
    metrics.connections_opened.labels(TRANSPORT).inc()
    log.info(
        "open session=%s peer=%s mode=%s max_hz=%s symbols=%s",
        session.id,
        conn.peer,
        mode,
        max_hz or "-",
        ",".join(symbols) or "-",
    )
    session.start(settings.heartbeat_s, symbols)
    writer = asyncio.create_task(conn.write_loop(), name=f"writer:{session.id}")
    try:
        await conn.read_loop()
    except ConnectionError:
        pass
    finally:
        try:
            # Let the writer send the close frame; a client that does not take it is aborted.
            session.request_close(CloseCode.GOING_AWAY, "connection lost")
            done, _ = await asyncio.wait([writer], timeout=settings.close_grace_s + 0.5)
            if not done:
                conn.abort()
        except asyncio.CancelledError:  # the peer vanished and aiohttp cancelled us
            conn.abort()
            raise
        finally:
            conn.finish()
    return ws
