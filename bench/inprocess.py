"""Scenario 4: the core alone, no sockets — bus + mailboxes + frame building on one core.

The same shape as the fan-out scenario (1 000 clients x 10 of 100 symbols, every tick to
100 clients), so the figure is the ceiling the sockets can only lower. Side by side, the
naive way (encode per subscriber, one frame per tick) measured the same way.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from ticker.core import protocol
from ticker.core.bus import Bus
from ticker.core.mailbox import QueueMailbox
from ticker.core.ticks import TickBatch

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


def main() -> dict[str, Any]:
    ticker, naive = run_ticker(), run_naive()
    return {
        "scenario": "inprocess",
        "shape": f"{N_CLIENTS} clients x {PER_CLIENT} of {N_SYMBOLS} symbols, {BATCH}-tick batches",
        "ticker": ticker,
        "naive": naive,
        "ratio": ticker["deliveries_per_s"] / naive["deliveries_per_s"],
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
