"""Candle topics over real sockets: history on subscribe, live updates, errors, every
transport, and bars equal to an independent aggregation of what a mode ``all`` client saw."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

import ticker.client
from feeds.replay.adapter import ReplayFeed
from feeds.sim.adapter import SimulatedFeed
from tests.bars import reference, same_bars
from tests.conftest import StartServer, frame, next_of
from ticker.client.state import CandleContinuity
from ticker.core.ticks import TickBatch, now_us
from ticker.core.tokens import TokenVerifier, mint
from ticker.recording.problems import Problems
from ticker.recording.rotating import DAY_US as DAY
from ticker.recording.rotating import RotatingRecorder
from ticker.recording.schedule import ReplayOptions

MINUTE = 60_000_000
WebSocket = aiohttp.ClientWebSocketResponse
DATA = Path(__file__).parent / "data"


def bar(ts: int, o: float, h: float, low: float, c: float, v: float, n: int, x: bool) -> dict:
    return {"s": "AAPL", "i": "1m", "ts": ts, "o": o, "h": h, "l": low, "c": c, "v": v, "n": n} | {
        "x": x
    }


async def test_history_on_subscribe_then_live_updates_without_a_gap_or_a_double(
    start_server: StartServer,
) -> None:
    node, server = await start_server(candle_update_s=3600)  # the test runs the passes
    assert node.candles is not None
    pump = node.candles.pump
    base = now_us() // MINUTE * MINUTE - 10 * MINUTE
    bus = node.bus
    bus.publish([{"s": "AAPL", "p": 10.0, "v": 1, "t": base + 5}])
    bus.publish([{"s": "AAPL", "p": 12.0, "v": 2, "t": base + MINUTE}])
    bus.publish([{"s": "AAPL", "p": 11.0, "t": base + 2 * MINUTE}])
    pump()
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await next_of(ws, "welcome")
        await ws.send_json({"op": "subscribe", "symbols": ["AAPL@1m"], "history": 10, "id": 1})
        assert await frame(ws) == {"type": "subscribed", "id": 1, "symbols": ["AAPL@1m"]}
        assert await frame(ws) == {
            "type": "candles",
            "candles": [
                bar(base, 10.0, 10.0, 10.0, 10.0, 1.0, 1, True),
                bar(base + MINUTE, 12.0, 12.0, 12.0, 12.0, 2.0, 1, True),
                bar(base + 2 * MINUTE, 11.0, 11.0, 11.0, 11.0, 0.0, 1, False),
            ],
        }
        bus.publish([{"s": "AAPL", "p": 13.0, "v": 5, "t": base + 2 * MINUTE + 1}])
        bus.publish([{"s": "AAPL", "p": 9.0, "v": 1, "t": base + 2 * MINUTE + 2}])
        bus.publish([{"s": "MSFT", "p": 1.0, "t": base + 2 * MINUTE + 2}])  # not followed
        pump()  # two ticks, one update: the open bar is conflated per pass
        assert await frame(ws) == {
            "type": "candles",
            "candles": [bar(base + 2 * MINUTE, 11.0, 13.0, 9.0, 9.0, 6.0, 3, False)],
        }
        pump()  # nothing changed: nothing sent
        bus.publish([{"s": "AAPL", "p": 14.0, "t": base + 3 * MINUTE}])
        pump()
        assert await frame(ws) == {
            "type": "candles",
            "candles": [
                bar(base + 2 * MINUTE, 11.0, 13.0, 9.0, 9.0, 6.0, 3, True),
                bar(base + 3 * MINUTE, 14.0, 14.0, 14.0, 14.0, 0.0, 1, False),
            ],
        }
        await ws.send_json({"op": "unsubscribe", "symbols": ["AAPL@1m"], "id": 2})
        assert await frame(ws) == {"type": "unsubscribed", "id": 2, "symbols": []}
        bus.publish([{"s": "AAPL", "p": 15.0, "t": base + 3 * MINUTE + 1}])
        pump()
        await ws.send_json({"op": "ping", "id": 3})
        assert (await frame(ws))["type"] == "pong"  # and no candles before it


async def test_a_quiet_symbols_bar_closes_on_time(start_server: StartServer) -> None:
    node, server = await start_server(candle_update_s=0.05)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await next_of(ws, "welcome")
        await ws.send_json({"op": "subscribe", "symbols": ["AAPL@1s"]})
        await next_of(ws, "candles")
        t = now_us()
        node.bus.publish([{"s": "AAPL", "p": 1.0, "t": t}])
        end = t // 1_000_000 * 1_000_000 + 1_000_000
        while True:
            candles = (await next_of(ws, "candles", timeout=3))["candles"]
            if candles[-1]["x"]:
                break
        assert candles[-1]["ts"] == end - 1_000_000
        assert now_us() - end < 400_000  # within a pass or so of the second's end


async def test_bad_candle_topics_are_clear_errors(start_server: StartServer) -> None:
    _, server = await start_server()
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await next_of(ws, "welcome")
        await ws.send_json({"op": "subscribe", "symbols": ["AAPL@2m", "MSFT"], "id": 1})
        error = await frame(ws)
        assert error["code"] == "bad_request" and error["id"] == 1
        assert "1s 5s 15s 1m 5m 15m 1h 4h 1d" in error["message"]
        await ws.send_json({"op": "subscribe", "symbols": ["AAPL@1m"], "history": 1441})
        error = await frame(ws)
        assert error["code"] == "bad_request" and "at most 1440 bars" in error["message"]
        await ws.send_json({"op": "subscribe", "symbols": ["AAPL@1m"], "history": "all"})
        assert (await frame(ws))["code"] == "bad_request"
        await ws.send_json({"op": "subscribe", "symbols": ["NOPE@1m", "AAPL@1h"]})
        error = await frame(ws)
        assert error["code"] == "unknown_symbol" and error["symbols"] == ["NOPE@1m"]
        assert (await frame(ws))["symbols"] == ["AAPL@1h"]


async def test_candles_over_long_polling_and_sse(start_server: StartServer) -> None:
    node, server = await start_server(candle_update_s=0.05, poll_hold_s=0.2)
    node.bus.publish([{"s": "AAPL", "p": 2.0, "t": now_us()}])
    url = server.make_url
    async with aiohttp.ClientSession() as http:
        async with http.get(url("/poll?symbols=AAPL@1m")) as resp:
            first = await resp.json()
        types = [m["type"] for m in first["messages"]]
        assert types[:2] == ["welcome", "subscribed"]
        messages = first["messages"][2:]
        cursor = first["cursor"]
        while not messages:
            async with http.get(url(f"/poll?cursor={cursor}")) as resp:
                answer = await resp.json()
            messages, cursor = answer["messages"], answer["cursor"]
        assert messages[0]["type"] == "candles"
        assert [(b["s"], b["i"], b["c"]) for b in messages[0]["candles"]] == [("AAPL", "1m", 2.0)]
        async with http.get(url("/sse?symbols=MSFT@5m")) as resp:
            async with asyncio.timeout(5):
                lines = []
                async for line in resp.content:
                    lines.append(line.decode())
                    if lines[-1].startswith("data:") and "candles" in lines[-1]:
                        break
        assert "event: candles\n" in lines


@contextlib.asynccontextmanager
async def two_clients(server: TestServer) -> AsyncIterator[tuple[WebSocket, WebSocket]]:
    """A mode ``all`` client and a candle client, both past their welcome."""
    url = server.make_url
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url("/ws?mode=all")) as everything,
        http.ws_connect(url("/ws")) as bars,
    ):
        await next_of(everything, "welcome")
        await next_of(bars, "welcome")
        yield everything, bars


async def collect_all(
    ws: aiohttp.ClientWebSocketResponse, ticks: list[dict[str, Any]], done: Callable[[], bool]
) -> None:
    """Read a mode ``all`` client's ticks until ``done()``."""
    while not done():
        got = await frame(ws)
        assert got["type"] != "snapshot"  # every tick recovered from q 0
        if got["type"] == "ticks":
            ticks += got["ticks"]


