"""The dashboard page and the JavaScript client, in a real headless Chromium.

Each server here is a real ``ticker serve`` process with the simulated feed, on a free port
of 127.0.0.1 (or, for the book tests, a node in a thread of this process, so the test can
set its book); the browser is the system's Chromium driven by Playwright (one per module).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Response,
    expect,
    sync_playwright,
)

from feeds.sim.symbols import symbol_names
from tests.conftest import SYMBOLS, require
from tests.net import free_port
from ticker.core.books import Level, canonical, checksum_text
from ticker.core.codes import BACKOFF, RECONNECT, CloseCode, Retry, reconnect_rule
from ticker.core.tokens import mint
from ticker.server.app import create_app
from ticker.server.books import BookService
from ticker.server.node import Node
from ticker.server.settings import Settings

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in a container: Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
N_SYMBOLS = 50
UNIVERSE = symbol_names(N_SYMBOLS)


class ServerProcess:
    """``ticker serve`` with the simulated feed in a subprocess, stopped with SIGTERM."""

    def __init__(self, port: int, *args: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # the page of another origin (localhost) in the documented example may connect
        origin = f"http://localhost:{port}"
        self.args = ["--symbols", str(N_SYMBOLS), "--seed", "1", "--allowed-origin", origin, *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServerProcess:
        cmd = [sys.executable, "-m", "ticker", "serve", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, env={**os.environ, "TICKER_LOG_LEVEL": "warning"})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the server exited early"
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)
        raise TimeoutError("the server did not become ready in 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                assert self.proc.wait(timeout=10) == 0
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = require("chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """A server shared by the tests that do not stop it: 50 symbols, 2 000 ticks/s."""
    server = ServerProcess(free_port(), "--rate", "2000").start()
    yield server
    server.stop()


class Problems(list[str]):
    """Console errors and warnings, page errors, failed and refused requests of a page."""

    def watch(self, page: Page) -> None:
        def console(msg: ConsoleMessage) -> None:
            if msg.type in ("error", "warning"):
                self.append(f"console {msg.type}: {msg.text}")

        def failed(request: Request) -> None:
            self.append(f"request failed: {request.url} {request.failure}")

        def response(resp: Response) -> None:
            if resp.status >= 400:
                self.append(f"HTTP {resp.status}: {resp.url}")

        page.on("console", console)
        page.on("pageerror", lambda exc: self.append(f"page error: {exc}"))
        page.on("requestfailed", failed)
        page.on("response", response)


@pytest.fixture
def problems() -> Problems:
    return Problems()


@pytest.fixture
def page(browser: Browser, problems: Problems) -> Iterator[Page]:
    """A fresh page (its own localStorage) whose problems are collected."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems.watch(page)
    yield page
    context.close()


def row_symbols(page: Page) -> list[str]:
    return page.locator("#rows .symbol").all_text_contents()


BACKGROUND = "getComputedStyle(document.body).backgroundColor"


def painted(page: Page, selector: str) -> int:
    """Pixels drawn on the (first) canvas matching the selector."""
    script = """(canvas) => {
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
        let n = 0;
        for (let i = 3; i < data.data.length; i += 4) if (data.data[i] !== 0) n++;
        return n;
    }"""
    return int(page.eval_on_selector(selector, script))


def wait_live(page: Page, timeout_ms: float = 10_000) -> None:
    expect(page.locator("#status-state")).to_have_text("live", timeout=timeout_ms)


def test_the_page_loads_with_no_console_errors_and_no_failed_requests(
    page: Page, server: ServerProcess, problems: Problems
) -> None:
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(f"{server.url}/?symbols=AAPL,MSFT&mode=all&max_hz=50&token=t0ken")
    wait_live(page)
    assert row_symbols(page) == ["AAPL", "MSFT"]
    # the address's parameters go through to the handshake; the second socket fetches
    # the history once (with the token too)
    url, history = sockets
    assert url.startswith(f"ws://127.0.0.1:{server.port}/ws?")
    assert "symbols=AAPL%2CMSFT&mode=all&max_hz=50&token=t0ken" in url
    assert history == f"ws://127.0.0.1:{server.port}/ws?token=t0ken"
    expect(page.locator("#rows .last").first).not_to_have_text("")
    expect(page.locator("#status-epoch")).not_to_have_text("-")
    page.wait_for_timeout(1000)  # ticks, sparklines, the chart, status updates
    assert page.locator("#status-rate").inner_text() != "0"
    assert page.locator("#status-p50").inner_text().endswith(" ms")
    assert page.evaluate(BACKGROUND) == "rgb(255, 255, 255)"  # light by default
    # the chart follows the selected symbol, in either view, from the keyboard
    page.get_by_role("button", name="Show MSFT in the chart").press("Enter")
    expect(page.locator("#chart-title")).to_have_text(re.compile(r"^MSFT: last \d"))
    page.get_by_role("button", name="Candles").press("Enter")
    expect(page.get_by_role("button", name="Candles")).to_have_attribute("aria-pressed", "true")
    page.wait_for_timeout(300)
    assert painted(page, "#chart") > 500 and painted(page, "#rows .spark") > 0
    assert problems == []


def wait_for_history(page: Page, server: ServerProcess, symbol: str, wanted: int) -> int:
    """Counts, not time: wait (up to ~2 min) until the dashboard's history fetch gets at
    least `wanted` ticks of `symbol`; how many it got (0 if never enough)."""
    page.goto(f"{server.url}/healthz")
    return int(
        page.evaluate(
            """async ([symbol, wanted]) => {
                const { fetchHistory } = await import("/static/history.js");
                for (let i = 0; i < 1200; i++) {
                  const { ticks } = await fetchHistory("/ws", [symbol]);
                  const n = ticks.get(symbol)?.length ?? 0;
                  if (n >= wanted) return n;
                  await new Promise((resolve) => setTimeout(resolve, 100));
                }
                return 0;
            }""",
            [symbol, wanted],
        )
    )


