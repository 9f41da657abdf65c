"""Backpressure over real sockets: conflation, bounded queues, max_hz, slow consumers."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp

from tests.conftest import StartServer, frame, next_of
from tests.rawws import RawWebSocket
from ticker.server.node import Node
from ticker.server.websocket import Connection

SYMS = ["AAPL", "MSFT", "GOOGL", "AMZN", "NVDA"]


def connection(node: Node, session_id: str) -> Connection:
    (conn,) = [c for c in node.connections if c.session.id == session_id]
    return conn


async def read_ticks_until(ws: RawWebSocket, done: Any, seen: dict[str, dict]) -> int:
    """Read frames, recording the latest tick per symbol, until done(seen) is true."""
    frames = 0
    while not done(seen):
        msg = await ws.json()
        if msg["type"] in ("ticks", "snapshot"):
            frames += 1
            for tick in msg["ticks"]:
                seen[tick["s"]] = tick
    return frames


def squeeze(conn: Connection) -> None:
    """A congested path: shrink the server's send buffer for this client's socket."""
    assert conn.transport is not None
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)


async def test_conflate_paused_client_is_bounded_and_others_flow(start_server: StartServer) -> None:
    node, server = await start_server()
    bus = node.bus
    slow = await RawWebSocket.connect(server.host, server.port, "/ws?symbols=" + ",".join(SYMS))
    welcome = await slow.json()
    await slow.json()  # subscribed; from now on the slow client reads nothing
    conn = connection(node, welcome["session"])
    squeeze(conn)

    async with aiohttp.ClientSession() as http:
        healthy = await http.ws_connect(server.make_url("/ws?symbols=" + ",".join(SYMS)))
        await next_of(healthy, "subscribed")
        healthy_seen: dict[str, float] = {}
        healthy_frames = 0

        async def read_healthy() -> None:
            nonlocal healthy_frames
            async for message in healthy:
                msg = message.json()
                if msg["type"] == "ticks":
                    healthy_frames += 1
                    healthy_seen.update({t["s"]: t["p"] for t in msg["ticks"]})

        reader = asyncio.create_task(read_healthy())
        max_pending = 0
        stalled = 0
        batches_with_delivery = 0
        last_price: dict[str, float] = {}
        for b in range(200):  # 200 batches x 1000 ticks = 200 000 ticks
            batch: list[Any] = [
                {"s": SYMS[i % 5], "p": round(100 + b + i / 1000, 3)} for i in range(1000)
            ]
            last_price.update({t["s"]: t["p"] for t in batch})
            before = healthy_frames
            bus.publish(batch)
            max_pending = max(max_pending, len(conn.session.mailbox))
            await asyncio.sleep(0.002)
            batches_with_delivery += healthy_frames > before
            stalled += conn.transport is not None and conn.transport.get_write_buffer_size() > 0
        assert max_pending <= len(SYMS)  # never more than one pending tick per symbol
        assert stalled > 100  # the slow client's socket really was full
        assert conn.session.mailbox.conflated > 150_000  # conflated, not queued
        assert batches_with_delivery > 180, batches_with_delivery  # the other one kept flowing
        async with asyncio.timeout(5):
            while healthy_seen != last_price:
                await asyncio.sleep(0.01)
        await healthy.close()
        await reader

    # resumed: the slow client catches up to the latest price of every symbol
    latest: dict[str, dict] = {}
    async with asyncio.timeout(10):
        await read_ticks_until(
            slow, lambda seen: {s: t["p"] for s, t in seen.items()} == last_price, latest
        )
    assert {s: t["q"] for s, t in latest.items()} == {s: 40_000 for s in SYMS}
    slow.close()


async def test_mode_all_delivers_every_tick_in_order_with_gapless_handover(
    start_server: StartServer,
) -> None:
    node, server = await start_server(limits={"queue_bytes": 8 * 1024 * 1024})
    bus = node.bus
    stop = asyncio.Event()

    async def publisher() -> None:
        while not stop.is_set():
            bus.publish([{"s": SYMS[i % 3], "p": 10.0 + i} for i in range(30)])
            await asyncio.sleep(0.001)

    task = asyncio.create_task(publisher())
    await asyncio.sleep(0.05)  # the stream is live before the client subscribes
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.make_url("/ws?mode=all"))
        await frame(ws)
        await ws.send_json({"op": "subscribe", "symbols": SYMS[:3]})
        await next_of(ws, "subscribed")
        snapshot = await frame(ws)
        assert snapshot["type"] == "snapshot"
        last_q = {t["s"]: t["q"] for t in snapshot["ticks"]}
        assert set(last_q) == set(SYMS[:3])
        await asyncio.sleep(0.5)
        stop.set()
        await task
        final_q = {s: bus._topics[s].q for s in SYMS[:3]}
        received = 0
        async with asyncio.timeout(10):
            while last_q != final_q:
                for tick in (await next_of(ws, "ticks"))["ticks"]:
                    assert tick["q"] == last_q[tick["s"]] + 1, (tick, last_q)  # no gap, no dup
                    last_q[tick["s"]] = tick["q"]
                    received += 1
        assert received > 1000
        await ws.close()


async def test_mode_all_overflow_closes_4008(start_server: StartServer) -> None:
    node, server = await start_server(limits={"queue_bytes": 64 * 1024})
    others = await RawWebSocket.connect(server.host, server.port, "/ws?symbols=AAPL&mode=all")
    slow = await RawWebSocket.connect(server.host, server.port, "/ws?symbols=AAPL&mode=all")
    welcome = await slow.json()
    conn = connection(node, welcome["session"])
    squeeze(conn)
    for b in range(100):
        node.bus.publish([{"s": "AAPL", "p": 1.0 + b} for _ in range(500)])
        await asyncio.sleep(0)
        if conn.session.close_request is not None:
            break
        while not others.reader.at_eof() and len(others.reader._buffer) > 0:
            await others.frame()
    assert conn.session.close_request is not None
    assert conn.session.close_request.code == 4008
    assert len(conn.session.mailbox) == 0  # the queue was released at once
    async with asyncio.timeout(5):  # the client resumes reading: it finds the close frame
        while slow.close_code is None:
            await slow.frame()
    assert slow.close_code == 4008
    slow.close()
    others.close()


async def test_max_hz_caps_tick_frames_per_second(start_server: StartServer) -> None:
    node, server = await start_server()
    stop = asyncio.Event()

    async def publisher() -> None:
        while not stop.is_set():
            node.bus.publish([{"s": "AAPL", "p": 1.0}])
            await asyncio.sleep(0.002)

    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.make_url("/ws?symbols=AAPL&max_hz=10"))
        await next_of(ws, "subscribed")
        task = asyncio.create_task(publisher())
        loop = asyncio.get_running_loop()
        await next_of(ws, "ticks")
        start = loop.time()
        frames = 0
        while loop.time() - start < 1.0:
            await next_of(ws, "ticks")
            frames += 1
        stop.set()
        await task
        assert 8 <= frames <= 11, frames
        await ws.close()
