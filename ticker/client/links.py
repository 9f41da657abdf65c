"""One connection to a ticker server, whatever the transport: protocol messages in and out.

``open_link`` picks the transport from the URL: ``ws://`` or ``wss://`` a WebSocket,
``http(s)://.../sse`` Server-Sent Events, ``http(s)://.../poll`` long polling. Each link
yields the server's messages as dicts and ends with the close code the server gave
(1006 when the connection ended without one), so what sits above never knows which
transport it has.
"""

from __future__ import annotations

import ssl as ssl_module
from collections import deque
from collections.abc import Mapping
from http.client import responses as REASONS
from typing import Any, Protocol

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from ticker.core.codes import ABNORMAL, CloseCode

REFUSAL_READ_S = 5.0
"""How long the second request that learns why a handshake was refused may take."""

Message = dict[str, Any]
SslOption = ssl_module.SSLContext | bool | None


class LinkError(Exception):
    """The server refused the connection (an HTTP status and its JSON ``message``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class Link(Protocol):
    """What the client above needs of a transport, so it never knows which it has."""

    close_code: int | None
    close_reason: str

    async def recv(self) -> Message | None:
        """The next message; None once the link is closed (``close_code`` says how)."""
        ...

    async def send(self, op: Message) -> None:
        """Send one op (subscribe, ping, ...); SSE and polling POST it beside the stream."""

    async def close(self) -> None:
        """End the link from this side, when the client stops."""


def transport_of(url: str) -> str:
    """The transport a URL names (``ws``, ``sse`` or ``poll``): the URL is the choice."""
    parsed = URL(url)
    if parsed.scheme in ("ws", "wss"):
        return "ws"
    if parsed.scheme in ("http", "https") and parsed.path.rstrip("/").endswith(("/sse", "/poll")):
        return parsed.path.rstrip("/").rsplit("/", 1)[1]
    raise ValueError(f"{url}: use ws(s)://HOST/ws, http(s)://HOST/sse or http(s)://HOST/poll")


async def open_link(
    http: aiohttp.ClientSession,
    url: str,
    query: Mapping[str, str],
    *,
    ssl: SslOption = None,
    headers: Mapping[str, str] | None = None,
) -> Link:
    """Connect; raises ``LinkError`` on a refused handshake, ``aiohttp.ClientError`` or
    ``OSError`` when the server cannot be reached."""
    target = URL(url).update_query(dict(query))
    kind = transport_of(url)
    ssl_arg: Any = True if ssl is None else ssl
    try:
        if kind == "ws":
            ws = await http.ws_connect(target, ssl=ssl_arg, headers=headers, autoping=True)
            return WebSocketLink(ws)
        if kind == "sse":
            response = await http.get(
                target,
                ssl=ssl_arg,
                headers={"Accept": "text/event-stream", **(headers or {})},
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
            )
            await _check(response)
            return SseLink(response, http, target, ssl_arg, headers)
        link = PollLink(http, target, ssl_arg, headers)
        await link.first_poll()
        return link
    except aiohttp.WSServerHandshakeError as exc:
        raise await refusal(http, target, exc, ssl=ssl_arg, headers=headers) from None


async def refusal(
    http: aiohttp.ClientSession,
    url: URL | str,
    exc: aiohttp.WSServerHandshakeError,
    *,
    ssl: Any = True,
    headers: Mapping[str, str] | None = None,
) -> LinkError:
    """A WebSocket handshake that was not upgraded, with the server's own reason.
    aiohttp drops the body of a handshake answered with an error, so ask again with a
    plain GET: the server's gate answers it the same way, before any upgrade. The status
    alone if it does not."""
    status = exc.status
    if status < 400:  # answered, but not upgraded: a page, a redirect
        return LinkError(status, "answered without an upgrade: not a WebSocket endpoint")
    try:
        async with http.get(
            url, ssl=ssl, headers=headers, timeout=aiohttp.ClientTimeout(total=REFUSAL_READ_S)
        ) as response:
            if response.status == status:
                return await _error(response)
    except (aiohttp.ClientError, OSError, TimeoutError):
        pass
    return LinkError(status, REASONS.get(status, ""))


async def _error(response: aiohttp.ClientResponse) -> LinkError:
    """The refusal a response carries: its JSON ``message``, else the status's reason."""
    try:
        message = (await response.json(content_type=None))["message"]
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        message = response.reason or ""
    response.release()
    return LinkError(response.status, str(message))


async def _check(response: aiohttp.ClientResponse) -> None:
    if response.status >= 400:
        raise await _error(response)


def _op_url(base: URL, session: str, op: Message) -> URL:
    return base.with_query({}).joinpath(session, str(op.get("op", "")))