def wait_first_screen(page: Page) -> None:
    """Until every row has its history and the chart has drawn more than a few bars."""
    page.wait_for_function(
        "() => [...window.tickerDashboard.rows.values()].every((row) => row.backfilled > 0)"
        " && (window.tickerDashboard.chart?.bars ?? 0) > 5"
        " && [...window.tickerDashboard.rows.values()].every((row) => row.sparkBars > 5)"
    )


HISTORY_WANTED = 400  # ticks of AAPL the server must hold before the page opens: ~10 s


def test_the_first_screen_is_backfilled_from_history_with_a_time_axis_and_distinct_prices(
    page: Page, server: ServerProcess, problems: Problems
) -> None:
    assert wait_for_history(page, server, "AAPL", HISTORY_WANTED) >= HISTORY_WANTED
    page.goto(f"{server.url}/?symbols=AAPL,MSFT,GOOGL")
    expect(page.locator("#status-rate")).not_to_have_text("0")  # a dash until measured
    wait_first_screen(page)
    chart = page.evaluate(
        """() => {
            const d = window.tickerDashboard;
            const series = d.rows.get("AAPL").series;
            return { ...d.chart, oldest: series.time[series.at(series.length - 1)],
                     opened: performance.timeOrigin, bars: series.length };
        }"""
    )
    # bars from before the page existed: only the server's history can have drawn them
    assert chart["oldest"] < chart["opened"] - 5000 and chart["bars"] > 5
    assert chart["fromMs"] <= chart["oldest"] + 1000
    times = [label["t"] for label in chart["xLabels"]]
    assert len(times) >= 2 and times == sorted(set(times))
    texts = [label["text"] for label in chart["xLabels"]]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d", text) for text in texts)
    assert texts == sorted(set(texts))  # increasing, within the same day
    assert len(chart["yLabels"]) >= 2 and len(set(chart["yLabels"])) == len(chart["yLabels"])
    span_s = round((chart["toMs"] - chart["fromMs"]) / 1000)
    assert span_s >= 5
    expect(page.locator("#chart-title")).to_have_text(re.compile(r"^AAPL: last \d+ (s|min)"))
    for i in range(3):  # the Trend column: every sparkline drawn, over its backfilled bars
        assert painted(page, f"#rows tr:nth-child({i + 1}) .spark") > 0
    assert problems == []


def test_the_chart_has_the_servers_bars_within_2s_an_interval_picker_and_a_crosshair(
    page: Page, server: ServerProcess, problems: Problems
) -> None:
    assert wait_for_history(page, server, "AAPL", HISTORY_WANTED) >= HISTORY_WANTED
    page.goto(f"{server.url}/?symbols=AAPL")
    page.wait_for_function("() => (window.tickerDashboard.chart?.bars ?? 0) > 5", timeout=2000)
    oldest = page.evaluate(
        """() => { const s = window.tickerDashboard.chartSeries;
                   return s.time[s.at(s.length - 1)] - performance.timeOrigin; }"""
    )
    assert oldest < -5000  # bars from before the page existed: the candle history
    page.select_option("#interval", "1m")
    page.wait_for_function(
        """() => { const d = window.tickerDashboard;
                   return d.chartSeries.barMs === 60000 && (d.chart?.bars ?? 0) >= 1; }"""
    )
    topics = page.evaluate("window.tickerDashboard.client.symbols")
    assert "AAPL@1m" in topics and "AAPL@1s" not in topics
    x, y = page.evaluate(
        """() => { const d = window.tickerDashboard, c = d.chart, s = d.chartSeries;
                   const t = s.time[s.head] + s.barMs / 2;
                   const rect = document.getElementById("chart").getBoundingClientRect();
                   const px = c.left + ((t - c.fromMs) / (c.toMs - c.fromMs)) * c.width;
                   return [rect.left + px / c.ratio, rect.top + rect.height / 2]; }"""
    )
    page.mouse.move(x, y)
    number = r"\d[\d,.]*"
    readout = rf"^\d\d:\d\d:00 o {number} h {number} l {number} c {number} v {number}$"
    expect(page.locator("#crosshair")).to_have_text(re.compile(readout))
    page.select_option("#interval", "1s")
    page.wait_for_function("() => (window.tickerDashboard.chart?.bars ?? 0) > 5", timeout=2000)
    assert problems == []


def test_the_change_counts_from_the_streams_first_tick_when_the_history_still_has_it(
    page: Page, problems: Problems
) -> None:
    server = ServerProcess(free_port(), "--rate", "100").start()  # ~2 ticks/s per symbol
    try:
        assert wait_for_history(page, server, "AAPL", 20) >= 20
        first = page.evaluate(
            """async () => {
                const { fetchHistory } = await import("/static/history.js");
                return (await fetchHistory("/ws", ["AAPL"])).ticks.get("AAPL")[0];
            }"""
        )
        assert first["q"] == 1  # a young stream: its history starts at the beginning
        page.goto(f"{server.url}/?symbols=AAPL")
        wait_live(page)
        page.wait_for_function("() => window.tickerDashboard.rows.get('AAPL').backfilled > 0")
        opens = page.evaluate("() => JSON.parse(localStorage.getItem('ticker.opens')).prices")
        assert opens["AAPL"] == first["p"]  # not the first price this page happened to see
    finally:
        server.stop()
    assert problems == []


