"""The publishing scenario's publisher: batches into ``/publish`` over WebSocket or HTTP.

Flat out (``--rate 0``, WebSocket or HTTP: as many accepted ticks per second as the
server takes, with a few batches in flight so neither side waits on the other's round
trip) or paced (``--rate R``, WebSocket: a batch every 10 ms, each tick's ``et`` its
send time in Unix µs, so a subscriber measures publish -> subscriber latency from it).
Frames are built from pre-encoded ticks, each batch with a new id: the publisher costs
little next to the server. Prints one JSON line: ticks accepted in the measured window and
refusals (the load generator beside it reads the server's CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import aiohttp
import orjson

PACE_S = 0.01


def tick_bytes(names: list[str], n: int) -> list[bytes]:
    """``n`` ticks over ``names`` in turn, encoded once, without ``et``."""
    return [
        orjson.dumps({"s": names[i % len(names)], "p": 100.0 + (i % 97) / 100, "v": 100})[:-1]
        for i in range(n)
    ]


def batch(ticks: list[bytes], et: int | None) -> bytes:
    """A JSON array of the ticks, each closed with its ``et`` (or as is)."""
    end = b"}" if et is None else b',"et":%d}' % et
    return b"[" + b",".join(t + end for t in ticks) + b"]"


def now_us() -> int:
    return time.time_ns() // 1000


class Window:
    """Counts what the server accepted inside [start, end) of the run."""

    def __init__(self, warmup: float, duration: float) -> None:
        self.t0 = time.monotonic()
        self.start, self.end = self.t0 + warmup, self.t0 + warmup + duration
        self.accepted = self.refused = self.batches = 0
        self.opened = self.closed = 0.0

    def note(self, accepted: int, refused: bool) -> None:
        now = time.monotonic()
        if now < self.start:
            return
        if not self.opened:
            self.opened = now
        if now >= self.end:
            self.closed = self.closed or now
            return
        self.accepted += accepted
        self.refused += refused
        self.batches += 1

    def done(self) -> bool:
        return time.monotonic() >= self.end

    def report(self) -> dict[str, Any]:
        span = (self.closed or time.monotonic()) - self.opened if self.opened else 0.0
        return {
            "window_s": span,
            "accepted": self.accepted,
            "accepted_per_s": self.accepted / span if span else None,
            "batches": self.batches,
            "refused": self.refused,
        }


async def over_ws(args: argparse.Namespace, ticks: list[bytes], win: Window) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"http://{args.host}:{args.port}/publish", max_msg_size=0) as ws,
    ):
        sent = 0
        run = os.urandom(6).hex()  # batch ids of an earlier run would be answered as replays

        async def send() -> None:
            nonlocal sent
            sent += 1
            et = now_us() if args.rate else None
            frame = b'{"op":"publish","id":"%s-%d","ticks":%s}' % (
                run.encode(),
                sent,
                batch(ticks, et),
            )
            await ws.send_frame(frame, aiohttp.WSMsgType.TEXT)

        async def read_acks() -> None:
            while True:
                reply = orjson.loads((await ws.receive()).data)
                fresh = reply["type"] == "ack" and not reply.get("replayed")
                win.note(reply["accepted"] if fresh else 0, not fresh)
                if not args.rate and not win.done():
                    await send()  # one in, one out: --window batches in flight

        reader = asyncio.create_task(read_acks())
        if args.rate:
            await paced(args.rate / len(ticks), send, win)
        else:
            for _ in range(args.window):
                await send()
            await asyncio.sleep(max(0.0, win.end - time.monotonic()))
        reader.cancel()


async def paced(batches_per_s: float, send: Any, win: Window) -> None:
    """Batches on the clock, every PACE_S (a late wake-up sends what is due, at once)."""
    start, due = time.monotonic(), 0
    while not win.done():
        behind = int((time.monotonic() - start) * batches_per_s) - due
        for _ in range(max(0, behind)):
            await send()
            due += 1
        await asyncio.sleep(PACE_S)


async def over_http(args: argparse.Namespace, ticks: list[bytes], win: Window) -> None:
    url = f"http://{args.host}:{args.port}/publish"
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=args.window)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post() -> None:
            et = now_us() if args.rate else None
            async with http.post(
                url, data=b'{"ticks":%s}' % batch(ticks, et), headers=headers
            ) as r:
                answer = orjson.loads(await r.read())
            win.note(answer.get("accepted", 0), r.status != 200)

        async def worker() -> None:
            while not win.done():
                await post()

        await asyncio.gather(*(worker() for _ in range(args.window)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--transport", choices=("ws", "http"), default="ws")
    p.add_argument("--symbol-names", required=True, help="comma-separated, published in turn")
    p.add_argument("--batch", type=int, default=1000, help="ticks per batch")
    p.add_argument("--rate", type=float, default=0.0, help="ticks/s (0: flat out)")
    p.add_argument("--window", type=int, default=4, help="batches (or requests) in flight")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--duration", type=float, default=5.0)
    args = p.parse_args(argv)
    if args.rate and args.transport == "http":
        p.error("--rate (paced, for latency) is for --transport ws; HTTP runs flat out")
    if args.rate:
        args.batch = max(1, round(args.rate * PACE_S))
    ticks = tick_bytes(args.symbol_names.split(","), args.batch)
    win = Window(args.warmup, args.duration)
    run = over_ws if args.transport == "ws" else over_http
    asyncio.run(run(args, ticks, win))
    out = {"transport": args.transport, "batch": args.batch, "rate": args.rate, **win.report()}
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
