"""Protocol conformance over every transport: WebSocket, SSE and long polling alike.

Each test opens links with the Python client's own transport layer (``ticker.client.links``)
against a real server, so the same assertions hold whichever transport carries them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import StartServer
from ticker.client.links import Link, LinkError, open_link
from ticker.server.node import Node

TRANSPORTS = ("ws", "sse", "poll")

Open = Callable[..., Awaitable[Link]]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def url_of(server: TestServer, transport: str) -> str:
    scheme = "ws" if transport == "ws" else "http"
    return f"{scheme}://{server.host}:{server.port}/{transport}"


@pytest.fixture
async def served(
    start_server: StartServer, http: aiohttp.ClientSession, transport: str
) -> Callable[..., Awaitable[tuple[Node, Open]]]:
    """Start a server (settings as keywords); returns it and a link opener (query as keywords)."""

    async def start(**settings: Any) -> tuple[Node, Open]:
        settings.setdefault("poll_hold_s", 0.5)
        node, server = await start_server(**settings)

        async def open_(**query: str) -> Link:
            return await open_link(http, url_of(server, transport), query)

        return node, open_

    return start


async def recv(link: Link, kind: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """The next message (of this type, skipping heartbeats and others)."""
    async with asyncio.timeout(timeout):
        while True:
            message = await link.recv()
            assert message is not None, (link.close_code, link.close_reason)
            if (kind is None and message["type"] != "heartbeat") or message["type"] == kind:
                return message


async def closed(link: Link, timeout: float = 5.0) -> int:
    async with asyncio.timeout(timeout):
        while await link.recv() is not None:
            pass
    assert link.close_code is not None
    return link.close_code


async def test_welcome_subscribe_snapshot_and_ticks(served: Any, transport: str) -> None:
    node, open_ = await served()
    node.bus.publish([{"s": "AAPL", "p": 1.5}])
    link = await open_(symbols="AAPL,MSFT")
    welcome = await recv(link)
    assert welcome["type"] == "welcome" and welcome["epoch"] == node.bus.epoch
    assert await recv(link) == {"type": "subscribed", "symbols": ["AAPL", "MSFT"]}
    snapshot = await recv(link)
    assert snapshot["type"] == "snapshot" and [t["q"] for t in snapshot["ticks"]] == [1]
    node.bus.publish([{"s": "MSFT", "p": 2.0}, {"s": "IBM", "p": 3.0}])
    ticks = await recv(link, "ticks")
    assert [(t["s"], t["q"]) for t in ticks["ticks"]] == [("MSFT", 1)]
    await link.close()


async def test_ops_unsubscribe_list_ping_and_errors(served: Any) -> None:
    node, open_ = await served()
    link = await open_()
    await recv(link, "welcome")
    await link.send({"op": "subscribe", "symbols": ["AAPL", "NOPE"], "id": 1})
    error = await recv(link)
    assert error["code"] == "unknown_symbol" and error["symbols"] == ["NOPE"] and error["id"] == 1
    assert await recv(link) == {"type": "subscribed", "id": 1, "symbols": ["AAPL"]}
    await link.send({"op": "unsubscribe", "symbols": ["AAPL"], "id": 2})
    assert await recv(link) == {"type": "unsubscribed", "id": 2, "symbols": []}
    await link.send({"op": "ping", "id": "p"})
    assert (await recv(link))["type"] == "pong"
    await link.send({"op": "list", "id": 3})
    assert (await recv(link))["symbols"] == sorted(node.bus.symbols())
    await link.send({"op": "subscribe", "symbols": [], "id": 4})
    assert (await recv(link))["code"] == "bad_request"
    await link.send({"op": "teleport", "id": 5})
    assert (await recv(link))["code"] == "unknown_op"
    await link.close()


async def test_bad_handshake_is_a_400(served: Any) -> None:
    _, open_ = await served()
    for query in (
        {"mode": "fast"},
        {"max_hz": "0"},
        {"since": "AAPL:1"},
        {"since": "AAPL:x", "epoch": "e"},
    ):
        with pytest.raises(LinkError) as refused:
            await open_(**query)
        assert refused.value.status == 400, query


async def test_mode_all_gets_every_tick_in_order(served: Any) -> None:
    node, open_ = await served()
    link = await open_(symbols="AAPL", mode="all")
    await recv(link, "subscribed")
    for _ in range(5):
        node.bus.publish([{"s": "AAPL", "p": float(i)} for i in range(40)])
    seen: list[int] = []
    while len(seen) < 200:
        seen += [t["q"] for t in (await recv(link, "ticks"))["ticks"]]
    assert seen == list(range(1, 201))
    await link.close()


async def test_mode_conflate_with_max_hz_gets_the_latest(served: Any) -> None:
    node, open_ = await served()
    link = await open_(symbols="AAPL", max_hz="2")
    await recv(link, "subscribed")
    node.bus.publish([{"s": "AAPL", "p": 1.0}])
    assert [t["q"] for t in (await recv(link, "ticks"))["ticks"]] == [1]
    for i in range(30):  # within the next half second: conflated to the last
        node.bus.publish([{"s": "AAPL", "p": float(i)}])
    assert [t["q"] for t in (await recv(link, "ticks"))["ticks"]] == [31]
    await link.close()


async def test_resume_with_since_is_gap_free(served: Any) -> None:
    node, open_ = await served(history=50)
    bus = node.bus
    link = await open_(symbols="AAPL,MSFT", mode="all")
    await recv(link, "subscribed")
    bus.publish([{"s": "AAPL", "p": 1.0} for _ in range(5)])
    last = {t["s"]: t["q"] for t in (await recv(link, "ticks"))["ticks"]}
    await link.close()
    bus.publish([{"s": s, "p": 2.0} for _ in range(10) for s in ("AAPL", "MSFT")])
    since = ",".join(f"{s}:{q}" for s, q in {"MSFT": 0, **last}.items())
    link = await open_(symbols="AAPL,MSFT", mode="all", since=since, epoch=bus.epoch)
    subscribed = await recv(link, "subscribed")
    assert subscribed["recovered"] == {"AAPL": True, "MSFT": True}
    bus.publish([{"s": "AAPL", "p": 3.0}])
    got: dict[str, list[int]] = {"AAPL": [], "MSFT": []}
    while len(got["AAPL"]) < 11:
        for tick in (await recv(link, "ticks"))["ticks"]:
            got[tick["s"]].append(tick["q"])
    assert got == {"AAPL": list(range(6, 17)), "MSFT": list(range(1, 11))}  # no gap, no dup
    await link.close()


async def test_resume_too_far_behind_or_from_another_epoch_is_a_snapshot(served: Any) -> None:
    node, open_ = await served(history=5)
    bus = node.bus
    for _ in range(20):  # one by one: the history keeps the last 5
        bus.publish([{"s": "AAPL", "p": 1.0}])
    link = await open_(symbols="AAPL", mode="all", since="AAPL:3", epoch=bus.epoch)
    assert (await recv(link, "subscribed"))["recovered"] == {"AAPL": False}
    assert [t["q"] for t in (await recv(link))["ticks"]] == [20]  # the snapshot
    await link.close()
    link = await open_(symbols="AAPL", mode="all", since="AAPL:18", epoch="another")
    assert (await recv(link, "subscribed"))["recovered"] == {"AAPL": False}
    snapshot = await recv(link)
    assert snapshot["type"] == "snapshot" and [t["q"] for t in snapshot["ticks"]] == [20]
    await link.close()


async def test_shutdown_closes_with_1001(served: Any) -> None:
    node, open_ = await served()
    link = await open_(symbols="AAPL")
    await recv(link, "subscribed")
    await node.shutdown()
    assert await closed(link) == 1001
    assert not node.connections