def test_price_labels_are_distinct_where_the_range_is_one_cent_and_rates_wait_for_a_second(
    page: Page, server: ServerProcess
) -> None:
    page.goto(f"{server.url}/healthz")
    result = page.evaluate(
        """async () => {
            const { priceTicks, timeTicks } = await import("/static/chart.js");
            const { RollingStats } = await import("/static/stats.js");
            const label = ({ values, digits }) => values.map((v) => v.toFixed(digits));
            const stats = new RollingStats(5);
            const fresh = stats.summary(1_000_000).rate;
            stats.record([{ t: 1_000_000_000 }], 1_000_000);
            const sameSecond = stats.summary(1_000_500).rate;
            const nextSecond = stats.summary(1_001_000).rate;
            return {
              cent: label(priceTicks(257.985, 257.995, 4)),
              wide: label(priceTicks(250, 262, 5)),
              times: timeTicks(1_000_000, 1_100_000, 6),
              fresh, sameSecond, nextSecond,
            };
        }"""
    )
    for labels in (result["cent"], result["wide"]):
        assert len(labels) >= 2 and len(set(labels)) == len(labels), labels
    assert result["cent"][0].startswith("257.98")
    assert result["wide"] == ["250", "255", "260"]
    steps = {b - a for a, b in pairwise(result["times"])}
    assert len(steps) == 1 and len(result["times"]) <= 6
    assert result["fresh"] is None and result["sameSecond"] is None
    assert result["nextSecond"] == 1


def test_a_server_requiring_a_token_shows_the_login_field_then_goes_live_with_one(
    page: Page,
) -> None:
    secret = "dashboard-secret-" * 3
    server = ServerProcess(free_port(), "--auth-secret", secret).start()
    try:
        page.goto(f"{server.url}/?symbols=AAPL")  # no token: the handshake gets 401
        expect(page.locator("#token-form")).to_be_visible(timeout=10_000)
        expect(page.get_by_role("alert")).to_contain_text("enter a token")
        token = mint(secret.encode(), sub="viewer", symbols=["AAPL"], ttl_s=600)
        page.locator("#token").fill(token)
        page.locator("#token").press("Enter")
        wait_live(page)
        assert row_symbols(page) == ["AAPL"]
    finally:
        server.stop()


def test_a_bad_mode_in_the_address_is_explained_not_thrown(
    page: Page, server: ServerProcess, problems: Problems
) -> None:
    page.goto(f"{server.url}/?symbols=AAPL&mode=fast")
    expect(page.get_by_role("alert")).to_have_text(
        'Check the page address: mode must be one of: conflate, all (got "fast")'
    )
    expect(page.locator("#status-state")).to_have_text("not connected")
    assert problems == []


