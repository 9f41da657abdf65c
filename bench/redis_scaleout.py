"""Scenario ``redis``: one publisher through Redis to three nodes (docs/scaling.md).

Real processes: a ``redis-server``, ``ticker feed`` (the publisher) and three
``ticker serve --feed none`` edge nodes, each with one client. Three measurements:

1. throughput: a ladder of publisher rates; at each, the ticks per second every node
   receives through Redis (its own counter) against what the origin published (the sum
   of every symbol's ``q`` in the hash), and the gaps the nodes counted;
2. latency: receive time minus the origin's ``t``, through Redis, against one node
   running the same feed itself: the difference of the p99s is what the hop adds;
3. channels: a node whose client watches 10 of 1000 symbols, with 64 shards and with one
   channel per symbol: what share of the cluster's ticks reaches the node, and what the
   publisher pays (its CPU per tick).

Clients run in this process (aiohttp); rates are kept where that is not the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from bench.procfs import cpu_seconds
from tests.net import free_port
from tests.redis_server import RedisServer
from ticker.cluster.wire import Keys

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
NODES = 3


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Procs:
    """Processes of one measurement; every one is stopped (TERM, then KILL) at the end."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, label: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.logdir / f"redis-{label}.log", "ab")  # noqa: SIM115 - closed with the proc
        proc = subprocess.Popen(
            [PY, "-m", "ticker", *args, "--log-level", "warning"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def cluster(logdir: Path) -> Iterator[tuple[RedisServer, Procs]]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(executable, Path(tmp))
        redis.start()
        procs = Procs(logdir)
        try:
            yield redis, procs
        finally:
            procs.stop()
            redis.stop()


def spawn_edges(procs: Procs, url: str) -> list[int]:
    """Three ``--feed none`` nodes on free ports; their ports."""
    ports = [free_port() for _ in range(NODES)]
    for i, port in enumerate(ports):
        procs.spawn(f"edge{i}", "serve", "--feed", "none", "--redis", url, "--port", str(port))
    return ports


async def wait_ready(http: aiohttp.ClientSession, port: int) -> None:
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)


async def scrape(http: aiohttp.ClientSession, port: int, name: str) -> float:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


async def measure_clients(
    http: aiohttp.ClientSession, urls: list[str], warmup: float, duration: float
) -> list[dict[str, Any]]:
    """Per client: ticks received in the window, the origin's ticks in it, gaps, latencies."""

    async def one(url: str) -> dict[str, Any]:
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        received = gaps = 0
        latencies: list[float] = []
        async with http.ws_connect(url, max_msg_size=0) as ws:
            loop = asyncio.get_running_loop()
            start = loop.time() + warmup
            end = start + duration
            while (now := loop.time()) < end:
                try:
                    async with asyncio.timeout(end - now):
                        msg = await ws.receive()
                except TimeoutError:
                    break
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break  # closed (a slow consumer, with 4008): what it got is counted
                if loop.time() < start:
                    continue
                frame = orjson.loads(msg.data)
                if frame["type"] != "ticks":
                    continue
                now_us = time.time_ns() // 1000
                for tick in frame["ticks"]:
                    symbol, q = tick["s"], tick["q"]
                    first.setdefault(symbol, q - 1)
                    last[symbol] = q
                    received += 1
                    gaps += "g" in tick
                    latencies.append((now_us - tick["t"]) / 1000)
        origin = sum(last[s] - first[s] for s in last)
        return {"received": received, "origin": origin, "gaps": gaps, "latencies": latencies}

    return await asyncio.gather(*(one(u) for u in urls))


async def origin_ticks(url: str) -> int:
    """Ticks the origin has published so far: the sum of every symbol's latest ``q`` in
    the hash, which the origin writes in the same command as its messages."""
    client = Redis.from_url(url)
    try:
        values = await client.hvals(Keys().last)
    finally:
        await client.aclose()
    return sum(orjson.loads(v)["q"] for v in values)


async def node_counters(http: aiohttp.ClientSession, ports: list[int]) -> list[dict[str, float]]:
    """Every node's counters, read at the same moment (as near as can be)."""
    names = ("ticker_redis_ticks_received_total", "ticker_redis_gaps_total")

    async def one(port: int) -> dict[str, float]:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            text = await resp.text()
        values = dict(line.split()[:2] for line in text.splitlines() if line.startswith(names))
        return {n: float(values.get(n, 0.0)) for n in names}

    return list(await asyncio.gather(*(one(p) for p in ports)))


async def drain(http: aiohttp.ClientSession, url: str) -> None:
    """A client that reads everything and looks at nothing (cheap for this process)."""
    async with http.ws_connect(url, max_msg_size=0) as ws:
        async for _ in ws:
            pass


async def throughput_step(logdir: Path, rate: int, duration: float) -> dict[str, Any]:
    """What each node receives through Redis, by its own counters, against what the
    origin published, by the hash. The "*" clients are in mode conflate: they keep every
    node following every channel, and a client that cannot keep up with the fan-out (they
    all run in this one process) does not slow the nodes down."""
    with cluster(logdir) as (redis, procs):
        ports = spawn_edges(procs, redis.url)
        nodes = procs.procs[-NODES:]
        feed = procs.spawn("feed", "feed", "--redis", redis.url, "--rate", str(rate), "--seed", "1")
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(wait_ready(http, p) for p in ports))
            urls = [f"http://127.0.0.1:{p}/ws?symbols=*&mode=conflate" for p in ports]
            watchers = [asyncio.ensure_future(drain(http, u)) for u in urls]
            await asyncio.sleep(1.5)  # subscribed and flowing
            before, origin0 = await asyncio.gather(
                node_counters(http, ports), origin_ticks(redis.url)
            )
            cpu0 = [cpu_seconds(p.pid) or 0.0 for p in (feed, *nodes)]
            await asyncio.sleep(duration)
            cpu1 = [cpu_seconds(p.pid) or 0.0 for p in (feed, *nodes)]
            after, origin1 = await asyncio.gather(
                node_counters(http, ports), origin_ticks(redis.url)
            )
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
    origin = origin1 - origin0
    received = [
        a["ticker_redis_ticks_received_total"] - b["ticker_redis_ticks_received_total"]
        for a, b in zip(after, before, strict=True)
    ]
    return {
        "offered_per_s": rate,
        "origin_per_s": origin / duration,
        "received_per_s_per_node": [r / duration for r in received],
        "min_delivery": min(received) / origin if origin else 0.0,
        "gaps": sum(
            a["ticker_redis_gaps_total"] - b["ticker_redis_gaps_total"]
            for a, b in zip(after, before, strict=True)
        ),
        "publisher_cpu": (cpu1[0] - cpu0[0]) / duration,
        "node_cpu": [(b - a) / duration for a, b in zip(cpu0[1:], cpu1[1:], strict=True)],
    }


