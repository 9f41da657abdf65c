"""Shared fixtures: a real server on 127.0.0.1 with a bus the test publishes into."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp.test_utils import TestServer
from hypothesis import settings

from tests.redis_server import RedisServer
from ticker.core.session import Limits
from ticker.server.app import create_app
from ticker.server.node import Node
from ticker.server.settings import Settings

# property tests: the same examples every run, and no deadline a shared 2-core machine
# can miss (a slow example is not a failure; the benches measure time)
settings.register_profile("ticker", deadline=None, derandomize=True)
settings.load_profile("ticker")

SYMBOLS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA"]
REQUIRE_ALL = os.environ.get("TICKER_REQUIRE_ALL") == "1"


def require(executable: str) -> str:
    """The path of a system program a test needs; skip (or fail under CI) without it."""
    path = shutil.which(executable)
    if path is None:
        reason = f"{executable} is not installed (.ci/run installs it)"
        if REQUIRE_ALL:
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class TtyBuffer(io.StringIO):
    """A text stream that says it is a terminal (progress lines are drawn only on one)."""

    def isatty(self) -> bool:
        return True


StartServer = Callable[..., Awaitable[tuple[Node, TestServer]]]


def tls_files(directory: Path) -> tuple[Path, Path, ssl.SSLContext]:
    """A certificate for 127.0.0.1 from a test CA, its key (files in ``directory``, for
    ``--tls-cert`` and ``--tls-key``), and a client context that trusts that CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    return cert_file, key_file, trusting


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` of the test's own, stopped (by its PID) after it."""
    server = RedisServer(require("redis-server"), tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def start_server(aiohttp_server: Any) -> StartServer:
    """Start a node (no feeds unless given) behind a real listening socket."""

    async def start(
        feeds: tuple[Any, ...] = (), symbols: list[str] = SYMBOLS, **overrides: Any
    ) -> tuple[Node, TestServer]:
        limits = Limits(**overrides.pop("limits", {}))
        node = Node(Settings(limits=limits, **overrides), feeds)
        node.bus.add_symbols(symbols)
        server = await aiohttp_server(create_app(node))
        return node, server

    return start


async def next_of(ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 5.0) -> dict:
    """The next frame of this type, skipping others (heartbeats, ticks...)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            frame = msg.json()
            if frame["type"] == kind:
                return frame


async def frame(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> dict:
    async with asyncio.timeout(timeout):
        msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return msg.json()


@pytest.fixture
async def fake_exchange() -> Any:
    """A fake exchange on 127.0.0.1 (``tests/exchange_fakes.py``), closed after the test."""
    from tests.exchange_fakes import FakeExchange

    async with FakeExchange() as exchange:
        yield exchange
