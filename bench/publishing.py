"""Scenario ``publish``: ticks in through ``/publish`` (docs/publishing.md), ticker only.

A ``ticker serve --feed none --publish`` node pinned to the server core; the publisher
(``bench/publisher.py``) and the load generator (subscribers) share the other core.
Four runs:

1. one WebSocket publisher, batches of 1 000, flat out, one mode-``all`` ``*``
   subscriber: accepted ticks/s (and what the subscriber got);
2. the same over HTTP ``POST`` (two requests in flight);
3. a WebSocket publisher paced at 10 000 ticks/s (a batch every 10 ms) stamping each
   tick's ``et`` with its send time, one ``*`` subscriber: publish -> subscriber
   latency (receive time - ``et``);
4. the same with 1 000 subscribers of 10 of the 100 symbols each (1 M deliveries/s).

No baseline runs beside it: the fan-out's peers (node-ws, bun) have no publish side,
and a relay for them is not built, so the figures stand against the issue's absolute
targets instead of ratios.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.net import free_port

TARGETS = {"ws_ticks_per_s": 300_000, "http_ticks_per_s": 150_000, "p50_ms": 1.0, "p99_ms": 5.0}
LATENCY_RATE = 10_000


def run(ctx: Any) -> dict[str, Any]:
    """Every run of the scenario, each recorded (or its error) whatever the others do."""
    from bench import run as harness  # the harness imports this module: import it late

    p = ctx.plan
    warmup, duration = (1.0, 3.0) if p.quick else (1.0, 5.0)
    runs: dict[str, dict[str, Any]] = {
        "ws": {"transport": "ws", "conns": 1, "per_conn": 0, "rate": 0},
        "http": {"transport": "http", "conns": 1, "per_conn": 0, "rate": 0, "window": 2},
        "latency-1": {"transport": "ws", "conns": 1, "per_conn": 0, "rate": LATENCY_RATE},
        "latency-1000": {"transport": "ws", "conns": 1000, "per_conn": 10, "rate": LATENCY_RATE},
    }
    out: dict[str, Any] = {}
    for label, spec in runs.items():
        harness.progress(f"publish: {label} ({spec})")
        try:
            out[label] = measure(ctx, harness, label, spec, warmup, duration)
            harness.progress(f"  -> {summary(out[label])}")
        except Exception as exc:
            out[label] = harness.failed(exc)
    return out


def measure(
    ctx: Any, harness: Any, label: str, spec: dict[str, Any], warmup: float, duration: float
) -> dict[str, Any]:
    port = free_port()
    argv = [harness.PY, "-m", "ticker", "serve", "--host", harness.HOST, "--port", str(port)]
    argv += ["--feed", "none", "--publish", "--publish-ticks-per-s", "1e9"]
    log_path: Path = ctx.logdir / f"publish-{label}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [*ctx.pins.server, *argv, "--log-level", "warning", *ctx.plan.ticker_args],
            cwd=ctx.ticker_src,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    publisher: subprocess.Popen[bytes] | None = None
    try:
        harness.wait_listening(proc, port)
        seed(port, ctx.names)  # the symbols exist before anyone subscribes to them
        srv = harness.Server("ticker", proc, port, log_path)
        ramp = 3.0 if spec["conns"] > 1 else 0.5
        pub_argv = [harness.PY, "-m", "bench.publisher", "--port", str(port)]
        pub_argv += ["--transport", spec["transport"], "--symbol-names", ",".join(ctx.names)]
        pub_argv += ["--rate", str(spec["rate"]), "--window", str(spec.get("window", 4))]
        pub_argv += ["--warmup", f"{ramp + warmup:g}", "--duration", f"{duration:g}"]
        publisher = subprocess.Popen(
            [*ctx.pins.loadgen, *pub_argv], cwd=harness.ROOT, stdout=subprocess.PIPE
        )
        lg = harness.run_loadgen(
            ctx,
            srv,
            conns=spec["conns"],
            symbols_per_conn=spec["per_conn"],
            warmup=warmup + (ramp if spec["conns"] == 1 else 0.5),
            duration=duration,
            sample_every=0,  # every connection of one is read at once (parsed): it keeps up
            latency_field="et" if spec["rate"] else "t",  # flat out: no et, bus stamp
        )
        out, _ = publisher.communicate(timeout=ramp + warmup + duration + 60)
        pub = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        if publisher is not None:
            harness.stop(publisher)
        harness.stop(proc)
    row = harness.summarize(lg, spec["rate"] or pub["accepted_per_s"] or 0)
    row.update(publisher=pub, accepted_per_s=pub["accepted_per_s"], refused=pub["refused"])
    row["log_problems"] = harness.server_log_problems(log_path)[:5]
    return row


def seed(port: int, names: list[str]) -> None:
    body = json.dumps({"ticks": [{"s": s, "p": 1.0} for s in names]}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/publish", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200, resp.status


def summary(row: dict[str, Any]) -> str:
    return (
        f"accepted {row['accepted_per_s'] or 0:,.0f} ticks/s, subscribers got"
        f" {row['delivered_per_s']:,.0f}/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms,"
        f" server CPU {row['server_cpu']}, loadgen CPU {row['loadgen_cpu']}"
    )


def render(data: dict[str, Any]) -> list[str]:
    from bench import run as harness

    def get(label: str, key: str) -> float | None:
        return data.get(label, {}).get(key)

    figures = [
        ("WS publisher, 1 000-tick batches: accepted ticks/s", "ws", "accepted_per_s",
         TARGETS["ws_ticks_per_s"], True, harness.fmt_rate),
        ("HTTP POST, 1 000-tick batches: accepted ticks/s", "http", "accepted_per_s",
         TARGETS["http_ticks_per_s"], True, harness.fmt_rate),
        ("publish -> subscriber p50, 10 k ticks/s, 1 subscriber", "latency-1", "p50_ms",
         TARGETS["p50_ms"], False, harness.fmt_ms),
        ("publish -> subscriber p99, 10 k ticks/s, 1 subscriber", "latency-1", "p99_ms",
         TARGETS["p99_ms"], False, harness.fmt_ms),
        ("publish -> subscriber p50, 10 k ticks/s, 1 000 subscribers", "latency-1000",
         "p50_ms", TARGETS["p50_ms"], False, harness.fmt_ms),
        ("publish -> subscriber p99, 10 k ticks/s, 1 000 subscribers", "latency-1000",
         "p99_ms", TARGETS["p99_ms"], False, harness.fmt_ms),
    ]  # fmt: skip
    rows = []
    for title, label, key, target, higher, fmt in figures:
        value = get(label, key)
        sign = ">=" if higher else "<="
        shown = harness.fmt_rate(target) if higher else f"{target:g} ms"
        rows.append([title, f"{sign} {shown}", fmt(value), harness.meets(value, target, higher)])
    lines = [f"## {harness.TITLES['publish']}", ""]
    lines += [harness.table(["figure", "target", "ticker", "ticker ok"], rows), ""]
    detail = []
    for label, row in data.items():
        if "error" in row:
            detail.append([label, row["error"][:120], "", "", "", "", ""])
            continue
        detail.append(
            [
                label,
                harness.fmt_rate(row["accepted_per_s"]),
                harness.fmt_rate(row["delivered_per_s"]),
                harness.fmt_pct(row["server_cpu"]),
                harness.fmt_pct(row["loadgen_cpu"]),
                str(row["order_problems"]),
                row.get("noise") or "",
            ]
        )
    headers = ["run", "accepted/s", "delivered/s", "srv CPU", "loadgen CPU", "seq problems"]
    lines += [harness.table([*headers, "notes"], detail), ""]
    lines.append(
        "The publisher and the subscribers share the load generator's core. No baseline"
        " beside it (see bench/publishing.py): the targets are the issue's absolute ones."
    )
    return lines
