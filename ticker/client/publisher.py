"""Publishing from Python: ``Publisher`` over the server's publisher WebSocket.

```python
async with Publisher("http://127.0.0.1:8080", token=token) as pub:
    ack = await pub.publish([{"s": "AAPL", "p": 189.12, "v": 100}])
    print(ack.q)            # {"AAPL": 43}: the last q the server gave each symbol
    await pub.publish_book("AAPL", bids=[(189.11, 300)], asks=[(189.13, 200)], reset=True)
```

Book change sets (``book_item``) travel in the same batches as ticks, with the same ids,
acks and retries.

Each batch is sent with an id and waits for its ack before the next, so nothing is ever
in doubt for long: when the connection drops, the publisher reconnects (capped
exponential backoff) and sends the unacked batch again with the same id; the server
answers a batch id it has already published with its first ack (``replayed``), so a
reconnect never publishes twice and never loses a batch. A batch the server refuses
raises ``PublishError`` with the server's code and problems; the connection stays up.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
import orjson
from yarl import URL

DEFAULT_BATCH = 1000
BACKOFF_S = (0.1, 5.0)
"""First and longest wait between reconnects; the wait doubles in between."""


@dataclass(frozen=True, slots=True)
class Ack:
    """What the server answered for the items of one ``publish`` call."""

    accepted: int
    """Items published: ticks and book change sets."""
    q: dict[str, int] = field(default_factory=dict)
    replayed: int = 0
    """Batches the server had published already (resent after a reconnect)."""
    books: int = 0
    """Book change sets among ``accepted``."""


def book_item(
    symbol: str,
    bids: Iterable[Sequence[float]] = (),
    asks: Iterable[Sequence[float]] = (),
    *,
    reset: bool = False,
) -> dict[str, Any]:
    """A book change set as ``publish`` sends it among ticks: absolute ``(price, size)``
    levels, size 0 removes one; ``reset``: this is the whole book (levels left out go)."""
    return {
        "book": {
            "s": symbol,
            "bids": [[price, size] for price, size in bids],
            "asks": [[price, size] for price, size in asks],
            "reset": reset,
        }
    }


class PublishError(Exception):
    """The server refused a batch (or the connection); nothing of that batch was published."""

    def __init__(
        self,
        code: str,
        message: str,
        problems: list[dict[str, Any]] | None = None,
        *,
        batch_id: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.problems = problems or []
        """The server's problems: ``{"index", "field", "message"}``, index within the batch."""
        self.batch_id = batch_id
        self.status = status
        """The HTTP status of a refused handshake (401, 403...), else None."""


def publish_url(url: str) -> URL:
    """``http://host:8080`` (or ``ws://``, with or without ``/publish``) -> the socket URL."""
    parsed = URL(url)
    scheme = {"http": "ws", "https": "wss"}.get(parsed.scheme, parsed.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"{url!r}: expected http(s):// or ws(s):// and a host")
    path = parsed.path if parsed.path.endswith("/publish") else "/publish"
    return parsed.with_scheme(scheme).with_path(path).with_query(parsed.query)


class Publisher:
    """An async context manager holding one publisher WebSocket, reconnected as needed."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        batch: int = DEFAULT_BATCH,
        give_up_s: float = 60.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.url = publish_url(url)
        self.batch = batch
        self.give_up_s = give_up_s
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._own_session = session is None
        self._session = session
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = (f"{secrets.token_hex(4)}-{n}" for n in itertools.count(1))
        self.reconnects = 0
        self.waited = 0
        """Batches sent again after the server asked to wait (``retry_after``: a rate limit,
        a cluster briefly unavailable)."""
        self.connect_error: str | None = None
        """Why the first connection failed (the first ``publish`` retries it); None once up."""

    async def __aenter__(self) -> Publisher:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            await self._connect()
        except (aiohttp.ClientConnectionError, ConnectionError) as exc:
            self._ws = None  # the first publish connects, retrying until give_up_s
            self.connect_error = str(exc) or type(exc).__name__
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the socket (and the session this publisher made)."""
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None, "use Publisher as an async context manager"
        try:
            self._ws = await self._session.ws_connect(self.url, headers=self._headers)
            self.connect_error = None
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status >= 500:  # shutting down, overloaded: worth another try
                raise ConnectionError(f"HTTP {exc.status}") from None
            reason = f"the server refused the connection: HTTP {exc.status}"
            raise PublishError("refused", reason, status=exc.status) from None
        return self._ws

    async def publish(self, ticks: Iterable[Mapping[str, Any]]) -> Ack:
        """Publishes the ticks (and ``book_item`` change sets among them, in order) in
        batches of ``batch``; returns when all are acked."""
        items = list(ticks)
        accepted = replayed = books = 0
        q: dict[str, int] = {}
        for start in range(0, len(items), self.batch):
            chunk = items[start : start + self.batch]
            answer = await self._send(next(self._ids), chunk)
            accepted += answer["accepted"]
            replayed += bool(answer.get("replayed"))
            books += answer.get("books", 0)
            q.update(answer["q"])
        return Ack(accepted, q, replayed, books)

    async def publish_book(
        self,
        symbol: str,
        bids: Iterable[Sequence[float]] = (),
        asks: Iterable[Sequence[float]] = (),
        *,
        reset: bool = False,
    ) -> Ack:
        """Publishes one book change set (``book_item``) for the node's ``@book`` topics."""
        return await self.publish([book_item(symbol, bids, asks, reset=reset)])

    async def _send(self, batch_id: str, ticks: list[Mapping[str, Any]]) -> dict[str, Any]:
        frame = orjson.dumps({"op": "publish", "id": batch_id, "ticks": ticks}).decode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_s
        wait = BACKOFF_S[0]
        while True:
            try:
                ws = self._ws if self._ws is not None and not self._ws.closed else None
                if ws is None:
                    ws = await self._connect()
                    self.reconnects += 1
                await ws.send_str(frame)
                msg = await ws.receive()
                if msg.type is aiohttp.WSMsgType.TEXT:
                    answer = orjson.loads(msg.data)
                    later = self._retry_after(answer)
                    if later is None or loop.time() + later > deadline:
                        return self._answer(batch_id, answer)
                    # nothing of the batch was published: the same id again, once allowed
                    self.waited += 1
                    await asyncio.sleep(later)
                    continue
                self._ws = None  # closed or failed under us: reconnect and resend
            except (aiohttp.ClientConnectionError, ConnectionError, TimeoutError):
                self._ws = None
            if loop.time() + wait > deadline:
                raise PublishError(
                    "unavailable",
                    f"no connection to {self.url} for {self.give_up_s:g} s;"
                    f" batch {batch_id} was not acked",
                    batch_id=batch_id,
                )
            await asyncio.sleep(wait)
            wait = min(wait * 2, BACKOFF_S[1])

    @staticmethod
    def _retry_after(frame: object) -> float | None:
        """The seconds an ``error`` frame asks us to wait before the same batch is taken."""
        if isinstance(frame, dict) and frame.get("type") == "error":
            later = frame.get("retry_after")
            if isinstance(later, int | float) and not isinstance(later, bool) and 0 <= later < 3600:
                return float(later)
        return None

    @staticmethod
    def _answer(batch_id: str, frame: dict[str, Any]) -> dict[str, Any]:
        if frame.get("type") == "ack" and frame.get("id") == batch_id:
            return frame
        if frame.get("type") == "error":
            raise PublishError(
                str(frame.get("code")),
                str(frame.get("message")),
                frame.get("problems"),
                batch_id=batch_id,
            )
        raise PublishError("bad_answer", f"unexpected frame for batch {batch_id}: {frame!r:.200}")
