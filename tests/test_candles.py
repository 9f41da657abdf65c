"""The bar aggregation and the derived-topic model, without a server."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticker.core.candles import BAR, BAR_BYTES, CANDLES, INTERVALS, BarRing, Candles, encode
from ticker.core.topics import DerivedTopic, TopicError, TopicKind, TopicKinds, base_of

T0 = 1_764_979_200_000_000  # µs: a UTC midnight (2025-12-06)


class Clock:
    """A settable µs clock."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def feed(candles: Candles, ticks: list[dict[str, Any]]) -> list[tuple[Any, np.ndarray]]:
    """Hand ticks to the aggregator grouped by symbol, as the server does per batch."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for tick in ticks:
        runs.setdefault(tick["s"], []).append(tick)
    ordered = [tick for run in runs.values() for tick in run]
    return candles.add(
        list(runs),
        [len(run) for run in runs.values()],
        np.array([x["t"] for x in ordered], np.int64),
        np.array([x["p"] for x in ordered], np.float64),
        np.array([x.get("v", 0.0) for x in ordered], np.float64),
    )


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


def all_bars(candles: Candles, symbol: str, interval: str) -> list[tuple]:
    closed, opened = candles.history((symbol, interval), candles.depth)
    return [tuple(r) for r in np.concatenate([closed, opened]).tolist()]


def test_a_bar_is_open_high_low_close_volume_count_on_a_utc_bucket() -> None:
    candles = Candles(["1m"], clock=Clock())
    ticks = [
        {"s": "A", "t": T0 + 1_000_000, "p": 10.0, "v": 1},
        {"s": "A", "t": T0 + 2_000_000, "p": 12.0, "v": 2},
        {"s": "A", "t": T0 + 3_000_000, "p": 9.0},
        {"s": "A", "t": T0 + 59_999_999, "p": 11.0, "v": 4},
    ]
    assert feed(candles, ticks) == []
    assert all_bars(candles, "A", "1m") == [(T0, 10.0, 12.0, 9.0, 11.0, 7.0, 4)]
    closed = feed(candles, [{"s": "A", "t": T0 + 60_000_000, "p": 13.0}])
    assert [(key, rows.tolist()) for key, rows in closed] == [
        (("A", "1m"), [(T0, 10.0, 12.0, 9.0, 11.0, 7.0, 4)])
    ]


def test_one_day_bars_are_utc_days_and_empty_buckets_make_no_bar() -> None:
    candles = Candles(["1d", "1s"], clock=Clock())
    day = INTERVALS["1d"]
    feed(
        candles, [{"s": "A", "t": T0 + day - 1, "p": 1.0}, {"s": "A", "t": T0 + 3 * day, "p": 2.0}]
    )
    assert [b[0] for b in all_bars(candles, "A", "1d")] == [T0, T0 + 3 * day]
    assert [b[0] for b in all_bars(candles, "A", "1s")] == [T0 + day - 1_000_000, T0 + 3 * day]


def test_a_quiet_symbol_closes_on_the_stream_clock_and_a_late_tick_is_dropped() -> None:
    clock = Clock(T0 + 10_000_000)
    candles = Candles(["1s"], clock=clock)
    feed(candles, [{"s": "A", "t": T0 + 10_000_000, "p": 1.0}])
    clock.now += 999_999
    assert candles.close_due() == []
    clock.now += 1
    [(key, rows)] = candles.close_due()
    assert key == ("A", "1s") and rows["ts"].tolist() == [T0 + 10_000_000]
    feed(candles, [{"s": "A", "t": T0 + 10_500_000, "p": 2.0}])  # its bucket closed
    assert candles.late == 1
    assert all_bars(candles, "A", "1s") == [(T0 + 10_000_000, 1.0, 1.0, 1.0, 1.0, 0.0, 1)]


def test_the_stream_clock_of_a_replay_is_its_recorded_time() -> None:
    clock = Clock(T0 + 10**12)  # the server's now, long after the recorded day
    candles = Candles(["1m"], clock=clock)
    feed(candles, [{"s": "A", "t": T0, "p": 1.0}])
    assert candles.close_due() == []  # a minute of the recording has not passed
    clock.now += 60_000_000
    assert len(candles.close_due()) == 1


def test_the_open_bar_changes_are_reported_once() -> None:
    candles = Candles(["1s", "1m"], clock=Clock())
    feed(candles, [{"s": "A", "t": T0, "p": 1.0}, {"s": "B", "t": T0, "p": 2.0}])
    dirty = {key for key, _ in candles.take_dirty()}
    assert dirty == {("A", "1s"), ("B", "1s"), ("A", "1m"), ("B", "1m")}
    assert candles.take_dirty() == []


def test_the_ring_keeps_the_last_depth_bars_and_grows_by_doubling() -> None:
    ring = BarRing(100)
    assert ring.nbytes() == 64 * BAR_BYTES
    for start in range(0, 250, 7):
        rows = np.zeros(7, BAR)
        rows["ts"] = np.arange(start, start + 7)
        ring.extend(rows)
    assert len(ring) == 100 and ring.nbytes() == 100 * BAR_BYTES
    assert ring.last(100)["ts"].tolist() == list(range(152, 252))
    assert ring.last(3, end=200)["ts"].tolist() == [197, 198, 199]


def test_history_is_bounded_by_depth() -> None:
    candles = Candles(["1s"], depth=5, clock=Clock())
    feed(candles, [{"s": "A", "t": T0 + i * 1_000_000, "p": float(i)} for i in range(20)])
    closed, opened = candles.history(("A", "1s"), 100)
    assert closed["ts"].tolist() == [T0 + i * 1_000_000 for i in range(14, 19)]
    assert opened["ts"].tolist() == [T0 + 19_000_000]


def test_bars_encode_as_the_protocol_says() -> None:
    candles = Candles(["1m"], clock=Clock())
    feed(
        candles, [{"s": "A", "t": T0, "p": 1.5, "v": 2}, {"s": "A", "t": T0 + 60_000_000, "p": 2.0}]
    )
    closed, opened = candles.history(("A", "1m"), 10)
    assert [orjson.loads(b) for b in encode(("A", "1m"), closed, opened)] == [
        {"s": "A", "i": "1m", "ts": T0, "o": 1.5, "h": 1.5, "l": 1.5, "c": 1.5, "v": 2.0}
        | {"n": 1, "x": True},
        {"s": "A", "i": "1m", "ts": T0 + 60_000_000, "o": 2.0, "h": 2.0, "l": 2.0, "c": 2.0}
        | {"v": 0.0, "n": 1, "x": False},
    ]


ticks_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "s": st.sampled_from(["A", "B", "C"]),
            "dt": st.integers(-3_000_000, 40_000_000),
            "p": st.floats(1, 1000, allow_nan=False),
            "v": st.integers(0, 100),
        }
    ),
    max_size=200,
)


@settings(max_examples=150, deadline=None)
@given(ticks_strategy, st.lists(st.integers(1, 30), min_size=1, max_size=20))
def test_bars_equal_an_independent_aggregation_however_the_ticks_are_batched(
    raw: list[dict[str, Any]], cuts: list[int]
) -> None:
    t = T0
    ticks = []
    for tick in raw:
        t = max(T0, t + tick.pop("dt"))
        ticks.append({**tick, "t": t})
    candles = Candles(["1s", "15s", "1m"], clock=Clock())
    at = 0
    for cut in cuts * (len(ticks) // max(1, sum(cuts)) + 1):
        feed(candles, ticks[at : at + cut])
        at += cut
    for interval in ("1s", "15s", "1m"):
        expected = reference(ticks, interval)
        for symbol in "ABC":
            assert all_bars(candles, symbol, interval) == expected.get(symbol, [])


def test_the_topic_model_parses_base_and_suffix_and_lists_valid_suffixes() -> None:
    books = TopicKind("books", lambda suffix: suffix in ("book10", "book25"), "book10 book25")
    kinds = TopicKinds([CANDLES, books])
    assert kinds.parse("AAPL@1m") == DerivedTopic("AAPL@1m", "AAPL", "candles", "1m")
    assert kinds.parse("BTC-USD@book10").kind == "books"
    assert base_of("AAPL@1m") == base_of("AAPL") == "AAPL"
    with pytest.raises(TopicError, match=r"valid: candles: 1s 5s 15s 1m 5m 15m 1h 4h 1d; books"):
        kinds.parse("AAPL@2m")
    with pytest.raises(TopicError, match="SYMBOL@SUFFIX"):
        kinds.parse("@1m")
