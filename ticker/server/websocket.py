"""The WebSocket transport: a thin adapter between an aiohttp socket and a ``Session``.

The handler's task reads: it hands every frame the client sends to the session. Writing is
the node's ``Flusher``: when the session has something, the connection is flushed once on
the next pass — control frames first, then one frame of ticks, straight to the transport —
unless the transport is paused above its high-water mark. Then nothing is written until it
drains, so backpressure comes from the socket: while a client is slow its mailbox conflates
(or its queue fills and it is closed with 4008), and nothing else waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiohttp import WebSocketError, WSMsgType, web

from ticker.core.bus import Bus
from ticker.core.codes import CloseCode
from ticker.core.entitlements import ANONYMOUS, Principal
from ticker.core.session import MODES, Session
from ticker.server.auth import BEARER_PROTOCOL, Admitted, handshake
from ticker.server.metrics import Rejection
from ticker.server.node import NODE_KEY, Node

log = logging.getLogger("ticker.server")

TRANSPORT = "ws"
MAX_HZ_LIMIT = 1000.0


class ConnectError(ValueError):
    """A query parameter that makes the handshake fail with 400 (before the upgrade)."""


def connect_params(query: Mapping[str, str]) -> tuple[str, float | None, list[str]]:
    """``mode``, ``max_hz`` and ``symbols`` from the handshake's query string."""
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
    return mode, max_hz, symbols


def bad_handshake(message: str) -> web.Response:
    return web.json_response(
        {"type": "error", "code": "bad_request", "message": message}, status=400
    )


def echo_code(code: object) -> int:
    """The code to answer a client's close with: its own when RFC 6455 lets us send it."""
    if isinstance(code, int) and (
        1000 <= code <= 1003 or 1007 <= code <= 1011 or 3000 <= code <= 4999
    ):
        return code
    return CloseCode.NORMAL


def text_frame(payload: bytes) -> bytes:
    """A complete unmasked, uncompressed WebSocket text frame (RFC 6455 section 5.2).

    Built here because the hot path writes prebuilt frames straight to the transport; with
    compression off this is byte for byte what aiohttp's writer would send.
    """
    n = len(payload)
    if n < 126:
        return b"".join((_HEAD_SHORT[n], payload))
    if n < 65536:
        return b"".join((b"\x81\x7e", n.to_bytes(2, "big"), payload))
    return b"".join((b"\x81\x7f", n.to_bytes(8, "big"), payload))


_HEAD_SHORT = [bytes((0x81, n)) for n in range(126)]