class WebSocketLink:
    """A WebSocket: one text frame per message, the close frame's code at the end."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.close_code: int | None = None
        self.close_reason = ""

    async def recv(self) -> Message | None:
        """The next message; None once closed, 1006 when it ended without a code."""
        msg = await self.ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            message: Message = orjson.loads(msg.data)
            return message
        if msg.type is aiohttp.WSMsgType.CLOSE:
            self.close_code, self.close_reason = int(msg.data), str(msg.extra or "")
        else:  # lost, or a protocol error of the WebSocket layer
            self.close_code = self.ws.close_code or ABNORMAL
        return None

    async def send(self, op: Message) -> None:
        """An op as one text frame, as the server reads it."""
        await self.ws.send_str(orjson.dumps(op).decode())

    async def close(self) -> None:
        """Send a normal close and wait for the server's."""
        await self.ws.close()


class SseLink:
    """An SSE stream: ``event:``/``data:`` lines; a ``close`` event carries the code."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        http: aiohttp.ClientSession,
        url: URL,
        ssl: Any,
        headers: Mapping[str, str] | None,
    ) -> None:
        self.response = response
        self._http, self._url, self._ssl, self._headers = http, url, ssl, headers
        self.session: str | None = None
        self.last_event_id: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    async def recv(self) -> Message | None:
        """The next ``data:`` message; None once the stream or its ``close`` event ends it."""
        if self.close_code is not None:
            return None
        data: list[bytes] = []
        try:  # a line longer than aiohttp's buffer (512 KiB; a frame is at most ~256) ends it
            async for line in self.response.content:
                line = line.rstrip(b"\r\n")
                if not line:
                    if data:
                        return self._message(orjson.loads(b"\n".join(data)))
                    continue
                field, _, value = line.partition(b":")
                value = value[1:] if value.startswith(b" ") else value
                if field == b"data":
                    data.append(value)
                elif field == b"id":
                    self.last_event_id = value.decode()
        except (TimeoutError, aiohttp.ClientError, HttpProcessingError):
            pass
        self.close_code = ABNORMAL
        return None

    def _message(self, message: Message) -> Message:
        kind = message.get("type")
        if kind == "welcome":
            self.session = message["session"]
        elif kind == "close":
            self.close_code, self.close_reason = message["code"], message.get("reason", "")
            self.response.close()
        return message

    async def send(self, op: Message) -> None:
        """POST the op to the session the welcome named: SSE streams one way only."""
        await _post(self._http, self._url, self.session, op, self._ssl, self._headers)

    async def close(self) -> None:
        """Drop the stream; the server sees the session's client go."""
        self.response.close()


async def _post(
    http: aiohttp.ClientSession,
    url: URL,
    session: str | None,
    op: Message,
    ssl: Any,
    headers: Mapping[str, str] | None,
) -> None:
    """An op of an SSE or long-polling session: ``POST /{transport}/{session}/{op}``."""
    if session is None:
        raise LinkError(409, "no session yet: wait for the welcome")
    body = {k: v for k, v in op.items() if k != "op"}
    async with http.post(
        _op_url(url, session, op), data=orjson.dumps(body), ssl=ssl, headers=headers
    ) as response:
        await _check(response)


class PollLink:
    """Long polling: each ``recv`` past the buffered messages polls with the cursor."""

    def __init__(
        self, http: aiohttp.ClientSession, url: URL, ssl: Any, headers: Mapping[str, str] | None
    ) -> None:
        self._http, self._url, self._ssl, self._headers = http, url, ssl, headers
        self._pending: deque[Message] = deque()
        self.cursor: str | None = None
        self.session: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    async def first_poll(self) -> None:
        """The poll that opens the session: it brings the welcome and the cursor."""
        await self._poll(self._url)

    async def _poll(self, url: URL) -> None:
        async with self._http.get(url, ssl=self._ssl, headers=self._headers) as response:
            if response.status == 404:  # the session ended (expired, server restarted)
                self.close_code, self.close_reason = CloseCode.GOING_AWAY, "session ended"
                return
            await _check(response)
            answer = await response.json(loads=orjson.loads, content_type=None)
        self.cursor = answer["cursor"]
        for message in answer["messages"]:
            if message.get("type") == "welcome":
                self.session = message["session"]
            elif message.get("type") == "close":
                self.close_code, self.close_reason = message["code"], message.get("reason", "")
            self._pending.append(message)

    async def recv(self) -> Message | None:
        """The next buffered message, polling again with the cursor when none is left."""
        while not self._pending:
            if self.close_code is not None or self.cursor is None:
                return None
            try:
                await self._poll(self._url.with_query({"cursor": self.cursor}))
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                self.close_code = ABNORMAL
        message = self._pending.popleft()
        return None if message.get("type") == "close" else message

    async def send(self, op: Message) -> None:
        """POST the op to the session the welcome named, as for SSE."""
        await _post(self._http, self._url, self.session, op, self._ssl, self._headers)

    async def close(self) -> None:
        """Stop polling: the server ends the session when its poll timeout passes."""
        self.close_code = self.close_code or CloseCode.NORMAL
