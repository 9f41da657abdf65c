"""``ticker serve --workers 2``: real processes on one port, real sockets.

Clients connect until some land on each worker (every response names its worker in
``Ticker-Worker``); whatever worker they land on, they get the same epoch and the
identical ``(s, q, p)`` stream, snapshots, resumes, publishes and one ``/metrics``. A
killed worker is restarted while the other's clients stay connected; SIGTERM stops every
process. Each server is stopped by the test, by its PID; deadlines are generous.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import next_of, tls_files
from tests.net import free_port
from tests.test_http_transports import sse_events
from ticker.commands.workers import WORKER_HEADER
from ticker.core.tokens import mint

Msg = dict[str, Any]
ARGS = ("--symbols", "5", "--rate", "400", "--seed", "1", "--publish", "--log-level", "warning")


class Served:
    """A ``ticker serve --workers 2`` process tree on a free port."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    async def pids(self, http: aiohttp.ClientSession, timeout: float = 30.0) -> dict[int, int]:
        """Worker index -> pid, asking ``/readyz`` until every worker has answered ready."""
        found: dict[int, int] = {}
        async with asyncio.timeout(timeout):
            while len(found) < 2:
                assert self.proc.returncode is None, "the server exited early"
                try:
                    async with http.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            worker = (await resp.json())["worker"]
                            found[worker["index"]] = worker["pid"]
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.02)
        return found


@contextlib.asynccontextmanager
async def served(*extra: str) -> AsyncIterator[Served]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "ticker", "serve", "--workers", "2", "--port", str(port)),
        *ARGS,
        *extra,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield Served(proc, port)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def fresh_connections() -> aiohttp.ClientSession:
    """A session that opens a connection per request: each may land on either worker."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def on_each_worker(
    http: aiohttp.ClientSession, path: str, each: int = 1
) -> dict[int, list[aiohttp.ClientWebSocketResponse]]:
    """Connect until ``each`` clients landed on each of the two workers; close the rest."""
    landed: dict[int, list[aiohttp.ClientWebSocketResponse]] = {0: [], 1: []}
    async with asyncio.timeout(30):
        while min(len(v) for v in landed.values()) < each:
            ws = await http.ws_connect(path)
            worker = int(ws._response.headers[WORKER_HEADER])
            if len(landed[worker]) < each:
                landed[worker].append(ws)
            else:
                await ws.close()
    return landed


async def ticks_of(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[tuple[str, int, float]]:
    """The next ``count`` ticks' (s, q, p), from tick frames only."""
    got: list[tuple[str, int, float]] = []
    async with asyncio.timeout(30):
        while len(got) < count:
            frame = await next_of(ws, "ticks", timeout=30)
            got += [(t["s"], t["q"], t["p"]) for t in frame["ticks"]]
    return got