async def latency_pair(logdir: Path, rate: int, duration: float) -> dict[str, Any]:
    """p50/p99 of receive time minus t: one node with its own feed, then through Redis."""
    symbols = "AAPL,MSFT,GOOGL,AMZN,NVDA,META,TSLA,AVGO,JPM,V"
    out: dict[str, Any] = {"rate_per_s": rate}
    with cluster(logdir) as (redis, procs):
        port = free_port()
        single = ["--rate", str(rate), "--seed", "1", "--sim-books", "0"]  # as the relay: ticks
        procs.spawn("single", "serve", "--port", str(port), *single)
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, port)
            url = f"http://127.0.0.1:{port}/ws?symbols={symbols}&mode=all"
            (single,) = await measure_clients(http, [url], warmup=1.0, duration=duration)
        procs.stop()
        ports = spawn_edges(procs, redis.url)
        procs.spawn("feed", "feed", "--redis", redis.url, "--rate", str(rate), "--seed", "1")
        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(wait_ready(http, p) for p in ports))
            urls = [f"http://127.0.0.1:{p}/ws?symbols={symbols}&mode=all" for p in ports]
            relayed = await measure_clients(http, urls, warmup=1.0, duration=duration)
    hop = [x for c in relayed for x in c["latencies"]]
    for label, values in (("single", single["latencies"]), ("redis", hop)):
        out[f"{label}_p50_ms"] = percentile(values, 50)
        out[f"{label}_p99_ms"] = percentile(values, 99)
    if out["single_p99_ms"] is not None and out["redis_p99_ms"] is not None:
        out["added_p99_ms"] = out["redis_p99_ms"] - out["single_p99_ms"]
    return out


