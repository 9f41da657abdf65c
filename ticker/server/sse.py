"""The Server-Sent Events transport: ``GET /sse``, a one-way stream written by the flusher.

Each protocol frame becomes one event: ``event:`` its type, ``data:`` the same JSON as on
a WebSocket, and in mode ``all`` an ``id:`` with the position reached (the epoch and the
last ``q`` of each symbol), which the browser sends back as ``Last-Event-ID`` when it
reconnects: the server then resumes from its history. The events are prebuilt bytes
written straight to the socket (as HTTP/1.1 chunks) by the node's ``Flusher``, with the
same backpressure as a WebSocket; ops come by ``POST /sse/{session}/{op}``.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import HttpVersion11, web

from ticker.core import protocol
from ticker.core.history import format_positions
from ticker.server.auth import Admitted
from ticker.server.connection import ClientConnection, Clients
from ticker.server.handshake import ConnectParams
from ticker.server.http_ops import add_route
from ticker.server.lifecycle import open_connection, serve

log = logging.getLogger("ticker.server")

TRANSPORT = "sse"
_TYPE_AT = len(b'{"type":"')
_WITH_TICKS = (b'{"type":"ticks"', b'{"type":"snapshot"')

HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
}


def sse_event(frame: bytes, event_id: str | None = None) -> bytes:
    """One protocol frame as an SSE event named after its ``type``."""
    kind = frame[_TYPE_AT : frame.index(b'"', _TYPE_AT)]
    head = b"event: " + kind + b"\n"
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    return b"".join((head, b"data: ", frame, b"\n\n"))


def http_chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk (the stream is chunked; HTTP/1.0 is not)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class SseConnection(ClientConnection):
    """One SSE client; in mode ``all``, ``positions`` is what its events' ``id:`` says."""

    TRANSPORT = TRANSPORT
    HTTP_SESSION = True

    __slots__ = ("chunked", "ended", "positions", "response")

    def __init__(
        self, clients: Clients, request: web.Request, params: ConnectParams, admitted: Admitted
    ) -> None:
        super().__init__(clients, request, params, admitted)
        self.chunked = request.version >= HttpVersion11
        self.ended = asyncio.Event()
        self.response = web.StreamResponse(headers=HEADERS)
        self.response.force_close()  # the stream is the connection: no keep-alive after it
        self.positions: dict[str, int] | None = None
        if params.mode == "all":
            self.positions = self._resumed_at(params)

    def _resumed_at(self, params: ConnectParams) -> dict[str, int]:
        """A resumed client is where it said it was (a symbol it missed nothing of gets no
        frame to move its position); a snapshot or replayed ticks move it on from there."""
        resume, symbols = params.resume, params.symbols
        if resume is None or resume[0] != self.session.bus.epoch:
            return {}
        every = "*" in symbols
        return {s: q for s, q in resume[1].items() if every or s in symbols}

    async def prepare(self, request: web.Request) -> None:
        """The stream's headers."""
        await self.response.prepare(request)

    async def wait_ended(self) -> None:
        """Nothing to read: wait for the close, checking now and then that the peer is
        there (a server that does not cancel handlers would not tell us otherwise)."""
        while not self.ended.is_set() and self.is_open():
            try:
                async with asyncio.timeout(1.0):
                    await self.ended.wait()
            except TimeoutError:
                pass

    def _event(self, frame: bytes, event_id: str | None) -> bytes:
        data = sse_event(frame, event_id)
        return http_chunk(data) if self.chunked else data

    def encode(self, frame: bytes) -> bytes:
        """A control frame; a snapshot or resumed ticks (rare) move the position."""
        positions = self.positions
        if positions is None or not frame.startswith(_WITH_TICKS):
            return self._event(frame, None)
        for tick in orjson.loads(frame)["ticks"]:
            positions[tick["s"]] = tick["q"]
        return self._event(frame, self._position())

    def encode_ticks(self, frame: bytes) -> bytes:
        """A ``ticks`` frame as an event; in mode ``all`` its ``id:`` is the position."""
        return self._event(frame, None if self.positions is None else self._position())

    def took_ticks(self) -> tuple[bytes, int]:
        """The next ticks frame, the last ``q`` of each symbol noted as the position."""
        return self.session.take_ticks(self.positions)  # notes the last q of each symbol

    def _position(self) -> str:
        positions = self.positions
        assert positions is not None
        live = {s: q for s, q in positions.items() if not s.startswith("\x00")}  # not replays
        return format_positions(self.session.bus.epoch, live)

    async def _close(self) -> None:
        """The ``close`` event (the WebSocket close frame's code and reason), seen to
        leave within the grace period; a client that does not take it is aborted."""
        request = self.session.close_request
        assert request is not None
        try:
            if self.is_open():
                self.write(self.encode(protocol.close(request.code, request.reason)))
                async with asyncio.timeout(self.clients.settings.close_grace_s):
                    await self._flushed_or_abort()
        except TimeoutError:
            log.info("session=%s did not read its close event in time: aborted", self.session.id)
            self.abort()
        finally:
            self.ended.set()


async def sse_handler(request: web.Request) -> web.StreamResponse:
    """``GET /sse``: one client's stream, open until its session closes."""
    conn = await open_connection(request, SseConnection)
    await serve(conn, conn.wait_ended)
    return conn.response


def add_routes(app: web.Application) -> None:
    """``GET /sse`` and the ops of its sessions."""
    app.router.add_get("/sse", sse_handler)
    add_route(app, TRANSPORT)
