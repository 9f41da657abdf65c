"""With ``--workers``: a request for another worker's session is passed to that worker.

An SSE stream or a long-polling session lives in the worker that opened it, but its ops
(``POST /sse/{session}/{op}``) and next polls (``GET /poll?cursor=...``) come on new
connections, which the kernel may hand to any worker. Session ids start with their
worker's index (``Settings.session_prefix``), so the worker that gets such a request
and does not own the session passes it, as it came, to the owner over the owner's
private Unix socket (an abstract name, one per worker) and answers what the owner
answered. An owner that is gone took its sessions with it: 404 ``unknown_session``, as a
single node answers for a session that ended.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import hdrs, web

from ticker.server.http_ops import unknown_session

HOP_BY_HOP = frozenset(
    h.lower() for h in (hdrs.CONNECTION, hdrs.TRANSFER_ENCODING, hdrs.CONTENT_LENGTH, "Keep-Alive")
)
"""Headers of one hop, not passed on: the next hop sets its own."""
PASS_SLACK_S = 30.0
"""How much longer than a held poll a passed request may take."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def private_address(feed_pid: int, index: int) -> str:
    """The abstract Unix socket name of a worker of the feed process ``feed_pid``."""
    return f"\0ticker-workers-{feed_pid}-{index}"


def owner_of(session_id: str) -> int | None:
    """The index of the worker a session id names, or None (not a worker's id)."""
    head, dash, _ = session_id.partition("-")
    return int(head) if dash and head.isdigit() and len(head) < 6 else None


def session_of(request: web.Request) -> str | None:
    """The session a request is for: an op's path, or a poll's cursor; else None."""
    session = request.match_info.get("session")
    if session is not None:
        return session
    if request.path == "/poll" and (cursor := request.query.get("cursor")):
        return cursor.partition(":")[0]
    return None


class Owners:
    """Worker ``index``'s side: its private socket, and passing requests to the others."""

    def __init__(self, index: int, feed_pid: int, hold_s: float, *, tls: bool) -> None:
        self.index = index
        self.feed_pid = feed_pid
        self.scheme = "https" if tls else "http"  # run_app serves every socket alike
        self.timeout = aiohttp.ClientTimeout(total=hold_s + PASS_SLACK_S)
        self._clients: dict[int, aiohttp.ClientSession] = {}

    def listen(self) -> socket.socket:
        """This worker's private socket, where the others pass it its sessions' requests."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(private_address(self.feed_pid, self.index))
        sock.listen()
        return sock

    def attach(self, app: web.Application) -> None:
        """Pass what belongs to another worker; close the links to them at cleanup."""

        @web.middleware
        async def to_owner(request: web.Request, handler: Handler) -> web.StreamResponse:
            session = session_of(request)
            owner = None if session is None else owner_of(session)
            if owner is None or owner == self.index:
                return await handler(request)
            return await self._pass(request, owner)

        async def links(app: web.Application) -> AsyncIterator[None]:
            yield
            for client in self._clients.values():
                await client.close()

        app.middlewares.append(to_owner)
        app.cleanup_ctx.append(links)

    async def _pass(self, request: web.Request, owner: int) -> web.Response:
        client = self._clients.get(owner)
        if client is None:
            connector = aiohttp.UnixConnector(path=private_address(self.feed_pid, owner))
            client = self._clients[owner] = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, timeout=self.timeout
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        try:
            async with client.request(
                request.method,
                f"{self.scheme}://worker{request.path_qs}",
                headers=headers,
                data=body,
                ssl=False,  # our own worker, on a socket of this machine
            ) as answer:
                data = await answer.read()
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
                return web.Response(body=data, status=answer.status, headers=kept)
        except (aiohttp.ClientError, TimeoutError):
            raise unknown_session() from None
