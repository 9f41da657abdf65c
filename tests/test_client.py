"""The Python client: continuity and backoff as pure logic, then against live servers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import SYMBOLS, StartServer
from tests.net import free_port
from ticker.client import (
    Connected,
    Disconnected,
    Feed,
    FeedClosed,
    Gap,
    ServerError,
    SubscriptionRefused,
    Tick,
    connect,
)
from ticker.client.state import Backoff, Continuity
from ticker.core.tokens import TokenVerifier, mint
from ticker.server.app import create_app
from ticker.server.node import Node
from ticker.server.settings import Settings


def test_continuity_drops_what_was_seen_and_reports_gaps_in_mode_all() -> None:
    state = Continuity("all")
    assert state.welcome("e1") and state.since() == {}
    tick, gap = state.accept({"s": "A", "p": 1.0, "q": 3, "t": 9}, snapshot=True)
    assert tick == Tick("A", 1.0, 3, 9, snapshot=True) and gap is None
    assert state.accept({"s": "A", "p": 1.0, "q": 3, "t": 9}, False) == (None, None)
    tick, gap = state.accept({"s": "A", "p": 2.0, "q": 7, "t": 10, "b": 1.5}, False)
    assert tick is not None and tick.bid == 1.5 and gap == Gap("A", 4, 6) and gap.missed == 3
    assert state.since() == {"since": "A:7", "epoch": "e1"}
    assert not state.welcome("e1") and state.last_q == {"A": 7}
    assert state.welcome("e2") and state.last_q == {}  # a new stream: q restarted
    conflate = Continuity("conflate")
    conflate.welcome("e")
    conflate.accept({"s": "A", "p": 1.0, "q": 1, "t": 1}, False)
    assert (
        conflate.accept({"s": "A", "p": 1.0, "q": 5, "t": 1}, False)[1] is None
    )  # skips are normal


def test_backoff_doubles_is_capped_jittered_and_slower_after_4029() -> None:
    backoff = Backoff(0.5, 4.0, random.Random(1))
    delays = [backoff.next() for _ in range(6)]
    for delay, base in zip(delays, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert 0.8 * base <= delay <= 1.2 * base
    backoff.reset()
    assert 4.0 <= backoff.next(4029) <= 4.8  # at least 5 s, but still capped
    backoff.attempt = 5000
    assert backoff.next() <= 4.8  # no overflow


def test_bad_arguments_fail_at_once() -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("ftp://x/ws", {}),
        ("http://x/other", {}),
        ("ws://x/ws", {"mode": "fast"}),
        ("ws://x/ws", {"max_hz": 0}),
    ]
    for url, kwargs in cases:
        with pytest.raises(ValueError):
            connect(url, ["A"], **kwargs)
    with pytest.raises(ValueError):
        connect("ws://x/ws", [])


@pytest.mark.parametrize("path", ["ws", "sse", "poll"])
async def test_resume_across_a_dropped_connection_has_no_gap_and_no_duplicate(
    start_server: StartServer, path: str
) -> None:
    node, server = await start_server(history=100, poll_hold_s=0.5)
    scheme = "ws" if path == "ws" else "http"
    url = f"{scheme}://{server.host}:{server.port}/{path}"
    bus = node.bus
    seen: list[int] = []
    events: list[object] = []
    async with connect(url, ["AAPL"], mode="all", backoff_initial=0.05) as feed:
        stream = feed.events()
        async with asyncio.timeout(10):
            while not any(isinstance(e, Connected) for e in events):
                events.append(await anext(stream))
            bus.publish([{"s": "AAPL", "p": 1.0} for _ in range(5)])
            while len(seen) < 5:
                event = await anext(stream)
                if isinstance(event, Tick):
                    seen.append(event.q)
            for conn in list(node.connections):  # the connection drops (as after a 4008)
                conn.session.request_close(1011, "test: dropped")
            bus.publish([{"s": "AAPL", "p": 2.0} for _ in range(10)])  # while it is away
            while len(seen) < 20:
                event = await anext(stream)
                events.append(event)
                if isinstance(event, Tick):
                    seen.append(event.q)
                if isinstance(event, Connected):  # back: more live ticks after the missed ones
                    bus.publish([{"s": "AAPL", "p": 3.0} for _ in range(5)])
    assert seen == list(range(1, 21))
    assert not any(isinstance(e, Gap) for e in events)
    assert sum(isinstance(e, Disconnected) for e in events) == 1


@asynccontextmanager
async def serving(port: int) -> AsyncIterator[Node]:
    node = Node(Settings(port=port, close_grace_s=0.5))
    node.bus.add_symbols(SYMBOLS)
    runner = web.AppRunner(create_app(node))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield node
    finally:
        await runner.cleanup()


async def test_the_client_survives_a_server_restart() -> None:
    port = free_port()
    events: list[object] = []
    async with serving(port) as first:
        feed = connect(f"ws://127.0.0.1:{port}/ws", ["AAPL"], backoff_initial=0.05)
        await feed.__aenter__()
        stream = feed.events()
        async with asyncio.timeout(10):
            while not events or not isinstance(events[-1], Connected):
                events.append(await anext(stream))
            first.bus.publish([{"s": "AAPL", "p": 1.0}])
            events.append(await anext(stream))
    try:
        async with asyncio.timeout(10):
            events.append(await anext(stream))  # the server went away
            assert isinstance(events[-1], Disconnected) and events[-1].code == 1001
            await asyncio.sleep(0.3)  # a few attempts fail while nothing listens
            async with serving(port) as second:
                while not isinstance(events[-1], Connected):
                    events.append(await anext(stream))
                assert events[-1].new_stream and events[-1].epoch == second.bus.epoch
                second.bus.publish([{"s": "AAPL", "p": 2.0}])
                tick = await anext(stream)
                while not isinstance(tick, Tick):
                    tick = await anext(stream)
                assert (tick.price, tick.q) == (2.0, 1)
    finally:
        await feed.close()
    ticks = [e for e in events if isinstance(e, Tick)]
    assert [(t.price, t.q) for t in ticks] == [(1.0, 1)]


async def test_a_refused_handshake_ends_the_feed(start_server: StartServer) -> None:
    _, server = await start_server()
    feed = connect(f"http://{server.host}:{server.port}/sse", ["AAPL"], max_hz=1000)
    feed.max_hz = 5000  # past the server's limit: 400, which retrying would not fix
    async with feed:
        with pytest.raises(FeedClosed) as closed:
            async with asyncio.timeout(5):
                async for _ in feed:
                    pass
    assert closed.value.code == 1008 and "400" in closed.value.reason


async def test_a_refused_websocket_handshake_carries_the_servers_reason(
    start_server: StartServer,
) -> None:
    """aiohttp drops the body of a refused WebSocket handshake; the client gets it anyway."""
    _, server = await start_server(auth=TokenVerifier.from_secret("k" * 32))
    async with connect(f"ws://{server.host}:{server.port}/ws", ["AAPL"]) as feed:
        with pytest.raises(FeedClosed) as closed:
            async with asyncio.timeout(5):
                async for _ in feed:
                    pass
    assert closed.value.status == 401
    assert closed.value.reason == (
        "HTTP 401: a token is required (Authorization: Bearer, ?token= or subprotocol)"
    )


async def test_error_frames_are_events(start_server: StartServer) -> None:
    _, server = await start_server()
    async with connect(f"ws://{server.host}:{server.port}/ws", ["NOPE", "AAPL"]) as feed:
        async with asyncio.timeout(5):
            events = feed.events()
            first = await anext(events)
            assert first == ServerError("unknown_symbol", "unknown symbol(s): NOPE", ("NOPE",))
            assert isinstance(await anext(events), Connected)  # AAPL is subscribed


async def _refused(feed: Feed) -> SubscriptionRefused:
    """What ends a feed the server refused in full, read as the quick start reads it."""
    with pytest.raises(SubscriptionRefused) as refused:
        async with asyncio.timeout(5):
            async for _ in feed:
                pass
    return refused.value


@pytest.mark.parametrize("path", ["ws", "sse", "poll"])
async def test_only_unknown_symbols_end_the_feed_with_the_reason(
    start_server: StartServer, path: str
) -> None:
    """The quick start's ``async for tick in feed`` with a typo: an exception, not silence."""
    _, server = await start_server()
    scheme = "ws" if path == "ws" else "http"
    url = f"{scheme}://{server.host}:{server.port}/{path}"
    async with connect(url, ["NOPE", "APPL"]) as feed:
        refused = await _refused(feed)
    assert refused.symbols == ("NOPE", "APPL")
    assert str(refused) == "unknown symbol(s): NOPE, APPL"
    assert refused.errors == (
        ServerError("unknown_symbol", "unknown symbol(s): NOPE, APPL", ("NOPE", "APPL")),
    )


