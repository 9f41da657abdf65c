"""The bar aggregation and the derived-topic model, without a server."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.bars import reference
from ticker.core.bus import Bus
from ticker.core.candles import BAR, BAR_BYTES, CANDLES, INTERVALS, BarRing, Candles, encode
from ticker.core.entitlements import ANONYMOUS, Entitlements, Principal
from ticker.core.session import Limits, Session
from ticker.core.tape import Columns, Tape
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
        Columns(
            list(runs),
            [len(run) for run in runs.values()],
            np.array([x["t"] for x in ordered], np.int64),
            np.array([x["p"] for x in ordered], np.float64),
            np.array([x.get("v", 0.0) for x in ordered], np.float64),
        )
    )


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
    assert BAR_BYTES == 56  # what docs/architecture.md and README.md state per bar
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


def test_the_tape_holds_the_bus_batches_and_gives_them_as_columns_per_symbol() -> None:
    bus = Bus(clock=Clock())
    tape = Tape()
    bus.subscribe(tape, ["*"])
    bus.publish([{"s": "A", "p": 1.0, "v": 3}, {"s": "B", "p": 2.0}])
    bus.publish([{"s": "A", "p": 1.5, "t": T0 + 5}])
    assert len(tape) == 2
    columns = tape.take()
    assert (columns.symbols, columns.counts) == (["A", "B"], [2, 1])
    assert columns.t.tolist() == [T0, T0 + 5, T0]
    assert columns.p.tolist() == [1.0, 1.5, 2.0] and columns.v.tolist() == [3.0, 0.0, 0.0]
    assert len(tape) == 0 and len(tape.take().t) == 0


def test_the_tape_is_bounded_in_bytes() -> None:
    bus = Bus(clock=Clock())
    tape = Tape(max_bytes=200)
    bus.subscribe(tape, ["*"])
    for _ in range(10):
        bus.publish([{"s": "A", "p": 1.0}])
    assert tape.nbytes <= 200 and tape.dropped > 0


class FakeCandleHost:
    """A ``DerivedHost`` that records what the session hands it."""

    kind = CANDLES
    max_history = 10

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], int]] = []

    def follow(self, session: Session, topics: list[DerivedTopic], history: int) -> None:
        self.calls.append(("follow", [t.name for t in topics], history))

    def unfollow(self, session: Session, topics: list[DerivedTopic]) -> None:
        self.calls.append(("unfollow", [t.name for t in topics], 0))


def session_with(principal: Principal = ANONYMOUS) -> tuple[Session, FakeCandleHost]:
    bus = Bus(clock=Clock())
    bus.add_symbols(["AAPL", "MSFT"])
    host = FakeCandleHost()
    session = Session(bus, principal=principal, derived={"candles": host})
    return session, host


def replies(session: Session, **op: Any) -> list[dict[str, Any]]:
    session.receive(orjson.dumps(op))
    return [orjson.loads(f) for f in session.take_control()]


def test_a_derived_topic_is_entitled_by_its_base_symbol() -> None:
    session, host = session_with(Principal(entitlements=Entitlements(["AAPL"])))
    got = replies(session, op="subscribe", symbols=["AAPL@1m", "MSFT@1m", "AAPL"], history=5)
    assert got[0]["code"] == "not_entitled" and got[0]["symbols"] == ["MSFT@1m"]
    assert got[1] == {"type": "subscribed", "symbols": ["AAPL", "AAPL@1m"]}
    assert host.calls == [("follow", ["AAPL@1m"], 5)]
    replies(session, op="subscribe", symbols=["AAPL@1m"])  # already followed: not again
    assert len(host.calls) == 1
    assert replies(session, op="unsubscribe", symbols=["AAPL@1m"])[0]["symbols"] == ["AAPL"]
    session.end()
    assert host.calls[-1] == ("unfollow", ["AAPL@1m"], 0)


def test_a_delayed_token_gets_no_derived_topic_and_limits_count_them() -> None:
    session, host = session_with(Principal(delay_s=900))
    (error,) = replies(session, op="subscribe", symbols=["AAPL@1m"])
    assert error["code"] == "not_entitled" and "live" in error["message"]
    session, host = session_with()
    session.limits = Limits(max_symbols=2)
    assert replies(session, op="subscribe", symbols=["AAPL@1s", "AAPL@1m", "AAPL"])[0]["code"] == (
        "too_many_symbols"
    )
    assert replies(session, op="subscribe", symbols=["AAPL@1m"], history=11)[0]["message"] == (
        "history is at most 10 bars per topic of kind candles"
    )
    assert host.calls == []


def test_a_server_without_derived_topics_says_so() -> None:
    bus = Bus(clock=Clock())
    bus.add_symbols(["AAPL"])
    (error,) = replies(Session(bus), op="subscribe", symbols=["AAPL@1m"])
    assert error["code"] == "bad_request" and "no derived topics" in error["message"]


def test_a_stream_joined_late_leaves_out_each_series_first_bucket() -> None:
    candles = Candles(["1s"], clock=Clock(), partial_start=True)
    feed(candles, [{"s": "A", "t": T0 + 900_000, "p": 1.0}])  # a last value, say
    feed(candles, [{"s": "A", "t": T0 + 1_000_000, "p": 2.0}, {"s": "B", "t": T0, "p": 3.0}])
    assert all_bars(candles, "A", "1s") == [(T0 + 1_000_000, 2.0, 2.0, 2.0, 2.0, 0.0, 1)]
    assert all_bars(candles, "B", "1s") == [] and candles.late == 0


def bars_at(*seconds: int) -> np.ndarray:
    rows = np.zeros(len(seconds), BAR)
    rows["ts"] = [T0 + s * 1_000_000 for s in seconds]
    rows["n"] = 1
    return rows


def test_the_ring_merges_in_the_buckets_it_lacks_in_order_and_stays_bounded() -> None:
    ring = BarRing(5)
    ring.extend(bars_at(4, 5))
    assert ring.merge(bars_at(1, 2, 4)) == 2  # 4 is held already
    assert ring.merge(bars_at(3)) == 1  # between: a hole filled
    ring.extend(bars_at(6))  # grows again after a merge
    assert ring.last(5)["ts"].tolist() == [T0 + s * 1_000_000 for s in (2, 3, 4, 5, 6)]


def test_a_late_node_backfills_before_its_first_whole_bucket_and_names_the_partial_one() -> None:
    candles = Candles(["1s"], clock=Clock(), partial_start=True)
    feed(candles, [{"s": "A", "t": T0 + 3_500_000, "p": 1.0}])  # joined during second 3
    assert candles.dropped == {("A", "1s"): T0 + 3_000_000}
    feed(
        candles,
        [{"s": "A", "t": T0 + 4_100_000, "p": 2.0}, {"s": "A", "t": T0 + 5_000_000, "p": 3.0}],
    )
    # the peers' bars: seconds 1 to 4; 4 is this node's own (whole) bucket, not taken
    assert candles.backfill(("A", "1s"), bars_at(1, 2, 3, 4)) == 3
    assert [r[0] for r in all_bars(candles, "A", "1s")] == [T0 + s * 1_000_000 for s in range(1, 6)]
    assert candles.backfill(("A", "1d"), bars_at(1)) == 0  # an interval not kept
