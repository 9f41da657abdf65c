"""Publishing in a cluster: ``q`` given in Redis, whichever node takes the batch.

The script's arguments and replies are unit-tested without Redis; the rest runs against
a real ``redis-server``: nodes in-process for the details (a fed symbol, a Redis that
lost its data, a node that cannot reach Redis), and two ``ticker serve`` processes for
the headline: publishes to both nodes for one symbol, at once, make one gap-free ``q``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer

from tests.net import free_port, wait_ready
from tests.redis_server import RedisServer
from tests.test_redis_cluster import config, eventually, spawn
from ticker.client import Publisher
from ticker.cluster.redis import RedisBroker
from ticker.cluster.sequencer import (
    PUBLISHED_ORIGIN,
    EpochMoved,
    Idempotency,
    sequence_call,
    sequenced,
)
from ticker.cluster.wire import Keys, decode_message
from ticker.core.bus import Bus
from ticker.core.publish import PublishLimits, PublishRefused
from ticker.core.ticks import TickBatch
from ticker.server.app import create_app
from ticker.server.node import Node
from ticker.server.settings import Settings

Msg = dict[str, Any]
LIMITS = PublishLimits(max_ticks=1000)

# -- the pure part --------------------------------------------------------------------


def test_the_call_groups_ticks_by_symbol_and_heads_are_what_the_bus_would_encode() -> None:
    keys = Keys(shards=4)
    batch: Any = [{"s": "A", "p": 1.5, "v": 3}, {"s": "B", "p": 2}, {"s": "A", "p": 1.25, "et": 7}]
    floors = {"A": 41}
    call = sequence_call(keys, "ep", batch, 1_000, keys.channel, lambda s: floors.get(s, 0), None)
    assert call.symbols == ["A", "B"]
    assert call.keys == ["ticker:epoch", "ticker:q", "ticker:last", "ticker:symbols",
                         "ticker:fed", "ticker:control", "ticker:n"]  # fmt: skip
    epoch, digest, idem, ttl, suffix, prefix, nsym, nch, *rest = call.args
    assert (epoch, digest, idem, ttl, nsym) == ("ep", "", "", 0, 2)
    assert isinstance(nch, int) and nch == len({keys.channel("A"), keys.channel("B")})
    channels, records = rest[:nch], rest[nch:]
    assert channels == list(dict.fromkeys([keys.channel("A"), keys.channel("B")]))
    name, index, count, *heads_and_floor = records[: 3 + 2 + 1]
    assert (name, index, count, heads_and_floor[-1]) == ("A", 1, 2, 41)
    assert records[6:9] == ["B", channels.index(keys.channel("B")) + 1, 1]
    assert records[-1] == 0  # B: never seen, no floor
    # What a subscriber gets: head + q + suffix, byte for byte the bus's own encoding.
    stamped = [head + b"42" + suffix for head in heads_and_floor[:-1]]  # type: ignore[operator]
    bus = Bus(clock=lambda: 1_000)
    own = [{"s": "A", "p": 1.5, "v": 3, "q": 42}, {"s": "A", "p": 1.25, "et": 7, "q": 42}]
    bus.publish(own)  # type: ignore[arg-type]  # "et" is not in Tick
    assert stamped == [orjson.dumps(t) for t in own]
    assert prefix == b'{"o":"publish","n":'
    message = bytes(prefix) + b'1,"k":[' + stamped[0] + b"]}"
    assert decode_message(message)[0] == PUBLISHED_ORIGIN


def test_an_idempotency_key_is_scoped_by_publisher_and_kept_for_its_ttl() -> None:
    keys = Keys(prefix="c1")
    one = Idempotency("sub:a:b", "c", b"\x01" * 16, 1.5)
    other = Idempotency("sub:a", "b:c", b"\x01" * 16, 1.5)
    assert one.redis_key("c1") != other.redis_key("c1")  # no ambiguity from ":" in names
    assert one.redis_key("c1").startswith("c1:idem:")
    call = sequence_call(keys, "ep", [{"s": "A", "p": 1}], 5, keys.channel, lambda s: 0, one)
    assert call.args[1:4] == ["01" * 16, one.redis_key("c1"), 1500]


def test_replies_become_answers_or_refusals() -> None:
    assert sequenced([b"ok", b"5,9"], ["A", "B"]).q == {"A": 5, "B": 9}
    again = sequenced([b"replayed", b"5"], ["A"])
    assert again.replayed and again.q == {"A": 5}
    with pytest.raises(PublishRefused) as fed:
        sequenced([b"fed", b"AAPL"], ["AAPL", "X"])
    assert (fed.value.status, fed.value.code, fed.value.symbols) == (409, "fed_symbol", ["AAPL"])
    with pytest.raises(PublishRefused) as reused:
        sequenced([b"reused"], ["A"])
    assert (reused.value.status, reused.value.code) == (422, "idempotency_key_reused")
    with pytest.raises(EpochMoved):
        sequenced([b"epoch", b"other"], ["A"])


# -- in-process nodes on a real Redis ---------------------------------------------------


StartNode = Callable[..., Awaitable[tuple[Node, TestServer]]]


@pytest.fixture
async def start_node(aiohttp_server: Any) -> StartNode:
    async def start(url: str, feeds: tuple[Any, ...] = ()) -> tuple[Node, TestServer]:
        node = Node(Settings(publish=LIMITS), feeds, broker=RedisBroker(config(url)))
        return node, await aiohttp_server(create_app(node))

    return start


async def post(http: aiohttp.ClientSession, url: Any, ticks: list[Msg], **headers: str) -> Any:
    async with http.post(url, json={"ticks": ticks}, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def ticks_until(
    ws: aiohttp.ClientWebSocketResponse, done: Callable[[list[Msg]], bool], timeout: float = 10.0
) -> list[Msg]:
    """Ticks of ``ticks`` and ``snapshot`` frames until ``done`` says there are enough."""
    got: list[Msg] = []
    async with asyncio.timeout(timeout):
        while not done(got):
            frame = (await ws.receive()).json()
            if frame["type"] in ("snapshot", "ticks"):
                got += frame["ticks"]
    return got


class OneSymbolFeed:
    name = "fed"

    def symbols(self) -> list[str]:
        return ["FEED"]

    async def stream(self) -> AsyncIterator[TickBatch]:
        yield [{"s": "FEED", "p": 1.0}]
        await asyncio.Event().wait()


async def test_a_symbol_a_feed_serves_cannot_be_published_anywhere_in_the_cluster(
    redis_server: RedisServer, start_node: StartNode
) -> None:
    origin, _ = await start_node(redis_server.url, feeds=(OneSymbolFeed(),))
    _, edge = await start_node(redis_server.url)
    async with aiohttp.ClientSession() as http:
        status, body, _ = await post(http, edge.make_url("/publish"), [
            {"s": "NEW", "p": 1}, {"s": "FEED", "p": 2}
        ])  # fmt: skip
        assert (status, body["error"], body["symbols"]) == (409, "fed_symbol", ["FEED"])
        status, body, _ = await post(http, edge.make_url("/publish"), [{"s": "NEW", "p": 1}])
        assert (status, body) == (200, {"accepted": 1, "q": {"NEW": 1}})  # NEW did not go first
    await eventually(lambda: origin.bus.known("NEW"))  # the universe grew on every node


async def test_without_redis_a_publish_is_refused_whole_and_said_so(
    tmp_path: Any, start_node: StartNode
) -> None:
    from tests.conftest import require

    absent = RedisServer(require("redis-server"), tmp_path)  # never started
    _, server = await start_node(absent.url)
    async with aiohttp.ClientSession() as http:
        status, body, headers = await post(http, server.make_url("/publish"), [{"s": "A", "p": 1}])
        assert (status, body["error"], headers["Retry-After"]) == (503, "cluster_unavailable", "1")
        assert "nothing was published" in body["message"]
        ws = await http.ws_connect(server.make_url("/publish"))
        await ws.send_json({"op": "publish", "id": 1, "ticks": [{"s": "A", "p": 1}]})
        error = await ws.receive_json()
        assert (error["code"], error["id"], error["retry_after"]) == ("cluster_unavailable", 1, 1)
        await ws.close()
        async with http.get(server.make_url("/metrics")) as resp:
            metrics = await resp.text()
    for transport in ("http", "ws"):
        line = (
            f'ticker_publish_requests_total{{result="cluster_unavailable",transport="{transport}"}}'
        )
        assert f"{line} 1.0" in metrics


async def test_q_goes_on_after_redis_lost_its_data(
    redis_server: RedisServer, start_node: StartNode
) -> None:
    node, server = await start_node(redis_server.url)
    async with aiohttp.ClientSession() as http:
        url = server.make_url("/publish")
        assert (await post(http, url, [{"s": "A", "p": 1}, {"s": "A", "p": 2}]))[0] == 200
        await eventually(lambda: node.bus.known("A"))  # the cluster's universe has it
        ws = await http.ws_connect(server.make_url("/ws?symbols=A&mode=all"))
        assert [t["q"] for t in await ticks_until(ws, bool)] == [2]  # the snapshot
        for _ in range(2):
            assert (await post(http, url, [{"s": "A", "p": 1}, {"s": "A", "p": 2}]))[0] == 200
        got = await ticks_until(ws, lambda got: bool(got) and got[-1]["q"] == 6)
        assert [t["q"] for t in got] == [3, 4, 5, 6]

        redis_server.stop()  # no persistence: it comes back empty
        await eventually(lambda: not node.broker.ready)
        redis_server.start()
        await eventually(lambda: node.broker.ready)
        status, body, _ = await post(http, url, [{"s": "A", "p": 3}])
        assert (status, body["q"]) == (200, {"A": 7})  # from what the node had seen
        assert [(t["q"], t.get("g")) for t in await ticks_until(ws, bool)] == [(7, None)]
        await ws.close()


# -- two node processes ------------------------------------------------------------------


async def watch(http: aiohttp.ClientSession, port: int) -> aiohttp.ClientWebSocketResponse:
    """A mode-all "*" subscriber on the node at ``port``."""
    ws = await http.ws_connect(f"http://127.0.0.1:{port}/ws?symbols=*&mode=all")
    async with asyncio.timeout(5):
        while (await ws.receive()).json()["type"] != "subscribed":
            pass
    return ws


async def test_publishes_to_two_nodes_for_one_symbol_make_one_gap_free_q(
    redis_server: RedisServer,
) -> None:
    ports = [free_port(), free_port()]
    nodes = [
        await spawn("serve", "--feed", "none", "--publish", "--redis", redis_server.url,
                    "--redis-shards", "4", "--port", str(port))
        for port in ports
    ]  # fmt: skip
    http_url, ws_url = (f"http://127.0.0.1:{p}" for p in ports)
    batches, size = 20, 25
    try:
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(
                *(wait_ready(http, p, n) for p, n in zip(ports, nodes, strict=True))
            )
            watchers = [await watch(http, p) for p in ports]
            # A first tick through either node, seen on both: the channels are followed.
            assert (await post(http, f"{http_url}/publish", [{"s": "AAPL", "p": 1.0}]))[0] == 200
            for ws in watchers:
                assert [t["q"] for t in await ticks_until(ws, bool)] == [1]

            async def over_http() -> list[dict[str, int]]:
                """Node one, POST: AAPL alone, and AAPL with MSFT (two channels, one call)."""
                acks = []
                for b in range(batches):
                    ticks: list[Msg] = [
                        {"s": "AAPL", "p": 1000.0 + b * size + i} for i in range(size)
                    ]
                    if b % 2:
                        ticks[3:3] = [{"s": "MSFT", "p": float(b)}]
                    status, body, _ = await post(http, f"{http_url}/publish", ticks)
                    assert status == 200, body
                    acks.append(body["q"])
                    if b == batches // 2:  # a refused batch in the middle: all of it
                        bad: list[Msg] = [{"s": "AAPL", "p": 9999.0}, {"s": "AAPL", "p": "x"}]
                        assert (await post(http, f"{http_url}/publish", bad))[0] == 400
                return acks

            async def over_websocket() -> list[dict[str, int]]:
                """Node two, the publisher WebSocket."""
                acks = []
                async with Publisher(ws_url, batch=size) as pub:
                    for b in range(batches):
                        ticks = [{"s": "AAPL", "p": 5000.0 + b * size + i} for i in range(size)]
                        acks.append((await pub.publish(ticks)).q)
                return acks

            first, second = await asyncio.gather(over_http(), over_websocket())
            total = 1 + 2 * batches * size

            # Idempotency across nodes: a retry on the other node publishes nothing.
            key = {"Idempotency-Key": "retry-1"}
            once = await post(http, f"{http_url}/publish", [{"s": "AAPL", "p": 7.0}], **key)
            again = await post(http, f"{ws_url}/publish", [{"s": "AAPL", "p": 7.0}], **key)
            assert once[0] == again[0] == 200 and once[1] == again[1] == {
                "accepted": 1, "q": {"AAPL": total + 1}
            }  # fmt: skip
            assert again[2].get("Idempotent-Replayed") == "true"
            other = await post(http, f"{ws_url}/publish", [{"s": "AAPL", "p": 8.0}], **key)
            assert (other[0], other[1]["error"]) == (422, "idempotency_key_reused")

            def complete(got: list[Msg]) -> bool:
                return any(t["s"] == "AAPL" and t["q"] == total + 1 for t in got)

            seen = await asyncio.gather(*(ticks_until(ws, complete, 20) for ws in watchers))
            views = [[(t["s"], t["q"], t["p"]) for t in ticks] for ticks in seen]
            assert views[0] == views[1]  # identical, in the same order, on both nodes
            aapl = [(q, p) for s, q, p in views[0] if s == "AAPL"]
            assert [q for q, _ in aapl] == list(range(2, total + 2))  # one gap-free q
            sent = {1000.0 + i for i in range(batches * size)} | {
                5000.0 + i for i in range(batches * size)
            }
            assert sorted(p for _, p in aapl[:-1]) == sorted(sent)  # each once, none of the bad
            assert aapl[-1] == (total + 1, 7.0)
            msft = [q for s, q, _ in views[0] if s == "MSFT"]
            assert msft == list(range(1, batches // 2 + 1))
            assert not any("g" in t for ticks in seen for t in ticks)
            # Each publisher's acks rise; together they account for every q once.
            for acks in (first, second):
                qs = [a["AAPL"] for a in acks]
                assert qs == sorted(qs)
            assert max(a["AAPL"] for a in first + second) == total

            # Redis gone: a publish is refused, not queued, and says why.
            redis_server.stop()
            async with asyncio.timeout(10):
                while True:
                    async with http.get(f"{http_url}/readyz") as resp:
                        if resp.status == 503:
                            break
                    await asyncio.sleep(0.05)
            status, body, _ = await post(http, f"{http_url}/publish", [{"s": "AAPL", "p": 1.0}])
            assert (status, body["error"]) == (503, "cluster_unavailable")
            for ws in watchers:
                await ws.close()
    finally:
        for proc in nodes:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in nodes:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    for proc in nodes:
        log = (await proc.stderr.read()).decode() if proc.stderr else ""
        assert "Traceback" not in log, log