def test_dark_and_phone_width(browser: Browser, server: ServerProcess) -> None:
    context = browser.new_context(color_scheme="dark", viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{server.url}/?symbols=AAPL,MSFT,GOOGL")
    wait_live(page)
    assert page.evaluate(BACKGROUND) == "rgb(17, 20, 24)"
    # nothing wider than the phone's screen; the wide columns step aside
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    expect(page.get_by_role("button", name="Add")).to_be_in_viewport()
    expect(page.locator("#rows .bid").first).to_be_hidden()
    expect(page.locator("#rows .last").first).to_be_visible()
    context.close()


def test_adding_a_symbol_shows_its_price_changing_within_2s_and_removing_stops_it(
    page: Page, server: ServerProcess, problems: Problems
) -> None:
    page.goto(f"{server.url}/?symbols=AAPL")
    wait_live(page)
    # keyboard only: the labelled field, Enter to add
    page.get_by_label("Add symbol").focus()
    page.keyboard.type("tsla")  # completion from `list` gives the server's spelling
    start = time.monotonic()
    page.keyboard.press("Enter")
    expect(page.locator("#rows .symbol")).to_have_text(["AAPL", "TSLA"], timeout=2000)
    first = page.locator("#rows .last").nth(1)
    expect(first).not_to_have_text("", timeout=2000)
    before = first.inner_text()
    remaining = max(1.0, 2000 - (time.monotonic() - start) * 1000)
    expect(first).not_to_have_text(before, timeout=remaining)
    assert time.monotonic() - start < 2.0
    assert page.evaluate("new URL(location.href).searchParams.get('symbols')") == "AAPL,TSLA"

    page.evaluate("""() => {
        const client = window.tickerDashboard.client;
        window.probe = { unsubscribed: false, after: {TSLA: 0, AAPL: 0} };
        client.on("unsubscribed", () => { window.probe.unsubscribed = true; });
        client.on("ticks", (ticks) => {
            if (!window.probe.unsubscribed) return;
            for (const t of ticks) if (t.s in window.probe.after) window.probe.after[t.s] += 1;
        });
    }""")
    page.get_by_role("button", name="Remove TSLA").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#rows .symbol")).to_have_text(["AAPL"])
    page.wait_for_function("window.probe.unsubscribed")
    page.wait_for_timeout(700)
    after = page.evaluate("window.probe.after")
    assert after["TSLA"] == 0 and after["AAPL"] > 0  # the rest of the stream goes on
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Remove AAPL"

    page.get_by_label("Add symbol").fill("NOPE")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text("Unknown symbol: NOPE")
    assert row_symbols(page) == ["AAPL"]

    page.goto(f"{server.url}/")  # the watchlist is kept in localStorage too
    wait_live(page)
    assert row_symbols(page) == ["AAPL"]
    assert problems == []


def test_status_follows_a_silent_server_and_a_restart_with_fresh_prices_and_no_duplicate_rows(
    page: Page,
) -> None:
    server = ServerProcess(free_port(), "--rate", "2000", "--heartbeat", "1").start()
    state = page.locator("#status-state")
    try:
        page.goto(f"{server.url}/?symbols=AAPL,MSFT,NVDA")
        wait_live(page)
        first_epoch = page.locator("#status-epoch").inner_text()

        # frozen, not closed: after twice heartbeat_s of silence the page gives up on it
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        try:
            expect(state).not_to_have_text("live", timeout=5000)
            last_close = page.evaluate("window.tickerDashboard.client.lastClose")
            assert last_close == {"code": 1006, "reason": "no data from the server"}
        finally:
            server.proc.send_signal(signal.SIGCONT)
        wait_live(page)
        expect(page.locator("#status-epoch")).to_have_text(first_epoch)  # the same stream

        server.stop()
        expect(state).to_have_text(re.compile(r"reconnecting in \d+ s"), timeout=5000)
        expect(state).to_have_attribute("data-state", "reconnecting")
        restarted_us = time.time() * 1e6
        server = ServerProcess(server.port, "--rate", "2000", "--seed", "2").start()
        wait_live(page, timeout_ms=15_000)
        expect(page.locator("#status-epoch")).not_to_have_text(first_epoch)
        assert row_symbols(page) == ["AAPL", "MSFT", "NVDA"]
        page.wait_for_function(
            "since => [...window.tickerDashboard.rows.values()].every(r => r.t > since)",
            arg=restarted_us,
            timeout=3000,
        )
        expect(page.get_by_role("alert")).to_contain_text("server restarted")
        assert page.locator("#rows tr").count() == 3
    finally:
        server.stop()


CLIENT = "const { TickerClient } = await import('/static/ticker-client.js');"
UNTIL = """
const until = (client, type, test = () => true, ms = 5000) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} in ${ms} ms`)), ms);
    const off = client.on(type, (detail) => {
        if (test(detail)) { off(); clearTimeout(timer); resolve(detail); }
    });
});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
"""


def run_js(page: Page, body: str) -> Any:
    """Run `body` in an async function that has TickerClient, until() and sleep()."""
    return page.evaluate(f"async () => {{ {CLIENT} {UNTIL} {body} }}")


def test_js_client_snapshot_ticks_list_subscribe_unsubscribe_close(
    page: Page, server: ServerProcess
) -> None:
    page.goto(f"{server.url}/healthz")  # any page of the server's origin can import it
    result = run_js(
        page,
        """
        const client = new TickerClient("/ws", { symbols: ["AAPL"] });
        const statuses = [];
        client.on("status", ({ status }) => statuses.push(status));
        const epoch = until(client, "epoch");
        const snapshot = until(client, "snapshot");
        client.connect();
        const first = await epoch;
        const snap = await snapshot;
        await until(client, "ticks", (ticks) => ticks.some((t) => t.s === "AAPL"));
        const symbols = await client.list();
        client.subscribe(["MSFT"]);
        const subscribed = await until(client, "subscribed");
        await until(client, "ticks", (ticks) => ticks.some((t) => t.s === "MSFT"));
        client.unsubscribe("AAPL");
        const unsubscribed = await until(client, "unsubscribed");
        const after = { AAPL: 0, MSFT: 0 };
        client.on("ticks", (ticks) => { for (const t of ticks) after[t.s] += 1; });
        await sleep(700);
        client.close();
        await sleep(300);
        return { first, snap, symbols, subscribed, unsubscribed, after, statuses,
                 mine: client.symbols, welcome: client.welcome };
        """,
    )
    assert result["first"] == {"epoch": result["welcome"]["epoch"], "previous": None}
    (tick,) = result["snap"]
    assert tick["s"] == "AAPL" and {"p", "q", "t"} <= tick.keys()
    assert result["symbols"] == sorted(UNIVERSE)
    assert result["subscribed"] == ["AAPL", "MSFT"]
    assert result["unsubscribed"] == ["MSFT"] == result["mine"]
    assert result["after"]["AAPL"] == 0 and result["after"]["MSFT"] > 0
    assert result["statuses"] == ["connecting", "live", "closed"]


def test_the_documented_example_runs_from_a_page_of_another_origin(
    page: Page, server: ServerProcess, problems: Problems
) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "javascript-client.md").read_text()
    example = re.search(r"```html\n<script type=\"module\">\n(.*?)</script>\n```", doc, re.S)
    assert example, "the example is missing from docs/javascript-client.md"
    code = example.group(1).replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")
    assert len(code.strip().splitlines()) <= 11
    logs: list[str] = []
    page.on("console", lambda msg: logs.append(msg.text))
    # localhost and 127.0.0.1 are two origins: the import needs the CORS header
    page.goto(f"http://localhost:{server.port}/healthz")
    page.add_script_tag(content=code, type="module")
    expect(page).to_have_title(re.compile(r"^(AAPL|MSFT) \d+\.\d\d$"))
    assert logs[:2] == ["connecting ", "live "], logs
    assert problems == []


