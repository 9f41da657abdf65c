"""Scale-out through a real Redis: nodes, a publisher, lost messages, an outage.

Every test starts its own ``redis-server`` on a free port (no persistence) and stops it by
its PID. Nodes run in-process (a ``Node`` and its aiohttp app each) except in the
three-node test, which runs real ``ticker`` processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from tests.conftest import next_of, require
from tests.net import free_port, wait_ready
from tests.redis_server import RedisServer
from ticker.cluster.config import RedisConfig
from ticker.cluster.redis import RedisBroker
from ticker.cluster.wire import Keys, encode_message, origin_prefix
from ticker.core.bus import Bus
from ticker.core.codes import CloseCode
from ticker.core.ticks import Tick, TickBatch, now_us
from ticker.server.app import create_app
from ticker.server.node import Node
from ticker.server.settings import Settings

Msg = dict[str, Any]


def config(url: str, **overrides: Any) -> RedisConfig:
    """Fast reconnects and checks, for tests."""
    base: dict[str, Any] = {
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "timeout": 1.0,
        "ping_interval": 0.5,
    }
    return RedisConfig(url, **{**base, **overrides})


StartNode = Callable[..., Awaitable[tuple[Node, TestServer]]]


@pytest.fixture
async def start_node(aiohttp_server: Any) -> StartNode:
    async def start(
        url: str, feeds: tuple[Any, ...] = (), **overrides: Any
    ) -> tuple[Node, TestServer]:
        # no candles: they follow every channel, and these nodes follow what clients need
        settings = Settings(candle_history=0)
        node = Node(settings, feeds, broker=RedisBroker(config(url, **overrides)))
        server = await aiohttp_server(create_app(node))
        return node, server

    return start


@pytest.fixture
async def publisher(redis_server: RedisServer) -> AsyncIterator[Callable[..., Awaitable[Bus]]]:
    """An origin with no server (what ``ticker feed`` runs): the test publishes into its bus."""
    brokers: list[RedisBroker] = []

    async def start(symbols: list[str], **overrides: Any) -> Bus:
        bus = Bus()
        bus.add_symbols(symbols)
        broker = RedisBroker(config(redis_server.url, **overrides))
        await broker.start(bus, symbols, lambda: None)
        assert broker.ready
        brokers.append(broker)
        return bus

    yield start
    for broker in brokers:
        await broker.stop()


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def ticks_of(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> list[Msg]:
    """The ticks of the next ``snapshot`` or ``ticks`` frame."""
    async with asyncio.timeout(timeout):
        while True:
            frame = (await ws.receive()).json()
            if frame["type"] in ("snapshot", "ticks"):
                ticks: list[Msg] = frame["ticks"]
                return ticks


async def collect(
    ws: aiohttp.ClientWebSocketResponse, until: Callable[[list[Msg]], bool], timeout: float = 5.0
) -> list[Msg]:
    got: list[Msg] = []
    async with asyncio.timeout(timeout):
        while not until(got):
            got += await ticks_of(ws, timeout)
    return got


def price(symbol: str, q: int) -> Tick:
    return {"s": symbol, "p": 100.0 + q}


async def json_of(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        return resp.status, (
            await resp.json() if "json" in resp.content_type else await resp.text()
        )


# -- the cluster path --------------------------------------------------------------------


async def test_a_node_follows_only_the_channels_its_clients_need(
    redis_server: RedisServer, publisher: Callable[..., Awaitable[Bus]], start_node: StartNode
) -> None:
    keys = Keys(shards=0)
    bus = await publisher(["AAPL", "MSFT"], shards=0)
    node, server = await start_node(redis_server.url, shards=0)
    redis = Redis.from_url(redis_server.url)
    broker = node.broker
    assert isinstance(broker, RedisBroker)

    async def subscribers(symbol: str) -> int:
        return (await redis.pubsub_numsub(keys.channel(symbol)))[0][1]

    bus.publish([price("AAPL", 1), price("MSFT", 1)])
    await asyncio.sleep(0.2)
    assert broker.stats.messages_received == 0  # no client: nothing comes in
    assert await subscribers("AAPL") == 0

    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.make_url("/ws?symbols=AAPL&mode=all"))
        first = await ticks_of(ws)  # the latest AAPL, read from the hash
        assert [(t["s"], t["q"]) for t in first] == [("AAPL", 1)]
        assert await subscribers("AAPL") == 1 and await subscribers("MSFT") == 0
        for q in range(2, 12):
            bus.publish([price("AAPL", q), price("MSFT", q)])
            await asyncio.sleep(0.005)
        got = await collect(ws, lambda got: bool(got) and got[-1]["q"] == 11)
        assert [t["q"] for t in got] == list(range(2, 12))
        assert broker.stats.ticks_received == 10  # AAPL only: no MSFT tick reached the node

        await ws.close()
        await eventually(lambda: not broker.subscribed)
        assert await subscribers("AAPL") == 0
        assert node.bus.snapshot(["AAPL"]) == []  # not followed any more: no stale value kept
    await redis.aclose()


async def test_with_shards_a_node_receives_only_the_shards_of_its_clients_symbols(
    redis_server: RedisServer, publisher: Callable[..., Awaitable[Bus]], start_node: StartNode
) -> None:
    keys = Keys(shards=4)
    symbols = [f"S{i}" for i in range(40)]
    bus = await publisher(symbols, shards=4)
    node, server = await start_node(redis_server.url, shards=4)
    broker = node.broker
    assert isinstance(broker, RedisBroker)
    bus.publish([price(s, 1) for s in symbols])
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.make_url("/ws?symbols=S0&mode=all"))
        first = await ticks_of(ws)  # from the message, or from the hash if it came first
        assert [(t["s"], t["q"]) for t in first] == [("S0", 1)]
        assert broker.subscribed == {keys.channel("S0")}
        bus.publish([price(s, 2) for s in symbols])
        assert [(t["s"], t["q"]) for t in await ticks_of(ws)] == [("S0", 2)]
        same_shard = {s for s in symbols if keys.channel(s) == keys.channel("S0")}
        assert len(same_shard) < len(symbols) / 2
        held = {orjson.loads(b)["s"] for b in node.bus.snapshot(symbols)}
        assert held == same_shard  # nothing of the other shards ever reached the node
        assert broker.stats.ticks_received % len(same_shard) == 0
        await ws.close()


async def test_publishes_one_message_per_channel_per_round_not_one_per_tick(
    redis_server: RedisServer,
) -> None:
    symbols = [f"S{i}" for i in range(10)]
    redis = Redis.from_url(redis_server.url)
    bus = Bus()
    broker = RedisBroker(config(redis_server.url, shards=4))
    await broker.start(bus, symbols, lambda: None)
    before = (await redis.info("commandstats")).get("cmdstat_publish", {}).get("calls", 0)
    bus.publish([price(symbols[i % 10], i) for i in range(100)])  # one feed batch
    await broker.stop()  # at once: what is pending still goes out
    stats = (await redis.info("commandstats"))["cmdstat_publish"]["calls"] - before
    channels = {Keys(shards=4).channel(s) for s in symbols}
    assert stats == len(channels) <= 4
    last = await redis.hgetall(Keys().last)
    assert set(last) == {s.encode() for s in symbols}
    assert orjson.loads(last[b"S9"])["q"] == 10  # S9 got ticks 9, 19, ... 99: its 10th
    big = [f"B{i}" for i in range(1200)]  # more fields than one Lua unpack takes
    bus.add_symbols(big)
    broker = RedisBroker(config(redis_server.url, shards=4))
    await broker.start(bus, big, lambda: None)
    bus.publish([price(s, 1) for s in big])
    await broker.stop()
    assert await redis.hlen(Keys().last) == len(symbols) + len(big)
    await redis.aclose()


async def test_a_node_started_late_serves_the_latest_values_at_once(
    redis_server: RedisServer, publisher: Callable[..., Awaitable[Bus]], start_node: StartNode
) -> None:
    bus = await publisher(["AAPL", "MSFT", "QUIET"])
    bus.publish([price("QUIET", 1)])  # a symbol that then stays quiet
    for q in range(1, 6):
        bus.publish([price("AAPL", q), price("MSFT", q)])
    await asyncio.sleep(0.2)
    _, server = await start_node(redis_server.url)  # after everything was published
    async with aiohttp.ClientSession() as http:
        status, ready = await json_of(http, str(server.make_url("/readyz")))
        assert status == 200 and ready["redis"]["link"] == "up"
        ws = await http.ws_connect(server.make_url("/ws?symbols=AAPL,MSFT,QUIET"))
        first = await collect(ws, lambda got: len(got) >= 3, timeout=2)
        assert sorted((t["s"], t["q"], t["p"]) for t in first) == [
            ("AAPL", 5, 105.0),
            ("MSFT", 5, 105.0),
            ("QUIET", 1, 101.0),
        ]
        # A second client finds the node following them: one snapshot frame, at once.
        other = await http.ws_connect(server.make_url("/ws?symbols=AAPL,QUIET"))
        snapshot = await next_of(other, "snapshot")
        assert sorted((t["s"], t["q"]) for t in snapshot["ticks"]) == [("AAPL", 5), ("QUIET", 1)]
        bus.publish([price("AAPL", 6)])
        assert [t["q"] for t in await ticks_of(other)] == [6]
        assert [t["q"] for t in await ticks_of(ws)] == [6]  # no duplicate of q 5 either
        await ws.close()
        await other.close()


async def test_every_node_serves_the_same_closed_bars_a_late_one_from_before_it_joined(
    redis_server: RedisServer, publisher: Callable[..., Awaitable[Bus]], aiohttp_server: Any
) -> None:
    bus = await publisher(["AAPL", "MSFT"])

    async def candle_node() -> tuple[Node, TestServer]:
        broker = RedisBroker(config(redis_server.url))
        node = Node(Settings(candle_update_s=0.05, candle_history=8), broker=broker)
        server = await aiohttp_server(create_app(node))
        await eventually(lambda: broker.ready)
        return node, server

    second = 1_000_000
    start = now_us() // second * second - 30 * second  # whole seconds, all in the past

    def publish_seconds(first: int, last: int) -> None:
        for s in range(first, last):
            for k in range(3):
                t = start + s * second + k * 1000
                bus.publish([{"s": "AAPL", "p": 100.0 + s + k, "v": k + 1, "t": t}])
                bus.publish([{"s": "MSFT", "p": 50.0 - s - k, "t": t}])

    _, first_server = await candle_node()
    await asyncio.sleep(0.2)
    publish_seconds(0, 5)
    await asyncio.sleep(0.3)  # delivered to the first node, before the second exists
    _, late_server = await candle_node()
    await asyncio.sleep(0.2)
    publish_seconds(5, 11)  # second 10 closes second 9's bars

    async def closed_bars(server: TestServer, symbol: str) -> list[dict[str, Any]]:
        url = server.make_url(f"/candles?symbol={symbol}&interval=1s&limit=8")
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            return [bar for bar in (await resp.json())["candles"] if bar["x"]]

    for symbol in ("AAPL", "MSFT"):
        # the late node: its own bars from second 5, those before (its partial second 4
        # included) from Redis, written there by the first node
        for _ in range(60):
            full = await closed_bars(first_server, symbol)
            late = await closed_bars(late_server, symbol)
            # up to second 9, or 10 once it closed on time
            last = (full[-1]["ts"] - start) // second if full else 0
            if late == full and last in (9, 10):
                break
            await asyncio.sleep(0.1)
        assert late == full, symbol
        assert last in (9, 10)
        # 8 bars kept (--candle-history 8)
        assert [b["ts"] for b in full] == [start + s * second for s in range(last - 7, last + 1)]
        assert [b["n"] for b in full] == [3] * 8
    async with Redis.from_url(redis_server.url) as redis:
        sizes = {k: await redis.zcard(k) async for k in redis.scan_iter("ticker:bars:*")}
    # each series capped at --candle-history (the longer intervals have not closed a bar)
    assert sizes[b"ticker:bars:AAPL@1s"] == sizes[b"ticker:bars:MSFT@1s"] == 8
    assert max(sizes.values()) == 8


async def test_lost_ticks_are_counted_signalled_and_healed_from_the_hash(
    redis_server: RedisServer, start_node: StartNode
) -> None:
    """The test is the origin here, writing to Redis itself, so it can lose messages."""
    keys = Keys(shards=1)  # one channel: a lost message may hold another symbol's tick
    (channel,) = keys.all_channels([])
    redis = Redis.from_url(redis_server.url)
    await redis.sadd(keys.symbols, "AAPL", "MSFT")
    prefix = origin_prefix("test-origin")
    number = 0

    def tick(symbol: str, q: int) -> dict[str, Any]:
        return {"s": symbol, "p": 100.0 + q, "q": q, "t": 1_000_000 + q}

    async def send(*ticks: dict[str, Any], lose: bool = False) -> None:
        """HSET and PUBLISH as an origin does; ``lose``: the PUBLISH never arrives."""
        nonlocal number
        number += 1
        await redis.hset(keys.last, mapping={t["s"]: orjson.dumps(t) for t in ticks})
        if not lose:
            segments = [orjson.dumps(t) for t in ticks]
            await redis.publish(channel, encode_message(prefix, number, segments))

    await send(tick("AAPL", 1), tick("MSFT", 1))
    node, server = await start_node(redis_server.url, shards=1)
    broker = node.broker
    assert isinstance(broker, RedisBroker)
    async with aiohttp.ClientSession() as http:
        every = await http.ws_connect(server.make_url("/ws?symbols=AAPL,MSFT&mode=all"))
        latest = await http.ws_connect(server.make_url("/ws?symbols=MSFT&mode=conflate"))
        assert len(await collect(every, lambda got: len(got) >= 2)) == 2
        await ticks_of(latest)

        await send(tick("AAPL", 2))
        assert [t["q"] for t in await ticks_of(every)] == [2]

        # 1. A lost message whose tick was the last of a quiet symbol: noticed by the next
        # message's number (it holds only AAPL) and healed from the hash.
        await send(tick("MSFT", 2), lose=True)
        await send(tick("AAPL", 3))
        got = await collect(every, lambda got: len(got) >= 2)
        assert sorted((t["s"], t["q"], t.get("g")) for t in got) == [
            ("AAPL", 3, None),
            ("MSFT", 2, None),  # nothing missing for the client: the hash had it
        ]
        assert [(t["q"], t["p"]) for t in await ticks_of(latest)] == [(2, 102.0)]
        assert broker.continuity.lost_messages == 1 and broker.continuity.gaps == 0

        # 2. Lost ticks of a busy symbol: the next one jumps in q. Counted, and the first
        # tick after the hole says how many are missing (mode all is never silently short).
        await send(tick("MSFT", 3), lose=True)
        await send(tick("MSFT", 4), lose=True)
        await send(tick("MSFT", 5))
        got = await collect(every, lambda got: len(got) >= 1)
        assert [(t["q"], t.get("g")) for t in got] == [(5, 2)]
        assert [(t["q"], t["p"]) for t in await ticks_of(latest)] == [(5, 105.0)]
        assert broker.continuity.gaps == 1

        async with http.get(server.make_url("/metrics")) as resp:
            metrics = await resp.text()
        assert "ticker_redis_gaps_total 1.0" in metrics
        assert "ticker_redis_lost_messages_total 2.0" in metrics

        # 3. Garbage on the channel is counted and skipped; the node goes on.
        await redis.publish(channel, b"not json")
        await send(tick("MSFT", 6))
        assert [t["q"] for t in await ticks_of(every)] == [6]
        assert broker.stats.bad_messages == 1
        await every.close()
        await latest.close()
    await redis.aclose()


class SteadyFeed:
    """A local feed: one tick of LOCAL every 10 ms."""

    name = "steady"

    def symbols(self) -> list[str]:
        return ["LOCAL"]

    async def stream(self) -> AsyncIterator[TickBatch]:
        price = 100.0
        while True:
            price += 0.01
            yield [{"s": "LOCAL", "p": round(price, 2)}]
            await asyncio.sleep(0.01)


async def test_redis_outage_local_clients_keep_streaming_then_nodes_resync(
    redis_server: RedisServer, start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ticker.cluster")
    origin, origin_server = await start_node(redis_server.url, feeds=(SteadyFeed(),))
    edge, edge_server = await start_node(redis_server.url)
    async with aiohttp.ClientSession() as http:
        local = await http.ws_connect(origin_server.make_url("/ws?symbols=LOCAL&mode=all"))
        remote = await http.ws_connect(edge_server.make_url("/ws?symbols=LOCAL&mode=all"))
        await collect(local, lambda got: len(got) >= 3)
        before = (await collect(remote, lambda got: len(got) >= 3))[-1]["q"]

        redis_server.stop()
        await eventually(lambda: not origin.broker.ready and not edge.broker.ready)
        # The origin's own clients do not notice: every tick, in order, no hole.
        during = await collect(local, lambda got: len(got) >= 20)
        qs = [t["q"] for t in during]
        assert qs == list(range(qs[0], qs[0] + len(qs)))
        status, ready = await json_of(http, str(origin_server.make_url("/readyz")))
        assert status == 200 and ready["redis"]["link"] == "down"  # it serves its own feed
        status, ready = await json_of(http, str(edge_server.make_url("/readyz")))
        assert status == 503 and ready["redis"]["link"] == "down"  # nothing to serve
        _, metrics = await json_of(http, str(origin_server.make_url("/metrics")))
        assert "ticker_redis_link_up 0.0" in metrics
        assert "ticker_redis_link_losses_total 1.0" in metrics
        await asyncio.sleep(0.5)  # several failed reconnects: still one log line per node

        redis_server.start()  # empty: the origin re-syncs the hash, the edge re-subscribes
        await eventually(lambda: origin.broker.ready and edge.broker.ready)
        after = await collect(remote, lambda got: len(got) >= 3)
        assert after[0]["q"] > before + 1 and after[0]["g"] == after[0]["q"] - before - 1
        assert [t["q"] for t in after] == list(range(after[0]["q"], after[0]["q"] + len(after)))
        assert not local.closed and not remote.closed
        _, metrics = await json_of(http, str(edge_server.make_url("/metrics")))
        assert "ticker_redis_reconnects_total 1.0" in metrics
        assert "ticker_redis_link_up 1.0" in metrics
        await local.close()
        await remote.close()
    lost = [r for r in caplog.records if "redis link lost" in r.getMessage()]
    restored = [r for r in caplog.records if "redis link restored" in r.getMessage()]
    assert len(lost) == 2 and len(restored) == 2  # one of each per node
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


async def test_an_edge_node_started_first_learns_the_universe_and_epoch_of_a_later_origin(
    redis_server: RedisServer, publisher: Callable[..., Awaitable[Bus]], start_node: StartNode
) -> None:
    node, server = await start_node(redis_server.url, shards=4)
    assert node.bus.symbols() == []
    symbols = [f"S{i}" for i in range(12)]
    async with aiohttp.ClientSession() as http:
        early = await http.ws_connect(server.make_url("/ws"), autoclose=False)
        own_epoch = (await next_of(early, "welcome"))["epoch"]
        bus = await publisher(symbols, shards=4)
        await eventually(lambda: node.bus.symbols() == sorted(symbols))
        assert node.bus.epoch == bus.epoch != own_epoch
        # A client welcomed under the node's own epoch is told to reconnect and learn it.
        async with asyncio.timeout(5):
            while (msg := await early.receive()).type is not aiohttp.WSMsgType.CLOSE:
                pass
        assert msg.data == CloseCode.GOING_AWAY
        ws = await http.ws_connect(server.make_url("/ws?symbols=*&mode=all"))
        await next_of(ws, "subscribed")
        broker = node.broker
        assert isinstance(broker, RedisBroker)
        await eventually(lambda: len(broker.subscribed) == 4)  # "*" needs every shard
        bus.publish([price(s, 1) for s in symbols])
        got = await collect(ws, lambda got: len(got) >= len(symbols))
        assert sorted(t["s"] for t in got) == sorted(symbols)
        await ws.close()


async def test_a_node_whose_redis_is_not_up_yet_serves_its_feed_and_joins_later(
    tmp_path: Path, start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ticker.cluster")
    redis_server = RedisServer(require("redis-server"), tmp_path)  # not started yet
    node, server = await start_node(redis_server.url, feeds=(SteadyFeed(),))
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(server.make_url("/ws?symbols=LOCAL&mode=all"))
            await collect(ws, lambda got: len(got) >= 5)
            status, ready = await json_of(http, str(server.make_url("/readyz")))
            assert status == 200 and ready["redis"]["link"] == "connecting"
            redis_server.start()
            await eventually(lambda: node.broker.ready)
            redis = Redis.from_url(redis_server.url)
            assert await redis.get(Keys().epoch) == node.bus.epoch.encode()
            async with asyncio.timeout(5):
                while not await redis.hexists(Keys().last, "LOCAL"):
                    await asyncio.sleep(0.02)
            await redis.aclose()
            await ws.close()
    finally:
        redis_server.stop()
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1  # however many attempts failed


async def test_a_restarted_origin_continues_q_and_the_epoch_from_redis(
    redis_server: RedisServer, publisher: Callable[..., Awaitable[Bus]]
) -> None:
    first = await publisher(["AAPL"])
    for q in range(1, 4):
        first.publish([price("AAPL", q)])
    await asyncio.sleep(0.2)
    again = await publisher(["AAPL"])  # the same feed, restarted: a new process, a new bus
    assert again.epoch == first.epoch
    (continued,) = again.snapshot(["AAPL"])  # the cluster's latest, taken at the start
    assert orjson.loads(continued)["q"] == 3
    again.publish([price("AAPL", 4)])
    (latest,) = again.snapshot(["AAPL"])
    assert orjson.loads(latest)["q"] == 4  # not 1: q goes on


async def test_a_new_epoch_closes_clients_so_they_resubscribe(
    redis_server: RedisServer, publisher: Callable[..., Awaitable[Bus]], start_node: StartNode
) -> None:
    bus = await publisher(["AAPL"])
    node, server = await start_node(redis_server.url)
    assert node.bus.epoch == bus.epoch  # an edge node takes the cluster's epoch
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.make_url("/ws?symbols=AAPL"))
        bus.publish([price("AAPL", 1)])
        await ticks_of(ws)
        redis = Redis.from_url(redis_server.url)
        await redis.set(Keys().epoch, "new-epoch")  # as after a restart of the whole cluster
        await redis.publish(Keys().control, b"hello")
        await redis.aclose()
        async with asyncio.timeout(5):
            async for _ in ws:
                pass
        assert ws.close_code == 1001
        assert node.bus.epoch == "new-epoch"


# -- real processes ----------------------------------------------------------------------


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ticker",
        *args,
        "--log-level",
        "warning",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def node_epoch(http: aiohttp.ClientSession, port: int) -> str:
    async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
        return str((await resp.json())["redis"]["epoch"])


async def test_three_nodes_and_a_publisher_deliver_identical_sequences(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    feed = await spawn("feed", "--redis", url, "--symbols", "20", "--rate", "400", "--seed", "3")
    ports = [free_port() for _ in range(3)]
    nodes = [
        await spawn("serve", "--feed", "none", "--redis", url, "--port", str(p)) for p in ports
    ]
    procs = [feed, *nodes]
    symbols = ["AAPL", "MSFT", "NVDA"]
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(
                *(wait_ready(http, p, n) for p, n in zip(ports, nodes, strict=True))
            )
            # A node is ready once its link is up, perhaps before the publisher has set
            # the cluster's epoch; each node's own epoch is random, so one shared epoch
            # means all three have joined the publisher's.
            async with asyncio.timeout(10):
                while len({await node_epoch(http, p) for p in ports}) > 1:
                    await asyncio.sleep(0.05)
            clients = [
                await http.ws_connect(f"http://127.0.0.1:{p}/ws?symbols=AAPL,MSFT,NVDA&mode=all")
                for p in ports
            ]
            welcomes = [await next_of(ws, "welcome") for ws in clients]
            assert len({w["epoch"] for w in welcomes}) == 1  # the origin's, on every node

            def per_symbol(ticks: list[Msg]) -> dict[str, dict[int, tuple[float, int]]]:
                out: dict[str, dict[int, tuple[float, int]]] = {s: {} for s in symbols}
                for t in ticks:
                    out[t["s"]][t["q"]] = (t["p"], t["t"])
                return out

            def enough(got: list[Msg]) -> bool:
                return all(len(v) >= 15 for v in per_symbol(got).values())

            streams = await asyncio.gather(*(collect(ws, enough, timeout=20) for ws in clients))
            for ticks in streams:
                assert not any("g" in t for t in ticks)  # nothing lost on loopback
            views = [per_symbol(ticks) for ticks in streams]
            for symbol in symbols:
                seqs = [v[symbol] for v in views]
                common = set.intersection(*(set(s) for s in seqs))
                assert len(common) >= 10, symbol
                lo, hi = min(common), max(common)
                for s in seqs:  # contiguous, and identical (s, q, p, t) everywhere
                    assert sorted(q for q in s if lo <= q <= hi) == list(range(lo, hi + 1))
                    assert {q: s[q] for q in common} == {q: seqs[0][q] for q in common}

            # Killing a node drops its own clients only.
            nodes[2].kill()
            await nodes[2].wait()
            async with asyncio.timeout(5):
                async for _ in clients[2]:
                    pass
            assert clients[2].closed
            for ws in clients[:2]:
                await ticks_of(ws)
                assert not ws.closed
                await ws.close()

            feed.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(feed.wait(), 5) == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    for proc in (feed, *nodes[:2]):
        assert proc.returncode == 0
        log = (await proc.stderr.read()).decode() if proc.stderr else ""
        assert "Traceback" not in log, log


def test_feed_none_and_ticker_feed_need_redis(capsys: pytest.CaptureFixture[str]) -> None:
    from ticker.cli import main

    argvs = (
        ["serve", "--feed", "none"],
        ["feed"],
        ["feed", "--redis", "localhost:6379"],
        ["feed", "--feed", "none", "--redis", "redis://127.0.0.1:1/0"],
    )
    for argv in argvs:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--feed none serves only what comes through Redis: it needs --redis URL" in err
    assert "ticker feed publishes to Redis: it needs --redis URL" in err
    assert "invalid Redis URL (redis://host:port/db) value: 'localhost:6379'" in err
    assert "ticker feed runs a feed: --feed none is for ticker serve" in err


def test_one_ticker_feed_variable_serves_both_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    from ticker.cli import build_parser

    monkeypatch.setenv("TICKER_FEED", "none")
    monkeypatch.setenv("TICKER_REDIS", "redis://127.0.0.1:6379/0")
    args = build_parser().parse_args(["serve"])
    assert (str(args.feed), args.redis, args.redis_shards) == (
        "none",
        "redis://127.0.0.1:6379/0",
        64,
    )
    assert str(build_parser().parse_args(["feed", "--feed", "sim"]).feed) == "sim"


async def test_a_node_that_cannot_read_the_bars_starts_with_a_short_chart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ticker.cluster.candle_store import CandleStore
    from ticker.core.candles import Candles

    store = CandleStore(config(f"redis://127.0.0.1:{free_port()}/0"), Candles())
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING, "ticker.candles"):
        assert await store.load() == 0
    assert loop.time() - started < 3.0  # bounded by the link's timeout, not stuck
    assert "a short chart" in caplog.text
    await store.stop()
