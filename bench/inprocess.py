"""Scenario 4: the core alone, no sockets — bus + mailboxes + frame building on one core.

The same shape as the fan-out scenario (1 000 clients x 10 of 100 symbols, every tick to
100 clients), so the figure is the ceiling the sockets can only lower. Side by side, the
naive way (encode per subscriber, one frame per tick) measured the same way.

Also the replay loader: a columnar recording (a memory-mapped ``.ticks`` directory) played
at speed 0 into a bus, ticks per second from opening the file to the last publish (target
1 000 000, per CPU second), with the loader alone (no publish) and the bus alone (no
loader) beside it.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from feeds.replay.adapter import ReplayFeed
from ticker.core import protocol
from ticker.core.bus import Bus
from ticker.core.mailbox import QueueMailbox
from ticker.core.ticks import TickBatch
from ticker.recording.formats import load, open_writer
from ticker.recording.problems import Problems
from ticker.recording.schedule import ReplayOptions
from ticker.recording.table import TickTable

REPLAY_TICKS = 2_000_000
REPLAY_TARGET = 1_000_000

N_SYMBOLS = 100
N_CLIENTS = 1000
PER_CLIENT = 10
BATCH = 300  # ticks per feed batch (30 000 ticks/s at the sim feed's 100 batches/s)


def _batches(n: int, rng: random.Random) -> list[TickBatch]:
    names = [f"S{i:03d}" for i in range(N_SYMBOLS)]
    return [
        [
            {"s": rng.choice(names), "p": 100.0 + i, "b": 99.99, "a": 100.01, "v": 100}
            for i in range(BATCH)
        ]
        for _ in range(n)
    ]


def _subscriptions(rng: random.Random) -> list[list[str]]:
    names = [f"S{i:03d}" for i in range(N_SYMBOLS)]
    return [
        [names[(c * PER_CLIENT + k) % N_SYMBOLS] for k in range(PER_CLIENT)]
        for c in range(N_CLIENTS)
    ]


def run_ticker(seconds: float = 3.0) -> dict[str, float]:
    rng = random.Random(1)
    bus = Bus()
    boxes = [QueueMailbox(1 << 20) for _ in range(N_CLIENTS)]
    for box, symbols in zip(boxes, _subscriptions(rng), strict=True):
        bus.subscribe(box, symbols)
    batches = _batches(50, rng)
    delivered = frames = 0
    start = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for batch in batches:
            bus.publish([dict(t) for t in batch])  # fresh dicts: the bus stamps them
            for box in boxes:
                if len(box):
                    segments, count = box.drain()
                    protocol.ticks(segments)
                    delivered += count
                    frames += 1
    cpu = time.process_time() - start
    return {
        "deliveries_per_s": delivered / cpu,
        "us_per_delivery": cpu / delivered * 1e6,
        "ticks_per_frame": delivered / frames,
    }


def run_naive(seconds: float = 3.0) -> dict[str, float]:
    """Encode each tick for each subscriber and build one frame per tick (what a per-tick
    ``send_str`` loop does before it even reaches the socket)."""
    rng = random.Random(1)
    subscribers: dict[str, list[int]] = {}
    for client, symbols in enumerate(_subscriptions(rng)):
        for symbol in symbols:
            subscribers.setdefault(symbol, []).append(client)
    batches = _batches(50, rng)
    seq: dict[str, int] = {}
    delivered = 0
    start = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for batch in batches:
            for tick in batch:
                s = tick["s"]
                q = seq[s] = seq.get(s, 0) + 1
                full = {**tick, "t": 0, "q": q}
                for _client in subscribers[s]:
                    json.dumps({"type": "ticks", "ticks": [full]})
                    delivered += 1
    cpu = time.process_time() - start
    return {
        "deliveries_per_s": delivered / cpu,
        "us_per_delivery": cpu / delivered * 1e6,
        "ticks_per_frame": 1.0,
    }


def _recording(folder: Path, n: int = REPLAY_TICKS) -> Path:
    """A columnar recording shaped like the sim feed's: 100 symbols, every field, q."""
    rng = np.random.default_rng(1)
    sym = rng.integers(0, N_SYMBOLS, n).astype(np.int32)
    q = np.zeros(n, np.int64)
    for s in range(N_SYMBOLS):
        q[sym == s] = np.arange(1, (sym == s).sum() + 1)
    price = np.round(100 + rng.random(n) * 10, 2)
    table = TickTable.build(
        [f"S{i:03d}" for i in range(N_SYMBOLS)],
        t=1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 100,
        sym=sym,
        p=price,
        b=price - 0.01,
        a=price + 0.01,
        v=rng.integers(1, 500, n).astype(np.float64),
        q=q,
    )
    path = folder / "bench.ticks"
    writer = open_writer(path)
    writer.write_table(table)
    writer.close()
    return path


async def _replay(path: Path, publish: bool) -> tuple[int, float]:
    bus = Bus()
    start = time.process_time()  # CPU seconds: the figure does not depend on other load
    feed = ReplayFeed(load([path], Problems()), ReplayOptions(speed=0))
    count = 0
    async for batch in feed.stream():
        if publish:
            bus.publish(batch)
        count += len(batch)
    return count, time.process_time() - start


def run_replay_loader() -> dict[str, float]:
    """Speed 0 from a memory-mapped column directory into a bus with no subscribers."""
    with tempfile.TemporaryDirectory() as folder:
        path = _recording(Path(folder))
        count, seconds = asyncio.run(_replay(path, publish=True))
        loaded, loader_seconds = asyncio.run(_replay(path, publish=False))
        table = load([path], Problems())
        batches = [table.ticks(i, i + 8192) for i in range(0, 400_000, 8192)]
        bus = Bus()
        start = time.process_time()
        for batch in batches:
            bus.publish(batch)
        bus_seconds = time.process_time() - start
    return {
        "replay_ticks": count,
        "replay_ticks_per_s": count / seconds,
        "replay_target_ticks_per_s": REPLAY_TARGET,
        "replay_loader_only_ticks_per_s": loaded / loader_seconds,
        "bus_publish_only_ticks_per_s": sum(map(len, batches)) / bus_seconds,
    }


def main() -> dict[str, Any]:
    ticker, naive = run_ticker(), run_naive()
    return {
        "scenario": "inprocess",
        "shape": f"{N_CLIENTS} clients x {PER_CLIENT} of {N_SYMBOLS} symbols, {BATCH}-tick batches",
        "ticker": ticker,
        "naive": naive,
        "ratio": ticker["deliveries_per_s"] / naive["deliveries_per_s"],
        **run_replay_loader(),
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
