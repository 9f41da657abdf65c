"""Per-symbol status across a cluster, through a real Redis: set on one node, the same
status, reason and ``since`` on every node, a late node included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tests.conftest import next_of
from tests.redis_server import RedisServer
from tests.test_redis_cluster import StartNode, config, eventually, publisher, start_node
from ticker.cluster.publisher import publish
from ticker.cluster.redis import RedisBroker
from ticker.cluster.stats import RedisStats
from ticker.cluster.status import StatusRelay, decode_changes
from ticker.cluster.wire import BadMessage, Keys
from ticker.core.bus import Bus
from ticker.core.publish import PublishLimits
from ticker.core.status import StatusBoard, SymbolStatus
from ticker.core.ticks import TickBatch
from ticker.server.app import create_app
from ticker.server.node import Node
from ticker.server.settings import Settings

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


async def test_a_publisher_s_status_on_one_node_reaches_the_clients_of_another(
    redis_server: RedisServer, publisher: Publisher, start_node: StartNode, aiohttp_server: Any
) -> None:
    bus = await publisher(["AAPL"])
    bus.publish([{"s": "AAPL", "p": 1.0}])
    settings = Settings(publish=PublishLimits(), candle_history=0)
    taker = Node(settings, (), broker=RedisBroker(config(redis_server.url)))
    taker_server = await aiohttp_server(create_app(taker))
    _, server = await start_node(redis_server.url)
    await eventually(lambda: taker.bus.known("AAPL"))
    halt = {"symbols": {"AAPL": {"status": "halted", "reason": "news pending"}}}
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.make_url("/ws?symbols=AAPL"))
        await next_of(ws, "subscribed")
        async with http.post(taker_server.make_url("/publish/status"), json=halt) as resp:
            assert resp.status == 200, await resp.text()
        set_there = taker.bus.status.get("AAPL")
        assert set_there is not None
        told = statuses(await next_of(ws, "status"))
        assert told == {"AAPL": ("halted", "news pending", set_there.since)}
        assert bus.status.get("AAPL") == set_there  # the origin's board too
        await ws.close()


class Finite:
    """A feed that sends one tick and ends (its supervisor then says ``closed``)."""

    name = "finite"

    def symbols(self) -> list[str]:
        return ["FIN"]

    async def stream(self) -> AsyncIterator[TickBatch]:
        await asyncio.sleep(0.3)  # a client subscribes first
        yield [{"s": "FIN", "p": 1.0}]


async def test_the_status_of_a_ticker_feed_process_s_feeds_reaches_the_nodes(
    redis_server: RedisServer, start_node: StartNode
) -> None:
    stop = asyncio.Event()
    feeding = asyncio.create_task(publish([Finite()], RedisBroker(config(redis_server.url)), stop))
    try:
        node, server = await start_node(redis_server.url)
        await eventually(lambda: node.bus.known("FIN"))
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(server.make_url("/ws?symbols=FIN"))
            told = statuses(await next_of(ws, "status"))
            assert told["FIN"][:2] == ("closed", "the feed ended")
            await ws.close()
    finally:
        stop.set()
        await feeding


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


class Pipe:
    """What a transaction would send, kept instead."""

    def __init__(self, sent: list[tuple[str, Any]]) -> None:
        self.sent = sent

    def __getattr__(self, command: str) -> Callable[..., None]:
        return lambda *args, **kwargs: self.sent.append((command, kwargs or args))

    async def execute(self) -> None:
        return None


async def test_after_a_reconnect_a_status_another_node_set_later_is_not_overwritten() -> None:
    board = StatusBoard(lambda: 10)
    relay = StatusRelay(Keys(), "me", RedisStats())
    relay.attach(board)
    board.set(["X", "Y"], "stale", "link lost")  # set here, then the link drops
    sent: list[tuple[str, Any]] = []
    client = type("Client", (), {"pipeline": lambda self, transaction: Pipe(sent)})()
    relay.link_up()
    # The hash, read on the new link, says another node set X later.
    later = b'{"o":"other","s":{"X":{"status":"live","reason":"","since":20}}}'
    relay.pubsub("message", later)
    await relay._send(client)
    [(_, held), (_, (channel, message))] = sent
    assert list(held["mapping"]) == ["Y"] and channel == Keys().status
    assert list(orjson.loads(message)["s"]) == ["Y"]  # X is the other node's now