def test_js_client_reconnect_rules_follow_the_close_code_table(
    page: Page, server: ServerProcess
) -> None:
    # (code, attempt, the jitter's random value): the JS delays against the Python table's
    cases = [
        [1006, 0, 0],
        [1001, 1, 0.5],
        [1011, 3, 1],
        [1006, 20, 0.5],
        [4029, 0, 0.5],
        [4008, 0, 1],
        [1000, 0, 0.5],
        [1009, 2, 0.5],
    ]
    page.goto(f"{server.url}/healthz")
    rules = run_js(
        page,
        """
        const m = await import('/static/ticker-client.js');
        return {
            noReconnect: m.NO_RECONNECT, rateLimited: m.RATE_LIMITED,
            delays: CASES.map(([code, attempt, unit]) => m.backoffDelay(code, attempt, () => unit)),
        };
        """.replace("CASES", str(cases)),
    )
    assert rules["noReconnect"] == [c for c in CloseCode if RECONNECT[c].retry is Retry.NEVER]
    assert rules["rateLimited"] == CloseCode.RATE_LIMITED
    expected = [BACKOFF.delay_s(reconnect_rule(c).retry, a, u) for c, a, u in cases]
    assert expected[-2:] == [None, None]  # 1000 and 1009: no reconnect
    assert rules["delays"] == pytest.approx([None if d is None else 1000 * d for d in expected])

    result = run_js(
        page,
        """
        // a request over max_message_bytes (the server would close with 1009) is refused
        // in the client, with an error, and the connection stays up
        const big = new TickerClient("/ws", { symbols: ["AAPL"] });
        big.connect();
        await until(big, "status", ({ status }) => status === "live");
        const statuses = [];
        const off = big.on("status", ({ status, code }) => statuses.push([status, code]));
        const refused = until(big, "error");
        big.subscribe(Array.from({ length: 2100 }, (_, i) => `S${i}`.padEnd(32, "x")));
        const error = await refused;
        await sleep(300);
        const bigSymbols = big.symbols;
        off();
        big.close();

        // 4029: past the rate limit; the next attempt waits 5 s +/- 20 %
        const chatty = new TickerClient("/ws");
        chatty.connect();
        await until(chatty, "status", ({ status }) => status === "live");
        const limit = chatty.welcome.limits.ops_per_s;
        // Bursts of exactly enough to be closed by the last message (with messages still
        // unread, the server's socket would reset the connection: the browser sees 1006),
        // a second apart (a full bucket again) in case a token came back within one.
        const left = until(chatty, "status", ({ status }) => status !== "live", 8000);
        for (let burst = 0; burst < 3 && chatty.status === "live"; burst++) {
            for (let i = 0; i < 2 * limit + 1; i++) chatty.list().catch(() => {});
            await sleep(1100);
        }
        const throttled = await left;
        chatty.close();
        return { statuses, error, bigSymbols, throttled };
        """,
    )
    assert result["statuses"] == [] and result["bigSymbols"] == ["AAPL"]
    assert result["error"]["code"] == "client" and "65536-byte" in result["error"]["message"]
    throttled = result["throttled"]
    assert throttled["status"] == "reconnecting" and throttled["code"] == 4029
    assert 3900 <= throttled["retryInMs"] <= 6000


def test_js_client_resumes_the_same_epoch_without_repeats_and_counts_missed_ticks(
    page: Page, server: ServerProcess
) -> None:
    page.goto(f"{server.url}/healthz")
    result = run_js(
        page,
        """
        const client = new TickerClient("/ws", { symbols: ["AAPL"], mode: "all" });
        const qs = [];
        const gaps = [];
        const epochs = [];
        let reconnecting = false;
        let resumedAt = null;
        const keep = (ticks) => { for (const t of ticks) qs.push(t.q); };
        client.on("snapshot", keep);
        client.on("ticks", keep);
        client.on("gap", (gap) => gaps.push(gap));
        client.on("epoch", (e) => epochs.push(e));
        client.on("welcome", () => { if (reconnecting) resumedAt = qs.length; });
        // counts, not time: a loaded machine delivers fewer ticks in a given time
        const atLeast = async (n) => {
          const end = Date.now() + 10000;
          while (qs.length < n && Date.now() < end) await sleep(20);
        };
        client.connect();
        await until(client, "status", ({ status }) => status === "live");
        await atLeast(15);
        reconnecting = true;
        client.reconnect();
        await until(client, "status", ({ status }) => status === "live");
        await atLeast(resumedAt + 15);
        client.close();
        return { qs, gaps, epochs, resumedAt };
        """,
    )
    qs, at = result["qs"], result["resumedAt"]
    assert len(result["epochs"]) == 1  # the same stream: no new epoch on reconnect
    assert at > 10 and len(qs) > at + 10
    assert all(a < b for a, b in pairwise(qs)), "a tick repeated or reordered"
    # mode all: every tick of each connection, in order
    assert all(b == a + 1 for a, b in pairwise(qs[:at]))
    assert all(b == a + 1 for a, b in pairwise(qs[at:]))
    missed = qs[at] - qs[at - 1] - 1
    assert sum(g["missed"] for g in result["gaps"]) == missed
    assert all(g["symbol"] == "AAPL" for g in result["gaps"])