async def test_symbols_the_token_does_not_allow_are_an_event_or_the_end(
    start_server: StartServer,
) -> None:
    secret = "k" * 32
    _, server = await start_server(auth=TokenVerifier.from_secret(secret))
    url = f"ws://{server.host}:{server.port}/ws"
    token = mint(secret, sub="alice", symbols=["AAPL"], ttl_s=60)
    async with connect(url, ["MSFT", "NOPE"], token=token) as feed:
        refused = await _refused(feed)
    assert refused.symbols == ("MSFT", "NOPE")  # NOPE is not allowed either: no leak
    assert str(refused) == "not entitled to: MSFT, NOPE"
    async with connect(url, ["AAPL", "MSFT"], token=token) as feed:
        events = feed.events()
        async with asyncio.timeout(5):
            first, second = await anext(events), await anext(events)
    assert first == ServerError("not_entitled", "not entitled to: MSFT", ("MSFT",))
    assert isinstance(second, Connected)  # AAPL streams
    wide = mint(secret, sub="bob", symbols=["A*"], ttl_s=60)
    async with connect(url, ["MSFT", "AXXX"], token=wide) as feed:
        refused = await _refused(feed)  # one refusal each way, together everything
    assert [e.code for e in refused.errors] == ["not_entitled", "unknown_symbol"]
    assert refused.symbols == ("MSFT", "AXXX")


