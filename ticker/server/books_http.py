"""``GET /book?symbol=BTC-USD&depth=10``: a book's snapshot over plain HTTP.

The answer is the same ``book`` snapshot frame a ``subscribe`` to ``BTC-USD@book10``
gets first (``depth`` 10 or 50, or ``all`` for every level; 10 when absent), entitled
like the WebSocket by the base symbol.
"""

from __future__ import annotations

from aiohttp import web

from ticker.core.books import DEPTHS
from ticker.core.bus import Bus
from ticker.core.codes import Refusal
from ticker.server.auth import GATE
from ticker.server.books import BookService

TRANSPORT = "book"
"""The label its refusals are counted under."""
BOOKS = web.AppKey("books", BookService)
_DEPTHS = {**{str(d): d for d in DEPTHS}, "all": None}


def parse_query(query: dict[str, str], bus: Bus) -> tuple[str, int | None]:
    """(symbol, depth), or ``ValueError`` saying what is wrong (and what is valid)."""
    symbol = query.get("symbol", "")
    if not bus.known(symbol):
        raise ValueError(f"symbol must be a symbol of this server; {symbol[:40]!r} is not")
    depth = query.get("depth", "10")
    if depth not in _DEPTHS:
        raise ValueError(f"depth must be one of {' '.join(_DEPTHS)}, not {depth[:16]!r}")
    return symbol, _DEPTHS[depth]


async def book_handler(request: web.Request) -> web.Response:
    """The snapshot; 400 naming the bad parameter, 401/403 as the WebSocket."""
    gate = request.app[GATE]
    gate.authorize(request, TRANSPORT)
    try:
        symbol, depth = parse_query(dict(request.query), gate.bus)
    except ValueError as exc:
        raise gate.refuse(TRANSPORT, Refusal.BAD_REQUEST, str(exc)) from None
    gate.authorize_live(request, TRANSPORT, symbol)
    body = request.app[BOOKS].snapshot(symbol, depth)
    return web.Response(body=body, content_type="application/json")


def add_routes(app: web.Application, service: BookService) -> None:
    """``GET /book``, served by the node's book service."""
    app[BOOKS] = service
    app.router.add_get("/book", book_handler)
