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
from typing import Any

from aiohttp import WebSocketError, WSMsgType, web

from ticker.core.codes import CloseCode
from ticker.server.auth import BEARER_PROTOCOL, Admitted
from ticker.server.connection import ClientConnection, Clients
from ticker.server.handshake import ConnectParams
from ticker.server.lifecycle import open_connection, serve

log = logging.getLogger("ticker.server")

TRANSPORT = "ws"


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


def too_big_reason(limit: int) -> bytes:
    """The reason of a 1009: which limit the client's message went over."""
    return f"message over max_message_bytes ({limit} bytes)".encode()


class LimitedSocket(web.WebSocketResponse):
    """A socket whose 1009 says why: aiohttp closes a message over ``max_msg_size`` itself,
    inside ``receive()``, with an empty reason; this fills the reason in."""

    def __init__(self, *, max_msg_size: int, **kwargs: Any) -> None:
        super().__init__(max_msg_size=max_msg_size, **kwargs)
        self._too_big = too_big_reason(max_msg_size)

    async def close(
        self, *, code: int = CloseCode.NORMAL, message: bytes = b"", drain: bool = True
    ) -> bool:
        """Close; a 1009 without a reason gets the one that names the limit."""
        if code == CloseCode.TOO_BIG and not message:
            message = self._too_big
        return await super().close(code=code, message=message, drain=drain)


class Connection(ClientConnection):
    """One WebSocket client: its session and socket, flushed by the node's ``Flusher``.

    The flusher is the only writer of data frames; aiohttp writes only its own control
    frames (pong, ping, close), each a whole frame, so the two never interleave.
    """

    TRANSPORT = TRANSPORT

    __slots__ = ("ws",)

    def __init__(
        self, clients: Clients, request: web.Request, params: ConnectParams, admitted: Admitted
    ) -> None:
        settings = clients.settings
        self.ws = LimitedSocket(
            heartbeat=settings.ping_interval_s,
            max_msg_size=settings.limits.max_message_bytes,
            # off: per-client deflate costs memory and CPU, and inflating a client's frames
            # is a decompression bomb to bound; max_msg_size bounds what we read
            compress=False,
            autoclose=False,
            decode_text=False,  # bytes to orjson; bad UTF-8 is then bad_json, not a close
            protocols=(BEARER_PROTOCOL,),  # echoed when the token came as a subprotocol
        )
        super().__init__(clients, request, params, admitted)

    async def prepare(self, request: web.Request) -> None:
        """The upgrade."""
        await self.ws.prepare(request)

    def encode(self, frame: bytes) -> bytes:
        """A protocol frame as one prebuilt WebSocket text frame."""
        return text_frame(frame)

    encode_ticks = encode  # a ticks frame is no different here: one call less per frame

    def is_open(self) -> bool:
        """The socket is not closed (nor its transport closing)."""
        transport = self.transport
        return transport is not None and not transport.is_closing() and not self.ws.closed

    async def _close(self) -> None:
        """Send the close frame and see it leave; a client that does not take it in time
        is aborted (``transport.close()`` alone would keep a stuck socket forever)."""
        request = self.session.close_request
        assert request is not None
        try:
            async with asyncio.timeout(self.clients.settings.close_grace_s):
                await self.ws.close(code=request.code, message=request.reason.encode())
                await self._flushed_or_abort()
        except TimeoutError:
            log.info("session=%s did not read its close frame in time: aborted", self.session.id)
            self.abort()
        except ConnectionError:
            pass

    async def read_loop(self) -> None:
        """Hand every frame the client sends to the session, until it is to close."""
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


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """``GET /ws``: one client's whole connection."""
    conn = await open_connection(request, Connection)
    await serve(conn, conn.read_loop)
    return conn.ws
