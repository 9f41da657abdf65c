"""The node's life: feed crashes and restarts, health endpoints, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import StartServer, frame, next_of
from tests.net import free_port, wait_ready
from tests.rawws import RawWebSocket
from ticker.core.ticks import TickBatch


class FlakyFeed:
    """Publishes a few batches, then fails; every (re)start begins a fresh stream."""

    name = "flaky"

    def __init__(self, batches_before_crash: int = 3, crashes: int = 2) -> None:
        self.batches_before_crash = batches_before_crash
        self.crashes_left = crashes
        self.price = 100.0

    def symbols(self) -> list[str]:
        return ["FLAKY"]

    async def stream(self) -> AsyncIterator[TickBatch]:
        for _ in range(self.batches_before_crash):
            self.price += 1
            yield [{"s": "FLAKY", "p": self.price}]
            await asyncio.sleep(0.01)
        if self.crashes_left:
            self.crashes_left -= 1
            raise ConnectionError("upstream went away")
        while True:
            self.price += 1
            yield [{"s": "FLAKY", "p": self.price}]
            await asyncio.sleep(0.01)


async def test_feed_crash_restarts_with_backoff_and_clients_keep_their_subscriptions(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    feed = FlakyFeed()
    node, server = await start_server(feeds=(feed,), feed_backoff_s=0.05)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.make_url("/ws?symbols=FLAKY&mode=all"))
        await next_of(ws, "subscribed")
        qs: list[int] = []
        async with asyncio.timeout(10):
            while len(qs) < 12:
                msg = await frame(ws)
                if msg["type"] in ("ticks", "snapshot"):
                    qs += [t["q"] for t in msg["ticks"]]
        (supervisor,) = node.supervisors
        assert supervisor.restarts == 2
        assert qs == list(range(qs[0], qs[0] + len(qs)))  # q continues across restarts
        assert not ws.closed
        await ws.close()
    crashes = [r for r in caplog.records if "upstream went away" in r.getMessage()]
    assert len(crashes) == 2


async def test_health_endpoints(start_server: StartServer) -> None:
    feed = FlakyFeed(crashes=0)
    _, server = await start_server(feeds=(feed,))
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/healthz")) as resp:
            assert resp.status == 200
        async with asyncio.timeout(5):
            while True:
                async with http.get(server.make_url("/readyz")) as resp:
                    body = await resp.json()
                    if resp.status == 200:
                        break
                    assert resp.status == 503 and body["feeds"] == {"flaky": False}
                await asyncio.sleep(0.01)
        assert body == {"status": "ready", "feeds": {"flaky": True}}
        ws = await http.ws_connect(server.make_url("/ws?symbols=FLAKY"))
        await next_of(ws, "ticks")
        async with http.get(server.make_url("/metrics")) as resp:
            text = await resp.text()
            assert resp.status == 200 and resp.content_type == "text/plain"
        assert 'ticker_connections{transport="ws"} 1.0' in text
        assert 'ticker_ticks_published_total{feed="flaky"}' in text
        assert "process_resident_memory_bytes" in text
        await ws.close()


def unsent_bytes(local_port: int, remote_port: int) -> int:
    """Bytes a socket on this machine holds unsent towards a peer (Linux /proc/net/tcp)."""
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote, queues = fields[1], fields[2], fields[4]
            if int(local.split(":")[1], 16) == local_port and (
                int(remote.split(":")[1], 16) == remote_port
            ):
                return int(queues.split(":")[0], 16)
    return 0


async def test_sigterm_closes_every_client_with_1001_and_exits_0_within_5s() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ticker",
        "serve",
        "--port",
        str(port),
        "--symbols",
        "2000",
        "--rate",
        "200000",
        "--seed",
        "1",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TICKER_LOG_LEVEL": "info"},
    )
    try:
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, port, proc, timeout=20)
            readers = [
                await http.ws_connect(f"http://127.0.0.1:{port}/ws?symbols=AAPL,MSFT")
                for _ in range(3)
            ]
            stuck = await RawWebSocket.connect("127.0.0.1", port, "/ws?symbols=*")
            stuck_port = stuck.writer.get_extra_info("sockname")[1]
            async with asyncio.timeout(10):  # it reads nothing: wait until the kernel is full
                while unsent_bytes(port, stuck_port) < 64 * 1024:
                    await asyncio.sleep(0.05)

            loop = asyncio.get_running_loop()
            start = loop.time()
            proc.send_signal(signal.SIGTERM)

            async def close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
                async for _ in ws:
                    pass
                return ws.close_code

            codes = await asyncio.wait_for(
                asyncio.gather(*(close_code(ws) for ws in readers)), timeout=5
            )
            assert codes == [1001, 1001, 1001]
            returncode = await asyncio.wait_for(proc.wait(), timeout=5)
            elapsed = loop.time() - start
            assert returncode == 0
            assert elapsed < 5.0
            # the client that reads nothing got its 1001 too, behind its backlog, unless its
            # buffers were so full that the close frame never left (then it was aborted)
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                async with asyncio.timeout(5):
                    while True:
                        await stuck.frame()
            assert stuck.close_code in (1001, None)
            stuck.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert log.count("code=1001") == 4 and "Traceback" not in log


async def test_shutdown_aborts_a_client_that_does_not_read_its_close_frame(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ticker.server")
    node, server = await start_server(symbols=[f"S{i}" for i in range(500)])
    stuck = await RawWebSocket.connect(server.host, server.port, "/ws?symbols=*")
    welcome = await stuck.json()
    (conn,) = node.connections
    assert conn.session.id == welcome["session"]
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    async with asyncio.timeout(5):
        while not conn.protocol.writing_paused:  # until its socket is full
            node.bus.publish([{"s": f"S{i}", "p": 1.0} for i in range(500)])
            await asyncio.sleep(0.001)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await node.shutdown()
    assert loop.time() - start < node.settings.close_grace_s + 1
    assert not node.connections
    assert "did not read its close frame in time: aborted" in caplog.text
    with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
        async with asyncio.timeout(5):
            while True:
                await stuck.frame()
    stuck.close()
