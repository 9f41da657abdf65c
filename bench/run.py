"""`make bench`: ticker and two baselines, side by side, on this machine, in one go.

Absolute numbers move on a shared two-core box, so every figure is also given as a ratio
against baselines measured in the same invocation: a naive aiohttp broadcaster and a
minimal node + ws one. Each server runs in its own process pinned to one core, the load
generator (bench/loadgen.py) in another pinned to the other core; CPU and memory are read
from /proc, from outside the servers.

    python -m bench.run                       # everything (~10-15 min)
    python -m bench.run --quick               # shorter steps, fewer runs (~2-3 min)
    python -m bench.run --scenario fanout --server ticker

Results: a table on stdout, JSON + markdown in bench/results/ (see bench/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench import books, candles, exchanges, publishing, redis_scaleout, workers
from tests.net import free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
NODE_DIR = BENCH / "baseline_node"
BUN_DIR = BENCH / "baseline_bun"
BUN = BUN_DIR / "node_modules" / "@oven" / "bun-linux-x64" / "bin" / "bun"
RESULTS = BENCH / "results"
HOST = "127.0.0.1"
PY = sys.executable

SERVERS = ("ticker", "naive-aiohttp", "node-ws", "bun")
BASELINES = ("naive-aiohttp", "node-ws", "bun")
SHORT = {"naive-aiohttp": "naive", "node-ws": "node", "bun": "bun"}
"""Each baseline's name in a ratio column's header (``ticker/naive``)."""
SCENARIOS = (
    *("fanout", "latency", "connections", "slow", "inprocess", "ceiling", "metrics"),
    *("redis", "publish", "workers", "exchanges", "candles", "books"),
)
PEER_INTERVAL_MS = 2
"""How often the node and bun baselines emit the ticks due (their feeds' batch interval)."""
UNIVERSE = 100
LOADGEN_SATURATED = 0.85
"""Load generator CPU (fraction of its core) above which its figures are suspect."""

TARGETS = {
    "fanout_max": 2_000_000,  # deliveries/s sustained (aim 3 M)
    "fanout_aim": 3_000_000,
    "light_p99_ms": 3.0,  # at 100 k deliveries/s
    "max_p99_ms": 100.0,  # at the max sustainable step (also the pass criterion)
    "cpu_us_per_tick": 0.5,  # at max
    "rss_per_conn_kib": 14.0,
    "slow_rss_growth_mb": 5.0,
    "healthy_delivery": 0.99,
    "p99_vs_noslow": 1.2,
    "metrics_cost": 0.05,  # extra server CPU with metrics on and scraped, at metrics_rate
}

_T0 = time.monotonic()


def progress(msg: str) -> None:
    """Progress goes to stderr so that a long run shows what it is doing."""
    print(f"[bench {time.monotonic() - _T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


# -- the plan ---------------------------------------------------------------------------


@dataclass
class Plan:
    """Every knob of a run; quick mode only shortens and thins it."""

    quick: bool = False
    fanout_rates: list[int] = field(
        default_factory=lambda: [
            *(250, 500, 1000, 2000, 5000, 10000, 20000),
            *(30000, 40000, 50000, 60000, 80000, 100000),
        ]
    )
    """Ticks/s. Climbs from ``light_rate`` until two steps fail; below it only when the
    light step fails (to find a baseline's maximum)."""
    ramp_budget: float = 40.0
    """Seconds the load generator may spend connecting (a saturated server is slow to)."""
    fanout_conns: int = 1000
    fanout_symbols_per_conn: int = 10
    fanout_warmup: float = 2.0
    fanout_duration: float = 6.0
    light_rate: int = 1000  # x 100 subscribers = 100 k deliveries/s
    min_delivery: float = 0.99
    fails_to_stop: int = 2
    latency_rates: list[int] = field(default_factory=lambda: [100, 1000, 2000, 10000])
    """Ticks/s of the latency steps: x 100 subscribers = 10 k, 100 k, 200 k, 1 M deliveries/s."""
    latency_idle_rate: float = 0.01
    """The idle step: 1 000 connections and (almost) no ticks, so what is left is the
    server's fixed cost (timers, heartbeats, metrics)."""
    conn_sizes: list[int] = field(default_factory=lambda: [5000, 10000])
    conn_rate: float = 100.0
    conn_warmup: float = 3.0
    conn_duration: float = 5.0
    slow_healthy: int = 200
    slow_symbols_per_conn: int = 10
    slow_clients: int = 5
    slow_rate: float = 2000.0
    slow_warmup: float = 3.0
    slow_duration: float = 20.0
    ceiling_ticks_per_frame: list[int] = field(default_factory=lambda: [20, 500])
    ceiling_duration: float = 5.0
    metrics_rate: int = 20000  # x 100 subscribers = 2 M deliveries/s, the fan-out target
    metrics_pairs: int = 3
    """Runs with metrics off and on, alternated (off, on, off, on...)."""
    metrics_scrape_every: float = 1.0
    """Seconds between scrapes of /metrics while metrics are on (Prometheus: 15 s)."""
    ticker_args: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if not quick:
            return cls()
        return cls(
            quick=True,
            fanout_rates=[250, 1000, 5000, 20000],
            fanout_warmup=1.0,
            fanout_duration=3.0,
            conn_sizes=[2000],
            conn_warmup=2.0,
            conn_duration=3.0,
            slow_warmup=1.0,
            slow_duration=8.0,
            ceiling_ticks_per_frame=[20],
            ceiling_duration=2.0,
            metrics_pairs=1,
            ramp_budget=8.0,
        )


@dataclass
class Context:
    plan: Plan
    names: list[str]
    logdir: Path
    pins: Pinning
    ticker_src: Path
    available: dict[str, str | None]
    """Server name -> None when it can run, else why it is skipped."""
    notes: list[str] = field(default_factory=list)
    runs: int = 0


# -- processes --------------------------------------------------------------------------


@dataclass
class Pinning:
    server: list[str]
    loadgen: list[str]
    cores: tuple[int, int] | None
    note: str


def pinning() -> Pinning:
    """taskset prefixes for the server and the load generator: two different cores."""
    allowed = sorted(os.sched_getaffinity(0))
    if shutil.which("taskset") and len(allowed) >= 2:
        a, b = allowed[0], allowed[1]
        note = f"taskset: server on core {a}, load generator on core {b}"
        return Pinning(["taskset", "-c", str(a)], ["taskset", "-c", str(b)], (a, b), note)
    return Pinning([], [], None, "NOT pinned (taskset or a second core missing): noisier")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def server_command(
    ctx: Context, name: str, port: int, rate: float, extra: Sequence[str] = ()
) -> tuple[list[str], Path]:
    """The argv (and working directory) of one server under test; ``extra`` flags go to
    ticker only."""
    if name == "ticker":
        argv = [PY, "-m", "ticker", "serve", "--host", HOST, "--port", str(port)]
        argv += ["--symbols", str(UNIVERSE), "--rate", f"{rate:g}", "--seed", "1"]
        return [*argv, "--log-level", "warning", *ctx.plan.ticker_args, *extra], ctx.ticker_src
    if name == "naive-aiohttp":
        argv = [PY, "-m", "bench.baseline_aiohttp", "--host", HOST, "--port", str(port)]
        return [*argv, "--symbols", str(UNIVERSE), "--rate", f"{rate:g}", "--seed", "1"], ROOT
    if name in ("node-ws", "bun"):
        where = NODE_DIR if name == "node-ws" else BUN_DIR
        runtime = "node" if name == "node-ws" else str(BUN)
        argv = [runtime, str(where / "server.js"), "--host", HOST, "--port", str(port)]
        argv += ["--rate", f"{rate:g}", "--interval-ms", str(PEER_INTERVAL_MS)]
        return [*argv, "--symbols", ",".join(ctx.names)], where
    if name == "blaster":
        argv = [PY, "-m", "bench.blaster", "--host", HOST, "--port", str(port)]
        return [*argv, "--ticks-per-frame", f"{rate:g}"], ROOT
    raise ValueError(name)


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Terminate, then kill if it has not gone within ``timeout``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5.0)


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"not listening on port {port} after {timeout:g}s")


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def server(
    ctx: Context, name: str, rate: float, label: str, extra: Sequence[str] = ()
) -> Iterator[Server]:
    """A server under test, pinned, on a free port; always stopped on the way out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKER_")}
    if name == "ticker":  # ticks alone, as the baselines serve them (an older tree: unread)
        env["TICKER_SIM_BOOKS"] = "0"
    log_path = ctx.logdir / f"{label}.log"
    error = ""
    for _attempt in range(3):  # a free port can be taken between probe and bind
        port = free_port()
        argv, cwd = server_command(ctx, name, port, rate, extra)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [*ctx.pins.server, *argv],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop it in order
            )
        try:
            try:
                wait_listening(proc, port)
            except RuntimeError as exc:
                error = f"{name} {exc}: {log_tail(log_path)}"
                if "in use" in error.lower():
                    continue  # lost the race for the port: try another
                break
            time.sleep(0.3)  # let the feed start ticking
            yield Server(name, proc, port, log_path)
            return
        finally:
            stop(proc)
    raise RuntimeError(error)


def server_log_problems(path: Path) -> list[str]:
    """Lines of a server's log that deserve a look (it runs at log level warning)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if re.search(r"WARNING|ERROR|CRITICAL|Error", ln)]