async def test_a_subscription_refused_as_a_whole_ends_the_feed(start_server: StartServer) -> None:
    _, server = await start_server(limits={"max_symbols": 2})
    async with connect(f"ws://{server.host}:{server.port}/ws", SYMBOLS[:3]) as feed:
        events: list[object] = []
        with pytest.raises(SubscriptionRefused) as refused:
            async with asyncio.timeout(5):
                async for event in feed.events():
                    events.append(event)
    assert [e.code for e in refused.value.errors] == ["too_many_symbols"]
    assert refused.value.symbols == () and "at most 2 symbols" in str(refused.value)
    assert events == [Disconnected(1000, str(refused.value), None)]  # and no retry


async def test_a_server_that_breaks_the_protocol_ends_the_iteration(aiohttp_server: Any) -> None:
    asked: list[str] = []

    async def broken(request: web.Request) -> web.WebSocketResponse:
        asked.append(f"{request.query_string} {request.headers.get('Authorization')}")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"type":"welcome"}')  # no epoch, no session
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/ws", broken)
    server = await aiohttp_server(app)
    url = f"ws://{server.host}:{server.port}/ws"
    async with connect(url, ["AAPL"], mode="all", max_hz=2.5, token="s3cret") as feed:
        with pytest.raises(KeyError):
            async with asyncio.timeout(5):
                async for _ in feed:
                    pass
    assert asked == ["mode=all&max_hz=2.5 Bearer s3cret"]


@pytest.mark.parametrize("path", ["ws", "sse"])
async def test_tls_with_the_callers_ssl_context(path: str) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    node = Node(Settings(close_grace_s=0.5))
    node.bus.add_symbols(SYMBOLS)
    runner = web.AppRunner(create_app(node))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx).start()
    scheme = "wss" if path == "ws" else "https"
    url = f"{scheme}://127.0.0.1:{port}/{path}"
    try:
        node.bus.publish([{"s": "AAPL", "p": 7.0}])
        async with connect(url, ["AAPL"], ssl=client_ctx, token="t0k") as feed:
            async with asyncio.timeout(5):
                tick = await anext(aiter(feed))
            assert (tick.symbol, tick.price, tick.snapshot) == ("AAPL", 7.0, True)
        async with connect(url, ["AAPL"], backoff_initial=0.05) as untrusted:
            stream = untrusted.events()
            async with asyncio.timeout(5):
                event = await anext(stream)  # the system's trust store does not know this CA
            assert isinstance(event, Disconnected) and "certificate" in event.reason.lower()
    finally:
        await runner.cleanup()
