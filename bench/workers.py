"""Scenario ``workers``: what ``ticker serve --workers N`` costs per delivered tick.

The fan-out's shape (1 000 connections x 10 of 100 symbols, mode ``all``) at two rates,
served by one process and by ``--workers 2``, both pinned to the server core with their
children (``taskset`` is inherited): the CPU of the whole process tree per delivered
tick, summed over the feed process and its workers (``procfs.tree_cpu_seconds``), over
one process's. One core for both keeps the comparison to the design's own cost (the
copy of every batch to each worker, each worker's decoding of it, a second event loop);
what more cores buy is in docs/scaling.md. Target: at most 1.15 x (issue 17).
"""

from __future__ import annotations

import time
from typing import Any

TARGET_RATIO = 1.15
RATES = (1000, 4000, 10000)
"""Ticks/s; each reaches 100 connections: 100 k, 400 k and 1 M deliveries/s."""
WORKERS = (1, 2)


def run(ctx: Any) -> dict[str, Any]:
    """Every (rate, workers) run, each recorded (or its error) whatever the others do."""
    from bench import run as harness  # the harness imports this module: import it late

    warmup, duration = (2.0, 5.0) if ctx.plan.quick else (3.0, 10.0)
    out: dict[str, Any] = {}
    for rate in RATES:
        for workers in WORKERS:
            label = f"workers-{workers}-{rate}"
            harness.progress(f"workers: {workers} worker(s) at {rate} ticks/s")
            try:
                extra = ["--workers", str(workers)]
                with harness.server(ctx, "ticker", rate, label, extra) as srv:
                    time.sleep(1.5 if workers > 1 else 0.0)  # every worker listening
                    lg = harness.run_loadgen(
                        ctx, srv, conns=1000, symbols_per_conn=10, warmup=warmup, duration=duration
                    )
                row = harness.summarize(lg, rate)
                row["log_problems"] = harness.log_problems(ctx, label)
                out[label] = row
                harness.progress(
                    f"  -> {row['delivered_per_s']:,.0f} deliveries/s, server CPU"
                    f" {row['server_cpu']}, {row['cpu_us_per_tick']} us/tick"
                )
            except Exception as exc:
                out[label] = harness.failed(exc)
    return out


def ratio(data: dict[str, Any], rate: int) -> float | None:
    """CPU per delivered tick of ``--workers 2`` over one process's, at ``rate``."""
    one = data.get(f"workers-1-{rate}", {}).get("cpu_us_per_tick")
    two = data.get(f"workers-2-{rate}", {}).get("cpu_us_per_tick")
    return two / one if one and two else None


def per_frame(row: dict[str, Any]) -> float | None:
    """Server CPU per frame written, µs: the send() calls are most of the cost, so a run
    that coalesced less pays more per tick for the same work per frame."""
    cpu, frames = row.get("server_cpu"), row.get("frames_per_s")
    return cpu * 1e6 / frames if cpu and frames else None


def render(data: dict[str, Any]) -> list[str]:
    """The scenario's section of the results page."""
    from bench import run as harness

    rows = []
    for rate in RATES:
        value = ratio(data, rate)
        rows.append(
            [
                f"CPU per delivered tick, 2 workers / 1 process, {rate} ticks/s",
                f"<= {TARGET_RATIO:g}",
                harness.fmt_num(value),
                harness.meets(value, TARGET_RATIO, False),
            ]
        )
    lines = [f"## {harness.TITLES['workers']}", ""]
    lines += [harness.table(["figure", "target", "ticker", "ok"], rows), ""]
    detail = []
    for label, row in data.items():
        if "error" in row:
            detail.append([label, row["error"][:120], "", "", "", "", "", ""])
            continue
        detail.append(
            [
                label,
                harness.fmt_rate(row["delivered_per_s"]),
                harness.fmt_pct(row["delivery"]),
                harness.fmt_pct(row["server_cpu"]),
                harness.fmt_num(row["cpu_us_per_tick"], 3),
                harness.fmt_rate(row["frames_per_s"]),
                harness.fmt_num(per_frame(row), 1),
                harness.fmt_ms(row["p99_ms"]),
            ]
        )
    headers = ["run", "delivered/s", "delivery", "server CPU (tree)", "us/tick", "frames/s"]
    headers += ["us/frame", "p99"]
    lines += [harness.table(headers, detail), ""]
    lines += [
        "Both pinned to the server core with all their processes: the ratio is the cost of"
        " the design (a copy of each batch per worker, each worker's decoding), not what a"
        " second core buys (docs/scaling.md#workers-every-core-of-one-machine). Most of a"
        " delivered tick's cost is its share of a send(): compare us/frame too, since N"
        " flushers each holding back for its own passes coalesce differently from one.",
        "",
    ]
    return lines