def log_problems(ctx: Context, label: str) -> list[str]:
    """Suspicious lines from a run's server log (and its repeat's, if it had one)."""
    lines = []
    for name in (label, f"{label}-again"):
        lines += server_log_problems(ctx.logdir / f"{name}.log")
    return lines[:5]


def run_loadgen(
    ctx: Context,
    srv: Server,
    *,
    conns: int,
    symbols_per_conn: int,
    warmup: float,
    duration: float,
    mode: str = "all",
    slow: int = 0,
    slow_mode: str = "all",
    sample_every: int = 0,
    latency_field: str = "t",
) -> dict[str, Any]:
    argv = [*ctx.pins.loadgen, PY, "-m", "bench.loadgen", "--host", HOST, "--port", str(srv.port)]
    argv += ["--latency-field", latency_field]
    argv += ["--server-pid", str(srv.pid), "--symbol-names", ",".join(ctx.names)]
    argv += ["--conns", str(conns), "--symbols-per-conn", str(symbols_per_conn)]
    argv += ["--mode", mode, "--warmup", f"{warmup:g}", "--duration", f"{duration:g}"]
    argv += ["--ramp-budget", f"{ctx.plan.ramp_budget:g}", "--sample-every", str(sample_every)]
    if slow:
        argv += ["--slow", str(slow), "--slow-mode", slow_mode]
    if ctx.pins.cores:
        argv += ["--server-core", str(ctx.pins.cores[0]), "--own-core", str(ctx.pins.cores[1])]
    timeout = warmup + duration + ctx.plan.ramp_budget * 2 + 60
    r = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, timeout=timeout, check=False)
    lines = [ln for ln in r.stdout.decode(errors="replace").splitlines() if ln.strip()]
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"load generator exited with {r.returncode}")
    result: dict[str, Any] = json.loads(lines[-1])
    if srv.proc.poll() is not None:
        result["server_died"] = f"exit code {srv.proc.returncode}"
    return result


def scrape_ticker_closes(srv: Server) -> dict[str, Any]:
    """Close codes as ticker counted them (/metrics): what a stalled client cannot see."""
    url = f"http://{HOST}:{srv.port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    closes: dict[str, Any] = {}  # 1001 left out: every client's teardown at the end
    for m in re.finditer(r"^ticker_connections_closed_total\{([^}]*)\} (\S+)", text, re.M):
        code = re.search(r'code="([^"]*)"', m.group(1))
        if code and code.group(1) != "1001" and float(m.group(2)):
            closes[code.group(1)] = closes.get(code.group(1), 0) + float(m.group(2))
    return closes


RETRY_OTHER_WORK = 0.25
"""A run whose cores were this busy with someone else's work is measured once more."""


