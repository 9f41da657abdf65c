"""The dashboard: the page at ``/`` and the files under ``/static/`` (``ticker/static/``).

Plain files shipped inside the package: no CDN, no build step. The page may talk only to
its own origin (its Content-Security-Policy says so). The static files are public and may
be imported from any origin, so another site can use ``ticker-client.js`` from here.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def index(request: web.Request) -> web.FileResponse:
    """The dashboard page, served with ``PAGE_HEADERS`` (its content security policy)."""
    return web.FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


async def favicon(request: web.Request) -> web.FileResponse:
    """Browsers ask every server for /favicon.ico, whatever page they show."""
    return web.FileResponse(STATIC_DIR / "favicon.svg", headers={"Content-Type": "image/svg+xml"})


async def allow_any_origin(request: web.Request, response: web.StreamResponse) -> None:
    """Module scripts load with CORS: let pages of other origins import the client."""
    if request.path.startswith("/static/"):
        response.headers["Access-Control-Allow-Origin"] = "*"


def add_routes(app: web.Application) -> None:
    """The dashboard's routes: page, favicon, and static files other origins may import."""
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_static("/static/", STATIC_DIR)
    app.on_response_prepare.append(allow_any_origin)