class Connection:
    """One WebSocket client: its session and socket, flushed by the node's ``Flusher``.

    The flusher is the only writer of data frames; aiohttp writes only its own control
    frames (pong, ping, close), each a whole frame, so the two never interleave.
    """

    __slots__ = (
        "_drainer",
        "_flusher",
        "_hz_timer",
        "_loop",
        "_marked",
        "closing",
        "frames",
        "last_send",
        "min_interval",
        "next_ticks",
        "node",
        "opened_at",
        "peer",
        "protocol",
        "session",
        "ticks",
        "traffic",
        "transport",
        "ws",
    )

    def __init__(
        self,
        node: Node,
        ws: web.WebSocketResponse,
        request: web.Request,
        *,
        mode: str,
        max_hz: float | None,
        principal: Principal = ANONYMOUS,
        bus: Bus | None = None,
    ) -> None:
        self.node = node
        self.ws = ws
        self.transport = request.transport
        self.protocol = request.protocol
        self.peer = request.remote
        self._flusher = node.flusher
        self.traffic = node.transport(TRANSPORT)
        self._loop = asyncio.get_running_loop()
        self._marked = False
        self._drainer: asyncio.Task[None] | None = None
        self._hz_timer: asyncio.TimerHandle | None = None
        self.closing: asyncio.Task[None] | None = None
        settings = node.settings
        self.session = Session(
            bus or node.bus,
            mode=mode,
            limits=settings.limits,
            wake=self.wake,
            error_counts=node.stats.errors,
            replays=node.replays,
            principal=principal,
            authenticate=None if settings.auth is None else settings.auth.verify,
            welcome_limits=settings.connection_limits.as_dict(),
        )
        self.min_interval = 1.0 / max_hz if max_hz else 0.0
        self.next_ticks = 0.0
        self.opened_at = self.last_send = self._loop.time()
        self.frames = 0
        self.ticks = 0

    def wake(self) -> None:
        """The session has something to write (or wants to close): flush on the next pass."""
        if not self._marked:
            self._marked = True
            self._flusher.mark(self)

    def abort(self) -> None:
        """Drop the connection now, unsent data and all: the only way to free a stuck socket."""
        if self.transport is not None:
            self.transport.abort()

    def flush(self, now: float) -> None:
        """Write control frames, then one frame of ticks, unless the socket is backed up."""
        self._marked = False
        session = self.session
        if session.close_request is not None:
            self.start_close()
            return
        transport = self.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            return
        if self.protocol.writing_paused:  # backpressure: wait for the socket, keep conflating
            session.backed_up()
            if session.close_request is not None:
                self.start_close()
            else:
                self._wait_for_drain()
            return
        traffic = self.traffic
        if session.has_control():
            frames = session.take_control()
            for frame in frames:
                data = text_frame(frame)
                transport.write(data)
                traffic.bytes += len(data)
            self.frames += len(frames)
            traffic.frames += len(frames)
            self.last_send = now
        if not session.has_ticks():
            return
        if now < self.next_ticks:  # max_hz: come back when the next frame is allowed
            if self._hz_timer is None:
                self._hz_timer = self._loop.call_at(self.next_ticks, self._hz_due)
            return
        # latency: from the frame's oldest batch (a delayed client's is its delay: not counted)
        if traffic.handed is not None and not session.principal.delay_s:
            traffic.handed.append(session.mailbox.oldest_t)
        frame, count = session.take_ticks()
        data = text_frame(frame)
        transport.write(data)
        self.frames += 1
        self.ticks += count
        traffic.frames += 1
        traffic.ticks += count
        traffic.bytes += len(data)
        self.last_send = now
        self.next_ticks = now + self.min_interval
        if session.has_ticks():  # more than a frame's worth: the rest goes on the next pass
            self.wake()

    def _hz_due(self) -> None:
        self._hz_timer = None
        self.wake()

    def _wait_for_drain(self) -> None:
        if self._drainer is None:
            self._drainer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        """Wait until the socket takes data again (one task per stall, not per frame)."""
        try:
            # aiohttp's own writer waits the same way; there is no public drain for a
            # WebSocket response that does not also write.
            await self.protocol._drain_helper()
        except (ConnectionError, asyncio.CancelledError):
            pass  # lost, or a shared drain wait was cut short: the next flush will see
        finally:
            self._drainer = None
            self.wake()

    def heartbeat_due(self, now: float, heartbeat_s: float) -> None:
        if now - self.last_send >= heartbeat_s and self.session.close_request is None:
            self.last_send = now
            self.session.heartbeat()

    def start_close(self) -> None:
        if self.closing is None:
            self.closing = asyncio.ensure_future(self._close())

    async def _close(self) -> None:
        """Send the close frame and see it leave; a client that does not take it in time
        is aborted (``transport.close()`` alone would keep a stuck socket forever)."""
        request = self.session.close_request
        assert request is not None
        transport = self.transport
        try:
            async with asyncio.timeout(self.node.settings.close_grace_s):
                await self.ws.close(code=request.code, message=request.reason.encode())
                # asyncio has no "wait until flushed": poll, briefly, under the deadline
                while transport is not None and transport.get_write_buffer_size():  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        except TimeoutError:
            log.info("session=%s did not read its close frame in time: aborted", self.session.id)
            self.abort()
        except ConnectionError:
            pass

    async def read_loop(self) -> None:
        ws, session = self.ws, self.session
        while session.close_request is None:
            try:
                msg = await ws.receive()
            except asyncio.CancelledError:
                # aiohttp shares one drain future between the tasks waiting on a socket
                # (a close, its own pong): when one wait is cut short the others see the
                # cancellation too. Only a real cancellation propagates.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                session.request_close(CloseCode.GOING_AWAY, "connection lost")
                return
            if msg.type is WSMsgType.TEXT:
                session.receive(msg.data)
            elif msg.type is WSMsgType.BINARY:
                session.receive_binary()
            elif msg.type is WSMsgType.CLOSE:
                session.request_close(echo_code(msg.data), "closed by client")
            elif msg.type is WSMsgType.ERROR and isinstance(msg.data, WebSocketError):
                # aiohttp refused a frame (1009 too big, 1002 protocol error) and closed with
                # this code; ws.close_code may since say 1006 (the peer's unread remainder)
                session.request_close(msg.data.code, str(msg.data))
            else:  # CLOSING, CLOSED, or an ERROR such as a missed pong
                session.request_close(CloseCode.GOING_AWAY, "connection lost")

    def finish(self) -> None:
        """Leave the node: unsubscribe, count and log the close. Synchronous on purpose,
        so that it runs to the end even when the handler is being cancelled."""
        session, node = self.session, self.node
        request = session.close_request
        if self._hz_timer is not None:
            self._hz_timer.cancel()
        node.stats.conflated_gone += session.mailbox.conflated  # in step with leaving the set
        session.end()
        node.connections.discard(self)
        code = request.code if request else CloseCode.GOING_AWAY
        node.metrics.closed(TRANSPORT, code, session.mode)
        log.info(
            "close session=%s code=%s reason=%s frames=%d ticks=%d duration=%.1fs",
            session.id,
            code,
            (request.reason if request else "") or "-",
            self.frames,
            self.ticks,
            self._loop.time() - self.opened_at,
        )


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE_KEY]
    settings = node.settings
    try:
        mode, max_hz, symbols = connect_params(request.query)
    except ConnectError as exc:
        node.metrics.rejected(TRANSPORT, Rejection.BAD_REQUEST)
        return bad_handshake(str(exc))
    if node.closing:
        node.metrics.rejected(TRANSPORT, Rejection.SHUTTING_DOWN)
        raise web.HTTPServiceUnavailable(text="server shutting down")
    with handshake(request, TRANSPORT) as admitted:
        ws = web.WebSocketResponse(
            heartbeat=settings.ping_interval_s,
            max_msg_size=settings.limits.max_message_bytes,
            # off: per-client deflate costs memory and CPU, and inflating a client's frames
            # is a decompression bomb to bound; max_msg_size bounds what we read
            compress=False,
            autoclose=False,
            decode_text=False,  # bytes to orjson; bad UTF-8 is then bad_json, not a close
            protocols=(BEARER_PROTOCOL,),  # echoed when the token came as a subprotocol
        )
        await ws.prepare(request)
    try:
        await _serve(node, ws, request, mode, max_hz, symbols, admitted)
    finally:
        admitted.leave()
    return ws