async def channels_step(logdir: Path, shards: int, rate: int, duration: float) -> dict[str, Any]:
    """A node whose one client watches 10 of 1000 symbols: what reaches it, what it costs."""
    with cluster(logdir) as (redis, procs):
        port = free_port()
        common = ["--redis", redis.url, "--redis-shards", str(shards)]
        procs.spawn(f"watch{shards}", "serve", "--feed", "none", "--port", str(port), *common)
        feed = procs.spawn(
            f"pub{shards}", "feed", "--symbols", "1000", "--rate", str(rate), "--seed", "1", *common
        )
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, port)
            names = "AAPL,MSFT,GOOGL,AMZN,NVDA,META,TSLA,AVGO,JPM,V"
            url = f"http://127.0.0.1:{port}/ws?symbols={names}&mode=all"
            cpu0 = cpu_seconds(feed.pid) or 0.0
            before = await scrape(http, port, "ticker_redis_ticks_received_total")
            (client,) = await measure_clients(http, [url], warmup=1.0, duration=duration)
            after = await scrape(http, port, "ticker_redis_ticks_received_total")
            cpu1 = cpu_seconds(feed.pid) or 0.0
    window = duration + 1.0
    published = rate * window
    return {
        "shards": shards or "per symbol",
        "received_share": (after - before) / published,
        "wanted_share": 10 / 1000,
        "delivered_to_client": client["received"],
        "publisher_cpu": (cpu1 - cpu0) / window,
        "publisher_us_per_tick": (cpu1 - cpu0) / published * 1e6,
    }


async def run_all(logdir: Path, quick: bool) -> dict[str, Any]:
    duration = 2.0 if quick else 4.0
    rates = [2000, 20000] if quick else [2000, 5000, 10000, 20000, 40000, 80000]
    ladder = []
    for rate in rates:
        print(f"redis: throughput, publisher at {rate} ticks/s, 3 nodes", file=sys.stderr)
        step = await throughput_step(logdir, rate, duration)
        ladder.append(step)
        if step["min_delivery"] < 0.99 or step["gaps"]:
            break
    print("redis: latency, one node vs through redis", file=sys.stderr)
    latency = await latency_pair(logdir, 1000, duration)
    channels = []
    for shards in (64, 0):
        print(f"redis: channels, shards={shards}", file=sys.stderr)
        channels.append(await channels_step(logdir, shards, 5000, duration))
    sustained = [s for s in ladder if s["min_delivery"] >= 0.99 and not s["gaps"]]
    return {
        "ladder": ladder,
        "max_sustained_per_s": max((s["origin_per_s"] for s in sustained), default=None),
        "latency": latency,
        "channels": channels,
    }


def run(logdir: Path, quick: bool) -> dict[str, Any]:
    return asyncio.run(run_all(logdir, quick))


def render(data: dict[str, Any]) -> list[str]:
    def f(x: Any, digits: int = 1) -> str:
        return "-" if x is None else f"{x:,.{digits}f}" if isinstance(x, float) else str(x)

    out = ["## Redis scale-out (1 publisher -> Redis -> 3 nodes)", ""]
    out += [
        "| offered ticks/s | origin ticks/s | received ticks/s per node | min delivery | gaps "
        "| publisher CPU | node CPU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in data["ladder"]:
        per_node = " / ".join(f(x, 0) for x in s["received_per_s_per_node"])
        cpus = " / ".join(f"{x:.0%}" for x in s["node_cpu"])
        out.append(
            f"| {s['offered_per_s']} | {f(s['origin_per_s'], 0)} | {per_node} "
            f"| {s['min_delivery']:.1%} | {f(s['gaps'], 0)} | {s['publisher_cpu']:.0%} "
            f"| {cpus} |"
        )
    out += [
        "",
        f"Highest origin rate every node received in full: "
        f"{f(data['max_sustained_per_s'], 0)} ticks/s.",
        "",
    ]
    lat = data["latency"]
    out += [
        f"Latency at {lat['rate_per_s']} ticks/s (receive time - origin t, 10 symbols, mode all):",
        "",
        "| path | p50 ms | p99 ms |",
        "| --- | --- | --- |",
        f"| one node, own feed | {f(lat['single_p50_ms'], 2)} | {f(lat['single_p99_ms'], 2)} |",
        f"| publisher -> Redis -> node | {f(lat['redis_p50_ms'], 2)} "
        f"| {f(lat['redis_p99_ms'], 2)} |",
        "",
        f"The Redis hop adds {f(lat.get('added_p99_ms'), 2)} ms at p99.",
        "",
        "Channels (5 000 ticks/s over 1 000 symbols; the node's client watches 10):",
        "",
        "| channels | share of the cluster's ticks reaching the node | wanted | "
        "publisher CPU | publisher µs per tick |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in data["channels"]:
        out.append(
            f"| {c['shards']} | {c['received_share']:.1%} | {c['wanted_share']:.1%} "
            f"| {c['publisher_cpu']:.0%} | {f(c['publisher_us_per_tick'], 1)} |"
        )
    return [*out, ""]


if __name__ == "__main__":
    logs = ROOT / "bench" / "results" / "logs" / "redis"
    logs.mkdir(parents=True, exist_ok=True)
    result = run(logs, quick="--quick" in sys.argv)
    print("\n".join(render(result)))
    print(orjson.dumps(result).decode(), file=sys.stderr)