def measure(
    ctx: Context,
    name: str,
    rate: float,
    label: str,
    after: Callable[[Server], dict[str, Any]] | None = None,
    during: Callable[[Server], contextlib.AbstractContextManager[Any]] | None = None,
    server_args: Sequence[str] = (),
    **loadgen_args: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start the server, run the load generator against it (inside ``during``, if given),
    stop it: the load generator's report and whatever ``after`` gathered from the live
    server. Measured once more when other work shared the cores (a shared machine),
    keeping the quieter of the two."""
    best: tuple[dict[str, Any], dict[str, Any]] | None = None
    for attempt in range(2):
        name_again = label if not attempt else f"{label}-again"
        with server(ctx, name, rate, name_again, server_args) as srv:
            with during(srv) if during else contextlib.nullcontext():
                lg = run_loadgen(ctx, srv, **loadgen_args)
            extra = after(srv) if after else {}
        lg["other_work"] = other_work(lg)
        if best is None or lg["other_work"] < best[0]["other_work"]:
            best = (lg, extra)
        if lg["other_work"] <= RETRY_OTHER_WORK:
            break
        if not attempt:
            progress(f"  (cores {100 * lg['other_work']:.0f}% busy with other work: once more)")
    assert best is not None
    best[0]["attempts"] = attempt + 1
    return best


def other_work(lg: dict[str, Any]) -> float:
    """The larger share of either core spent on work that is neither ours nor idle."""
    own = {"server": lg["server"].get("cpu_frac"), "loadgen": lg["loadgen_cpu"]["window"]}
    shares = [c["busy"] - (own.get(role) or 0.0) for role, c in (lg.get("cores") or {}).items()]
    return max([0.0, *shares])


# -- derived figures --------------------------------------------------------------------


def ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


def summarize(lg: dict[str, Any], rate: float) -> dict[str, Any]:
    """Delivered vs expected, CPU per tick and latency from one load generator report."""
    window = lg["window_s"]
    delivered = lg["delivered"]["healthy"]
    expected = rate * lg["deliveries_per_tick"] * window
    lat = lg["latency_us"]
    cpu_s = lg["server"].get("cpu_s")
    order = lg["order"]
    return {
        "rate": rate,
        "expected_per_s": expected / window,
        "delivered_per_s": delivered / window,
        "delivery": delivered / expected if expected else None,
        "frames_per_s": lg["frames"] / window,
        "server_cpu": lg["server"].get("cpu_frac"),
        "cpu_us_per_tick": cpu_s * 1e6 / delivered if cpu_s is not None and delivered else None,
        "p50_ms": ms(lat["p50"]),
        "p99_ms": ms(lat["p99"]),
        "p999_ms": ms(lat["p999"]),
        "max_ms": ms(lat["max"]),
        "latency_n": lat["n"],
        "loadgen_cpu": lg["loadgen_cpu"]["window"],
        "loadgen_saturated": (lg["loadgen_cpu"]["window"] or 0) > LOADGEN_SATURATED,
        "connected": lg["connect"]["connected"],
        "planned": lg["connect"]["planned"],
        "connect_s": lg["connect"]["seconds"],
        "connect_errors": lg["connect"]["errors"],
        "closes": lg["closes"]["healthy"],
        "order_problems": order["gaps"] + order["dups"] + order["reorders"],
        "order": order,
        "server_died": lg.get("server_died"),
        "count_check": count_check(lg.get("count_check")),
        "cores": lg.get("cores", {}),
        "noise": noise(lg),
        "attempts": lg.get("attempts", 1),
    }


def noise(lg: dict[str, Any]) -> str | None:
    """Other work on the two cores during the window (busy beyond our own processes, or
    time stolen by the hypervisor): the measurement is then less trustworthy."""
    cores, notes = lg.get("cores") or {}, []
    own = {"server": lg["server"].get("cpu_frac"), "loadgen": lg["loadgen_cpu"]["window"]}
    for role, c in cores.items():
        other = c["busy"] - (own.get(role) or 0.0)
        if other > 0.10:
            notes.append(f"{role} core {100 * other:.0f}% busy with other work")
        if c["steal"] > 0.05:
            notes.append(f"{role} core {100 * c['steal']:.0f}% stolen")
    return "; ".join(notes) or None


def count_check(check: dict[str, int] | None) -> float | None:
    """Fast count / parsed count on the sampled connections: 1.0 when the byte counting
    that measures every other connection is exact."""
    if not check or check["parsed"] < 1000:
        return None
    return check["fast"] / check["parsed"]


def runnable(ctx: Context, servers: Sequence[str], out: dict[str, Any]) -> Iterator[str]:
    """The servers that can run here; the others are recorded as skipped, with why."""
    for name in servers:
        if ctx.available.get(name):
            out[name] = {"skipped": ctx.available[name]}
        else:
            yield name


# -- scenario 1: fan-out ladder -----------------------------------------------------------


def scenario_fanout(ctx: Context, servers: Sequence[str]) -> dict[str, Any]:
    p = ctx.plan
    out: dict[str, Any] = {}
    for name in runnable(ctx, servers, out):
        steps: list[dict[str, Any]] = []
        up = sorted(r for r in p.fanout_rates if r >= p.light_rate)
        down = sorted((r for r in p.fanout_rates if r < p.light_rate), reverse=True)
        stop_reason = "ladder exhausted"
        fails = 0
        for rate in up:
            step = fanout_step(ctx, name, rate, len(steps) + 1)
            steps.append(step)
            fails += not step["passed"]
            if step.get("loadgen_saturated"):
                stop_reason = "load generator saturated: higher steps would measure it"
                break
            if fails >= p.fails_to_stop:
                stop_reason = f"{fails} failed steps"
                break
            if rate == up[0] and not step["passed"]:
                stop_reason = f"failed at {rate} ticks/s already"
                break
        if down and not any(s["passed"] for s in steps):
            # Not even the light step passed: walk down until one does.
            for rate in down:
                step = fanout_step(ctx, name, rate, len(steps) + 1)
                steps.append(step)
                if step["passed"]:
                    stop_reason += f"; below {p.light_rate} ticks/s first pass at {rate}"
                    break
            steps.sort(key=lambda s: s["rate"])
        out[name] = {"steps": steps, "stopped": stop_reason, **ladder_figures(ctx, steps)}
    return out


def fanout_step(
    ctx: Context, name: str, rate: float, k: int, scenario: str = "fanout"
) -> dict[str, Any]:
    p = ctx.plan
    label = f"{scenario}-{name}-{rate:g}"
    progress(f"{scenario}: {name} step {k}: {rate:g} ticks/s x 100 subscribers")
    try:
        lg, _ = measure(
            ctx,
            name,
            rate,
            label,
            conns=p.fanout_conns,
            symbols_per_conn=p.fanout_symbols_per_conn,
            warmup=p.fanout_warmup,
            duration=p.fanout_duration,
        )
        step = summarize(lg, rate)
        step["passed"] = bool(
            step["delivery"] is not None
            and step["delivery"] >= p.min_delivery
            and step["p99_ms"] is not None
            and step["p99_ms"] <= TARGETS["max_p99_ms"]
        )
    except Exception as exc:
        step = {"rate": rate, "passed": False, "error": f"{type(exc).__name__}: {exc}"}
    step["log_problems"] = log_problems(ctx, label)
    progress(f"  -> {step_line(step)}")
    return step


def step_line(step: dict[str, Any]) -> str:
    if "error" in step:
        return f"error: {step['error'][:200]}"
    return (
        f"delivered {fmt_pct(step['delivery'])} of {fmt_rate(step['expected_per_s'])}/s, "
        f"p99 {fmt_ms(step['p99_ms'])}, server CPU {fmt_pct(step['server_cpu'])} "
        f"({fmt_num(step['cpu_us_per_tick'], 3)} us/tick), loadgen CPU "
        f"{fmt_pct(step['loadgen_cpu'])} -> {'pass' if step['passed'] else 'FAIL'}"
    )


def ladder_figures(ctx: Context, steps: list[dict[str, Any]]) -> dict[str, Any]:
    passed = [s for s in steps if s.get("passed")]
    best = max(passed, key=lambda s: s["rate"]) if passed else None
    measured = any("error" not in s for s in steps)  # all errors: no maximum to speak of
    light = next((s for s in steps if s.get("rate") == ctx.plan.light_rate), None)
    return {
        "max_rate": best["rate"] if best else None,
        "max_deliveries_per_s": best["rate"] * UNIVERSE if best else (0 if measured else None),
        "max_delivered_per_s": best["delivered_per_s"] if best else None,
        "p99_at_max_ms": best["p99_ms"] if best else None,
        "cpu_us_per_tick_at_max": best["cpu_us_per_tick"] if best else None,
        "light_p99_ms": light.get("p99_ms") if light else None,
        "light_delivery": light.get("delivery") if light else None,
    }


# -- scenario: latency at every load, against the peers ------------------------------------


def scenario_latency(ctx: Context, servers: Sequence[str]) -> dict[str, Any]:
    """The fan-out load at fixed steps, every server at each: latency and CPU side by side,
    where the ladder only looks for each one's maximum; plus an idle step."""
    p = ctx.plan
    out: dict[str, Any] = {}
    for name in runnable(ctx, servers, out):
        steps = [
            fanout_step(ctx, name, rate, k, "latency")
            for k, rate in enumerate([p.latency_idle_rate, *p.latency_rates], start=1)
        ]
        out[name] = {"idle": steps[0], "steps": steps[1:]}
    return out


# -- scenario 2: many idle connections ----------------------------------------------------


def scenario_connections(ctx: Context, servers: Sequence[str]) -> dict[str, Any]:
    p = ctx.plan
    out: dict[str, Any] = {}
    for name in runnable(ctx, servers, out):
        out[name] = {}
        for n in p.conn_sizes:
            label = f"connections-{name}-{n}"
            progress(f"connections: {name} with {n} idle connections ({p.conn_rate:g} ticks/s)")
            try:
                lg, _ = measure(
                    ctx,
                    name,
                    p.conn_rate,
                    label,
                    conns=n,
                    symbols_per_conn=1,
                    warmup=p.conn_warmup,
                    duration=p.conn_duration,
                )
                row = summarize(lg, p.conn_rate)
                s = lg["server"]
                row["rss_kb_idle"] = s["rss_kb_idle"]
                row["rss_kb_end"] = s["rss_kb_end"]
                connected = max(1, row["connected"])
                row["rss_per_conn_kib"] = (
                    (s["rss_kb_end"] - s["rss_kb_idle"]) / connected
                    if s["rss_kb_end"] is not None and s["rss_kb_idle"] is not None
                    else None
                )
                progress(
                    f"  -> {row['connected']}/{n} connected in {row['connect_s']:.1f}s, "
                    f"RSS {fmt_num(row['rss_per_conn_kib'], 1)} KiB/conn, "
                    f"delivered {fmt_pct(row['delivery'])}, p99 {fmt_ms(row['p99_ms'])}"
                )
            except Exception as exc:
                row = failed(exc)
            row["log_problems"] = log_problems(ctx, label)
            out[name][str(n)] = row
    return out


def failed(exc: Exception, **row: Any) -> dict[str, Any]:
    """A measurement that crashed: recorded with its error, and the run goes on."""
    row["error"] = f"{type(exc).__name__}: {exc}"
    progress(f"  -> error: {row['error'][:200]}")
    return row


# -- scenario 3: slow consumers -----------------------------------------------------------


def scenario_slow(ctx: Context, servers: Sequence[str]) -> dict[str, Any]:
    p = ctx.plan
    out: dict[str, Any] = {}
    for name in runnable(ctx, servers, out):
        runs: list[tuple[str, int, str]] = [
            ("no-slow", 0, "all"),
            ("slow-all", p.slow_clients, "all"),
        ]
        if name == "ticker":
            runs.append(("slow-conflate", p.slow_clients, "conflate"))
        out[name] = {}
        for run, n_slow, slow_mode in runs:
            label = f"slow-{name}-{run}"
            progress(
                f"slow consumers: {name} {run} ({p.slow_healthy} healthy x "
                f"{p.slow_symbols_per_conn} symbols + {n_slow} stalled on '*', "
                f"{p.slow_rate:g} ticks/s, {p.slow_duration:g}s)"
            )
            try:
                lg, server_closes = measure(
                    ctx,
                    name,
                    p.slow_rate,
                    label,
                    after=scrape_ticker_closes if name == "ticker" else None,
                    # no history rings filling up: the growth is the stalled clients' own
                    server_args=["--history", "0"] if name == "ticker" else (),
                    conns=p.slow_healthy,
                    symbols_per_conn=p.slow_symbols_per_conn,
                    warmup=p.slow_warmup,
                    duration=p.slow_duration,
                    slow=n_slow,
                    slow_mode=slow_mode,
                )
                row = summarize(lg, p.slow_rate)
                rss = [kb for _, kb in lg["server"]["rss_kb_samples"] if kb is not None]
                row["rss_growth_mb"] = (max(rss) - rss[0]) / 1024 if rss else None
                row["rss_end_growth_mb"] = (rss[-1] - rss[0]) / 1024 if rss else None
                row["rss_kb_samples"] = lg["server"]["rss_kb_samples"]
                row["slow"] = lg.get("slow", [])
                row["slow_outcomes"] = outcome_counts(lg.get("slow", []))
                row["server_closes"] = server_closes
                progress(
                    f"  -> RSS +{fmt_num(row['rss_growth_mb'], 1)} MB, healthy delivered "
                    f"{fmt_pct(row['delivery'])}, p99 {fmt_ms(row['p99_ms'])}, stalled: "
                    f"{fmt_outcomes(row['slow_outcomes']) or '-'}"
                )
            except Exception as exc:
                row = failed(exc)
            row["log_problems"] = log_problems(ctx, label)
            out[name][run] = row
        base = out[name].get("no-slow", {}).get("p99_ms")
        for row in out[name].values():
            p99 = row.get("p99_ms")
            row["p99_vs_noslow"] = p99 / base if p99 is not None and base else None
    return out


def comparable(row: dict[str, Any], key: str) -> float | None:
    """A latency figure, unless too few ticks arrived for it to mean anything."""
    delivery = row.get("delivery")
    return row[key] if delivery is not None and delivery >= TARGETS["healthy_delivery"] else None


def outcome_counts(slow: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in slow:
        key = str(s.get("outcome"))
        counts[key] = counts.get(key, 0) + 1
    return counts


def fmt_outcomes(counts: dict[str, int] | dict[str, float]) -> str:
    return ", ".join(f"{k} x{v:g}" for k, v in sorted(counts.items()))


# -- scenario 4: in-process (someone else's module) ------------------------------------------


def scenario_inprocess(ctx: Context) -> dict[str, Any]:
    """Run bench/inprocess.py's ``main() -> dict`` pinned, in a child process of its own."""
    path = BENCH / "inprocess.py"
    if not path.exists():
        return {"status": "n/a", "reason": "bench/inprocess.py does not exist"}
    progress("inprocess: bench/inprocess.py main()")
    out_path = ctx.logdir / "inprocess.json"
    argv = [*ctx.pins.server, PY, "-m", "bench.run", "--inprocess-child", str(out_path)]
    with open(ctx.logdir / "inprocess.log", "ab") as log:
        r = subprocess.run(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=900)
    if r.returncode != 0 or not out_path.exists():
        tail = log_tail(ctx.logdir / "inprocess.log")
        raise RuntimeError(f"bench/inprocess.py failed (exit {r.returncode}): {tail}")
    result = json.loads(out_path.read_text())
    if result.get("__no_main__"):
        return {"status": "n/a", "reason": "bench/inprocess.py has no main()"}
    return {"status": "ok", "result": result}


def inprocess_child(path: str) -> int:
    import importlib

    module = importlib.import_module("bench.inprocess")
    main = getattr(module, "main", None)
    if not callable(main):
        result: Any = {"__no_main__": True}
    else:
        with contextlib.redirect_stdout(sys.stderr):  # its prints must not mix with ours
            result = main()
    Path(path).write_text(json.dumps(result, default=str))
    return 0


# -- the load generator's own ceiling -------------------------------------------------------


def scenario_ceiling(ctx: Context) -> dict[str, Any]:
    """How many ticks/s the load generator can count on its core, against a blaster that
    does no per-tick work; the fan-out figures mean something only well below this."""
    p = ctx.plan
    rows: dict[str, Any] = {}
    for k in p.ceiling_ticks_per_frame:
        label = f"ceiling-{k}"
        progress(f"ceiling: blaster, 1000 connections, {k} ticks per frame")
        try:
            with server(ctx, "blaster", k, label) as srv:
                lg = run_loadgen(
                    ctx,
                    srv,
                    conns=1000,
                    symbols_per_conn=10,
                    warmup=1.0,
                    duration=p.ceiling_duration,
                    mode="conflate",  # the blaster repeats q: no sequence check
                    sample_every=-1,  # flat out, sampled sockets would get most of it
                )
            window = lg["window_s"]
            counted = lg["delivered"]["healthy"] / window
            cpu = lg["loadgen_cpu"]["window"] or 0.0
            row = {
                "ticks_per_frame": k,
                "counted_per_s": counted,
                "frames_per_s": lg["frames"] / window,
                "loadgen_cpu": cpu,
                "per_core_per_s": counted / cpu if cpu else None,
                "saturated": cpu > LOADGEN_SATURATED,
                "blaster_cpu": lg["server"].get("cpu_frac"),
            }
            progress(
                f"  -> counted {fmt_rate(counted)} ticks/s at {fmt_pct(cpu)} of a core "
                f"(~{fmt_rate(row['per_core_per_s'])}/s per core)"
            )
        except Exception as exc:
            row = failed(exc, ticks_per_frame=k)
        rows[str(k)] = row
    return rows


# -- scenario 6: what the metrics cost ------------------------------------------------------


@contextlib.contextmanager
def scraping(srv: Server, every: float, out: dict[str, Any]) -> Iterator[None]:
    """Scrape the server's /metrics every ``every`` seconds from a thread while the load
    runs, as Prometheus does (more often): the scrapes' own cost is part of the metrics'."""
    url = f"http://{HOST}:{srv.port}/metrics"
    stop = threading.Event()
    took: list[float] = []
    errors: list[str] = []

    def loop() -> None:
        while not stop.wait(every):
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    resp.read()
                took.append(time.perf_counter() - start)
            except OSError as exc:
                errors.append(str(exc))

    thread = threading.Thread(target=loop, name="scraper", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        out["scrapes"] = len(took)
        out["scrape_ms"] = 1000 * statistics.median(took) if took else None
        if errors:
            out["error"] = f"{len(errors)} scrape(s) failed: {errors[0]}"


def scenario_metrics(ctx: Context) -> dict[str, Any]:
    """ticker at the fan-out load with metrics off (``--no-metrics``) and on (scraped every
    second), alternated: the CPU per delivered tick that metrics add."""
    p = ctx.plan
    rate = p.metrics_rate
    runs: list[dict[str, Any]] = []
    for i in range(p.metrics_pairs):
        for on in (False, True):
            label = f"metrics-{'on' if on else 'off'}-{i + 1}"
            how = f"on, scraped every {p.metrics_scrape_every:g} s" if on else "off"
            progress(f"metrics: ticker at {rate} ticks/s x 100 subscribers, metrics {how}")
            scraped: dict[str, Any] = {}
            try:
                lg, _ = measure(
                    ctx,
                    "ticker",
                    rate,
                    label,
                    during=partial(scraping, every=p.metrics_scrape_every, out=scraped)
                    if on
                    else None,
                    server_args=() if on else ("--no-metrics",),
                    conns=p.fanout_conns,
                    symbols_per_conn=p.fanout_symbols_per_conn,
                    warmup=p.fanout_warmup,
                    duration=p.fanout_duration,
                )
                run = summarize(lg, rate)
                run["passed"] = (run["delivery"] or 0) >= p.min_delivery
            except Exception as exc:
                run = failed(exc, rate=rate, passed=False)
            run.update(scraped, metrics=on, log_problems=log_problems(ctx, label))
            progress(f"  -> {step_line(run)}")
            runs.append(run)

    def median(on: bool, key: str) -> float | None:
        values = [r[key] for r in runs if r["metrics"] is on and r.get(key) is not None]
        return statistics.median(values) if values else None

    off, on = median(False, "cpu_us_per_tick"), median(True, "cpu_us_per_tick")
    progress("metrics: instructions counted under valgrind, metrics off and on (~3 min)")
    try:
        argv = [*ctx.pins.server, PY, "-m", "bench.metrics_cost"]
        done = subprocess.run(argv, cwd=ctx.ticker_src, capture_output=True, timeout=2400)
        if done.returncode:
            raise RuntimeError(one_line(done.stderr.decode(errors="replace"))[-300:])
        counted: dict[str, Any] = json.loads(done.stdout.decode().splitlines()[-1])
        if "cost" in counted:
            progress(f"  -> metrics add {fmt_pct(counted['cost'])} of the instructions")
    except Exception as exc:
        counted = failed(exc)
    return {
        "ticker": {
            "steps": runs,
            "rate": rate,
            "off_us_per_tick": off,
            "on_us_per_tick": on,
            "off_cpu": median(False, "server_cpu"),
            "on_cpu": median(True, "server_cpu"),
            "cost": on / off - 1 if on and off else None,
            "counted": counted,
        }
    }


def render_metrics(data: dict[str, Any]) -> list[str]:
    d = data["ticker"]
    rows = [
        [
            "on" if r["metrics"] else "off",
            r.get("error", "")[:80] or fmt_pct(r["delivery"]),
            fmt_pct(r.get("server_cpu")),
            fmt_num(r.get("cpu_us_per_tick"), 3),
            fmt_ms(r.get("p99_ms")),
            f"{r['scrapes']} ({fmt_num(r['scrape_ms'])} ms each)" if r.get("scrapes") else "-",
        ]
        for r in d["steps"]
    ]
    target = TARGETS["metrics_cost"]

    def verdict(cost: float | None) -> str:
        return "n/a" if cost is None else ("met" if cost < target else "NOT met")

    c = d.get("counted") or {"error": "not run"}
    if "cost" not in c:
        counted = f"Counted: {c.get('skipped') or c.get('error')}."
    else:
        n = c["instructions"]
        counted = (
            "Counted (`bench/metrics_cost.py` under `valgrind --tool=cachegrind`: one second "
            "of the same load through the real bus, flusher and `Connection.flush` into "
            "transports that swallow the bytes, `/metrics` rendered once with metrics on): "
            f"{n['off'] - n['setup']:,} instructions with metrics off, "
            f"{n['on'] - n['setup']:,} on: metrics cost {fmt_pct(c['cost'])}; target < "
            f"{fmt_pct(target)}: {verdict(c['cost'])}. Instruction counts do not move with "
            "the machine's other work; without the kernel's share of the writes a delivery "
            "costs less than in a real server, so this share is an upper bound."
        )
    return [
        f"## {TITLES['metrics']}",
        "",
        table(["metrics", "delivered", "server CPU", "us/tick", "p99", "scrapes"], rows),
        "",
        f"End to end: server CPU per delivered tick with metrics on, against off: "
        f"{'+' if (d['cost'] or 0) > 0 else ''}{fmt_pct(d['cost'])} "
        f"(median {fmt_num(d['on_us_per_tick'], 3)} vs {fmt_num(d['off_us_per_tick'], 3)} us; "
        f"server CPU {fmt_pct(d['on_cpu'])} vs {fmt_pct(d['off_cpu'])}); target < "
        f"{fmt_pct(target)}: {verdict(d['cost'])}. Off is `--no-metrics` (no latency or "
        "loop-lag measurement, no /metrics); on is the default, scraped every second. "
        "Separate processes minutes apart: on a busy machine the noise can exceed the effect.",
        "",
        counted,
        "",
    ]


# -- machine and setup ----------------------------------------------------------------------


def command_output(argv: list[str], cwd: Path = ROOT) -> str | None:
    try:
        r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    import aiohttp
    import numpy
    import orjson

    model = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    ws_version = None
    with contextlib.suppress(OSError, ValueError):
        ws_version = json.loads((NODE_DIR / "node_modules/ws/package.json").read_text())["version"]
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "cores_allowed": len(os.sched_getaffinity(0)),
        "mem_gib": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "orjson": orjson.__version__,
        "numpy": numpy.__version__,
        "node": command_output(["node", "--version"]),
        "ws": ws_version,
        "bun": command_output([str(BUN), "--version"]) if BUN.exists() else None,
        "uvloop": _version_of("uvloop"),
        "git_commit": command_output(["git", "rev-parse", "--short", "HEAD"]),
        "loadavg_at_start": list(os.getloadavg()),
    }


def _version_of(package: str) -> str | None:
    """An installed Python package's version, None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def npm_install(where: Path, needed: Path, what: str) -> str | None:
    """Install a baseline's npm packages once; None when ``needed`` is then there, else why
    not (the baseline is then skipped, not fatal)."""
    if needed.exists():
        return None
    npm = shutil.which("npm")
    if not npm:
        return f"npm not found (needed once to install {what})"
    progress(f"installing {what} with npm ({where.relative_to(ROOT)}/node_modules)")
    try:
        r = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"npm install failed: {exc}"
    if r.returncode != 0:
        return f"npm install failed: {(r.stderr or r.stdout).strip()[-300:]}"
    return None if needed.exists() else f"npm install left no {needed.relative_to(ROOT)}"


def setup_node() -> str | None:
    """None when the node baseline can run, else why not."""
    if not shutil.which("node"):
        return "node not found"
    return npm_install(NODE_DIR, NODE_DIR / "node_modules" / "ws" / "package.json", "ws")


def setup_bun() -> str | None:
    """None when the bun baseline can run, else why not (the binary comes in the npm
    package ``@oven/bun-linux-x64``: x86-64 Linux with glibc only)."""
    if platform.machine() not in ("x86_64", "AMD64") or platform.system() != "Linux":
        return f"no bun package for {platform.system()} {platform.machine()} in bench/"
    return npm_install(BUN_DIR, BUN, "bun")


# -- formatting -----------------------------------------------------------------------------


NA = "n/a"


def fmt_num(x: float | None, digits: int = 2) -> str:
    return NA if x is None else f"{x:.{digits}f}"


def fmt_pct(x: float | None) -> str:
    return NA if x is None else f"{100 * x:.1f}%"


def fmt_ms(x: float | None) -> str:
    if x is None:
        return NA
    return f"{x:.2f} ms" if x < 10 else f"{x:.0f} ms" if x < 10000 else f"{x / 1000:.1f} s"


def fmt_rate(x: float | None) -> str:
    if x is None:
        return NA
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.1f} k"
    return f"{x:.0f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return NA
    return f"{a / b:.2f}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table, padded so that it also reads well in a terminal."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def meets(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return NA
    ok = value >= target if higher_is_better else value <= target
    return "yes" if ok else "NO"


@dataclass
class Figure:
    """One headline figure of a scenario, per server, with its target."""

    label: str
    target: str
    get: Callable[[dict[str, Any]], float | None]
    fmt: Callable[[float | None], str]
    higher_is_better: bool
    threshold: float | None = None


def figures_table(per_server: dict[str, Any], figures: list[Figure]) -> str:
    ratios = [f"ticker/{SHORT[b]}" for b in BASELINES]
    headers = ["figure", "target", *SERVERS, *ratios, "better", "ticker ok"]
    rows = []
    for f in figures:
        vals: dict[str, float | None] = {}
        for s in SERVERS:
            data = per_server.get(s)
            try:
                vals[s] = f.get(data) if isinstance(data, dict) and "skipped" not in data else None
            except (KeyError, TypeError, AttributeError):
                vals[s] = None
        cells = [f.fmt(vals[s]) if s in per_server else "-" for s in SERVERS]
        for s in SERVERS:
            data = per_server.get(s)
            if isinstance(data, dict) and "skipped" in data:
                cells[SERVERS.index(s)] = "skipped"
        ok = meets(vals["ticker"], f.threshold, f.higher_is_better) if f.threshold else "-"
        rows.append(
            [
                f.label,
                f.target,
                *cells,
                *(fmt_ratio(vals["ticker"], vals[b]) for b in BASELINES),
                "higher" if f.higher_is_better else "lower",
                ok,
            ]
        )
    return table(headers, rows)


def render(results: dict[str, Any]) -> str:
    meta, sc = results["meta"], results["scenarios"]
    m = meta["machine"]
    out = [
        f"# ticker benchmark{' (quick mode)' if meta['quick'] else ''}",
        "",
        f"{meta['started']} - {meta['duration_s']:.0f} s - git {m['git_commit']}",
        "",
        table(
            ["machine", ""],
            [
                ["CPU", f"{m['cpu_model']} ({m['cores']} cores, {m['cores_allowed']} allowed)"],
                ["memory", f"{m['mem_gib']} GiB"],
                ["kernel", m["kernel"]],
                ["Python / aiohttp", f"{m['python']} / {m['aiohttp']}"],
                ["orjson / numpy", f"{m['orjson']} / {m['numpy']}"],
                ["node / ws", f"{m['node'] or NA} / {m['ws'] or NA}"],
                ["bun / uvloop", f"{m.get('bun') or NA} / {m.get('uvloop') or NA}"],
                ["load average at start", " ".join(f"{x:.2f}" for x in m["loadavg_at_start"])],
                ["pinning", meta["pinning"]],
            ],
        ),
        "",
        "Servers: `ticker` (this repo), `naive-aiohttp` (bench/baseline_aiohttp.py: per tick, "
        "`await ws.send_str` to each subscriber in turn), `node-ws` (bench/baseline_node: "
        "`ws.send` per tick per subscriber). All without permessage-deflate. Ratios are "
        "ticker / baseline, measured in this same run.",
        "",
    ]
    for name, why in meta["servers"].items():
        if why:
            out.append(f"- {name} skipped: {why}")
    if any(meta["servers"].values()):
        out.append("")
    renderers: dict[str, Callable[[dict[str, Any]], list[str]]] = {
        "fanout": render_fanout,
        "latency": render_latency,
        "connections": render_connections,
        "slow": render_slow,
        "inprocess": render_inprocess,
        "ceiling": render_ceiling,
        "metrics": render_metrics,
        "redis": redis_scaleout.render,
        "publish": publishing.render,
        "workers": workers.render,
        "exchanges": exchanges.render,
        "candles": candles.render,
        "books": books.render,
    }
    for name, entry in sc.items():
        if entry["status"] == "failed":
            out += [f"## {TITLES[name]}", "", f"FAILED: {entry['error']}", ""]
            continue
        out += renderers[name](entry["data"])
    warnings = collect_warnings(results)
    if warnings:
        out += ["## Warnings", "", *(f"- {w}" for w in warnings), ""]
    return "\n".join(out)


TITLES = {
    "fanout": "1. Fan-out ladder (1 000 connections x 10 of 100 symbols, mode all)",
    "latency": "Latency at every load (1 000 connections x 10 of 100 symbols, mode all)",
    "connections": "2. Idle connections (1 symbol each, 100 ticks/s)",
    "slow": "3. Slow consumers",
    "inprocess": "4. In-process (no sockets)",
    "ceiling": "Load generator ceiling (against a blaster)",
    "metrics": "6. What metrics cost (fan-out: 1 000 connections x 10 of 100 symbols, mode all)",
    "redis": "Redis scale-out (1 publisher -> Redis -> 3 nodes)",
    "publish": "Publishing (ticks in through /publish, ticker only)",
    "workers": "ticker serve --workers 2 against one process (CPU per delivered tick)",
    "exchanges": "Live exchange feeds: parsing on one core, frame arrival -> bus publish",
    "candles": "Candles: the fan-out ladder with bars and without, a history reply, memory",
    "books": "Order books: level changes/s on one core with 1 000 clients x 10 books",
}


def render_fanout(data: dict[str, Any]) -> list[str]:
    t = TARGETS
    figures = [
        Figure(
            "max sustainable deliveries/s",
            f">= {fmt_rate(t['fanout_max'])} (aim {fmt_rate(t['fanout_aim'])})",
            lambda d: d["max_deliveries_per_s"],
            fmt_rate,
            True,
            t["fanout_max"],
        ),
        Figure(
            "p99 at 100 k deliveries/s",
            f"<= {t['light_p99_ms']:g} ms",
            lambda d: d["light_p99_ms"],
            fmt_ms,
            False,
            t["light_p99_ms"],
        ),
        Figure(
            "p99 at max",
            f"<= {t['max_p99_ms']:g} ms",
            lambda d: d["p99_at_max_ms"],
            fmt_ms,
            False,
            t["max_p99_ms"],
        ),
        Figure(
            "server CPU us per delivered tick at max",
            f"<= {t['cpu_us_per_tick']:g}",
            lambda d: d["cpu_us_per_tick_at_max"],
            lambda x: fmt_num(x, 3),
            False,
            t["cpu_us_per_tick"],
        ),
    ]
    out = [f"## {TITLES['fanout']}", "", figures_table(data, figures), ""]
    out.append(
        "A step passes with >= 99 % of the expected deliveries and p99 <= 100 ms. A ladder "
        "climbs from 1 000 ticks/s (100 k deliveries/s) until two steps fail; when that first "
        "step fails it walks down instead. Latency = receive time - t, on ~2 % of the "
        "connections (parsed in full; the rest are counted)."
    )
    out.append("")
    for name, d in data.items():
        steps = d.get("steps") or []
        if steps and steps[-1].get("passed") and d.get("max_rate") == max(s["rate"] for s in steps):
            out += [f"{name} passed the top step of the ladder: its maximum is higher.", ""]
    for name, d in data.items():
        if "skipped" in d:
            continue
        rows = []
        for s in d["steps"]:
            if "error" in s:
                rows.append([f"{s['rate']}", *[""] * 10, "ERROR", one_line(s["error"])[:100]])
                continue
            notes = []
            if s["closes"]:
                notes.append("closes " + fmt_outcomes(s["closes"]))
            if s["order_problems"]:
                o = s["order"]
                notes.append(f"gaps {o['gaps']} dups {o['dups']} reorders {o['reorders']}")
            if s["connected"] < s["planned"]:
                notes.append(f"{s['planned'] - s['connected']} failed to connect")
            if s["server_died"]:
                notes.append(f"server died ({s['server_died']})")
            if s.get("log_problems"):
                notes.append("server log has errors")
            if s.get("noise"):
                notes.append(s["noise"])
            if s.get("attempts", 1) > 1:
                notes.append("measured twice (shared cores), quieter run kept")
            lg = fmt_pct(s["loadgen_cpu"]) + (" (!)" if s["loadgen_saturated"] else "")
            rows.append(
                [
                    f"{s['rate']}",
                    fmt_rate(s["expected_per_s"]),
                    fmt_rate(s["delivered_per_s"]),
                    fmt_pct(s["delivery"]),
                    fmt_rate(s["frames_per_s"]),
                    fmt_pct(s["server_cpu"]),
                    fmt_num(s["cpu_us_per_tick"], 3),
                    fmt_ms(s["p50_ms"]),
                    fmt_ms(s["p99_ms"]),
                    fmt_ms(s["max_ms"]),
                    lg,
                    "pass" if s["passed"] else "FAIL",
                    "; ".join(notes),
                ]
            )
        headers = [
            "ticks/s",
            "expected/s",
            "delivered/s",
            "delivered",
            "frames/s",
            "srv CPU",
            "us/tick",
            "p50",
            "p99",
            "max",
            "loadgen CPU",
            "step",
            "notes",
        ]
        out += [f"### {name} (stopped: {d['stopped']})", "", table(headers, rows), ""]
    return out


def render_latency(data: dict[str, Any]) -> list[str]:
    """One row per load: each server's p50 / p99 / CPU, then ticker's ratios to bun and to
    the best peer of that step (the issue-17 targets: ticker <= bun, aim <= the best)."""
    names = [n for n in SERVERS if n in data and "skipped" not in data[n]]
    by_rate = {n: {s["rate"]: s for s in data[n]["steps"]} for n in names}
    rates = sorted({r for n in names for r in by_rate[n]})
    peers = [n for n in names if n in ("bun", "node-ws")]

    min_delivery = Plan().min_delivery

    def get(n: str, rate: float, key: str) -> float | None:
        step = by_rate[n].get(rate) or {}
        if "error" in step or (step.get("delivery") or 0) < min_delivery:
            return None
        value: float | None = step.get(key)
        return value

    headers = ["deliveries/s"]
    for n in names:
        headers += [f"{n} p50 / p99 ms", f"{n} CPU, us/tick"]
    headers += ["ticker/bun p50", "ticker/bun p99", "ticker/bun us/tick", "ticker/best p50, p99"]
    rows = []
    for rate in rates:
        row = [fmt_rate(rate * UNIVERSE)]
        for n in names:
            step = by_rate[n].get(rate) or {}
            if "error" in step:
                row += ["ERROR", one_line(step["error"])[:60]]
                continue
            lat = f"{fmt_ms(step.get('p50_ms'))} / {fmt_ms(step.get('p99_ms'))}"
            if (step.get("delivery") or 0) < min_delivery:
                lat += f" (delivered {fmt_pct(step.get('delivery'))})"
            cpu = f"{fmt_pct(step.get('server_cpu'))}, {fmt_num(step.get('cpu_us_per_tick'), 3)}"
            row += [lat, cpu]
        t50, t99 = get("ticker", rate, "p50_ms"), get("ticker", rate, "p99_ms")
        b = "bun" in names
        row += [
            fmt_ratio(t50, get("bun", rate, "p50_ms")) if b else NA,
            fmt_ratio(t99, get("bun", rate, "p99_ms")) if b else NA,
            fmt_ratio(get("ticker", rate, "cpu_us_per_tick"), get("bun", rate, "cpu_us_per_tick"))
            if b
            else NA,
        ]
        best50 = [v for v in (get(n, rate, "p50_ms") for n in peers) if v is not None]
        best99 = [v for v in (get(n, rate, "p99_ms") for n in peers) if v is not None]
        row.append(
            f"{fmt_ratio(t50, min(best50) if best50 else None)}, "
            f"{fmt_ratio(t99, min(best99) if best99 else None)}"
        )
        rows.append(row)
    out = [f"## {TITLES['latency']}", "", table(headers, rows), ""]
    out.append(
        "Latency = receive time - t. A ratio is n/a where a server delivered under 99 % of "
        "its ticks (its latency then describes what it kept, not the load). Targets (issue "
        "17): ticker's p50 and p99 <= bun's at every step; CPU per tick at 10 k <= 2x bun's."
    )
    out.append("")
    idle = [
        [n, fmt_pct(data[n]["idle"].get("server_cpu")), one_line(data[n]["idle"].get("error", ""))]
        for n in names
    ]
    out += ["Idle: 1 000 connections, almost no ticks:", ""]
    out += [table(["server", "server CPU", "error"], idle), ""]
    return out


def render_connections(data: dict[str, Any]) -> list[str]:
    sizes = sorted({int(n) for d in data.values() if "skipped" not in d for n in d})
    figures: list[Figure] = []
    for n in sizes:
        key = str(n)
        figures += [
            Figure(
                f"RSS per connection @ {n} (KiB)",
                f"<= {TARGETS['rss_per_conn_kib']:g}",
                lambda d, k=key: d[k]["rss_per_conn_kib"],
                lambda x: fmt_num(x, 1),
                False,
                TARGETS["rss_per_conn_kib"],
            ),
            Figure(
                f"p99 @ {n}",
                "",
                lambda d, k=key: d[k]["p99_ms"],
                fmt_ms,
                False,
            ),
            Figure(
                f"delivered @ {n}",
                ">= 99%",
                lambda d, k=key: d[k]["delivery"],
                fmt_pct,
                True,
                TARGETS["healthy_delivery"],
            ),
            Figure(
                f"connect time @ {n} (s)",
                "",
                lambda d, k=key: d[k]["connect_s"],
                lambda x: fmt_num(x, 1),
                False,
            ),
        ]
    out = [f"## {TITLES['connections']}", "", figures_table(data, figures), ""]
    out.append(
        "RSS per connection = (server VmRSS after connecting, warming up and the measured "
        "window - VmRSS before the first connection) / connections."
    )
    out.append("")
    return out


def render_slow(data: dict[str, Any]) -> list[str]:
    t = TARGETS

    def slow_run(d: dict[str, Any]) -> dict[str, Any]:
        return d.get("slow-all") or {}

    figures = [
        Figure(
            "RSS growth with stalled clients (MB)",
            f"<= {t['slow_rss_growth_mb']:g}",
            lambda d: slow_run(d)["rss_growth_mb"],
            lambda x: fmt_num(x, 1),
            False,
            t["slow_rss_growth_mb"],
        ),
        Figure(
            "healthy delivered",
            ">= 99%",
            lambda d: slow_run(d)["delivery"],
            fmt_pct,
            True,
            t["healthy_delivery"],
        ),
        Figure("healthy p99", "", lambda d: comparable(slow_run(d), "p99_ms"), fmt_ms, False),
        Figure(
            "healthy p99 / no-slow p99",
            f"<= {t['p99_vs_noslow']:g}x",
            lambda d: comparable(slow_run(d), "p99_vs_noslow"),
            lambda x: fmt_num(x, 2),
            False,
            t["p99_vs_noslow"],
        ),
    ]
    out = [f"## {TITLES['slow']}", "", "Summary (mode all for the stalled clients):", ""]
    out += [figures_table(data, figures), ""]
    rows = []
    for name, d in data.items():
        if "skipped" in d:
            rows.append([name, "skipped", *[""] * 7])
            continue
        for run, r in d.items():
            if "error" in r:
                rows.append([name, run, *[""] * 6, r["error"][:80]])
                continue
            stalled = fmt_outcomes(r["slow_outcomes"]) or "-"
            if r.get("server_closes"):
                stalled += f" (server closed: {fmt_outcomes(r['server_closes'])})"
            if run == "slow-all" and name != "ticker":
                stalled += " [mode ignored by baseline]"
            healthy_closes = fmt_outcomes(r["closes"]) if r["closes"] else "-"
            rows.append(
                [
                    name,
                    run,
                    fmt_num(r["rss_growth_mb"], 1),
                    fmt_num(r["rss_end_growth_mb"], 1),
                    fmt_pct(r["delivery"]),
                    fmt_ms(r["p99_ms"]) + ("" if comparable(r, "p99_ms") else " (few arrived)"),
                    fmt_num(r["p99_vs_noslow"], 2),
                    healthy_closes,
                    stalled,
                ]
            )
    headers = [
        "server",
        "run",
        "RSS peak +MB",
        "RSS end +MB",
        "healthy delivered",
        "healthy p99",
        "p99 / no-slow",
        "healthy closes",
        "stalled clients: outcome",
    ]
    out += [table(headers, rows), ""]
    out.append(
        "A p99 is shown as n/a in the summary where under 99 % of the healthy ticks arrived: "
        "the latency of the few that did would flatter a server that stalled. "
        "Healthy clients read everything (mode all); the stalled ones subscribe to '*' "
        "with SO_RCVBUF 4 KiB and a 1448-byte MSS and never read, opened at the start of the "
        "measured window. "
        "RSS is sampled every second; outcome = what reading their backlog at the end "
        "showed (a close code, a reset, or still open)."
    )
    out.append("")
    return out


def render_inprocess(data: dict[str, Any]) -> list[str]:
    out = [f"## {TITLES['inprocess']}", ""]
    if data.get("status") != "ok":
        return [*out, f"n/a: {data.get('reason', '')}", ""]
    result = data["result"]
    if isinstance(result, dict) and isinstance(result.get("rows"), list):
        rows = [r for r in result["rows"] if isinstance(r, dict)]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        out += [table(keys, [[fmt_any(r.get(k)) for k in keys] for r in rows]), ""]
        return out
    if not isinstance(result, dict):
        return [*out, f"`{result!r}`", ""]
    scalars = [[k, fmt_any(v)] for k, v in result.items() if not isinstance(v, dict | list)]
    nested = {k: v for k, v in result.items() if isinstance(v, dict)}
    if nested:
        keys = list(dict.fromkeys(k for v in nested.values() for k in v))
        rows = [[name, *(fmt_any(v.get(k)) for k in keys)] for name, v in nested.items()]
        out += [table(["", *keys], rows), ""]
    if scalars:
        out += [table(["", "value"], scalars), ""]
    return out


def one_line(text: str) -> str:
    return " / ".join(ln.strip() for ln in text.splitlines() if ln.strip())


def fmt_any(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def render_ceiling(data: dict[str, Any]) -> list[str]:
    rows = []
    for r in data.values():
        if "error" in r:
            rows.append([str(r["ticks_per_frame"]), *[""] * 4, r["error"][:80]])
            continue
        rows.append(
            [
                str(r["ticks_per_frame"]),
                fmt_rate(r["counted_per_s"]),
                fmt_rate(r["frames_per_s"]),
                fmt_pct(r["loadgen_cpu"]),
                fmt_rate(r["per_core_per_s"]),
                "saturated" if r["saturated"] else "blaster-bound (ceiling is higher)",
            ]
        )
    headers = ["ticks/frame", "ticks/s counted", "frames/s", "loadgen CPU", "per core", "note"]
    return [
        f"## {TITLES['ceiling']}",
        "",
        table(headers, rows),
        "",
        "1 000 connections fed pre-built frames as fast as the sockets take them: the most "
        "the load generator's counting path can take (no sampled connections here: flat out, "
        "the promptly-read sampled sockets would get most of the data; in the fan-out they "
        "are ~2 % of it, parsed at ~1 us/tick). Fan-out figures near this are suspect.",
        "",
    ]


def collect_warnings(results: dict[str, Any]) -> list[str]:
    w: list[str] = []
    for name, entry in results["scenarios"].items():
        if entry["status"] == "failed":
            w.append(f"{name} failed: {entry['error'].splitlines()[0][:300]}")
            continue
        data = entry["data"]
        if not isinstance(data, dict):
            continue
        for server_name, d in data.items():
            if not isinstance(d, dict):
                continue
            for label, item in iter_rows(d):
                where = f"{name}/{server_name}/{label}"
                if item.get("loadgen_saturated"):
                    w.append(f"{where}: load generator at {fmt_pct(item['loadgen_cpu'])} CPU")
                if item.get("error"):
                    w.append(f"{where}: {one_line(item['error'])[:300]}")
                if item.get("log_problems"):
                    w.append(f"{where}: server log: {item['log_problems'][0][:200]}")
                check = item.get("count_check")
                if check is not None and abs(check - 1) > 0.005:
                    w.append(f"{where}: fast tick count off by {fmt_pct(check - 1)} (sampled)")
                if item.get("noise"):
                    again = " (even after measuring twice)" if item.get("attempts", 1) > 1 else ""
                    w.append(f"{where}: {item['noise']}{again}")
                if item.get("server_died"):
                    w.append(f"{where}: server died ({item['server_died']})")
    return w


def iter_rows(d: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(d.get("steps"), list):
        for s in d["steps"]:
            yield str(s.get("rate")), s
        return
    for k, v in d.items():
        if isinstance(v, dict):
            yield k, v


# -- main -----------------------------------------------------------------------------------


def write_results(results: dict[str, Any], stem: str, latest: str | None) -> list[Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = {"json": json.dumps(results, indent=1, default=str), "md": render(results)}
    written = []
    for name in filter(None, [stem, latest]):
        for ext, body in text.items():
            path = RESULTS / f"{name}.{ext}"
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(body + "\n")
            os.replace(tmp, path)
            written.append(path)
    return written


def parse_list(value: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if items == ["all"]:
        return list(allowed)
    bad = [v for v in items if v not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(allowed)})")
    return items


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds every `with server(...)`: nothing left running


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter steps, fewer runs")
    ap.add_argument("--scenario", default="all", help=f"comma list of {', '.join(SCENARIOS)}")
    ap.add_argument("--server", default="all", help=f"comma list of {', '.join(SERVERS)}")
    ap.add_argument("--rates", help="fan-out ladder (or latency steps), ticks/s, comma list")
    ap.add_argument("--duration", type=float, help="seconds measured per fan-out step")
    ap.add_argument("--ticker-src", type=Path, default=ROOT, help="run ticker from this tree")
    ap.add_argument("--ticker-arg", action="append", default=[], help="extra ticker flag")
    ap.add_argument("--no-write", action="store_true", help="print only, write no files")
    ap.add_argument("--inprocess-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inprocess_child:
        return inprocess_child(args.inprocess_child)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    scenarios = parse_list(args.scenario, SCENARIOS, "scenario")
    servers = parse_list(args.server, SERVERS, "server")
    plan = Plan.make(args.quick)
    if args.rates:
        plan.fanout_rates = plan.latency_rates = [int(float(r)) for r in args.rates.split(",")]
    if args.duration:
        plan.fanout_duration = args.duration
    plan.ticker_args = [a for arg in args.ticker_arg for a in arg.split()]

    from feeds.sim.symbols import symbol_names  # the names ticker's simulated feed uses

    started = dt.datetime.now(dt.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    logdir = RESULTS / "logs" / stamp
    logdir.mkdir(parents=True, exist_ok=True)
    pins = pinning()
    available: dict[str, str | None] = dict.fromkeys(servers)
    peer_scenarios = ("fanout", "latency", "connections", "slow")
    if any(s in scenarios for s in peer_scenarios):
        for peer, setup in (("node-ws", setup_node), ("bun", setup_bun)):
            if peer in servers:
                available[peer] = setup()
    ctx = Context(
        plan=plan,
        names=symbol_names(UNIVERSE),
        logdir=logdir,
        pins=pins,
        ticker_src=args.ticker_src.resolve(),
        available=available,
    )
    progress(
        f"{'quick' if plan.quick else 'default'} run: scenarios {', '.join(scenarios)}; "
        f"servers {', '.join(servers)}; {pins.note}; logs in {logdir.relative_to(ROOT)}"
    )
    meta: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "quick": plan.quick,
        "scenarios": scenarios,
        "servers": available,
        "pinning": pins.note,
        "plan": asdict(plan),
        "ticker_src": str(ctx.ticker_src),
        "machine": machine_info(),
    }
    results: dict[str, Any] = {"meta": meta, "scenarios": {}}
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "fanout": lambda: scenario_fanout(ctx, servers),
        "latency": lambda: scenario_latency(ctx, servers),
        "connections": lambda: scenario_connections(ctx, servers),
        "slow": lambda: scenario_slow(ctx, servers),
        "inprocess": lambda: scenario_inprocess(ctx),
        "ceiling": lambda: scenario_ceiling(ctx),
        "metrics": lambda: scenario_metrics(ctx),
        "redis": lambda: redis_scaleout.run(ctx.logdir, plan.quick),
        "publish": lambda: publishing.run(ctx),
        "workers": lambda: workers.run(ctx),
        "exchanges": lambda: exchanges.run(ctx),
        "candles": lambda: candles.run(ctx),
        "books": lambda: books.run(ctx),
    }
    for name in scenarios:
        try:
            results["scenarios"][name] = {"status": "ok", "data": runners[name]()}
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            progress(f"{name} FAILED: {exc}")
            results["scenarios"][name] = {
                "status": "failed",
                "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}",
            }
    meta["duration_s"] = time.monotonic() - _T0
    meta["loadavg_at_end"] = list(os.getloadavg())

    full = set(scenarios) == set(SCENARIOS) and set(servers) == set(SERVERS)
    if not full:
        stem = f"{stamp}-{'-'.join(scenarios)}-{'-'.join(servers)}"
    else:
        stem = stamp + ("-quick" if plan.quick else "")
    latest = ("latest-quick" if plan.quick else "latest") if full else None
    report = render(results)
    print(report)
    if not args.no_write:
        written = write_results(results, stem, latest)
        progress("wrote " + ", ".join(str(p.relative_to(ROOT)) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
