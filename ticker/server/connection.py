"""What every transport's connection shares: one session, flushed by the node's ``Flusher``.

A transport subclass says how it opens (``prepare``), how a frame looks on its wire
(``encode``), whether it can take bytes now (``paused``), how to write them (``write``)
and how to close (``_close``); the rest — control frames before one frame of ticks,
``max_hz``, backpressure from the socket, heartbeats, the close deadline, joining and
leaving the node's ``Clients`` with its metrics — is here, once, for WebSocket, SSE and
long polling alike. ``lifecycle.py`` runs the steps in order.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterator

from aiohttp import web

from ticker.core.codes import CloseCode
from ticker.core.mailbox import Mailbox
from ticker.core.session import DerivedHost, ReplayHost, Session
from ticker.server.auth import Admitted
from ticker.server.flusher import Flusher
from ticker.server.handshake import ConnectParams
from ticker.server.metrics import Metrics
from ticker.server.settings import Settings
from ticker.server.stats import Stats, Traffic

log = logging.getLogger("ticker.server")


class Clients:
    """The open connections of a node and what they share: its settings, flusher and
    counters. A connection joins when its session starts and leaves when it is over; the
    node walks ``open`` for heartbeats, token deadlines and shutdown."""

    def __init__(
        self, settings: Settings, metrics: Metrics, stats: Stats, flusher: Flusher
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.stats = stats
        self.flusher = flusher
        self.open: set[ClientConnection] = set()
        self.sessions: dict[str, ClientConnection] = {}
        """Open SSE and long-polling sessions by id: their ops and polls find them here."""
        self.replays: ReplayHost | None = None
        """Serves the replay ops (``--replay-dir``); None: they answer "not enabled"."""
        self.derived: dict[str, DerivedHost] = {}
        """Who serves each kind of derived topic (``SYMBOL@1m``), by kind name."""

    def traffic(self, transport: str) -> Traffic:
        """The counters of a transport (``ws``...), its metric series created at 0."""
        if transport not in self.stats.traffic:
            self.metrics.prepare(transport)
        return self.stats.transport(transport)

    def mailboxes(self) -> Iterator[Mailbox]:
        """The mailbox of every open connection (the metrics read them at scrape time)."""
        return (conn.session.mailbox for conn in self.open)


CLIENTS = web.AppKey("clients", Clients)
"""The node's clients, as the handlers find them."""


