"""``--feed`` with plugins, through real ``ticker`` processes: the example plugin found by
its entry point in real distribution metadata, several feeds into one bus, and every way a
plugin can be wrong as one stderr line and exit 2."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.conftest import require
from tests.net import free_port, wait_ready
from tests.plugin_dist import EXAMPLE, install
from tests.redis_server import RedisServer
from ticker.cli import build_parser
from ticker.cluster.wire import Keys

ROOT = Path(__file__).resolve().parent.parent
Msg = dict[str, Any]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A directory on the children's PYTHONPATH holding the installed example plugin and a
    package ``pkg`` with broken factories."""
    install(EXAMPLE, tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "myfeeds.py").write_text("def make(args):\n    return object()\n")
    (tmp_path / "pkg" / "broken.py").write_text("def make(args) return 1\n")
    return tmp_path


def child_env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKER_")}
    path = [str(site), str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(path), "PYTHONUNBUFFERED": "1"}


def ticker(
    site: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A ``ticker`` command run to its end (every one here ends before it listens)."""
    return subprocess.run(
        [sys.executable, "-m", "ticker", *argv],
        env={**child_env(site), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    for needle in needles:
        assert needle in line
    return line


@pytest.fixture
async def serving(site: Path) -> AsyncIterator[Any]:
    """Start ``ticker serve`` with these flags on a free port (or ``ticker feed``, with no
    port); each is stopped with SIGTERM."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(*argv: str, command: str = "serve") -> tuple[int, asyncio.subprocess.Process]:
        port = free_port()
        where = ["--port", str(port)] if command == "serve" else []
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "ticker", command, *where, *argv),
            stderr=asyncio.subprocess.PIPE,
            env=child_env(site),
        )
        procs.append(proc)
        return port, proc

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 10)


async def ticks_until(ws: aiohttp.ClientWebSocketResponse, symbols: set[str]) -> list[Msg]:
    """Tick frames until every symbol of ``symbols`` has had three live ticks."""
    got: list[Msg] = []
    async with asyncio.timeout(10):
        while not all(sum(t["s"] == s for t in got) >= 3 for s in symbols):
            frame = (await ws.receive()).json()
            if frame["type"] == "ticks":
                got += frame["ticks"]
    return got


def assert_gap_free(ticks: list[Msg]) -> None:
    by_symbol: dict[str, list[int]] = {}
    for tick in ticks:
        by_symbol.setdefault(tick["s"], []).append(tick["q"])
    for qs in by_symbol.values():
        assert qs == list(range(qs[0], qs[0] + len(qs)))


async def test_the_example_plugin_streams_to_a_websocket_subscriber(serving: Any) -> None:
    port, proc = await serving("--feed", "walk:EURUSD=1.08,GBPUSD=1.27;rate=50")
    async with aiohttp.ClientSession() as http:
        await wait_ready(http, port, proc)
        async with http.ws_connect(f"http://127.0.0.1:{port}/ws?symbols=*&mode=all") as ws:
            ticks = await ticks_until(ws, {"EURUSD", "GBPUSD"})
    assert {t["s"] for t in ticks} == {"EURUSD", "GBPUSD"}
    assert_gap_free(ticks)
    for tick in ticks:
        start = 1.08 if tick["s"] == "EURUSD" else 1.27
        assert abs(tick["p"] - start) < 0.1 and tick["b"] < tick["p"] < tick["a"]


async def test_two_feeds_at_once_reach_one_star_subscriber(serving: Any) -> None:
    port, proc = await serving(
        *("--feed", "sim", "--symbols", "3", "--rate", "300", "--seed", "1"),
        *("--feed", "walk:EURUSD=1.08;rate=50", "--log-level", "info"),
    )
    async with aiohttp.ClientSession() as http:
        await wait_ready(http, port, proc)  # ready: every feed has ticked
        async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
            assert (await resp.json())["feeds"] == {"sim": True, "walk": True}
        async with http.ws_connect(f"http://127.0.0.1:{port}/ws?symbols=*&mode=all") as ws:
            ticks = await ticks_until(ws, {"AAPL", "MSFT", "GOOGL", "EURUSD"})
    assert {t["s"] for t in ticks} == {"AAPL", "MSFT", "GOOGL", "EURUSD"}
    assert_gap_free(ticks)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert proc.stderr is not None
    log = (await proc.stderr.read()).decode()
    assert "feed sim: 3 symbols at 300 ticks/s" in log
    assert "feed walk: 1 symbol(s) (EURUSD) from --feed walk:EURUSD=1.08;rate=50" in log
    assert "Traceback" not in log


