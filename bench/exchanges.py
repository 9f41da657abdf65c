"""Scenario ``exchanges``: what a live exchange feed (feeds/exchanges/) costs, ticker only.

Run in a child process pinned to the server core (``python -m bench.exchanges OUT``):

1. **Parsing on one core**: ``Venue.decode`` (JSON to ticks: exact decimals, trade ids,
   the quote kept for the next trade) over real messages, timed in CPU seconds of the
   one thread: Coinbase from the recording ``tests/data/COINBASE.ws.28.0`` (its
   ``matches`` and ``ticker`` messages, what a feed subscribes to; and every message of
   it, mostly ``l2update``, counted and skipped), Binance from its documented ``trade``
   and ``bookTicker`` messages, ids increasing. Target: 100 000 messages/s.
2. **Frame arrival to bus publish**: a fake Binance (``tests/exchange_fakes.py``, an
   aiohttp WebSocket server) in the same process sends trades at ``LATENCY_RATE``
   messages/s to a real ``ExchangeFeed`` under a ``FeedSupervisor`` publishing into a
   ``Bus``; a "*" subscriber notes when each trade is published, minus when the fake
   sent it. That spans the loopback socket, the link's receive, the parse, the feed's
   queue and the publish: an upper bound of the added latency. Target: p99 <= 1 ms.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from feeds.exchanges.binance import Binance
from feeds.exchanges.coinbase import Coinbase
from feeds.exchanges.feed import ExchangeFeed
from feeds.exchanges.link import LinkOptions
from feeds.supervisor import FeedSupervisor
from tests.exchange_fakes import FakeExchange, coinbase_recording
from tests.test_exchange_binance import BOOK, TRADE
from ticker.core.bus import WILDCARD, Bus
from ticker.core.mailbox import Delivery, Follows

TARGETS = {"msgs_per_s": 100_000, "p99_ms": 1.0}
LATENCY_RATE = 2_000
"""Trades/s the fake sends in the latency run (a busy symbol on a real exchange)."""
SUBSCRIBED = ('"type":"match"', '"type":"ticker"', '"type":"last_match"')


def parse_rate(venue_of: Any, messages: list[str], seconds: float) -> dict[str, Any]:
    """Messages/s ``Venue.decode`` takes in CPU time, a fresh venue per pass (so a
    replayed trade is parsed, not dropped as a duplicate)."""
    passes = count = ticks = 0
    cpu = 0.0
    while cpu < seconds:
        venue = venue_of()
        start = time.thread_time()
        for message in messages:
            ticks += len(venue.decode(message, 0))
        cpu += time.thread_time() - start
        passes += 1
        count += len(messages)
    return {
        "msgs_per_s": round(count / cpu),
        "ticks_per_s": round(ticks / cpu),
        "messages": len(messages),
        "passes": passes,
        "malformed": venue.stats.malformed,
    }


def binance_messages(n: int) -> list[str]:
    """Documented trade and bookTicker messages, alternating, trade ids contiguous."""
    out = []
    for i in range(n // 2):
        trade = {**TRADE, "t": 1 + i, "m": i % 3 == 0}
        out.append(orjson.dumps({"stream": "bnbbtc@trade", "data": trade}).decode())
        out.append(orjson.dumps({"stream": "bnbbtc@bookTicker", "data": BOOK}).decode())
    return out


class Arrivals:
    """A "*" subscriber of the bus: when each trade id was published."""

    follows: Follows = None

    def __init__(self) -> None:
        self.published: dict[int, int] = {}

    def offer(self, delivery: Delivery) -> None:
        now = time.perf_counter_ns()
        for segment in delivery.segments.values():
            for tick in orjson.loads(b"[" + segment + b"]"):
                self.published[tick["x"]] = now


async def publish_latency(seconds: float) -> dict[str, Any]:
    """Fake Binance send -> bus publish, per trade, at ``LATENCY_RATE`` trades/s."""
    bus, arrivals = Bus(), Arrivals()
    bus.add_symbols(["BNBBTC"])
    bus.subscribe(arrivals, [WILDCARD])
    sent: dict[int, int] = {}
    async with FakeExchange() as fake:
        feed = ExchangeFeed(Binance({"BNBBTC": "BNBBTC"}), ["BNBBTC"], LinkOptions(fake.url, 30.0))
        supervisor = FeedSupervisor(feed, bus.publish, status=bus.status.set)
        task = asyncio.create_task(supervisor.run())
        conn = await fake.connection(0)
        await conn.wait_messages(1)  # subscribed
        interval = 1.0 / LATENCY_RATE
        start = time.perf_counter()
        for i in range(int(seconds * LATENCY_RATE)):
            due = start + i * interval
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            trade = orjson.dumps({"stream": "bnbbtc@trade", "data": {**TRADE, "t": i + 1}})
            sent[i + 1] = time.perf_counter_ns()
            await conn.ws.send_bytes(trade)
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    late = sorted(
        (arrivals.published[x] - t) / 1e6 for x, t in sent.items() if x in arrivals.published
    )
    if not late:
        raise RuntimeError("no trade reached the bus")

    def pct(p: float) -> float:
        return round(late[min(len(late) - 1, int(p * len(late)))], 3)

    return {
        "rate": LATENCY_RATE,
        "sent": len(sent),
        "published": len(late),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(late[-1], 3),
    }


def main(quick: bool) -> dict[str, Any]:
    """Both measurements, in this process."""
    seconds = 1.0 if quick else 3.0
    recording = coinbase_recording()
    products = sorted(
        {
            p
            for m in recording
            if '"product_id"' in m
            for p in [orjson.loads(m).get("product_id")]
            if p
        }
    )
    names = {p: p for p in products}
    subscribed = [m for m in recording if any(t in m for t in SUBSCRIBED)]
    return {
        "coinbase": parse_rate(lambda: Coinbase(names), subscribed, seconds),
        "coinbase_all": parse_rate(lambda: Coinbase(names), recording, seconds),
        "binance": parse_rate(
            lambda: Binance({"BNBBTC": "BNBBTC"}), binance_messages(20_000), seconds
        ),
        "latency": asyncio.run(publish_latency(2.0 if quick else 5.0)),
    }


def run(ctx: Any) -> dict[str, Any]:
    """The scenario, in a child pinned to the server core (the harness's own work apart)."""
    from bench import run as harness  # the harness imports this module: import it late

    harness.progress("exchanges: parsing on one core, frame arrival -> bus publish")
    out_path: Path = ctx.logdir / "exchanges.json"
    argv = [*ctx.pins.server, harness.PY, "-m", "bench.exchanges", str(out_path)]
    argv += ["--quick"] if ctx.plan.quick else []
    with open(ctx.logdir / "exchanges.log", "ab") as log:
        r = subprocess.run(
            argv, cwd=harness.ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=300
        )
    if r.returncode != 0 or not out_path.exists():
        raise RuntimeError(f"bench/exchanges.py failed (exit {r.returncode}): see exchanges.log")
    data: dict[str, Any] = json.loads(out_path.read_text())
    harness.progress(f"  -> {data}")
    return data


def render(data: dict[str, Any]) -> list[str]:
    """The scenario's section of the results."""
    from bench import run as harness

    parse = TARGETS["msgs_per_s"]
    rows = []
    for label, key in (
        ("Coinbase matches + ticker (recording): msgs/s, one core", "coinbase"),
        ("Coinbase every message of the recording (mostly l2update, skipped)", "coinbase_all"),
        ("Binance trade + bookTicker (documented): msgs/s, one core", "binance"),
    ):
        value = data.get(key, {}).get("msgs_per_s")
        rows.append(
            [
                label,
                f">= {harness.fmt_rate(parse)}",
                harness.fmt_rate(value),
                harness.meets(value, parse, True),
            ]
        )
    latency = data.get("latency", {})
    for key in ("p50_ms", "p99_ms", "max_ms"):
        target = TARGETS["p99_ms"] if key == "p99_ms" else None
        shown = f"<= {target:g} ms" if target else ""
        ok = harness.meets(latency.get(key), target, False) if target else ""
        title = f"fake exchange send -> bus publish {key[:-3]}, {LATENCY_RATE:,} trades/s"
        rows.append([title, shown, harness.fmt_ms(latency.get(key)), ok])
    lines = [f"## {harness.TITLES['exchanges']}", ""]
    lines += [harness.table(["figure", "target", "ticker", "ticker ok"], rows), ""]
    lines.append("In one process pinned to one core; parse rates in CPU time of that thread.")
    return lines


if __name__ == "__main__":
    result = main("--quick" in sys.argv[2:])
    Path(sys.argv[1]).write_text(json.dumps(result))
