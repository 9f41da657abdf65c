"""Per-symbol status across a cluster, through a real Redis: set on one node, the same
status, reason and ``since`` on every node, a late node included."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.conftest import next_of
from tests.redis_server import RedisServer
from tests.test_redis_cluster import StartNode, eventually, publisher, start_node
from ticker.cluster.status import decode_changes
from ticker.cluster.wire import BadMessage, Keys
from ticker.core.bus import Bus
from ticker.core.status import StatusBoard, SymbolStatus

__all__ = ["publisher", "start_node"]  # the fixtures, shared with the cluster's tests

Publisher = Callable[..., Awaitable[Bus]]


def statuses(frame: dict[str, Any]) -> dict[str, tuple[str, str, int]]:
    return {s: (v["status"], v["reason"], v["since"]) for s, v in frame["symbols"].items()}


async def test_a_status_set_on_one_node_reaches_every_node_and_a_late_one(
    redis_server: RedisServer, publisher: Publisher, start_node: StartNode
) -> None:
    bus = await publisher(["AAPL", "MSFT"])
    bus.publish([{"s": "AAPL", "p": 1.0}, {"s": "MSFT", "p": 2.0}])
    early, server = await start_node(redis_server.url)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.make_url("/ws?symbols=AAPL,MSFT"))
        bus.status.set(["AAPL"], "stale", "exchange link lost")  # as a feed's supervisor does
        set_here = bus.status.get("AAPL")
        assert set_here is not None
        frame = await next_of(ws, "status")
        assert statuses(frame) == {"AAPL": ("stale", "exchange link lost", set_here.since)}
        assert early.bus.status.get("AAPL") == set_here

        late, late_server = await start_node(redis_server.url)  # learns it from the hash
        await eventually(lambda: late.bus.status.get("AAPL") == set_here)
        other = await http.ws_connect(late_server.make_url("/ws?symbols=AAPL,MSFT"))
        assert statuses(await next_of(other, "status")) == statuses(frame)

        bus.status.set(["AAPL"], "live")
        back = bus.status.get("AAPL")
        assert back is not None
        for client in (ws, other):
            assert statuses(await next_of(client, "status")) == {"AAPL": ("live", "", back.since)}
        redis = Redis.from_url(redis_server.url)
        assert await redis.hgetall(Keys().status) == {}  # only statuses not live are kept
        await redis.aclose()
        await ws.close()
        await other.close()


async def test_a_node_whose_link_returns_sends_its_statuses_again(
    redis_server: RedisServer, publisher: Publisher
) -> None:
    bus = await publisher(["AAPL"])
    redis = Redis.from_url(redis_server.url)
    try:
        bus.status.set(["AAPL"], "halted", "circuit breaker")
        await eventually_hash(redis, b"AAPL")
        redis_server.stop()  # Redis restarts empty
        redis_server.start()
        await eventually_hash(redis, b"AAPL", timeout=10)
        held = orjson.loads((await redis.hgetall(Keys().status))[b"AAPL"])
        assert held["status"] == "halted" and held["reason"] == "circuit breaker"
    finally:
        await redis.aclose()


async def eventually_hash(redis: Redis, field: bytes, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                if field in await redis.hgetall(Keys().status):
                    return
            except (OSError, RedisError):
                pass
            await asyncio.sleep(0.05)


def test_status_messages_from_redis_are_checked() -> None:
    good = b'{"o":"a","s":{"X":{"status":"stale","reason":"r","since":5}}}'
    assert decode_changes(good) == ("a", {"X": SymbolStatus("stale", "r", 5)})
    for bad in (
        b"nope",
        b'{"o":1,"s":{}}',
        b'{"o":"a","s":{"*":{"status":"stale","since":5}}}',
        b'{"o":"a","s":{"X":{"status":"gone","since":5}}}',
        b'{"o":"a","s":{"X":{"status":"stale","since":"5"}}}',
    ):
        with pytest.raises(BadMessage):
            decode_changes(bad)


def test_the_board_keeps_the_latest_since_of_what_it_is_given() -> None:
    board = StatusBoard(lambda: 100)
    heard: list[dict[str, SymbolStatus]] = []

    class Listener:
        def status_changed(self, changes: dict[str, SymbolStatus]) -> None:
            heard.append(changes)

    board.listen(Listener())
    board.apply({"X": SymbolStatus("live", "", 50)})  # live and unknown: nothing to say
    board.apply({"X": SymbolStatus("stale", "a", 60)})
    board.apply({"X": SymbolStatus("halted", "b", 55)})  # older than what it holds
    board.apply({"X": SymbolStatus("stale", "a", 60)})  # the same again
    assert board.get("X") == SymbolStatus("stale", "a", 60)
    assert heard == [{"X": SymbolStatus("stale", "a", 60)}]
