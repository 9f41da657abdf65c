"""An independent aggregation of ticks into bars, for the candle tests to compare with."""

from __future__ import annotations

import math
from typing import Any

from ticker.core.candles import INTERVALS


def reference(ticks: list[dict[str, Any]], interval: str) -> dict[str, list[tuple]]:
    """An independent, one-tick-at-a-time aggregation: (ts, o, h, l, c, v, n) per symbol;
    a tick of a bucket before one already seen is late and left out."""
    us = INTERVALS[interval]
    bars: dict[str, list[list[float]]] = {}
    for tick in ticks:
        ts = tick["t"] // us * us
        series = bars.setdefault(tick["s"], [])
        p, v = tick["p"], tick.get("v", 0.0)
        if series and ts < series[-1][0]:
            continue
        if series and ts == series[-1][0]:
            bar = series[-1]
            bar[2], bar[3], bar[4] = max(bar[2], p), min(bar[3], p), p
            bar[5] += v
            bar[6] += 1
        else:
            series.append([ts, p, p, p, p, v, 1])
    return {s: [tuple(b) for b in series] for s, series in bars.items()}


def same_bars(got: list[tuple], expected: list[tuple]) -> bool:
    """Equal bar for bar: exact but for the volume, a float sum whose order may differ."""
    return len(got) == len(expected) and all(
        a[:5] == b[:5] and a[6] == b[6] and math.isclose(a[5], b[5], rel_tol=1e-9, abs_tol=1e-9)
        for a, b in zip(got, expected, strict=True)
    )
