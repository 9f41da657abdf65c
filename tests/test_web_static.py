"""The dashboard's files: served from the package, every reference resolves, nothing else leaks."""

from __future__ import annotations

import re

import aiohttp

from tests.conftest import StartServer
from ticker.server.web import STATIC_DIR


def test_every_file_the_page_and_its_modules_name_is_in_the_package() -> None:
    page = (STATIC_DIR / "index.html").read_text()
    named = set(re.findall(r'"/static/([^"]+)"', page))
    for module in STATIC_DIR.glob("*.js"):
        named |= set(re.findall(r'from "\./([^"]+)"', module.read_text()))
    assert {"dashboard.js", "dashboard.css", "favicon.svg", "ticker-client.js"} <= named
    assert all((STATIC_DIR / name).is_file() for name in named), named


async def test_the_page_and_static_files_are_served_and_nothing_outside_them(
    start_server: StartServer,
) -> None:
    _, server = await start_server()
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/")) as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
            assert '<script type="module" src="/static/dashboard.js">' in await resp.text()
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with http.get(server.make_url("/static/ticker-client.js")) as resp:
            assert resp.status == 200 and "javascript" in resp.content_type
            assert resp.headers["Access-Control-Allow-Origin"] == "*"  # importable anywhere
            assert "export class TickerClient" in await resp.text()
        async with http.get(server.make_url("/favicon.ico")) as resp:
            assert resp.status == 200 and resp.content_type == "image/svg+xml"
        for path in ("/static/", "/static/nope.js", "/static/..%2F__init__.py"):
            async with http.get(server.make_url(path)) as resp:
                assert resp.status in (403, 404), path
                assert "Traceback" not in await resp.text()