def test_keeps_30_fps_and_a_flat_heap_under_20000_ticks_per_second(
    browser: Browser, problems: Problems
) -> None:
    rate = 20_000
    server = ServerProcess(free_port(), "--rate", str(rate)).start()
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    problems.watch(page)
    try:
        page.goto(f"{server.url}/?mode=all&symbols={','.join(UNIVERSE)}")
        wait_live(page)
        page.evaluate("""() => {
            // rAF timestamps into a fixed buffer, so measuring adds nothing to the heap
            const frames = new Float64Array(1 << 14);
            let n = 0;
            let ticks = 0;
            window.tickerDashboard.client.on("ticks", (t) => { ticks += t.length; });
            const loop = (ts) => { frames[n++ & 16383] = ts; requestAnimationFrame(loop); };
            requestAnimationFrame(loop);
            window.measure = () => {
                const count = Math.min(n, 16384);
                const ts = Array.from({ length: count }, (_, i) => frames[(n - count + i) & 16383]);
                let worst = 0;
                for (let i = 1; i < ts.length; i++) worst = Math.max(worst, ts[i] - ts[i - 1]);
                return { n, ts: [ts[0], ts[ts.length - 1]], worst, ticks, now: performance.now() };
            };
        }""")
        cdp = context.new_cdp_session(page)

        def heap() -> int:
            cdp.send("HeapProfiler.collectGarbage")
            return int(cdp.send("Runtime.getHeapUsage")["usedSize"])

        start = time.monotonic()
        samples = []
        for at in (5, 12, 19, 26, 30):  # 30 s under load; the first 5 s warm up
            time.sleep(max(0.0, start + at - time.monotonic()))
            if at == 5:
                early = page.evaluate("window.measure()")
            samples.append(heap())
        late = page.evaluate("window.measure()")
        page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)
    finally:
        context.close()
        server.stop()
    seconds = (late["now"] - early["now"]) / 1000
    fps = (late["n"] - early["n"]) / seconds
    tick_rate = (late["ticks"] - early["ticks"]) / seconds
    report = {
        "fps": round(fps, 1),
        "worst_frame_ms": round(late["worst"], 1),
        "ticks_per_s": round(tick_rate),
        "heap_mb": [round(s / 2**20, 2) for s in samples],
    }
    (ARTIFACTS / "dashboard-load.json").write_text(json.dumps(report, indent=2))
    print(report)
    assert tick_rate > rate / 2, report  # the page really was under load
    assert fps >= 30, report
    # Bounded: all history is preallocated, so the heap after GC stays near where it was after
    # the warm-up (it wobbles by about a MB: compiled code, frames in flight). Keeping even
    # one number per tick would add 4 MB in these 25 s; an object per tick, tens of MB.
    assert max(samples) - samples[0] < 3 * 2**20, report
    assert problems == []


def test_a_browser_event_source_streams_and_resumes_by_last_event_id(page: Page) -> None:
    """The browser's own EventSource on /sse: when the stream ends, it reconnects by itself
    with Last-Event-ID, and the server replays what was missed: no gap, no repeat."""
    server = ServerProcess(free_port(), "--rate", "2000", "--ops-per-s", "1").start()
    try:
        page.goto(f"{server.url}/healthz")
        result = sse_reconnect(page)
    finally:
        server.stop()
    qs = result["qs"]
    assert len(result["welcomes"]) == 2, result
    assert result["closes"] == [4029]
    assert [w["epoch"] for w in result["welcomes"]] == [result["welcomes"][0]["epoch"]] * 2
    assert result["recovered"] == [None, {UNIVERSE[0]: True}]
    assert qs == list(range(qs[0], qs[0] + len(qs)))  # across the reconnect: no gap, no repeat


def sse_reconnect(page: Page) -> Any:
    return page.evaluate(
        """async (symbol) => {
        const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
        const es = new EventSource(`/sse?symbols=${symbol}&mode=all`);
        const qs = [], welcomes = [], recovered = [], closes = [];
        const keep = (e) => { for (const t of JSON.parse(e.data).ticks) qs.push(t.q); };
        es.addEventListener("snapshot", keep);
        es.addEventListener("ticks", keep);
        es.addEventListener("welcome", (e) => welcomes.push(JSON.parse(e.data)));
        es.addEventListener("subscribed", (e) => recovered.push(JSON.parse(e.data).recovered));
        es.addEventListener("close", (e) => closes.push(JSON.parse(e.data).code));
        for (let i = 0; qs.length < 20 && i < 200; i++) await sleep(50);
        const session = welcomes[0].session;
        // past the rate limit (1 op/s on this server): the server ends the stream, 4029
        const ping = `/sse/${session}/ping`;
        for (let i = 0; i < 5; i++) await fetch(ping, { method: "POST", body: "{}" });
        const deadline = Date.now() + 15000;  // a failure, not a hang
        while ((welcomes.length < 2 || qs.length < 200) && Date.now() < deadline) await sleep(50);
        es.close();
        return { qs, welcomes, recovered, closes, state: es.readyState };
    }""",
        UNIVERSE[0],
    )


def test_a_feed_that_ended_marks_its_rows_closed_in_the_dashboard_and_the_js_client(
    page: Page, problems: Problems
) -> None:
    tardis = Path(__file__).parent / "data" / "tardis_trades.csv"  # BTCUSDT, flat out
    server = ServerProcess(
        free_port(), "--feed", "sim", "--feed", f"replay:{tardis}", "--speed", "0"
    )
    server.start()
    try:
        page.goto(f"{server.url}/?symbols=BTCUSDT,AAPL")
        wait_live(page)
        expect(page.locator('#rows tr[data-status="closed"] .symbol')).to_have_text("BTCUSDT")
        assert page.locator("#rows tr[data-status]").count() == 1  # AAPL is live
        result = run_js(
            page,
            """
            const client = new TickerClient("/ws", { symbols: ["BTCUSDT"] });
            const told = until(client, "symbolstatus");
            client.connect();
            const symbols = await told;
            const status = client.symbolStatus("BTCUSDT");
            client.close();
            return { symbols, status, aapl: client.symbolStatus("AAPL") };
            """,
        )
    finally:
        server.stop()
    assert result["symbols"]["BTCUSDT"]["status"] == "closed"
    assert result["status"]["reason"] == "the feed ended"
    assert result["aapl"] == {"status": "live"}
    assert problems == []


# ---- books: a node in a thread of this process, whose books the test sets -------------

T = TypeVar("T")


