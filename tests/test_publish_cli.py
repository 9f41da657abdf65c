"""``ticker publish`` as a real subprocess into a real server."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.conftest import StartServer, frame
from ticker.core.publish import PublishLimits


async def ticker_publish(*argv: str, stdin: Any = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ticker", "publish", *argv,
        stdin=stdin, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def subscriber(http: aiohttp.ClientSession, server: Any) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(server.make_url("/ws?mode=all&symbols=*"))
    assert (await frame(ws))["type"] == "welcome"
    return ws


async def collect(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[dict[str, Any]]:
    ticks: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while len(ticks) < n:
            got = orjson.loads((await ws.receive()).data)
            if got["type"] in ("ticks", "snapshot"):
                ticks += got["ticks"]
    return ticks


async def test_ten_thousand_ticks_from_a_file_arrive_in_order(
    start_server: StartServer, tmp_path: Path
) -> None:
    _, server = await start_server(publish=PublishLimits())
    rng = random.Random(7)
    sent = [
        {
            "s": rng.choice(["AAPL", "MSFT", "BTC-USD"]),
            "p": round(rng.uniform(1, 500), 2),
            "v": rng.randint(1, 900),
        }
        for _ in range(10_000)
    ]
    path = tmp_path / "ticks.csv"
    path.write_text("s,p,v\n" + "".join(f"{t['s']},{t['p']},{t['v']}\n" for t in sent))
    async with aiohttp.ClientSession() as http:
        ws = await subscriber(http, server)
        code, err = await finish(await ticker_publish(str(server.make_url("/")), str(path)))
        got = await collect(ws, 10_000)
        await ws.close()
    assert code == 0, err
    summary = re.match(r"published 10,000 ticks of 3 symbol\(s\) in (\d+) batch\(es\)", err.strip())
    assert summary, err  # full batches of 1 000, or more and smaller if the reader lags
    assert int(summary.group(1)) >= 10
    assert [(t["s"], t["p"], t["v"]) for t in got] != []
    for symbol in ("AAPL", "MSFT", "BTC-USD"):
        mine = [t for t in got if t["s"] == symbol]
        assert [t["q"] for t in mine] == list(range(1, len(mine) + 1))  # consecutive
        assert [(t["p"], t["v"]) for t in mine] == [
            (t["p"], t["v"]) for t in sent if t["s"] == symbol
        ]


async def test_a_pipe_is_published_line_by_line_as_it_comes(start_server: StartServer) -> None:
    _, server = await start_server(publish=PublishLimits())
    async with aiohttp.ClientSession() as http:
        ws = await subscriber(http, server)
        proc = await ticker_publish(str(server.make_url("/")), "-", stdin=asyncio.subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(b'{"s": "AAPL", "p": 1.5}\n')
        await proc.stdin.drain()
        first = await collect(ws, 1)  # while the pipe is still open
        proc.stdin.write(b'{"s": "AAPL", "p": 1.6}\n')
        proc.stdin.close()
        code, err = await finish(proc)
        second = await collect(ws, 1)
        await ws.close()
    assert [t["p"] for t in first + second] == [1.5, 1.6]
    assert code == 0 and "published 2 ticks" in err


async def test_a_refused_batch_names_the_input_lines(
    start_server: StartServer, tmp_path: Path
) -> None:
    node, server = await start_server(publish=PublishLimits())
    path = tmp_path / "bad.csv"
    path.write_text("s,p,b,a\nAAPL,1,1,2\nAAPL,1,3,2\nA B,1,,\n")
    code, err = await finish(await ticker_publish(str(server.make_url("/")), str(path)))
    assert code == 1 and "Traceback" not in err
    assert err.splitlines() == [
        "ticker publish: error: bad_request: 2 problem(s); nothing was published;"
        " published 0 ticks before it",
        "  line 3: b: the bid 3.0 is above the ask 2.0",
        "  line 4: s: 'A B' is not a valid symbol: a symbol is 1 to 32 characters from"
        " A-Z a-z 0-9 . _ - : / ^ = + # $ & ! % ~ (no spaces, ',', '@' or '*')",
    ]
    assert node.bus.published == 0


async def test_bad_input_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("symbol,price\nAAPL,1\n")
    cases = [
        (["http://127.0.0.1:9", str(tmp_path / "nope.csv")], "nope.csv: No such file or directory"),
        (["ftp://x", str(path)], "expected http(s):// or ws(s)://"),
        (["http://127.0.0.1:9", str(path)], "line 1: a CSV header names tick fields"),
    ]
    for argv, words in cases:
        code, err = await finish(await ticker_publish(*argv))
        assert code == 2 and len(err.splitlines()) == 1 and words in err, err


async def test_follow_publishes_what_is_appended_and_ctrl_c_is_quiet(
    start_server: StartServer, tmp_path: Path
) -> None:
    _, server = await start_server(publish=PublishLimits())
    path = tmp_path / "growing.ndjson"
    path.write_text('{"s": "AAPL", "p": 1}\n')
    async with aiohttp.ClientSession() as http:
        ws = await subscriber(http, server)
        proc = await ticker_publish(str(server.make_url("/")), str(path), "--follow")
        first = await collect(ws, 1)
        with path.open("a") as f:
            f.write('{"s": "AAPL", "p": 2}\n')
        second = await collect(ws, 1)
        proc.send_signal(signal.SIGINT)
        code, err = await finish(proc)
        await ws.close()
    assert [t["p"] for t in first + second] == [1, 2]
    assert code == 130 and "Traceback" not in err
