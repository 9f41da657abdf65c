"""Metrics: the histogram arithmetic, and counters that agree with what clients counted."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest

from feeds.replay.adapter import ReplayFeed
from feeds.supervisor import FeedSupervisor
from tests.conftest import StartServer, frame
from tests.rawws import RawWebSocket
from tests.scrape import scrape, value
from ticker.core.mailbox import ConflatingMailbox, Delivery, QueueMailbox
from ticker.core.publish import PublishLimits
from ticker.core.ticks import Tick, TickBatch
from ticker.recording.table import TickTable
from ticker.server.app import create_app
from ticker.server.node import Node
from ticker.server.settings import Settings
from ticker.server.stats import Buckets, Stats

# -- pure parts -----------------------------------------------------------------------------


def test_buckets_put_each_value_in_the_first_bucket_that_holds_it() -> None:
    buckets = Buckets([1, 2, 5])
    for v in (0.5, 1, 1.5, 5, 7):
        buckets.observe(v)
    assert buckets.counts == [2, 1, 1, 1]  # le is inclusive, as in Prometheus
    assert buckets.count == 5 and buckets.sum == 15
    assert buckets.cumulative() == [("1.0", 2), ("2.0", 3), ("5.0", 4), ("+Inf", 5)]
    micro = Buckets([100, 25_000])
    micro.observe(30)
    assert micro.cumulative(1e6) == [("0.0001", 1), ("0.025", 1), ("+Inf", 1)]  # exact labels


def test_frames_of_a_pass_are_observed_at_its_end() -> None:
    now = [5_000]
    stats = Stats(clock_us=lambda: now[0])
    traffic = stats.transport("ws")
    assert traffic.handed is not None and traffic.latency_us is not None
    traffic.handed += [1_000, 1_000, 4_900, 6_000]  # the last one from a clock ahead of ours
    stats.settle()
    assert traffic.handed == []
    assert traffic.latency_us.count == 4
    assert traffic.latency_us.sum == 4_000 + 4_000 + 100 + 0
    assert traffic.latency_us.cumulative(1e6)[:2] == [("0.0001", 2), ("0.00025", 2)]
    assert Stats(metrics=False).transport("ws").handed is None  # nothing to append to


def test_mailboxes_know_since_when_their_oldest_news_waits() -> None:
    def batch(symbol: str, t: int) -> Delivery:
        return Delivery({symbol: b"x"}, {symbol: 1}, {symbol: b"x"}, t)

    queue = QueueMailbox(1 << 20)
    queue.follows = frozenset({"A", "B"})
    queue.offer(batch("A", 100))
    queue.offer(batch("B", 200))
    assert queue.oldest_t == 100
    queue.drain(max_bytes=2)  # the first batch alone
    assert queue.oldest_t == 200
    queue.discard(["B"])
    assert queue.oldest_t == 0 and not len(queue)
    queue.offer(batch("A", 300))
    queue.clear()
    assert queue.oldest_t == 0

    conflating = ConflatingMailbox()
    conflating.follows = frozenset({"A", "B"})
    conflating.offer(batch("A", 100))
    conflating.offer(batch("A", 200))  # replaces A's tick; the client has waited since 100
    assert conflating.oldest_t == 100
    conflating.drain()
    conflating.offer(batch("B", 300))
    assert conflating.oldest_t == 300


def test_buckets_refuse_bounds_that_do_not_increase() -> None:
    with pytest.raises(ValueError, match="increase"):
        Buckets([1, 1, 2])


async def test_feed_age_counts_from_the_start_until_the_first_tick() -> None:
    now = [100.0]
    sup = FeedSupervisor(OneTick(), lambda batch: None, clock=lambda: now[0])
    assert sup.tick_age() is None  # not running: no age to report
    sup.adapter.started = asyncio.Event()
    task = asyncio.create_task(sup.run())
    await sup.adapter.started.wait()
    now[0] = 103.0
    assert sup.tick_age() == 3.0  # no tick yet: as stale as it has been running
    sup.adapter.go.set()
    while not sup.ready:
        await asyncio.sleep(0)
    now[0] = 110.0
    assert sup.tick_age() == 7.0
    task.cancel()


class OneTick:
    name = "one"

    def __init__(self) -> None:
        self.started: asyncio.Event | None = None
        self.go = asyncio.Event()

    def symbols(self) -> list[str]:
        return ["AAPL"]

    async def stream(self) -> AsyncIterator[TickBatch]:
        assert self.started is not None
        self.started.set()
        await self.go.wait()
        yield [{"s": "AAPL", "p": 1.0}]
        await asyncio.Event().wait()


# -- a live node ---------------------------------------------------------------------------


def replay_of_four_ticks() -> ReplayFeed:
    """A real replay, one tick a second: after its first tick it is a quarter done."""
    t0 = 1_700_000_000_000_000
    ticks: list[Tick] = [{"s": "AAPL", "p": 100.0 + i, "t": t0 + i * 1_000_000} for i in range(4)]
    return ReplayFeed(TickTable.from_ticks(ticks))


async def test_feeds_export_age_restarts_and_replay_progress(start_server: StartServer) -> None:
    replay = replay_of_four_ticks()
    node, server = await start_server(feeds=(replay, OneTickForever()))
    async with asyncio.timeout(5):
        while not node.ready:
            await asyncio.sleep(0.01)
    _, samples = await scrape(server.make_url("/metrics"))
    for feed in ("replay", "plain"):
        assert 0 <= value(samples, "ticker_feed_last_tick_age_seconds", feed=feed) < 5
        assert value(samples, "ticker_feed_restarts_total", feed=feed) == 0
        assert value(samples, "ticker_ticks_published_total", feed=feed) >= 1
    assert value(samples, "ticker_feed_replay_progress_ratio", feed="replay") == 0.25
    assert value(samples, "ticker_feed_replay_position_seconds", feed="replay") == 1_700_000_000
    assert not [
        k for k in samples if k[0].startswith("ticker_feed_replay") and ("feed", "plain") in k[1]
    ]


class OneTickForever:
    name = "plain"

    def symbols(self) -> list[str]:
        return ["MSFT"]

    async def stream(self) -> AsyncIterator[TickBatch]:
        yield [{"s": "MSFT", "p": 1.0}]
        await asyncio.Event().wait()


async def test_event_loop_lag_is_seen_by_the_probe(start_server: StartServer) -> None:
    _, server = await start_server(loop_lag_interval_s=0.01)
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # block the loop, as a slow operation would  # noqa: ASYNC251
    await asyncio.sleep(0.05)
    _, samples = await scrape(server.make_url("/metrics"))
    count = value(samples, "ticker_event_loop_lag_seconds_count")
    assert count >= 2
    assert value(samples, "ticker_event_loop_lag_seconds_bucket", le="0.1") < count  # the 0.2 s
    assert value(samples, "ticker_event_loop_lag_seconds_sum") >= 0.15


async def test_metrics_port_serves_metrics_instead_of_the_main_port(
    start_server: StartServer,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, server = await start_server(metrics_port=port)
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/metrics")) as resp:
        assert resp.status == 404  # not on the public port
    _, samples = await scrape(f"http://127.0.0.1:{port}/metrics")
    assert value(samples, "ticker_connections", transport="ws") == 0


async def test_metrics_can_be_switched_off(start_server: StartServer) -> None:
    node, server = await start_server(metrics=False)
    node.bus.publish([{"s": "AAPL", "p": 1.0}])
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/metrics")) as resp:
            assert resp.status == 404
        async with http.ws_connect(server.make_url("/ws?symbols=AAPL")) as ws:
            await frame(ws)
            node.bus.publish([{"s": "AAPL", "p": 2.0}])
            while (await frame(ws))["type"] != "ticks":
                pass
    assert node.stats.traffic["ws"].ticks == 1  # plain counts still run (logs use them)
    assert node.stats.traffic["ws"].latency_us is None
    assert node.stats.loop_lag.count == 0


# -- the counters tell the truth -------------------------------------------------------------


@dataclass
class Seen:
    """What one test client received, counted the way the server should have."""

    frames: int = 0
    tick_frames: int = 0
    ticks: int = 0
    wire_bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    close_code: int | None = None

    def text(self, payload: bytes) -> None:
        n = len(payload)
        self.frames += 1
        self.wire_bytes += n + (2 if n < 126 else 4 if n < 65536 else 10)  # + frame header
        msg = orjson.loads(payload)
        if msg["type"] == "ticks":
            self.tick_frames += 1
            self.ticks += len(msg["ticks"])
            self.last.update({t["s"]: t["p"] for t in msg["ticks"]})
        elif msg["type"] == "error":
            self.errors[msg["code"]] = self.errors.get(msg["code"], 0) + 1


async def read_all(ws: aiohttp.ClientWebSocketResponse, seen: Seen) -> None:
    async for msg in ws:
        if msg.type is aiohttp.WSMsgType.TEXT:
            seen.text(msg.data.encode())


async def read_raw(raw: RawWebSocket, seen: Seen) -> None:
    while True:
        opcode, payload = await raw.frame()
        if opcode == 1:
            seen.text(payload)
        elif opcode == 8:
            seen.close_code = raw.close_code
            raw.send(payload[:2], opcode=8)  # answer the close, as a client does
            return


def batch(i: int) -> list[Tick]:
    """60 ticks: AAPL three times (two conflated at once), the rest spread over the others."""
    others = ["MSFT", "GOOGL", "AMZN", "NVDA"]
    ticks: list[Tick] = [{"s": "AAPL", "p": 100.0 + i + k / 10} for k in range(3)]
    return ticks + [{"s": others[k % 4], "p": 200.0 + i + k / 100} for k in range(57)]


async def test_counters_match_what_the_clients_counted(start_server: StartServer) -> None:
    node, server = await start_server(limits={"queue_bytes": 64 * 1024, "ops_per_s": 5})
    url = server.make_url
    seen = {name: Seen() for name in ("conflate", "all", "limited", "stalled")}
    async with aiohttp.ClientSession() as http:
        async with http.get(url("/ws?mode=bogus")) as resp:
            assert resp.status == 400
        conflating = await http.ws_connect(url("/ws?symbols=AAPL,MSFT"))
        everything = await http.ws_connect(url("/ws?symbols=*&mode=all"))
        limited = await http.ws_connect(url("/ws"))
        stalled = await RawWebSocket.connect(server.host, server.port, "/ws?symbols=*&mode=all")
        _, welcome = await stalled.frame()  # then it stops reading
        seen["stalled"].text(welcome)
        readers = [
            asyncio.create_task(read_all(conflating, seen["conflate"])),
            asyncio.create_task(read_all(everything, seen["all"])),
            asyncio.create_task(read_all(limited, seen["limited"])),
        ]
        async with asyncio.timeout(5):
            while len(node.connections) < 4 or seen["all"].frames < 2:
                await asyncio.sleep(0.01)
        (slow,) = [c for c in node.connections if c.session.id == orjson.loads(welcome)["session"]]
        assert slow.transport is not None
        slow.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
        )

        offered_to_conflating = 0
        for i in range(60):
            ticks = batch(i)
            offered_to_conflating += sum(t["s"] in ("AAPL", "MSFT") for t in ticks)
            node.bus.publish(ticks)
            await asyncio.sleep(0.002)
        final = {t["s"]: t["p"] for t in batch(59) if t["s"] in ("AAPL", "MSFT")}
        await conflating.send_json({"op": "subscribe", "symbols": ["NOPE"]})
        for _ in range(7):  # 5 ops/s: 5 pongs, 2 rate_limited errors
            await limited.send_json({"op": "ping"})
        async with asyncio.timeout(5):
            while seen["limited"].frames < 1 + 7:
                await asyncio.sleep(0.01)
        for _ in range(30):  # and on: 4029
            await limited.send_json({"op": "ping"})

        async with asyncio.timeout(10):
            while seen["conflate"].last != final or seen["all"].ticks < 60 * 60:
                await asyncio.sleep(0.01)
        await conflating.close()  # 1000
        await everything.send_str(orjson.dumps({"op": "ping", "pad": "x" * 70_000}).decode())
        async with asyncio.timeout(10):
            await read_raw(stalled, seen["stalled"])  # its backlog, then 4008
            await asyncio.gather(*readers)
            while node.connections:
                await asyncio.sleep(0.01)
        stalled.close()
        for name, ws in (("conflate", conflating), ("all", everything), ("limited", limited)):
            seen[name].close_code = ws.close_code

    assert {name: s.close_code for name, s in seen.items()} == {
        "conflate": 1000,
        "all": 1009,
        "limited": 4029,
        "stalled": 4008,
    }
    _, samples = await scrape(url("/metrics"))
    ws = {"transport": "ws"}
    clients = seen.values()
    assert value(samples, "ticker_ticks_delivered_total", **ws) == sum(s.ticks for s in clients)
    assert value(samples, "ticker_frames_sent_total", **ws) == sum(s.frames for s in clients)
    assert value(samples, "ticker_sent_bytes_total", **ws) == sum(s.wire_bytes for s in clients)
    frames_of_ticks = sum(s.tick_frames for s in clients)
    assert value(samples, "ticker_tick_latency_seconds_count", **ws) == frames_of_ticks
    assert value(samples, "ticker_tick_latency_seconds_bucket", le="10.0", **ws) == frames_of_ticks
    for code in ("1000", "1009", "4029", "4008"):
        assert value(samples, "ticker_connections_closed_total", code=code, **ws) == 1
    for code in ("1001", "1008", "1011", "other"):
        assert value(samples, "ticker_connections_closed_total", code=code, **ws) == 0
    assert value(samples, "ticker_connections_opened_total", **ws) == 4
    assert value(samples, "ticker_connections", **ws) == 0
    assert value(samples, "ticker_slow_consumer_closes_total", mode="all", **ws) == 1
    assert value(samples, "ticker_slow_consumer_closes_total", mode="conflate", **ws) == 0
    assert value(samples, "ticker_handshake_rejections_total", reason="bad_request", **ws) == 1
    assert seen["conflate"].errors == {"unknown_symbol": 1}
    assert value(samples, "ticker_client_errors_total", code="unknown_symbol") == 1
    # rate_limited errors queued right before the 4029 close are counted but never sent
    assert seen["limited"].errors == {"rate_limited": 2}
    assert value(samples, "ticker_client_errors_total", code="rate_limited") >= 2
    # every tick offered to the conflating client was either delivered or conflated
    conflated = value(samples, "ticker_ticks_conflated_total")
    assert conflated == offered_to_conflating - seen["conflate"].ticks
    assert conflated >= 60 * 2  # AAPL's three ticks per batch
    assert value(samples, "ticker_subscriptions") == 0


def test_operations_doc_describes_every_metric_and_no_other() -> None:
    node = Node(Settings(publish=PublishLimits()), (replay_of_four_ticks(),))
    create_app(node)  # registers the publishing metrics too
    exported = {
        f"{family.name}_total" if family.type == "counter" else family.name
        for family in node.metrics.registry.collect()
        if family.name.startswith("ticker_")
    }
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`(ticker_[a-z_]+)`", doc))
    assert exported - documented == set(), "metrics missing from docs/operations.md"
    assert documented - exported == set(), "docs/operations.md names metrics that do not exist"
