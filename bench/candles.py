"""Scenario ``candles``: what keeping bars costs the broadcast (issue 16's Measure).

1. The fan-out ladder (``scenario_fanout``: 1 000 connections x 10 of 100 symbols, mode
   ``all``) run twice for ticker: with its default bars (all 9 intervals of every symbol:
   the command line has no flag to keep fewer, so this is more than the issue's 4) and
   with ``--candle-history 0`` (no bars). Target: the maximum at most 10 % lower; the CPU
   per delivered tick at the highest step both passed says the same finer.
2. In-process, no socket: the time to build the reply of a ``history: 1440`` subscribe
   for one topic (the closed bars read from the ring, encoded, joined into the frame).
3. Memory per (symbol, interval) series of 1 440 closed bars, by ``tracemalloc``.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from dataclasses import replace
from typing import Any

import numpy as np

from ticker.core import protocol
from ticker.core.candles import DEFAULT_HISTORY, INTERVALS, Candles, encode
from ticker.core.tape import Columns

TARGET_DROP = 0.10
MINUTE = INTERVALS["1m"]
T0 = 1_764_979_200_000_000  # a UTC midnight: the bars are in the past, all closed
SERIES = 100
"""Series filled for the memory figure (one interval, 100 symbols)."""


def minutes(symbols: list[str], count: int) -> Columns:
    """One tick a minute for ``count + 1`` minutes of each symbol: ``count`` closed bars."""
    t = np.tile(T0 + MINUTE * np.arange(count + 1, dtype=np.int64), len(symbols))
    p = 100.0 + np.arange(len(t)) % 7
    return Columns(symbols, [count + 1] * len(symbols), t, p, np.ones(len(t)))


def history_cost(depth: int = DEFAULT_HISTORY, reps: int = 50) -> dict[str, Any]:
    """Median time to build a ``history: depth`` reply for one topic, and its size."""
    candles = Candles(["1m"], depth=depth)
    candles.add(minutes(["AAPL"], depth))
    key = ("AAPL", "1m")
    times, frame = [], b""
    for _ in range(reps):
        started = time.perf_counter()
        frame = protocol.candles(encode(key, *candles.history(key, depth)))
        times.append(time.perf_counter() - started)
    return {"bars": depth, "ms": statistics.median(times) * 1e3, "frame_bytes": len(frame)}


def memory_per_series(depth: int = DEFAULT_HISTORY) -> dict[str, Any]:
    """Bytes ``tracemalloc`` sees per full (symbol, interval) series, and what the
    rings say they hold (``Candles.nbytes``)."""
    symbols = [f"S{i}" for i in range(SERIES)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        candles = Candles(["1m"], depth=depth)
        candles.add(minutes(symbols, depth))
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return {
        "bars": depth,
        "series": candles.series(),
        "traced_bytes": (after - before) / SERIES,
        "ring_bytes": candles.nbytes() / SERIES,
    }


def run(ctx: Any) -> dict[str, Any]:
    """The two ladders, then the in-process figures."""
    from bench import run as harness  # the harness imports this module: import it late

    out: dict[str, Any] = {}
    for label, extra in (("with", []), ("without", ["--candle-history", "0"])):
        harness.progress(f"candles: fan-out ladder {label} bars")
        plan = replace(ctx.plan, ticker_args=[*ctx.plan.ticker_args, *extra])
        out[label] = harness.scenario_fanout(replace(ctx, plan=plan), ["ticker"])["ticker"]
    out["history"] = history_cost()
    out["memory"] = memory_per_series()
    harness.progress(f"candles: history {out['history']}, memory {out['memory']}")
    return out


def drop(data: dict[str, Any]) -> float | None:
    """How much lower the maximum is with bars than without (0.1 = 10 %)."""
    with_max, without = data["with"].get("max_rate"), data["without"].get("max_rate")
    return 1 - with_max / without if with_max and without else None


def cpu_ratio(data: dict[str, Any]) -> tuple[float | None, float | None]:
    """The highest rate both ladders passed, and CPU per delivered tick there, with bars
    over without."""

    def passed(steps: list[dict[str, Any]]) -> dict[float, float]:
        return {s["rate"]: s["cpu_us_per_tick"] for s in steps if s.get("passed")}

    with_bars, without = passed(data["with"]["steps"]), passed(data["without"]["steps"])
    common = with_bars.keys() & without.keys()
    if not common:
        return None, None
    rate = max(common)
    return rate, with_bars[rate] / without[rate] if without[rate] else None


def render(data: dict[str, Any]) -> list[str]:
    """The scenario's section of the results page."""
    from bench import run as harness

    rate, ratio = cpu_ratio(data)
    value = drop(data)
    history, memory = data["history"], data["memory"]
    rows = [
        [
            "max rate with bars (ticks/s x 100 subscribers)",
            "",
            harness.fmt_num(data["with"].get("max_rate"), 0),
            "",
        ],
        [
            "max rate without (--candle-history 0)",
            "",
            harness.fmt_num(data["without"].get("max_rate"), 0),
            "",
        ],
        [
            "max lower with bars by",
            f"<= {TARGET_DROP:.0%}",
            harness.fmt_pct(value),
            harness.meets(value, TARGET_DROP, False),
        ],
        [
            f"CPU per delivered tick, with / without, at {rate or harness.NA} ticks/s",
            "",
            harness.fmt_num(ratio),
            "",
        ],
        [
            f"history: {history['bars']} reply, one topic (in-process)",
            "",
            f"{history['ms']:.2f} ms, {history['frame_bytes']:,} B",
            "",
        ],
        [
            f"memory per series of {memory['bars']} bars (tracemalloc)",
            "",
            f"{memory['traced_bytes'] / 1024:.1f} KiB",
            "",
        ],
    ]
    lines = [f"## {harness.TITLES['candles']}", ""]
    lines += [harness.table(["figure", "target", "ticker", "ok"], rows), ""]
    for label in ("with", "without"):
        steps = "; ".join(f"{s['rate']:g}: {harness.step_line(s)}" for s in data[label]["steps"])
        lines += [f"- {label} bars (ladder stopped: {data[label]['stopped']}): {steps}"]
    lines += [
        "",
        "With bars = ticker's default: all 9 intervals of every symbol (no flag keeps only"
        " 4, as the issue's target names), so the cost is an upper bound of the issue's."
        " A ladder that stopped because it was exhausted found no maximum: compare the CPU"
        " per delivered tick then.",
        "",
    ]
    return lines