class ClientConnection:
    """One client of any transport; the flusher is the only writer of its data."""

    TRANSPORT = ""
    """The transport's metric label (``ws``, ``sse``, ``poll``)."""
    HTTP_SESSION = False
    """Its ops come over plain HTTP (SSE, long polling): it is found by session id in
    ``Clients.sessions``, and at most ``max_http_sessions`` are open."""

    __slots__ = (
        "_drainer",
        "_flusher",
        "_hz_timer",
        "_leave",
        "_loop",
        "_marked",
        "clients",
        "closing",
        "frames",
        "last_send",
        "min_interval",
        "next_ticks",
        "opened_at",
        "peer",
        "protocol",
        "session",
        "ticks",
        "traffic",
        "transport",
    )

    def __init__(
        self, clients: Clients, request: web.Request, params: ConnectParams, admitted: Admitted
    ) -> None:
        self.clients = clients
        self.transport = request.transport
        self.protocol = request.protocol
        self.peer = request.remote
        self._flusher = clients.flusher
        self.traffic = clients.traffic(self.TRANSPORT)
        self._loop = asyncio.get_running_loop()
        self._marked = False
        self._drainer: asyncio.Task[None] | None = None
        self._hz_timer: asyncio.TimerHandle | None = None
        self.closing: asyncio.Task[None] | None = None
        self._leave: Callable[[], None] | None = admitted.leave
        settings = clients.settings
        self.session = Session(
            admitted.bus,
            mode=params.mode,
            limits=settings.limits,
            wake=self.wake,
            error_counts=clients.stats.errors,
            replays=clients.replays,
            derived=clients.derived,
            principal=admitted.principal,
            authenticate=None if settings.auth is None else settings.auth.verify,
            welcome_limits=settings.connection_limits.as_dict(),
            session_id=settings.session_prefix + secrets.token_hex(8),
        )
        self.min_interval = 1.0 / params.max_hz if params.max_hz else 0.0
        self.next_ticks = 0.0
        self.opened_at = self.last_send = self._loop.time()
        self.frames = 0
        self.ticks = 0

    # -- what a transport provides ----------------------------------------------------------

    async def prepare(self, request: web.Request) -> None:
        """The transport's own upgrade or first response, inside the gate (a failure
        frees the connection slot); long polling has none."""

    def encode(self, frame: bytes) -> bytes:
        """One protocol frame (JSON) as this transport's bytes on the wire."""
        raise NotImplementedError

    def encode_ticks(self, frame: bytes) -> bytes:
        """A ``ticks`` frame from the mailbox (SSE adds the position it reached)."""
        return self.encode(frame)

    def is_open(self) -> bool:
        """The client can still be written to."""
        transport = self.transport
        return transport is not None and not transport.is_closing()

    def paused(self) -> bool:
        """The client is not taking data now (the socket is above its high-water mark)."""
        return bool(self.protocol.writing_paused)

    def write(self, data: bytes) -> None:
        """Hand bytes to the client's transport (the flusher's only way out)."""
        assert self.transport is not None
        self.transport.write(data)

    def write_all(self, datas: list[bytes]) -> None:
        """Hand several encoded messages over at once: one write, one syscall (a pass of
        book topics is a message per topic)."""
        self.write(datas[0] if len(datas) == 1 else b"".join(datas))

    def wrote(self) -> None:
        """A flush wrote something (long polling answers the waiting request)."""

    def took_ticks(self) -> tuple[bytes, int]:
        """The next ticks frame from the session (SSE also notes the positions)."""
        return self.session.take_ticks()

    async def _close(self) -> None:
        """Send the transport's close and see it leave, under ``close_grace_s``."""
        raise NotImplementedError

    # -- the shared machinery ---------------------------------------------------------------

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
        """Write control frames, then one frame of ticks, unless the client is backed up."""
        self._marked = False
        session = self.session
        if session.close_request is not None:
            self.start_close()
            return
        if not self.is_open():
            return
        if self.paused():  # backpressure: wait for the client, keep conflating
            session.backed_up()
            if session.close_request is not None:
                self.start_close()
            else:
                self._wait_for_drain()
            return
        traffic = self.traffic
        wrote = False
        frames = session.take_control() if session.has_control() else None
        if frames:  # none: a book topic's pending frames were all covered already
            datas = [self.encode(frame) for frame in frames]
            self.write_all(datas)
            traffic.bytes += sum(map(len, datas))
            self.frames += len(frames)
            traffic.frames += len(frames)
            self.last_send = now
            wrote = True
        if session.has_ticks():
            if now < self.next_ticks:  # max_hz: come back when the next frame is allowed
                if self._hz_timer is None:
                    self._hz_timer = self._loop.call_at(self.next_ticks, self._hz_due)
            else:
                self._write_ticks(now)
                wrote = True
        if wrote:
            self.wrote()

    def _write_ticks(self, now: float) -> None:
        session, traffic = self.session, self.traffic
        # latency: from the frame's oldest batch (a delayed client's is its delay: not counted)
        if traffic.handed is not None and not session.principal.delay_s:
            traffic.handed.append(session.mailbox.oldest_t)
        frame, count = self.took_ticks()
        data = self.encode_ticks(frame)
        self.write(data)
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
            # aiohttp's own writers wait the same way; there is no public drain for a
            # response that does not also write.
            await self.protocol._drain_helper()
        except (ConnectionError, asyncio.CancelledError):
            pass  # lost, or a shared drain wait was cut short: the next flush will see
        finally:
            self._drainer = None
            self.wake()

    def heartbeat_due(self, now: float, heartbeat_s: float) -> None:
        """A heartbeat frame when nothing was sent for ``heartbeat_s``."""
        if now - self.last_send >= heartbeat_s and self.session.close_request is None:
            self.last_send = now
            self.session.heartbeat()

    def start_close(self) -> None:
        """Start the transport's close, once."""
        if self.closing is None:
            self.closing = asyncio.ensure_future(self._close())

    async def _flushed_or_abort(self) -> None:
        """Wait until the write buffer is empty (asyncio has no such wait: poll briefly);
        the caller's deadline aborts a client that does not take it."""
        transport = self.transport
        while transport is not None and transport.get_write_buffer_size():  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def closed_by_deadline(self) -> None:
        """Wait for the close to finish, at most the grace period plus a little; then
        abort. For a handler's ``finally``."""
        self.session.request_close(CloseCode.GOING_AWAY, "connection lost")
        self.start_close()
        assert self.closing is not None
        grace = self.clients.settings.close_grace_s + 0.5
        try:
            done, _ = await asyncio.wait([self.closing], timeout=grace)
            if not done:
                self.abort()
        except asyncio.CancelledError:  # the peer vanished and aiohttp cancelled us
            self.abort()
            raise

    def finish(self) -> None:
        """Leave the node: unsubscribe, count and log the close. Synchronous on purpose,
        so that it runs to the end even when the handler is being cancelled."""
        session, clients = self.session, self.clients
        request = session.close_request
        if self._hz_timer is not None:
            self._hz_timer.cancel()
        clients.stats.conflated_gone += session.mailbox.conflated  # in step with leaving
        session.end()
        clients.open.discard(self)
        self._forget()
        if self._leave is not None:  # the connection slot the handshake took
            leave, self._leave = self._leave, None
            leave()
        code = request.code if request else CloseCode.GOING_AWAY
        clients.metrics.closed(self.TRANSPORT, code, session.mode)
        log.info(
            "close session=%s transport=%s code=%s reason=%s frames=%d ticks=%d duration=%.1fs",
            session.id,
            self.TRANSPORT,
            code,
            (request.reason if request else "") or "-",
            self.frames,
            self.ticks,
            self._loop.time() - self.opened_at,
        )

    def _forget(self) -> None:
        """Leave ``Clients.sessions`` (long polling keeps its close for the next poll)."""
        self.clients.sessions.pop(self.session.id, None)

    def start(self, params: ConnectParams) -> None:
        """Join the node, count and log the open, and start the session: its welcome,
        the connect-time subscription and what a resume replays."""
        clients, session = self.clients, self.session
        clients.open.add(self)
        if self.HTTP_SESSION:
            clients.sessions[session.id] = self
        clients.metrics.opened(self.TRANSPORT)
        log.info(
            "open session=%s transport=%s peer=%s sub=%s mode=%s max_hz=%s symbols=%s",
            session.id,
            self.TRANSPORT,
            self.peer,
            session.principal.sub or "-",
            session.mode,
            params.max_hz or "-",
            ",".join(params.symbols) or "-",
        )
        session.start(clients.settings.heartbeat_s, params.symbols, params.resume)
