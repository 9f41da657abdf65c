"""Hypothesis against a live server: whatever a client sends, the server keeps serving
everyone, answers in valid protocol JSON, and never delivers a symbol the client has not
subscribed to or is not entitled to.

One server and one well-behaved observer live for the whole module on one event loop;
each example opens a fresh client, sends its frames and reads until the server answers a
final ping (or closes the connection), then checks the observer still gets ticks.
Bounded: 80 examples, a fixed derandomized search, a few seconds in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SYMBOLS
from ticker.core.codes import CloseCode, ErrorCode
from ticker.core.entitlements import Entitlements
from ticker.core.session import Limits
from ticker.core.tokens import TokenVerifier, mint
from ticker.server.app import create_app
from ticker.server.node import Node
from ticker.server.settings import Settings

SECRET = "fuzzing-secret-" * 3
PATTERNS = ["AAPL", "M*"]
ENTITLED = Entitlements(PATTERNS)
MAX_MESSAGE = 4096
TYPES = {
    "welcome", "subscribed", "unsubscribed", "snapshot", "ticks", "symbols", "pong",
    "heartbeat", "error", "replays", "replay", "replay_state", "authenticated",
}  # fmt: skip
CLOSES = {int(c) for c in CloseCode} | {1002, 1006}


@dataclass
class Live:
    loop: asyncio.AbstractEventLoop
    node: Node
    url: str
    token: str
    http: aiohttp.ClientSession
    observer: aiohttp.ClientWebSocketResponse

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


async def _publish(node: Node) -> None:
    price = 0.0
    while True:
        price += 1
        node.bus.publish([{"s": s, "p": price} for s in SYMBOLS])
        await asyncio.sleep(0.005)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    loop = asyncio.new_event_loop()
    settings_ = Settings(
        auth=TokenVerifier.from_secret(SECRET),
        limits=Limits(max_message_bytes=MAX_MESSAGE, max_symbols=3),
        heartbeat_s=0.2,
    )
    node = Node(settings_)
    node.bus.add_symbols(SYMBOLS)

    async def start() -> tuple[web.AppRunner, asyncio.Task[None], Live]:
        runner = web.AppRunner(create_app(node))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        token = mint(SECRET.encode(), sub="fuzz", symbols=PATTERNS, ttl_s=3600)
        url = f"http://127.0.0.1:{port}/ws?token={token}"
        http = aiohttp.ClientSession()
        observer = await http.ws_connect(url + "&symbols=AAPL")
        publisher = asyncio.create_task(_publish(node))
        return runner, publisher, Live(loop, node, url, token, http, observer)

    runner, publisher, harness = loop.run_until_complete(start())
    yield harness

    async def stop() -> None:
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        await harness.observer.close()
        await harness.http.close()
        await runner.cleanup()

    loop.run_until_complete(stop())
    loop.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
symbol_lists = st.lists(st.sampled_from([*SYMBOLS, "*", "NOPE", "FX:EUR", ""]), max_size=5)
ops = st.one_of(
    st.builds(lambda s: {"op": "subscribe", "symbols": s}, symbol_lists),
    st.builds(lambda s: {"op": "unsubscribe", "symbols": s}, symbol_lists),
    st.sampled_from([{"op": "list"}, {"op": "ping"}, {"op": "list_replays"}]),
    st.builds(lambda t: {"op": "auth", "token": t}, st.text(max_size=40)),
    st.builds(lambda src: {"op": "replay", "source": src}, st.sampled_from(["../etc", "x", ""])),
    st.builds(
        lambda o, s, i: {"op": o, "symbols": s, "id": i}, json_values, json_values, json_values
    ),
    st.dictionaries(st.sampled_from(["op", "id", "symbols", "token", "x"]), json_values),
)
frames = st.one_of(
    ops.map(lambda op: ("text", json.dumps(op).encode())),  # big ints, NaN: odd JSON too
    st.text(max_size=200).map(lambda t: ("text", t.encode())),
    st.binary(max_size=200).map(lambda b: ("binary", b)),
    st.binary(min_size=1, max_size=50).map(lambda b: ("text", b"\xff\xfe" + b)),  # bad UTF-8
    st.integers(100, 5000).map(lambda n: ("text", b"[" * n + b"]" * n)),  # deep JSON
    st.integers(MAX_MESSAGE + 1, 3 * MAX_MESSAGE).map(lambda n: ("text", b'"' + b"x" * n + b'"')),
)


def check_frame(frame: Any, subscribed: set[str]) -> None:
    assert isinstance(frame, dict) and frame.get("type") in TYPES, frame
    kind = frame["type"]
    if kind in ("subscribed", "unsubscribed"):
        assert all(ENTITLED.allows(s) for s in frame["symbols"]), frame
    elif kind in ("ticks", "snapshot"):
        for tick in frame["ticks"]:
            assert ENTITLED.allows(tick["s"]) and tick["s"] in subscribed, (tick, subscribed)
            assert isinstance(tick["q"], int) and isinstance(tick["t"], int)
    elif kind == "error":
        assert frame["code"] in ErrorCode._value2member_map_ and isinstance(frame["message"], str)
    elif kind == "symbols":
        assert all(ENTITLED.allows(s) for s in frame["symbols"])


async def session(live: Live, sent: list[tuple[str, bytes]]) -> None:
    ws = await live.http.ws_connect(live.url)
    subscribed: set[str] = set()
    try:
        for kind, data in sent:
            opcode = WSMsgType.TEXT if kind == "text" else WSMsgType.BINARY
            with contextlib.suppress(ConnectionError):
                await ws.send_frame(data, opcode)
        with contextlib.suppress(ConnectionError):
            await ws.send_str('{"op":"ping","id":"end"}')
        async with asyncio.timeout(5):  # the server answers (or has closed): never silent
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                    assert ws.close_code in CLOSES, ws.close_code
                    return
                assert msg.type is WSMsgType.TEXT, msg
                frame = orjson.loads(msg.data)
                check_frame(frame, subscribed)
                if frame["type"] in ("subscribed", "unsubscribed"):
                    subscribed = set(frame["symbols"])
                if frame["type"] == "pong" and frame.get("id") == "end":
                    return
    finally:
        await ws.close()


async def observer_still_served(live: Live) -> None:
    async with asyncio.timeout(2):
        while True:
            msg = await live.observer.receive()
            assert msg.type is WSMsgType.TEXT, msg
            frame = orjson.loads(msg.data)
            if frame["type"] == "ticks":
                assert {t["s"] for t in frame["ticks"]} == {"AAPL"}
                return


@settings(
    max_examples=80,
    derandomize=True,
    deadline=None,  # time is bounded by the 5 s read timeout per example instead
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sent=st.lists(frames, max_size=12))
def test_no_frame_breaks_the_server_or_leaks_a_symbol(live: Live, sent: list) -> None:
    live.run(session(live, sent))
    live.run(observer_still_served(live))
    assert live.node.admission.total <= 2
