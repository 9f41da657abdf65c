"""The long-polling transport: ``GET /poll``, one answer per request, a session between.

The first poll opens a session (the same ``Session`` as a WebSocket's) and answers with
its welcome, replies and snapshot, and a ``cursor``. Each next poll passes the cursor
back; it is held (up to ``poll_hold_s``) until the session has something, then answered
with what the flusher wrote for it — control frames, then one frame of ticks — and the
next cursor. Between polls the session stays subscribed for ``poll_session_s``, its
mailbox bounded as for any client (mode ``all``: ``queue_bytes``, then 4008), so a client
that polls again in time misses nothing. A poll repeating the previous cursor (its
answer was lost) gets that answer again.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from ticker.core import protocol
from ticker.core.codes import CloseCode, Refusal
from ticker.server.auth import Admitted
from ticker.server.connection import CLIENTS, ClientConnection, Clients
from ticker.server.handshake import ConnectParams
from ticker.server.http_ops import add_route, same_principal, unknown_session
from ticker.server.lifecycle import open_connection
from ticker.server.refusals import refusal

log = logging.getLogger("ticker.server")

TRANSPORT = "poll"
HEADERS = {"Cache-Control": "no-store", "Content-Type": "application/json"}


class PollConnection(ClientConnection):
    """One long-polling client: a session that outlives each request.

    "Writing" appends to the answer of the poll that is waiting; with no poll waiting the
    client is backed up, as a socket that does not drain would be.
    """

    TRANSPORT = TRANSPORT
    HTTP_SESSION = True

    __slots__ = ("_batch", "_expiry", "final", "last_answer", "seq", "waiting")

    def __init__(
        self, clients: Clients, request: web.Request, params: ConnectParams, admitted: Admitted
    ) -> None:
        super().__init__(clients, request, params, admitted)
        self.seq = 0
        """Answers given; the cursor ``session:seq`` asks for the next one."""
        self.waiting: asyncio.Future[bytes] | None = None
        self._batch: list[bytes] = []
        self.last_answer = b""
        self.final: bytes | None = None
        """The close message, kept for the next poll when none was waiting."""
        self._expiry: asyncio.TimerHandle | None = None
        """Ends the session when no poll comes in ``poll_session_s`` (armed between polls)."""

    def cursor(self, seq: int) -> str:
        """What a client passes back to have the answer after ``seq``."""
        return f"{self.session.id}:{seq}"

    def encode(self, frame: bytes) -> bytes:
        """A message of the answer is the protocol frame itself."""
        return frame

    def is_open(self) -> bool:
        """The session has not closed."""
        return self.final is None

    def paused(self) -> bool:
        """No poll is waiting for an answer: the client is backed up."""
        return self.waiting is None

    def _wait_for_drain(self) -> None:
        pass  # the next poll wakes the connection

    def write(self, data: bytes) -> None:
        """Add to the answer of the waiting poll."""
        self._batch.append(data)

    def write_all(self, datas: list[bytes]) -> None:
        """Each message stays its own item of the answer."""
        self._batch.extend(datas)

    def wrote(self) -> None:
        """Answer the waiting poll with what the flush wrote."""
        self._answer()

    def heartbeat_due(self, now: float, heartbeat_s: float) -> None:
        """None: a held poll answers empty after ``poll_hold_s``; that is the heartbeat."""

    def abort(self) -> None:
        """Drop the waiting poll's connection, if any, and end the session."""
        if self.waiting is not None and self.transport is not None:
            self.transport.abort()
        self.session.request_close(CloseCode.SERVER_ERROR, "aborted")

    def _answer(self) -> None:
        """Complete the waiting poll with what was written for it (maybe nothing)."""
        waiting, messages = self.waiting, self._batch
        if waiting is None:
            return
        self.waiting, self._batch = None, []
        self.seq += 1
        head = b'{"cursor":"%s","messages":[' % self.cursor(self.seq).encode()
        self.last_answer = b"".join((head, b",".join(messages), b"]}"))
        if not waiting.done():
            waiting.set_result(self.last_answer)

    async def poll(self, seq: int, request: web.Request, hold: float) -> bytes:
        """The answer to a poll with cursor ``seq``."""
        if seq == self.seq - 1 and self.last_answer:
            return self.last_answer  # the previous answer was lost: the same again
        if seq != self.seq:
            message = f"stale cursor: the session is at {self.cursor(self.seq)}"
            raise refusal(Refusal.BAD_REQUEST, message)
        if self.final is not None:
            return self._closed_answer()
        if self.waiting is not None:  # a second poll at once: the first answers empty
            self._answer()
        self.transport, self.protocol = request.transport, request.protocol
        self.waiting = waiting = asyncio.get_running_loop().create_future()
        self._disarm_expiry()
        self.wake()
        try:
            async with asyncio.timeout(hold):
                return await asyncio.shield(waiting)
        except TimeoutError:
            if self.waiting is waiting:
                self._answer()
            answer: bytes = waiting.result()
            return answer
        except asyncio.CancelledError:  # the client left: what is pending waits for it
            if self.waiting is waiting:
                self.waiting = None
            raise
        finally:
            self._arm_expiry()

    def _closed_answer(self) -> bytes:
        assert self.final is not None
        self._drop()
        return b'{"cursor":null,"messages":[%b]}' % self.final

    async def _close(self) -> None:
        """Answer the waiting poll with the close message, or keep it for the next one;
        the session leaves the bus now."""
        request = self.session.close_request
        assert request is not None
        self.final = protocol.close(request.code, request.reason)
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.set_result(self._closed_answer())
        self.finish()

    def _arm_expiry(self) -> None:
        self._disarm_expiry()
        if self.clients.sessions.get(self.session.id) is not self:
            return  # dropped already: nothing to expire
        self._expiry = self._loop.call_later(self.clients.settings.poll_session_s, self._expired)

    def _disarm_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _expired(self) -> None:
        self._expiry = None
        if self.final is None:
            self.session.request_close(CloseCode.GOING_AWAY, "session expired: no poll in time")
        self._drop()

    def _drop(self) -> None:
        """Forget the session (its close message was delivered, or nobody came for it)."""
        self._disarm_expiry()
        self.clients.sessions.pop(self.session.id, None)

    def _forget(self) -> None:
        """Not yet when it leaves the node: the close message waits for the next poll."""


async def poll_handler(request: web.Request) -> web.Response:
    """``GET /poll``: the first opens a session, each next one (with its cursor) waits
    for what the session has."""
    clients = request.app[CLIENTS]
    cursor = request.query.get("cursor")
    if cursor:
        session_id, _, seq = cursor.partition(":")
        conn = clients.sessions.get(session_id)
        if not isinstance(conn, PollConnection) or not seq.isdigit() or len(seq) > 15:
            raise unknown_session()
        same_principal(request, conn)
    else:
        conn = await open_connection(request, PollConnection)
        seq = "0"
    body = await conn.poll(int(seq), request, clients.settings.poll_hold_s)
    return web.Response(body=body, headers=HEADERS)


def add_routes(app: web.Application) -> None:
    """``GET /poll`` and the ops of its sessions."""
    app.router.add_get("/poll", poll_handler)
    add_route(app, TRANSPORT)