def by_symbol(ticks: list[tuple[str, int, float]]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for s, q, p in ticks:
        out.setdefault(s, {})[q] = p
    return out


async def test_every_worker_serves_the_same_stream_snapshots_resumes_and_publishes() -> None:
    async with served() as server, fresh_connections() as http:
        pids = await server.pids(http)
        assert len(set(pids.values())) == 2
        landed = await on_each_worker(http, f"{server.url}/ws?symbols=*&mode=all", each=2)
        clients = [ws for group in landed.values() for ws in group]
        welcomes = [await next_of(ws, "welcome") for ws in clients]
        assert len({w["epoch"] for w in welcomes}) == 1
        epoch = welcomes[0]["epoch"]
        snapshots = [await next_of(ws, "snapshot") for ws in clients]
        assert all(len(s["ticks"]) == 5 for s in snapshots)  # every symbol has a last value

        # The identical (s, q, p) stream on both workers: where two clients saw the same
        # (s, q), they saw the same p; every symbol's q goes up by one.
        streams = [by_symbol(await ticks_of(ws, 300)) for ws in clients]
        for stream in streams:
            for qs in stream.values():
                assert sorted(qs) == list(range(min(qs), max(qs) + 1))
        for stream in streams[1:]:
            for symbol, qs in stream.items():
                common = qs.keys() & streams[0].get(symbol, {}).keys()
                assert {q: qs[q] for q in common} == {q: streams[0][symbol][q] for q in common}
        assert any(streams[0][s].keys() & streams[-1][s].keys() for s in streams[0])

        # A resume on either worker brings the missed ticks from that worker's history.
        symbol = sorted(streams[0])[0]
        seen = max(streams[0][symbol]) - 20
        resumed = await on_each_worker(
            http, f"{server.url}/ws?symbols={symbol}&mode=all&since={symbol}:{seen}&epoch={epoch}"
        )
        for group in resumed.values():
            first = await ticks_of(group[0], 20)
            assert [q for s, q, _ in first[:20]] == list(range(seen + 1, seen + 21))
            assert all(p == streams[0][symbol][q] for s, q, p in first[:20])
            await group[0].close()

        # A publish taken by either worker reaches the clients of both, numbered once.
        answers: dict[int, Msg] = {}
        async with asyncio.timeout(30):
            while len(answers) < 2:
                async with http.post(
                    f"{server.url}/publish", json={"ticks": [{"s": "PUB", "p": 1.5 + len(answers)}]}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    answers.setdefault(int(resp.headers[WORKER_HEADER]), await resp.json())
        qs = sorted(a["q"]["PUB"] for a in answers.values())
        for ws in clients:
            got: list[int] = []
            async with asyncio.timeout(30):
                while qs[-1] not in got:
                    frame = await next_of(ws, "ticks", timeout=30)
                    got += [t["q"] for t in frame["ticks"] if t["s"] == "PUB"]
            assert set(qs) <= set(got)

        # An idempotency key is kept in the feed process: a retry on any worker is answered.
        replays: set[int] = set()
        first_answer = None
        async with asyncio.timeout(30):
            while len(replays) < 2:
                async with http.post(
                    f"{server.url}/publish",
                    json={"ticks": [{"s": "PUB", "p": 9.0}]},
                    headers={"Idempotency-Key": "k1"},
                ) as resp:
                    body = await resp.json()
                    first_answer = first_answer or body
                    assert body["q"] == first_answer["q"]
                    if resp.headers.get("Idempotent-Replayed"):
                        replays.add(int(resp.headers[WORKER_HEADER]))
                    else:
                        first_answer = body  # the first request: published once

        # One /metrics for the node, whichever worker is asked.
        async with http.get(f"{server.url}/metrics") as resp:
            text = await resp.text()
        for worker in ("0", "1", "feed"):
            assert f'process_cpu_seconds_total{{worker="{worker}"}}' in text
        assert 'ticker_workers_running{worker="feed"} 2.0' in text
        for ws in clients:
            await ws.close()


async def test_a_dead_worker_is_restarted_and_sigterm_stops_all() -> None:
    metrics_port = free_port()
    async with served("--metrics-port", str(metrics_port)) as server, fresh_connections() as http:
        pids = await server.pids(http)
        landed = await on_each_worker(http, f"{server.url}/ws?symbols=AAPL&mode=all")
        victim, survivor = landed[0][0], landed[1][0]
        epoch = (await next_of(survivor, "welcome"))["epoch"]
        await ticks_of(survivor, 5)
        os.kill(pids[0], signal.SIGKILL)
        async with asyncio.timeout(30):
            while (await victim.receive()).type not in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                pass
        async with asyncio.timeout(30):
            while True:
                now = await server.pids(http)
                if now[0] != pids[0]:
                    break
                await asyncio.sleep(0.05)
        assert now[1] == pids[1]  # the other worker was left alone...
        last = (await ticks_of(survivor, 5))[-1]  # ...and its client still streams
        more = await ticks_of(survivor, 5)
        assert more[0][1] == last[1] + 1
        assert not survivor.closed
        # The restarted worker serves the same stream: its snapshot is the feed's.
        (fresh,) = (await on_each_worker(http, f"{server.url}/ws?symbols=AAPL&mode=all"))[0]
        assert (await next_of(fresh, "welcome"))["epoch"] == epoch
        snapshot = await next_of(fresh, "snapshot")
        assert snapshot["ticks"][0]["q"] > last[1]
        await fresh.close()
        # The feed process serves the node's /metrics on --metrics-port (not the workers).
        async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
            text = await resp.text()
        assert 'ticker_worker_restarts_total{worker="0"} 1.0' in text
        assert 'ticker_worker_restarts_total{worker="1"} 0.0' in text
        assert 'process_cpu_seconds_total{worker="1"}' in text
        async with http.get(f"{server.url}/metrics") as resp:
            assert resp.status == 404

        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await server.proc.wait() == 0
        assert time.monotonic() - started < 5.0
        async with asyncio.timeout(10):  # its clients were closed as a single node's are
            while (msg := await survivor.receive()).type is aiohttp.WSMsgType.TEXT:
                pass
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001, msg
        for pid in (pids[1], now[0]):
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


async def test_sse_ops_and_polls_reach_their_session_on_any_worker() -> None:
    """An SSE or poll session lives in one worker; its ops and next polls come on new
    connections, which land on either: the other worker passes them to the owner."""
    async with served() as server, fresh_connections() as http:
        await server.pids(http)
        async with http.get(f"{server.url}/sse?symbols=AAPL") as stream:
            (welcome,) = await sse_events(stream, "welcome", timeout=30)
            session = welcome["data"]["session"]
            assert session.startswith(f"{stream.headers[WORKER_HEADER]}-")
            answered_by: set[int] = set()
            sent = 0
            async with asyncio.timeout(30):
                while len(answered_by) < 2:
                    sent += 1
                    async with http.post(
                        f"{server.url}/sse/{session}/subscribe",
                        json={"symbols": ["MSFT"], "id": sent},
                    ) as resp:
                        assert resp.status == 202, await resp.text()
                        answered_by.add(int(resp.headers[WORKER_HEADER]))
            ids: set[int] = set()
            while ids != set(range(1, sent + 1)):
                ids.add(
                    (await sse_events(stream, "subscribed", timeout=30))[-1]["data"].get("id", 0)
                )
                ids.discard(0)  # the connect-time subscription's answer has no id
        async with http.get(f"{server.url}/poll?symbols=AAPL") as resp:
            cursor = (await resp.json())["cursor"]
        answered_by = set()
        polled: list[Msg] = []
        async with asyncio.timeout(60):
            while len(answered_by) < 2:
                async with http.get(f"{server.url}/poll", params={"cursor": cursor}) as resp:
                    assert resp.status == 200, await resp.text()
                    answered_by.add(int(resp.headers[WORKER_HEADER]))
                    body = await resp.json()
                cursor = body["cursor"]
                polled += body["messages"]
        assert any(m["type"] == "ticks" for m in polled)
        async with http.post(f"{server.url}/sse/9-{session[2:]}/subscribe", json={}) as resp:
            assert resp.status == 404  # no worker 9: no such session


async def test_tls_tokens_and_entitlements_hold_on_every_worker(tmp_path: Path) -> None:
    """Each worker loads the same certificate and verifies the same tokens: a client gets
    what its token allows whichever worker it lands on, and its poll session's requests
    are passed between workers over TLS too."""
    cert_file, key_file, trusting = tls_files(tmp_path)
    secret = "s" * 32
    bearer = {
        "Authorization": f"Bearer {mint(secret.encode(), sub='al', symbols=['AAPL'], ttl_s=60)}"
    }
    tls = ("--tls-cert", str(cert_file), "--tls-key", str(key_file), "--auth-secret", secret)
    async with served(*tls) as server, fresh_connections() as http:
        url = server.url.replace("http://", "https://")
        seen: set[int] = set()
        async with asyncio.timeout(30):
            while len(seen) < 2:
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with http.ws_connect(
                        f"{url}/ws?symbols=AAPL,MSFT", headers=bearer, ssl=trusting
                    ) as ws:
                        subscribed = await next_of(ws, "subscribed", timeout=30)
                        assert subscribed["symbols"] == ["AAPL"]  # MSFT: not entitled
                        seen.add(int(ws._response.headers[WORKER_HEADER]))
                await asyncio.sleep(0.05)
            async with http.get(f"{url}/poll?symbols=AAPL", headers=bearer, ssl=trusting) as resp:
                cursor = (await resp.json())["cursor"]
            answered_by: set[int] = set()
            while len(answered_by) < 2:
                async with http.get(
                    f"{url}/poll", params={"cursor": cursor}, headers=bearer, ssl=trusting
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    answered_by.add(int(resp.headers[WORKER_HEADER]))
                    cursor = (await resp.json())["cursor"]
            async with http.get(f"{url}/poll", params={"cursor": cursor}, ssl=trusting) as resp:
                assert resp.status == 401  # passed to the owner or not: the same gate


async def test_a_status_set_on_any_worker_or_the_feed_process_reaches_every_worker() -> None:
    """``POST /publish/status`` on either worker goes through the feed process's board to
    every worker's clients (the feed process's own changes take the same way): the same
    status, reason and ``since`` whichever worker a client is on."""
    async with served() as server, fresh_connections() as http:
        await server.pids(http)
        clients = [
            ws
            for group in (await on_each_worker(http, f"{server.url}/ws?symbols=AAPL")).values()
            for ws in group
        ]
        answered_by: set[int] = set()
        sent = 0
        async with asyncio.timeout(30):
            while len(answered_by) < 2:
                sent += 1
                status = {"status": "halted" if sent % 2 else "stale", "reason": f"set {sent}"}
                async with http.post(
                    f"{server.url}/publish/status", json={"symbols": {"AAPL": status}}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    answered_by.add(int(resp.headers[WORKER_HEADER]))
        seen = []
        for ws in clients:
            got: list[tuple[str, str, int]] = []
            while not got or got[-1][1] != f"set {sent}":
                frame = (await next_of(ws, "status", timeout=30))["symbols"]["AAPL"]
                got.append((frame["status"], frame["reason"], frame["since"]))
            seen.append(got)
            await ws.close()
        assert seen[0] == seen[1] and len(seen[0]) == sent