class NodeThread:
    """A node with no feeds (``book_interval_s`` 3600: the test runs the passes) served on
    127.0.0.1 by an event loop in a thread of its own, so that the synchronous Playwright
    of this module can drive a page while the test sets the node's books."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.node = Node(Settings(port=self.port, book_interval_s=3600), ())
        self.node.bus.add_symbols(SYMBOLS)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner = web.AppRunner(create_app(self.node), access_log=None)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=10)

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the node's loop (where its sessions live)."""

        async def call() -> T:
            return fn()

        return self.run(call())

    @property
    def books(self) -> BookService:
        assert self.node.books is not None
        return self.node.books

    def set_book(
        self, symbol: str, bids: list[Level], asks: list[Level], reset: bool = False
    ) -> int:
        """One change set applied now (a pass); the book's ``u`` after it."""

        def change() -> int:
            self.books.submit(symbol, bids, asks, reset)
            self.books.pump()
            return self.books.books.book(symbol).u

        return self.call(change)

    def start(self) -> NodeThread:
        self.thread.start()

        async def start() -> None:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        self.run(start())
        return self

    def stop(self) -> None:
        self.run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def book_node() -> Iterator[NodeThread]:
    node = NodeThread().start()
    yield node
    node.stop()


def ladder(page: Page) -> dict[str, list[str]]:
    """The ladder's filled rows as "price size", top to bottom: asks, then bids."""
    rows = page.evaluate(
        """() => ["asks", "bids"].map((side) =>
            [...document.querySelectorAll(`#ladder-${side} tr`)]
              .map((tr) => `${tr.cells[0].textContent} ${tr.cells[1].textContent}`)
              .filter((text) => text !== " "))"""
    )
    return {"asks": rows[0], "bids": rows[1]}


def test_the_ladder_and_depth_chart_show_the_selected_symbols_book_and_follow_the_selection(
    page: Page, book_node: NodeThread, problems: Problems
) -> None:
    bids = [(100.0 - i / 4, 1.0 + i) for i in range(12)]  # 12 bids: the ladder shows 10
    asks = [(100.5, 0.30000000000000004), (101.0, 2.5), (101.5, 1.305e-05)]
    book_node.set_book("AAPL", bids, asks, reset=True)
    book_node.set_book("MSFT", [(189.1, 3.0)], [(189.2, 4.0)], reset=True)
    page.goto(f"{book_node.url}/?symbols=AAPL,MSFT")
    wait_live(page)
    page.wait_for_function("() => window.tickerDashboard.book?.bids === 10")
    shown = ladder(page)
    # asks above bids, best of each next to the spread; prices lined up on their decimals,
    # sizes without float noise
    assert shown["asks"] == ["101.50 0.00001305", "101.00 2.5", "100.50 0.3"]
    assert shown["bids"] == [f"{p:.2f} {canonical(s)}" for p, s in bids[:10]]
    expect(page.locator("#ladder-spread")).to_have_text("spread 0.5")
    expect(page.locator("#book-empty")).to_be_hidden()
    assert painted(page, "#depth") > 500
    bars = page.eval_on_selector_all(
        "#ladder-bids .depth-bar span", "(spans) => spans.map((s) => s.style.transform)"
    )
    assert bars[-1] == "scaleX(1)" and bars[0] == f"scaleX({round(1 / 10, 3)})"

    book_node.set_book("AAPL", [(100.25, 7.0), (100.0, 0.0)], [(100.5, 0.0)])  # a delta
    expect(page.locator("#ladder-spread")).to_have_text("spread 0.75")
    assert ladder(page)["bids"][:2] == ["100.25 7", "99.75 2"]

    page.get_by_role("button", name="Show MSFT in the chart").click()
    expect(page.locator("#ladder-spread")).to_have_text("spread 0.1")
    assert ladder(page) == {"asks": ["189.2 4"], "bids": ["189.1 3"]}
    topics = page.evaluate("window.tickerDashboard.client.symbols")
    assert "MSFT@book50" in topics and "AAPL@book50" not in topics
    followers = book_node.call(book_node.books.followers)
    assert followers == 1  # the old topic was unsubscribed on the server too
    page.get_by_role("button", name="Remove MSFT").click()  # AAPL again
    expect(page.locator("#ladder-spread")).to_have_text("spread 0.75")
    assert problems == []


AWKWARD = [1.305e-05, 100.0, 189.1, 12345678.9, 0.1 + 0.2, 1e21, 1e-7, 1e16, 2.5e-8, 1 / 3]


FAILED = "window.seen.errors.length > 0"  # stop waiting: the client found a mismatch


def awkward_change(rng: random.Random, prices: list[float]) -> list[Level]:
    """A few levels of ``prices`` at awkward sizes, some removed."""
    sizes = [*AWKWARD, 0.0, 0.0]
    return [(p, rng.choice(sizes)) for p in rng.sample(prices, rng.randint(1, 4))]


