"""``ticker tail``: the table and the book ladder on a (fake) terminal, and the command
piped, against live servers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import StartServer, TtyBuffer
from tests.test_client_books import unchained_book_server
from ticker.client import OrderBook, Status, Tick
from ticker.client.books import LocalBooks
from ticker.commands.tail import (
    Ladder,
    Screen,
    TickTable,
    book_json,
    book_line,
    news,
    split_targets,
    tail,
    tick_line,
)
from ticker.core.books import Books, Level

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
    assert rest == b"" and proc.returncode is not None
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


def order_book(bids: list[Level], asks: list[Level], depth: int | None = 10) -> OrderBook:
    """The client's book after a snapshot of these levels, as the engine writes it."""
    engine = Books()
    engine.apply("AAPL", bids, asks, [], reset=True)
    return LocalBooks().accept(orjson.loads(engine.book("AAPL").snapshot(depth)))


def test_the_ladder_has_asks_above_bids_below_and_the_spread_between() -> None:
    ladder = Ladder()
    assert ladder.render(0) == ["waiting for the book's snapshot...", "connecting..."]
    ladder.update(order_book([(189.11, 200.0), (189.1, 500.0)], [(189.13, 100.0), (189.15, 300.0)]))
    header, *rows, status = ladder.render(0)
    assert header.startswith("AAPL@book10  u=1  cs=") and header.endswith(" ok  spread=0.02")
    assert [r.split()[:3] for r in rows] == [
        ["ask", "189.15", "300"],
        ["ask", "189.13", "100"],
        ["------", "spread", "0.02"],
        ["bid", "189.11", "200"],
        ["bid", "189.1", "500"],
    ]
    assert rows[-1].endswith("#" * Ladder.BAR) and status == "connecting..."
    ladder.mark(Status("AAPL", "stale", "book crossed", 0))
    _, ask, _, bid, _ = ladder.render(0, max_rows=4)  # the touch is what fits
    assert ask.split()[1] == "189.13" and bid.split()[1] == "189.11"
    assert ladder.render(0)[0].startswith("AAPL@book10 [stale]  u=1")


def test_book_lines_and_targets() -> None:
    book = order_book([(0.00001305, 2.5)], [], depth=None)
    assert book_line(book) == (
        f"AAPL@book u=1 snapshot bid=0.00001305x2.5 ask=- spread=- levels=1/0 cs={book.cs} ok"
    )
    assert orjson.loads(book_json(book))["bids"] == [[1.305e-05, 2.5]]
    assert split_targets([], "AAPL", 50) == ("ws://127.0.0.1:8080/ws", ["AAPL@book50"])
    assert split_targets(["http://h:1/poll"], "AAPL") == ("http://h:1/poll", ["AAPL@book10"])
    wrong: tuple[tuple[list[str], str | None], ...] = (
        (["MSFT"], "AAPL"),
        ([], "*"),
        ([], "AAPL@1m"),
        (["AAPL@book10"], None),
    )
    for targets, symbol in wrong:
        with pytest.raises(ValueError, match="--book"):
            split_targets(targets, symbol)


async def test_tail_book_on_a_terminal_draws_the_ladder_in_place(
    start_server: StartServer,
) -> None:
    node, server = await start_server(book_interval_s=3600)  # the test runs the passes
    books = node.books
    assert books is not None
    books.submit("AAPL", [(99.5, 3.0), (99.25, 1.0)], [(100.25, 2.0)], reset=True)
    books.pump()
    out, err = TtyBuffer(), TtyBuffer()
    url = f"ws://{server.host}:{server.port}/ws"
    task = asyncio.create_task(tail(url, ["AAPL@book10"], out=out, err=err))
    async with asyncio.timeout(5):
        while "99.25" not in out.getvalue():
            await asyncio.sleep(0.02)
        books.submit("AAPL", [(99.25, 0.0), (99.75, 4.0)], [])
        books.pump()
        while "u=2" not in out.getvalue():
            await asyncio.sleep(0.02)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    last = out.getvalue().rsplit("\x1b[2KAAPL@book10", 1)[1].split("\n")
    assert last[0].startswith("  u=2  cs=") and " ok  spread=0.5" in last[0]
    assert [line.removeprefix("\x1b[2K").split()[:3] for line in last[1:5]] == [
        ["ask", "100.25", "2"],
        ["------", "spread", "0.5"],
        ["bid", "99.75", "4"],
        ["bid", "99.5", "3"],
    ]
    assert "\x1b[6F" in out.getvalue() and err.getvalue() == ""  # redrawn in place


async def test_tail_book_piped_prints_a_line_per_update_as_the_node_has_it(
    start_server: StartServer,
) -> None:
    node, server = await start_server(book_interval_s=3600)
    books = node.books
    assert books is not None
    books.submit("MSFT", [(50.0, 1.0)], [(50.5, 1.0)], reset=True)
    books.pump()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ticker",
        "tail",
        f"http://{server.host}:{server.port}/sse",
        "--book",
        "MSFT",
        "--depth",
        "50",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(20):
        lines.append((await proc.stdout.readline()).decode().rstrip("\n"))
        for i in range(3):
            books.submit("MSFT", [(50.0 - i / 10, 2.0 + i)], [(50.5, 0.0), (50.25, 3.0)])
            books.pump()
            lines.append((await proc.stdout.readline()).decode().rstrip("\n"))
        proc.send_signal(signal.SIGINT)
        rest, stderr = await proc.communicate()
    assert proc.returncode == 0 and rest == b"" and "Traceback" not in stderr.decode()
    book = books.books.book("MSFT")
    first = "MSFT@book50 u=1 snapshot bid=50x1 ask=50.5x1 spread=0.5 levels=1/1 cs="
    assert lines[0].startswith(first) and lines[0].endswith(" ok")
    assert lines[-1] == (
        f"MSFT@book50 u={book.u} bid=50x2 ask=50.25x3 spread=0.25 levels=3/1 cs={book.cs} ok"
    )


async def test_tail_book_that_does_not_check_out_exits_1_saying_why(aiohttp_server: Any) -> None:
    server = await aiohttp_server(unchained_book_server())
    out, err = TtyBuffer(), TtyBuffer()
    url = f"ws://{server.host}:{server.port}/ws"
    async with asyncio.timeout(5):
        code = await tail(url, ["AAPL@book10"], out=out, err=err)
    assert code == 1 and err.getvalue() == (
        "ticker tail: the book does not check out: "
        "AAPL@book10: pu 4 does not chain to the last u 3\n"
    )
    assert out.getvalue().endswith("\x1b[?25h")  # the cursor given back