async def test_ticker_feed_runs_plugins_into_a_cluster(serving: Any, tmp_path: Path) -> None:
    """The cluster's publisher takes the same --feed: a plugin and sim, through a real Redis,
    reach a node that has no feed of its own."""
    redis = RedisServer(require("redis-server"), tmp_path)
    redis.start()
    try:
        await serving(
            *("--feed", "walk:EURUSD=1.08;rate=50", "--feed", "sim", "--symbols", "2"),
            *("--redis", redis.url),
            command="feed",
        )
        async with Redis.from_url(redis.url) as client, asyncio.timeout(10):
            while not await client.exists(Keys().epoch):  # the publisher is in
                await asyncio.sleep(0.05)
        # A node that joins the epoch at its start keeps its clients (one that joins later
        # restarts their streams).
        port, node = await serving("--feed", "none", "--redis", redis.url)
        async with aiohttp.ClientSession() as http:
            await wait_ready(http, port, node)
            async with http.ws_connect(f"http://127.0.0.1:{port}/ws?symbols=*&mode=all") as ws:
                ticks = await ticks_until(ws, {"EURUSD", "AAPL", "MSFT"})
        assert_gap_free(ticks)
    finally:
        redis.stop()


@pytest.mark.parametrize("command", [["serve"], ["feed", "--redis", "redis://127.0.0.1:1/0"]])
def test_a_symbol_claimed_by_two_feeds_is_refused_naming_both(
    site: Path, command: list[str]
) -> None:
    proc = ticker(site, *command, "--feed", "sim", "--feed", "walk:AAPL=190,ZZZZ=1,MSFT=420")
    line = one_line(proc, "symbols 'AAPL', 'MSFT' are claimed by two feeds, sim and walk")
    assert line.startswith(f"ticker {command[0]}: error: ")


@pytest.mark.parametrize(
    ("spec", "needles"),
    [
        ("nothere.mod:make", ["feed 'nothere.mod:make': cannot import nothere.mod: No module"]),
        ("pkg.myfeeds:absent", ["feed 'pkg.myfeeds:absent': pkg.myfeeds has no attribute"]),
        ("pkg.broken:make", ["feed 'pkg.broken:make': cannot import pkg.broken: SyntaxError"]),
        ("walk:AAPL", ["feed walk:AAPL: ValueError: 'AAPL': expected SYMBOL=PRICE"]),
        ("walk", ["feed walk: ValueError: give at least one SYMBOL=PRICE"]),
        ("pkg.myfeeds:make", ["feed 'pkg.myfeeds:make' returned object, not a FeedAdapter"]),
        ("bogus", ["unknown feed 'bogus'", "sim, replay:PATH", "walk (installed plugins)"]),
        ("sim:5", ["feed 'sim' takes no :ARGS"]),
    ],
)
def test_a_broken_plugin_is_one_line_and_exit_2(site: Path, spec: str, needles: list[str]) -> None:
    one_line(ticker(site, "serve", "--port", "1", "--feed", spec), *needles)


def test_ticker_feed_says_the_same(site: Path) -> None:
    proc = ticker(site, "feed", "--redis", "redis://127.0.0.1:1/0", "--feed", "walk:AAPL")
    one_line(proc, "ticker feed: error: feed walk:AAPL: ValueError:")


@pytest.fixture
def on_path(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The plugin installed for this process too (entry points are read from sys.path)."""
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield


def test_feed_repeats_and_the_variable_takes_several(
    on_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = build_parser().parse_args(["serve", "--feed", "sim", "--feed", "walk:A=1,B=2"])
    assert [str(spec) for spec in args.feed] == ["sim", "walk:A=1,B=2"]
    assert str(build_parser().parse_args(["serve"]).feed) == "sim"
    monkeypatch.setenv("TICKER_FEED", "sim  walk:A=1,B=2")
    assert [str(s) for s in build_parser().parse_args(["serve"]).feed] == ["sim", "walk:A=1,B=2"]
    # A flag replaces the variable's feeds, as any flag wins over the environment.
    assert str(build_parser().parse_args(["serve", "--feed", "walk:C=3"]).feed) == "walk:C=3"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["--feed", "walk:X=1", "--speed", "2"],
            "--speed is for --feed replay:PATH, not --feed walk:X=1",
        ),
        (["--feed", "walk:X=1", "--rate", "5"], "--rate is for --feed sim, not --feed walk:X=1"),
        (["--feed", "walk:X=1", "--symbols", "3"], "--symbols is for --feed sim"),
        (
            ["--feed", "walk:X=1", "--feed", "none"],
            "--feed none means no local feed: drop it, or drop --feed walk:X=1",
        ),
    ],
)
def test_a_flag_no_chosen_feed_reads_is_refused(
    on_path: None, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plugin takes its options in its ARGS: the sim and replay flags mean nothing to it."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["serve", *argv])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert needle in line
