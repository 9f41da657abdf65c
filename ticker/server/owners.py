"""With ``--workers``: a request for another worker's session is passed to that worker.

An SSE stream or a long-polling session lives in the worker that opened it, but its ops
(``POST /sse/{session}/{op}``) and next polls (``GET /poll?cursor=...``) come on new
connections, which the kernel may hand to any worker. Session ids start with their
worker's index (``Settings.session_prefix``), so the worker that gets such a request
and does not own the session passes it, as it came, to the owner on the owner's private
loopback port (bound by the feed process, kept across the worker's restarts; TLS when
the node serves TLS, as every socket of a worker is served alike) and answers what the
owner answered. An owner that is gone took its sessions with it: 404 ``unknown_session``, as a
single node answers for a session that ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

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
    """Worker ``index``'s side: passing requests to the others, on their ``ports``."""

    def __init__(self, index: int, ports: Sequence[int], hold_s: float, *, tls: bool) -> None:
        self.index = index
        self.ports = list(ports)
        self.scheme = "https" if tls else "http"
        self.timeout = aiohttp.ClientTimeout(total=hold_s + PASS_SLACK_S)
        self._client: aiohttp.ClientSession | None = None

    def attach(self, app: web.Application) -> None:
        """Pass what belongs to another worker; close the links to them at cleanup."""

        @web.middleware
        async def to_owner(request: web.Request, handler: Handler) -> web.StreamResponse:
            session = session_of(request)
            owner = None if session is None else owner_of(session)
            if owner is None or owner == self.index or owner >= len(self.ports):
                return await handler(request)
            return await self._pass(request, owner)

        async def links(app: web.Application) -> AsyncIterator[None]:
            yield
            if self._client is not None:
                await self._client.close()

        app.middlewares.append(to_owner)
        app.cleanup_ctx.append(links)

    async def _pass(self, request: web.Request, owner: int) -> web.Response:
        client = self._client
        if client is None:
            client = self._client = aiohttp.ClientSession(
                auto_decompress=False, timeout=self.timeout
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        url = f"{self.scheme}://127.0.0.1:{self.ports[owner]}{request.path_qs}"
        try:
            async with client.request(
                request.method,
                url,
                headers=headers,
                data=body,
                ssl=False,  # our own worker, on this machine's loopback
            ) as answer:
                data = await answer.read()
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
                return web.Response(body=data, status=answer.status, headers=kept)
        except (aiohttp.ClientError, TimeoutError):
            raise unknown_session() from None