async def _serve(
    node: Node,
    ws: web.WebSocketResponse,
    request: web.Request,
    mode: str,
    max_hz: float | None,
    symbols: list[str],
    admitted: Admitted,
) -> None:
    settings = node.settings
    principal = admitted.principal
    conn = Connection(
        node, ws, request, mode=mode, max_hz=max_hz, principal=principal, bus=admitted.bus
    )
    session = conn.session
    node.connections.add(conn)
    node.metrics.opened(TRANSPORT)
    log.info(
        "open session=%s peer=%s sub=%s mode=%s max_hz=%s symbols=%s",
        session.id,
        conn.peer,
        principal.sub or "-",
        mode,
        max_hz or "-",
        ",".join(symbols) or "-",
    )
    session.start(settings.heartbeat_s, symbols)
    try:
        await conn.read_loop()
    except ConnectionError:
        pass
    finally:
        try:
            session.request_close(CloseCode.GOING_AWAY, "connection lost")
            conn.start_close()
            assert conn.closing is not None
            done, _ = await asyncio.wait([conn.closing], timeout=settings.close_grace_s + 0.5)
            if not done:
                conn.abort()
        except asyncio.CancelledError:  # the peer vanished and aiohttp cancelled us
            conn.abort()
            raise
        finally:
            conn.finish()