async def subscribe_everything(ws: aiohttp.ClientWebSocketResponse, node: Any) -> None:
    """Subscribe to "*" from q 0: every tick published so far, then every tick."""
    since = dict.fromkeys(node.bus.symbols(), 0)
    await ws.send_json(
        {"op": "subscribe", "symbols": ["*"], "since": since, "epoch": node.bus.epoch}
    )
    assert all((await next_of(ws, "subscribed"))["recovered"].values())


async def candle_history(
    ws: aiohttp.ClientWebSocketResponse, topics: list[str], history: int = 1440
) -> dict[str, list[dict]]:
    await ws.send_json({"op": "subscribe", "symbols": topics, "history": history})
    await next_of(ws, "subscribed")
    got = {}
    for _ in topics:
        candles = (await next_of(ws, "candles"))["candles"]
        if candles:
            got[f"{candles[0]['s']}@{candles[0]['i']}"] = candles
    return got


def as_rows(candles: list[dict]) -> list[tuple]:
    return [(c["ts"], c["o"], c["h"], c["l"], c["c"], c["v"], c["n"]) for c in candles]


class StoppingSim(SimulatedFeed):
    """The simulated feed, ended by the test (an ended feed is not restarted)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop = asyncio.Event()

    async def stream(self) -> AsyncGenerator[TickBatch, None]:
        async for batch in super().stream():
            if self.stop.is_set():
                return
            yield batch


async def drain_candles(ws: aiohttp.ClientWebSocketResponse, quiet_s: float) -> list[dict]:
    """Every bar sent until none came for ``quiet_s``."""
    bars: list[dict] = []
    while True:
        try:
            bars += (await next_of(ws, "candles", timeout=quiet_s))["candles"]
        except TimeoutError:
            return bars


async def test_bars_equal_the_aggregation_of_the_ticks_a_mode_all_client_saw_on_a_sim(
    start_server: StartServer,
) -> None:
    feed = StoppingSim(3, 400, seed=11)
    node, server = await start_server((feed,), symbols=[], candle_update_s=0.05, history=20_000)
    topics = [f"{s}@{i}" for s in feed.symbols() for i in ("1s", "1m")]
    async with two_clients(server) as (everything, bars):
        await subscribe_everything(everything, node)
        await asyncio.sleep(2.2)
        history = await candle_history(bars, topics)
        await asyncio.sleep(1.5)
        feed.stop.set()
        served = [bar for topic in topics for bar in history[topic]]
        served += await drain_candles(bars, quiet_s=0.5)
        ticks: list[dict] = []
        await collect_all(everything, ticks, lambda: len(ticks) == node.bus.published)
    for topic in topics:
        symbol, interval = topic.split("@")
        mine = [c for c in served if c["s"] == symbol and c["i"] == interval]
        closed = [c["ts"] for c in mine if c["x"]]
        assert len(set(closed)) == len(closed)  # each closed bar sent once
        final = {c["ts"]: c for c in mine}  # the last version of each bar
        first = min(final)
        expected = [row for row in reference(ticks, interval)[symbol] if row[0] >= first]
        assert same_bars(as_rows(sorted(final.values(), key=lambda c: c["ts"])), expected), topic
        assert len(expected) > (3 if interval == "1s" else 0)


async def replay_equals_aggregation(start_server: StartServer, path: Path) -> None:
    feed = ReplayFeed.from_paths([path], ReplayOptions(speed=0, keep_time=True), Problems())
    node, server = await start_server(
        (feed,),
        symbols=[],
        candle_update_s=0.05,
        history=20_000,
        limits={"queue_bytes": 8 << 20},  # the whole recording fits in one resume
    )
    async with two_clients(server) as (everything, bars):
        for _ in range(200):  # the whole recording is published, fast
            if node.bus.published == len(feed.table):
                break
            await asyncio.sleep(0.05)
        await subscribe_everything(everything, node)
        ticks: list[dict] = []
        await collect_all(everything, ticks, lambda: len(ticks) == len(feed.table))
        await asyncio.sleep(0.2)  # a pass aggregates what was published
        topics = [f"{s}@{i}" for s in feed.symbols() for i in ("1s", "1m")]
        history = await candle_history(bars, topics)
    for topic in topics:
        symbol, interval = topic.split("@")
        expected = reference(ticks, interval)[symbol][-1441:]
        assert same_bars(as_rows(history[topic]), expected), topic
        assert all(c["x"] for c in history[topic][:-1])  # the last: closed once its time passed


async def test_bars_of_a_keep_time_replay_of_lobster_aapl_are_the_recorded_days(
    start_server: StartServer,
) -> None:
    await replay_equals_aggregation(
        start_server, DATA / "AAPL_2012-06-21_34200000_57600000_message_10.csv"
    )


async def test_bars_of_a_keep_time_replay_of_tardis_btcusdt(start_server: StartServer) -> None:
    await replay_equals_aggregation(start_server, DATA / "tardis_trades.csv")


async def test_get_candles_equals_the_websocket_history_as_json_and_csv(
    start_server: StartServer,
) -> None:
    node, server = await start_server(candle_update_s=3600, candle_history=50)
    base = now_us() // MINUTE * MINUTE - 10 * MINUTE
    for i in range(5):
        node.bus.publish([{"s": "AAPL", "p": 10.0 + i, "v": i, "t": base + i * MINUTE}])
    url = server.make_url
    async with aiohttp.ClientSession() as http, http.ws_connect(url("/ws")) as ws:
        await next_of(ws, "welcome")
        await ws.send_json({"op": "subscribe", "symbols": ["AAPL@1m"], "history": 3})
        ws_bars = (await next_of(ws, "candles"))["candles"]
        async with http.get(url("/candles?symbol=AAPL&interval=1m&limit=3")) as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            assert await resp.json() == {"type": "candles", "candles": ws_bars}
        assert [b["ts"] for b in ws_bars] == [base + i * MINUTE for i in (1, 2, 3, 4)]
        end = base + 3 * MINUTE
        async with http.get(url(f"/candles?symbol=AAPL&interval=1m&end={end}&format=csv")) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
            lines = (await resp.text()).splitlines()
        assert lines == [
            "ts,o,h,l,c,v,n,x",
            *(
                f"{base + i * MINUTE},{10.0 + i},{10.0 + i},{10.0 + i},{10.0 + i},{i}.0,1,true"
                for i in range(3)
            ),
        ]
        for query, needle in [
            ("symbol=NOPE&interval=1m", "symbol must be a symbol of this server"),
            ("symbol=AAPL&interval=2m", "interval must be one of 1s 5s 15s 1m 5m 15m 1h 4h 1d"),
            ("symbol=AAPL&interval=1m&limit=51", "limit must be a whole number from 1 to 50"),
            ("symbol=AAPL&interval=1m&limit=x", "limit must be"),
            ("symbol=AAPL&interval=1m&end=soon", "end must be microseconds"),
            ("symbol=AAPL&interval=1m&end=99999999999999999999", "end must be microseconds"),
            ("symbol=AAPL&interval=1m&end=2012-06-21T09:30:00Z&limit=1", None),
            ("symbol=AAPL&interval=1m&format=xml", "format must be json or csv"),
        ]:
            async with http.get(url(f"/candles?{query}")) as resp:
                body = await resp.json()
                if needle is None:  # valid: an ISO time, before every bar
                    assert resp.status == 200 and body["candles"] == [], query
                    continue
                assert resp.status == 400 and body["code"] == "bad_request", query
                assert needle in body["message"], (query, body)


async def test_get_candles_is_entitled_like_the_websocket(start_server: StartServer) -> None:
    secret = "0123456789abcdef0123456789abcdef"
    _node, server = await start_server(auth=TokenVerifier.from_secret(secret))
    aapl = mint(secret.encode(), sub="a", symbols=["AAPL"], ttl_s=60)
    delayed = mint(secret.encode(), sub="d", symbols=["*"], ttl_s=60, delay_s=60)
    url = server.make_url
    async with aiohttp.ClientSession() as http:
        for token, symbol, status in [
            (None, "AAPL", 401),
            (aapl, "AAPL", 200),
            (aapl, "MSFT", 403),
            (delayed, "AAPL", 403),
        ]:
            query = f"/candles?symbol={symbol}&interval=1m" + (f"&token={token}" if token else "")
            async with http.get(url(query)) as resp:
                assert resp.status == status, (token, symbol)


async def test_a_restart_rebuilds_todays_bars_from_the_recording_before_serving(
    start_server: StartServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = now_us()
    start = max(now // DAY * DAY, now - 30 * MINUTE)  # today, UTC
    ticks = [
        {"s": "AAPL", "p": 100.0 + i % 7, "v": i % 3, "t": start + i * 1_700_000, "q": i + 1}
        for i in range((now - start) // 1_700_000)
    ]
    if len(ticks) < 10:
        pytest.skip("just after midnight UTC: today has no recording to speak of yet")
    recorder = RotatingRecorder(tmp_path, max_bytes=2_000)  # several files
    recorder.write([{"s": "AAPL", "p": 1.0, "t": start - DAY, "q": 1}])  # yesterday's
    for at in range(0, len(ticks), 100):
        recorder.write(ticks[at : at + 100])
    recorder.close()
    caplog.set_level(logging.INFO, "ticker.candles")
    _, server = await start_server(record_dir=tmp_path)
    assert "rebuilding today's bars from" in caplog.text and "(file 2 of" in caplog.text
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await next_of(ws, "welcome")
        history = await candle_history(ws, ["AAPL@1m", "AAPL@1s"])
    for interval in ("1m", "1s"):
        expected = reference(ticks, interval)["AAPL"][-1441:]
        assert same_bars(as_rows(history[f"AAPL@{interval}"]), expected), interval


async def test_the_python_client_gives_typed_candles_history_first_each_closed_bar_once(
    start_server: StartServer,
) -> None:
    node, server = await start_server(candle_update_s=0.05)
    base = now_us() // MINUTE * MINUTE - 5 * MINUTE
    for i in range(3):
        node.bus.publish([{"s": "AAPL", "p": 1.0 + i, "v": 1, "t": base + i * MINUTE}])
    url = f"ws://127.0.0.1:{server.port}/ws"
    async with ticker.client.connect(url, ["AAPL@1m", "AAPL"], history=10) as feed:
        got: list[ticker.client.Candle] = []
        async with asyncio.timeout(5):
            async for candle in feed.candles():
                got.append(candle)
                if len(got) == 3:
                    break
        assert [(c.start_us, c.close, c.closed) for c in got] == [
            (base, 1.0, True),
            (base + MINUTE, 2.0, True),
            (base + 2 * MINUTE, 3.0, False),
        ]
        assert got[0].topic == "AAPL@1m" and got[0].volume == 1.0 and got[0].count == 1


def test_a_resubscribe_does_not_hand_a_closed_bar_on_twice() -> None:
    continuity = CandleContinuity()
    bar = {"s": "A", "i": "1m", "ts": 0, "o": 1, "h": 1, "l": 1, "c": 1, "v": 0, "n": 1}
    assert continuity.accept(bar | {"x": True}) is not None
    assert continuity.accept(bar | {"x": True}) is None  # history again after a reconnect
    assert continuity.accept(bar | {"x": False}) is None
    assert continuity.accept(bar | {"ts": 60, "x": False}) is not None
    assert continuity.accept(bar | {"ts": 60, "x": False}) is not None  # open bars repeat
