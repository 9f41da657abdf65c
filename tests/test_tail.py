"""``ticker tail``: the table on a (fake) terminal, and the command piped, against live servers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import orjson

from tests.conftest import StartServer, TtyBuffer
from ticker.client import Status, Tick
from ticker.commands.tail import Screen, TickTable, news, split_targets, tail, tick_line

ROOT = Path(__file__).resolve().parent.parent


def test_table_shows_last_change_bid_ask_and_age() -> None:
    table = TickTable()
    table.update(Tick("AAPL", 100.0, 1, 1_000_000, bid=99.9, ask=100.1))
    table.update(Tick("MSFT", 50.0, 1, 1_500_000))
    table.update(Tick("AAPL", 101.5, 2, 2_000_000, bid=101.4, ask=101.6))
    header, aapl, msft, status = table.render(now_us=4_500_000)
    assert header.split() == ["SYMBOL", "LAST", "CHANGE", "CHANGE%", "BID", "ASK", "AGE"]
    assert aapl.split() == ["AAPL", "101.5", "+1.5", "+1.50%", "101.4", "101.6", "2.5s"]
    assert msft.split() == ["MSFT", "50", "+0", "+0.00%", "-", "-", "3.0s"]
    assert len({len(header), len(aapl), len(msft)}) == 1  # aligned
    assert status == "connecting..."
    assert table.render(4_500_000, max_rows=1)[-1].endswith(
        "(1 more symbols: a taller terminal shows them)"
    )


def test_a_symbol_not_live_is_marked_until_it_is_again() -> None:
    table = TickTable()
    table.update(Tick("BTC-USD", 100.0, 1, 1_000_000))
    table.mark(Status("BTC-USD", "stale", "reconnecting", 2_000_000))
    assert table.render(now_us=2_000_000)[1].split()[:2] == ["BTC-USD", "[stale]"]
    assert news(Status("BTC-USD", "stale", "reconnecting", 0)) == "BTC-USD: stale: reconnecting"
    table.mark(Status("BTC-USD", "live", "", 3_000_000))
    assert table.render(now_us=3_000_000)[1].split()[:2] == ["BTC-USD", "100"]


def test_screen_redraws_in_place() -> None:
    out = TtyBuffer()
    screen = Screen(out)
    screen.draw(["a", "b"])
    screen.draw(["c", "d"])
    screen.close()
    assert out.getvalue() == "\x1b[?25l\x1b[2Ka\n\x1b[2Kb\n\x1b[2F\x1b[2Kc\n\x1b[2Kd\n\x1b[?25h"


def test_targets_and_lines() -> None:
    assert split_targets(["AAPL"]) == ("ws://127.0.0.1:8080/ws", ["AAPL"])
    assert split_targets(["http://h:1/sse", "A", "B"]) == ("http://h:1/sse", ["A", "B"])
    tick = Tick("AAPL", 189.12, 42, 1_764_097_200_123_456, 189.11, 189.13, 100)
    assert tick_line(tick) == "19:00:00.123456 AAPL 189.12 bid=189.11 ask=189.13 size=100 q=42"


async def test_tail_on_a_terminal_draws_the_table(start_server: StartServer) -> None:
    node, server = await start_server()
    out, err = TtyBuffer(), TtyBuffer()
    url = f"ws://{server.host}:{server.port}/ws"
    task = asyncio.create_task(tail(url, ["AAPL"], out=out, err=err, clock=lambda: 10**15))
    async with asyncio.timeout(5):
        while "connected" not in out.getvalue():
            await asyncio.sleep(0.02)
        node.bus.publish([{"s": "AAPL", "p": 10.0, "b": 9.5, "a": 10.5}])
        while "10.5" not in out.getvalue():
            await asyncio.sleep(0.02)
        node.bus.publish([{"s": "AAPL", "p": 12.5, "b": 12.0, "a": 13.0}])
        while "12.5" not in out.getvalue():
            await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    screen = out.getvalue()
    assert "+25.00%" in screen and screen.endswith("\x1b[?25h") and err.getvalue() == ""


async def run_tail(*args: str, start_server: StartServer) -> tuple[list[str], str, int]:
    node, server = await start_server()
    url = f"http://{server.host}:{server.port}/sse"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ticker",
        "tail",
        url,
        "AAPL",
        "MSFT",
        "--mode",
        "all",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        while "connected" not in (await proc.stderr.readline()).decode():
            pass
        for i in range(3):
            node.bus.publish([{"s": "AAPL", "p": 1.0 + i, "b": 0.5}, {"s": "MSFT", "p": 2.0}])
        while len(lines) < 6:
            lines.append((await proc.stdout.readline()).decode().rstrip("\n"))
        proc.send_signal(signal.SIGINT)
        rest, stderr = await proc.communicate()
    assert rest == b""
    return lines, stderr.decode(), proc.returncode


async def test_tail_piped_prints_a_line_per_tick_and_stops_on_ctrl_c(
    start_server: StartServer,
) -> None:
    lines, stderr, code = await run_tail(start_server=start_server)
    assert code == 0 and "Traceback" not in stderr
    assert [line.split()[1:3] for line in lines[:2]] == [["AAPL", "1"], ["MSFT", "2"]]
    assert lines[0].endswith("bid=0.5 ask=- size=- q=1") and lines[-1].endswith("q=3")


async def test_tail_json_prints_json_lines(start_server: StartServer) -> None:
    lines, stderr, code = await run_tail("--json", start_server=start_server)
    assert code == 0 and "Traceback" not in stderr
    ticks = [orjson.loads(line) for line in lines]
    assert [(t["s"], t["q"]) for t in ticks] == [
        ("AAPL", 1),
        ("MSFT", 1),
        ("AAPL", 2),
        ("MSFT", 2),
        ("AAPL", 3),
        ("MSFT", 3),
    ]
    assert ticks[0].keys() == {"s", "p", "b", "t", "q"}
