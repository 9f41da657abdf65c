"""Recording a live server and replaying it: the round trips, and shutdown/kill safety."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from feeds.replay.adapter import ReplayFeed
from feeds.supervisor import FeedSupervisor
from tests.conftest import SYMBOLS, StartServer, next_of
from ticker.cli import main
from ticker.commands.record import Recording, stream_url
from ticker.recording.formats import load, open_writer
from ticker.recording.problems import Problems
from ticker.recording.rotating import RotatingRecorder
from ticker.recording.schedule import ReplayOptions
from ticker.server.app import create_app
from ticker.server.node import Node
from ticker.server.recorder import BusRecorder
from ticker.server.settings import Settings

DAY_US = 86_400_000_000


def batches(n: int, seed: int = 5) -> list[list[dict]]:
    rng = random.Random(seed)
    return [
        [
            {"s": rng.choice(SYMBOLS), "p": round(rng.uniform(10, 20), 2), "v": rng.randint(1, 9)}
            for _ in range(rng.randint(1, 40))
        ]
        for _ in range(n)
    ]


def per_symbol(ticks: list[dict]) -> dict[str, list[tuple[str, float, int]]]:
    out: dict[str, list[tuple[str, float, int]]] = {}
    for t in ticks:
        out.setdefault(t["s"], []).append((t["s"], t["p"], t["q"]))
    return out


async def collect(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict]:
    got: list[dict] = []
    while len(got) < count:
        got += (await next_of(ws, "ticks"))["ticks"]
    return got


async def test_record_a_live_server_then_replay_it_and_a_client_gets_the_same_ticks(
    start_server: StartServer, tmp_path: Path
) -> None:
    node, server = await start_server()
    path = tmp_path / "session.jsonl.gz"
    writer = open_writer(path)
    recording = Recording(stream_url(str(server.make_url("/ws")), "*"), writer)
    task = asyncio.create_task(recording.run())
    while not any(c.session.subscriptions for c in node.connections):  # the recorder is in
        await asyncio.sleep(0.01)
    sent = batches(60)
    total = sum(map(len, sent))
    for batch in sent:
        node.bus.publish(batch)
        await asyncio.sleep(0)
    while writer.ticks < total:
        await asyncio.sleep(0.01)
    recording.stop()
    await task
    writer.close()
    recorded = load([path], Problems()).ticks()
    assert len(recorded) == total

    replay_node, replay_server = await start_server(symbols=[])
    feed = ReplayFeed.from_paths([path], ReplayOptions(speed=0), Problems())
    replay_node.bus.add_symbols(feed.symbols())
    url = replay_server.make_url("/ws").with_query(mode="all", symbols="*")
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await next_of(ws, "subscribed")
        await FeedSupervisor(feed, replay_node.bus.publish).run()
        replayed = await collect(ws, total)
    assert len(replayed) == total
    assert per_symbol(replayed) == per_symbol(recorded)  # same (s, p, q), same order
    assert per_symbol(recorded) == per_symbol([t for b in sent for t in b])


async def test_serve_record_logs_everything_published_and_closes_at_shutdown(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    node = Node(Settings())
    node.bus.add_symbols(SYMBOLS)
    app = create_app(node)
    recorder = BusRecorder(node.bus, tmp_path / "log", max_bytes=2000)
    recorder.attach(app)
    server = await aiohttp_server(app)
    sent = batches(40, seed=9)
    url = server.make_url("/ws").with_query(mode="all", symbols="*")
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await next_of(ws, "subscribed")
        published = 0
        for batch in sent:
            node.bus.publish(batch)
            published += len(batch)
            async with asyncio.timeout(5):
                while recorder.log.ticks < published:  # one write per batch: rotation is exact
                    await asyncio.sleep(0.001)
        received = await collect(ws, published)
    await server.close()  # shutdown: feeds stop, then the recorder drains and closes
    files = sorted((tmp_path / "log").iterdir())
    assert len(files) > 1  # rotated by size
    assert all(f.name.startswith("ticks-") and f.name.endswith(".jsonl.gz") for f in files)
    problems = Problems()
    logged = load([tmp_path / "log"], problems).ticks()
    assert problems.warnings == []  # every file closed cleanly
    assert per_symbol(logged) == per_symbol(received)


def test_rotating_recorder_splits_days_and_never_reuses_a_file(tmp_path: Path) -> None:
    midnight = 20_000 * DAY_US  # 2024-10-04T00:00Z
    log = RotatingRecorder(tmp_path)
    log.write(
        [
            {"s": "A", "p": 1.0, "t": midnight - 2, "q": 1},
            {"s": "A", "p": 2.0, "t": midnight, "q": 2},
        ]
    )
    log.close()
    log = RotatingRecorder(tmp_path)  # a restart the same day: a new file
    log.write([{"s": "A", "p": 3.0, "t": midnight + 5, "q": 3}])
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ticks-2024-10-03-000.jsonl.gz",
        "ticks-2024-10-04-000.jsonl.gz",
        "ticks-2024-10-04-001.jsonl.gz",
    ]
    assert load([tmp_path], Problems()).p.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="suffix"):
        RotatingRecorder(tmp_path, suffix=".npz")


# -- the record command as a process: signals and kill -9 -----------------------------


async def _record_process(url: str, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ticker",
        "record",
        url,
        "--out",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def _publish_until_written(node: Node, out: Path, proc: asyncio.subprocess.Process) -> None:
    """Publish until the recorder has flushed a few KiB: it is running and writing."""
    async with asyncio.timeout(20):
        for seed in range(10**6):  # the timeout ends a stuck recorder
            if _size(out) >= 2000:
                return
            assert proc.returncode is None
            node.bus.publish(batches(1, seed=seed)[0])
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
async def test_record_process_stopped_by_a_signal_leaves_a_readable_file(
    start_server: StartServer, tmp_path: Path, sig: signal.Signals
) -> None:
    node, server = await start_server()
    out = tmp_path / "rec.jsonl.gz"
    proc = await _record_process(str(server.make_url("/ws")), out)
    await _publish_until_written(node, out, proc)
    proc.send_signal(sig)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    problems = Problems()
    table = load([out], problems)
    assert len(table) > 0
    if sig == signal.SIGKILL:  # no chance to close: the gzip stream has no end marker
        assert len(problems.warnings) == 1 and "torn tail" in problems.warnings[0]
    else:  # flushed and closed
        assert proc.returncode == 0, err
        assert b"recorded " in err and b"Traceback" not in err
        assert problems.warnings == []


def test_record_url_and_bad_arguments(tmp_path: Path) -> None:
    assert stream_url("ws://h:1/ws", "*") == "ws://h:1/ws?mode=all&symbols=*"
    assert stream_url("ws://h:1/ws?symbols=A,B", "*") == "ws://h:1/ws?symbols=A,B&mode=all"
    with pytest.raises(ValueError, match="ws://"):
        stream_url("ftp://h/ws", "*")


def test_record_cannot_connect_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rec.jsonl"
    assert main(["record", "ws://127.0.0.1:1/ws", "--out", str(out)]) == 1
    assert "ticker record: cannot connect to ws://127.0.0.1:1/ws" in capsys.readouterr().err
    assert not out.exists()  # nothing recorded: no empty file in the way of the next try
    assert main(["record", "ws://127.0.0.1:1/ws", "--out", str(out)]) == 1


async def test_record_stops_after_its_duration(start_server: StartServer, tmp_path: Path) -> None:
    node, server = await start_server()
    writer = open_writer(tmp_path / "rec.ticks")
    recording = Recording(stream_url(str(server.make_url("/ws")), "AAPL"), writer)
    loop = asyncio.get_running_loop()
    start = loop.time()
    node.bus.publish([{"s": "AAPL", "p": 1.0}])  # before: only in the snapshot, not recorded
    task = asyncio.create_task(recording.run(duration=0.3))
    while not any(c.session.subscriptions for c in node.connections):
        await asyncio.sleep(0.01)
    node.bus.publish([{"s": "AAPL", "p": 2.0}, {"s": "MSFT", "p": 3.0}])
    await task
    writer.close()
    assert loop.time() - start >= 0.3 and recording.close_reason is None
    assert load([tmp_path / "rec.ticks"], Problems()).ticks()[0]["p"] == 2.0
    assert writer.ticks == 1