def test_the_js_clients_checksum_equals_the_servers_cs_on_every_frame_of_awkward_numbers(
    page: Page, book_node: NodeThread
) -> None:
    # bids below asks, each side with levels entering and leaving its top 10
    bid_prices = [1.305e-05, 2.5e-8, 1e-7, 0.1 + 0.2, 1 / 3, 100.0, 189.1, 0.7, 3.3, 9.99]
    bid_prices += [float(i) / 7 for i in range(1, 13)]
    ask_prices = [12345678.9, 1e21, 1e16, 1.5e21, 2e3 + 0.1 + 0.2, 12345678.900000002]
    ask_prices += [1e3 * i + 0.1 for i in range(1, 13)]
    page.goto(f"{book_node.url}/healthz")
    run_js(
        page,
        """
        const { bookChecksum } = await import("/static/book.js");
        const client = new TickerClient("/ws", { symbols: ["AAPL@book10", "AAPL@book"] });
        const seen = window.seen = { frames: 0, errors: [], mismatches: [] };
        client.on("error", (e) => seen.errors.push(e));
        client.on("book", ({ topic, book }) => {
            seen.frames += 1;
            const mine = bookChecksum(book.bids, book.asks);
            if (mine !== book.cs) seen.mismatches.push([topic, book.u, mine, book.cs]);
        });
        window.client = client;
        client.connect();
        await until(client, "book");
        await until(client, "book");  // both snapshots
        """,
    )
    rng = random.Random(20)
    u = book_node.set_book("AAPL", [(p, 1.0) for p in bid_prices[:5]], [(1e21, 0.1 + 0.2)], True)
    for step in range(120):
        u = book_node.set_book(
            "AAPL", awkward_change(rng, bid_prices), awkward_change(rng, ask_prices)
        )
        if step % 10 == 9:  # the client keeps up: most passes are a frame of their own
            page.wait_for_function(
                f"u => {FAILED} || window.client.book('AAPL@book')?.u === u", arg=u
            )
    book = book_node.books.books.book("AAPL")
    page.wait_for_function(
        f"cs => {FAILED} || ['AAPL@book10', 'AAPL@book']"
        ".every((topic) => window.client.book(topic)?.cs === cs)",
        arg=book.cs,
    )
    result = page.evaluate(
        """() => {
            const text = (b) => b && `${b.bids.checksumText()}|${b.asks.checksumText()}`;
            const b10 = window.client.book("AAPL@book10"), all = window.client.book("AAPL@book");
            window.client.close();
            return { ...window.seen, text10: text(b10), text: text(all), top: all?.top() };
        }"""
    )
    assert result["errors"] == [] and result["mismatches"] == []
    assert result["frames"] > 100  # of both topics
    expected = checksum_text(
        [(p, book.bids.levels[p]) for p in book.bids.best(10)],
        [(p, book.asks.levels[p]) for p in book.asks.best(10)],
    )
    assert result["text10"] == result["text"] == expected
    assert "e" not in expected and any(canonical(x) in expected for x in (1.305e-05, 1e-7, 2.5e-8))
    assert result["top"] == {"bids": book.bids.top(None), "asks": book.asks.top(None)}

    # the formatting alone, against the reference, over doubles of every magnitude
    rng = random.Random(1)
    numbers = [*AWKWARD, 5e-324, 1.7976931348623157e308, -2.5e-8, 1e-6, 1e-5, 123e18, 0.5]
    numbers += [rng.random() * 10 ** rng.randint(-12, 25) for _ in range(300)]
    written = run_js(
        page,
        """const { canonical } = await import("/static/book.js");
        return NUMBERS.map(canonical);""".replace("NUMBERS", json.dumps(numbers)),
    )
    assert written == [canonical(x) for x in numbers]


def test_a_corrupted_book_frame_is_an_error_event_and_the_topic_starts_again_from_a_snapshot(
    page: Page, book_node: NodeThread
) -> None:
    book_node.set_book("AAPL", [(100.0, 5.0)], [(100.5, 1.0)], reset=True)
    page.goto(f"{book_node.url}/healthz")
    result = run_js(
        page,
        """
        // the client's socket, so the page can hand it frames the server never sent
        let socket = null;
        class Tap extends WebSocket {
            constructor(url) { super(url); socket = this; }
        }
        const inject = (frame) => socket.onmessage({ data: JSON.stringify(frame) });
        const client = new TickerClient("/ws", { symbols: ["AAPL@book10"], WebSocket: Tap });
        client.connect();
        const first = (await until(client, "book")).book;
        const { u, cs } = first;
        const delta = { type: "book", s: "AAPL", depth: 10, u: u + 1, pu: u, asks: [] };
        delta.bids = [[99.0, 1.0]];
        const errors = [];
        for (const bad of [{ ...delta, cs: (cs ^ 1) >>> 0 }, { ...delta, pu: u - 1, cs }]) {
            const told = until(client, "error");
            const again = until(client, "book", ({ snapshot }) => snapshot);
            inject(bad);
            errors.push(await told);
            const fresh = (await again).book;  // unsubscribed and subscribed again
            errors.push({ u: fresh.u, bids: fresh.top().bids });
        }
        client.close();
        return { u, errors };
        """,
    )
    wrong_cs, after_cs, broken_pu, after_pu = result["errors"]
    u = result["u"]
    assert wrong_cs["code"] == "book" and wrong_cs["topic"] == "AAPL@book10"
    assert re.fullmatch(
        rf"AAPL@book10: cs \d+ at u {u + 1}, but the book's is \d+", wrong_cs["message"]
    )
    assert broken_pu["message"] == f"AAPL@book10: pu {u - 1} does not chain to u {u}"
    for fresh in (after_cs, after_pu):  # the server's book, not the injected level
        assert fresh == {"u": u, "bids": [[100.0, 5.0]]}


def test_a_server_without_books_says_so_in_the_book_panel_not_as_an_alert(
    page: Page, problems: Problems
) -> None:
    server = ServerProcess(free_port(), "--book-interval-ms", "0").start()
    try:
        page.goto(f"{server.url}/?symbols=AAPL")
        wait_live(page)
        expect(page.locator("#book-empty")).to_have_text("This server serves no books.")
        expect(page.locator("#rows .last").first).not_to_have_text("")  # the rest goes on
        assert page.get_by_role("alert").inner_text() == ""
        assert "AAPL@book50" not in page.evaluate("window.tickerDashboard.client.symbols")
    finally:
        server.stop()
    assert problems == []
