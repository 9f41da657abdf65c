"""The metrics and the grafana/ files against the real thing: promtool and a Prometheus server."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from subprocess import PIPE, STDOUT
from typing import Any

import aiohttp
import pytest
import yaml

from feeds.base import FeedProgress
from tests.conftest import SYMBOLS, StartServer, next_of, require
from tests.net import free_port
from tests.scrape import scrape
from ticker.core.publish import PublishLimits
from ticker.core.ticks import TickBatch

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "ticker.json"
RULES = GRAFANA / "alerts.yml"
JOB = "ticker"  # the job name the alerts and the example prometheus.yml use
ROWS = ["Traffic", "Clients", "Latency", "Feeds", "Publishing", "Process"]
PUBLISH_METRICS = [
    "ticker_publish_requests_total",
    "ticker_publish_ticks_total",
    "ticker_publish_rejected_ticks_total",
    "ticker_publishers",
    "ticker_publish_idempotency_keys",
]


class Replay:
    """A feed that ticks every symbol every 20 ms and reports progress like a replay."""

    name = "replay"

    def __init__(self) -> None:
        self.batches = 0

    def symbols(self) -> list[str]:
        return SYMBOLS

    async def stream(self) -> AsyncIterator[TickBatch]:
        while True:
            self.batches += 1
            yield [{"s": s, "p": 100.0 + self.batches} for s in SYMBOLS for _ in range(3)]
            await asyncio.sleep(0.02)

    def progress(self) -> FeedProgress:
        return FeedProgress(1_764_000_000.0 + self.batches, self.batches / 1e6)


async def attach_clients(http: aiohttp.ClientSession, url: Any) -> list[asyncio.Task[None]]:
    """Clients in both modes that read everything, and a rejected handshake."""
    sockets = [
        await http.ws_connect(url("/ws?symbols=AAPL,MSFT")),
        await http.ws_connect(url("/ws?symbols=*&mode=all")),
    ]
    for ws in sockets:
        await next_of(ws, "subscribed")
    async with http.get(url("/ws?max_hz=0")) as resp:
        assert resp.status == 400

    async def drain(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _ in ws:
            pass

    return [asyncio.create_task(drain(ws)) for ws in sockets]


async def attach_publisher(
    http: aiohttp.ClientSession, url: Any
) -> aiohttp.ClientWebSocketResponse:
    """Publishing of every kind: a POST accepted, one replayed, one refused (its ticks
    rejected), and a publisher WebSocket, acked once, left open."""
    batch = {"ticks": [{"s": "AAPL", "p": 1.5}, {"s": "MSFT", "p": 2.5}]}
    for body, key, status in (
        (batch, "once", 200),
        (batch, "once", 200),
        ({"ticks": [{"s": "AAPL", "p": True}, {"s": "MSFT"}]}, None, 400),
    ):
        headers = {"Idempotency-Key": key} if key else {}
        async with http.post(url("/publish"), json=body, headers=headers) as resp:
            assert resp.status == status, await resp.text()
    ws = await http.ws_connect(url("/publish"))
    await ws.send_json({"op": "publish", "id": 1, **batch})
    assert (await ws.receive_json())["type"] == "ack"
    return ws


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def substitute(expr: str) -> str:
    """What Grafana does to the template variables before it sends a query."""
    for var, val in {
        "$__rate_interval": "1m",
        "$job": JOB,
        "$instance": ".*",  # the "All" value
    }.items():
        expr = expr.replace(var, val)
    assert "$" not in expr, f"a template variable this test does not know: {expr}"
    return expr


# -- promtool --------------------------------------------------------------------------------


async def test_promtool_finds_nothing_wrong_with_live_metrics(start_server: StartServer) -> None:
    promtool = require("promtool")
    _, server = await start_server(feeds=(Replay(),), publish=PublishLimits())
    async with aiohttp.ClientSession() as http:
        readers = await attach_clients(http, server.make_url)
        publisher = await attach_publisher(http, server.make_url)
        await asyncio.sleep(0.1)  # ticks flow
        text, samples = await scrape(server.make_url("/metrics"))
        for task in readers:
            task.cancel()
        await publisher.close()
    assert samples[("ticker_connections", frozenset({("transport", "ws")}))] == 2
    assert samples[("ticker_publishers", frozenset())] == 1
    assert samples[("ticker_publish_ticks_total", frozenset())] == 4
    assert (
        samples[("ticker_publish_rejected_ticks_total", frozenset({("reason", "bad_request")}))]
        == 2
    )
    assert samples[("ticker_tick_latency_seconds_count", frozenset({("transport", "ws")}))] > 0
    check = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=PIPE, stdout=PIPE, stderr=STDOUT
    )
    output, _ = await asyncio.wait_for(check.communicate(text.encode()), 30)
    assert check.returncode == 0 and not output, output.decode()


def test_promtool_accepts_the_shipped_config_and_rules() -> None:
    promtool = require("promtool")
    for args in (
        ["check", "config", str(GRAFANA / "prometheus.yml")],
        ["check", "rules", str(RULES)],
    ):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    assert [c["job_name"] for c in config["scrape_configs"]] == [JOB]
    assert config["rule_files"] == [RULES.name]


# -- the shipped files -----------------------------------------------------------------------


def test_dashboard_takes_its_datasource_from_a_variable_and_has_the_rows() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert [p["title"] for p in dashboard["panels"] if p["type"] == "row"] == ROWS
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    for panel in graphs:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    for name in ("job", "instance"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    assert any(p["type"] == "heatmap" for p in graphs)
    for metric in PUBLISH_METRICS:  # the Publishing row shows every publishing metric
        assert any(metric in expr for expr in dashboard_exprs()), metric
    # no uid of someone's Grafana anywhere: only the variable
    uids = re.findall(r'"uid": "([^"]*)"', DASHBOARD.read_text())
    assert set(uids) == {"${datasource}", dashboard["uid"]}


def test_provisioning_points_grafana_at_the_dashboard_and_a_prometheus() -> None:
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]
    dashboards = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "ticker.yaml").read_text()
    )
    (provider,) = dashboards["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_every_alert_has_a_runbook() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    assert set(alerts) == {
        "TickerNodeDown",
        "TickerFeedStalled",
        "TickerLatencyP99High",
        "TickerSlowConsumerClosesSpiking",
        "TickerEventLoopLag",
        "TickerPublishRejected",
    }
    for name, rule in alerts.items():
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        assert len(notes["runbook"].splitlines()) >= 3, name


# -- a real Prometheus -----------------------------------------------------------------------


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    """Start Prometheus with ``start(target)``; it is stopped, by its PID, after the test."""
    binary = require("prometheus")
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        path = tmp_path / "prometheus.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        )
        log.close()
        return f"http://127.0.0.1:{port}"

    yield start, tmp_path / "prometheus.log"
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def api(http: aiohttp.ClientSession, base: str, path: str, **params: str) -> Any:
    async with http.get(f"{base}/api/v1/{path}", params=params) as resp:
        body = await resp.json()
    return body


async def test_real_prometheus_runs_every_dashboard_and_alert_expression(
    start_server: StartServer, prometheus: tuple[Any, Path]
) -> None:
    start, log = prometheus
    _, server = await start_server(feeds=(Replay(),), publish=PublishLimits())
    async with aiohttp.ClientSession() as http:
        publisher = await attach_publisher(http, server.make_url)  # before the first scrape
        base = start(f"{server.host}:{server.port}")
        readers = await attach_clients(http, server.make_url)
        scraped = "count_over_time(up{job=%r}[1m])" % JOB  # noqa: UP031 - PromQL quotes
        async with asyncio.timeout(30):
            while True:  # Prometheus up, then a few scrapes of a live node
                await asyncio.sleep(0.25)
                try:
                    result = (await api(http, base, "query", query=scraped))["data"]["result"]
                except aiohttp.ClientError:
                    continue
                if result and float(result[0]["value"][1]) >= 3:
                    break
        up = (await api(http, base, "query", query="up"))["data"]["result"]
        assert [r["value"][1] for r in up] == ["1"], log.read_text()

        empty = []
        for expr in dashboard_exprs():
            body = await api(http, base, "query", query=substitute(expr))
            assert body["status"] == "success", (expr, body)
            if not body["data"]["result"]:
                empty.append(expr)
        assert not empty, f"dashboard expressions without data: {empty}"
        for expr in rule_exprs():
            body = await api(http, base, "query", query=expr)
            assert body["status"] == "success", (expr, body)

        # the rules themselves are loaded and evaluate without error
        async with asyncio.timeout(10):
            while True:
                groups = (await api(http, base, "rules"))["data"]["groups"]
                rules = [r for g in groups for r in g["rules"]]
                if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules):
                    break
                await asyncio.sleep(0.25)
        assert len(rules) == len(rule_exprs())
        assert {r["name"]: r["health"] for r in rules} == {r["name"]: "ok" for r in rules}
        for task in readers:
            task.cancel()
        await publisher.close()
