"""The replay feed: schedule fidelity on an injected clock, loops, windows, steering."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from pathlib import Path

import numpy as np
import pytest

from feeds.replay.adapter import ReplayFeed, select
from feeds.supervisor import FeedSupervisor
from tests.conftest import TtyBuffer
from ticker.cli import main
from ticker.core.bus import Bus
from ticker.core.ticks import Tick
from ticker.core.times import parse_time
from ticker.progress import Progress
from ticker.recording.formats import load
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.schedule import MAX_BATCH, Replay, ReplayOptions
from ticker.recording.table import TickTable

DATA = Path(__file__).parent / "data"
T0 = 1_700_000_000_000_000
WALL0 = 1_800_000_000_000_000


def recording(n: int = 2000, seed: int = 7, mean_gap_us: int = 30_000) -> TickTable:
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(mean_gap_us, n).astype(np.int64)
    gaps[::50] = 0  # bursts: several ticks with one timestamp
    t = T0 + np.cumsum(gaps) - gaps[0]
    sym = rng.integers(0, 3, n).astype(np.int32)
    q = np.zeros(n, np.int64)
    for s in range(3):
        q[sym == s] = np.arange(1, (sym == s).sum() + 1)
    return TickTable.build(["A", "B", "C"], t=t, sym=sym, p=100 + rng.random(n), q=q)


class FakeTime:
    """A clock whose sleeps oversleep by up to ``jitter_s`` (seeded), like a busy loop."""

    def __init__(self, jitter_s: float = 0.0015, seed: int = 3) -> None:
        self.now = 1000.0
        self.jitter_s = jitter_s
        self.rng = random.Random(seed)
        self.sleeps: list[float] = []
        self.overslept = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        extra = self.rng.random() * self.jitter_s if seconds > 0 else 0.0
        self.overslept += extra
        self.now += seconds + extra


async def run(feed: ReplayFeed, fake: FakeTime) -> list[tuple[float, Tick]]:
    out: list[tuple[float, Tick]] = []
    async for batch in feed.stream():
        out += [(fake.now, tick) for tick in batch]
    return out


@pytest.mark.parametrize("speed", [1.0, 10.0])
async def test_gaps_are_reproduced_within_2ms_at_p99_with_no_drift(speed: float) -> None:
    table = recording()
    fake = FakeTime()
    feed = ReplayFeed(
        table,
        ReplayOptions(speed=speed),
        clock=fake.clock,
        wall_clock=lambda: WALL0,
        sleep=fake.sleep,
    )
    emitted = await run(feed, fake)
    assert [tick["q"] for _, tick in emitted] == table.q.tolist()
    scheduled = 1000.0 + (table.t - T0) / 1e6 / speed
    at = np.array([at for at, _ in emitted])
    late = at - scheduled
    assert late.min() >= 0  # never early
    gap_error = np.abs(np.diff(at) - np.diff(scheduled))
    assert np.percentile(gap_error, 99) <= 0.002  # inter-arrival gaps as recorded
    assert np.percentile(late, 99) <= 0.002
    assert late[-1] <= 0.002  # after a minute of recording: no accumulated error
    assert (table.t[-1] - T0) / 1e6 > 55  # it was a long replay
    # re-based times are the schedule on the wall clock, gaps divided by the speed
    rebased = np.array([tick["t"] for _, tick in emitted])
    assert np.abs(rebased - (WALL0 + (table.t - T0) / speed)).max() <= 1


async def test_sleep_after_sleep_would_drift_but_the_schedule_does_not() -> None:
    """The same jitter, summed over the gaps, is what a relative pacer would be late by."""
    table = recording()
    fake = FakeTime()
    feed = ReplayFeed(table, clock=fake.clock, wall_clock=lambda: WALL0, sleep=fake.sleep)
    emitted = await run(feed, fake)
    assert len(emitted) == len(table)
    assert fake.overslept > 1.0  # sleep-after-sleep would end over a second late
    assert emitted[-1][0] - 1000.0 - (table.t[-1] - T0) / 1e6 <= 0.002


async def test_speed_zero_goes_in_full_batches_without_waiting() -> None:
    table = recording(20_000)
    fake = FakeTime()
    screen = TtyBuffer()
    progress = Progress("replay", total=len(table), stream=screen, clock=fake.clock)
    feed = ReplayFeed(
        table, ReplayOptions(speed=0), clock=fake.clock, sleep=fake.sleep, meter=progress
    )
    sizes = [len(b) async for b in feed.stream()]
    assert sizes == [MAX_BATCH, MAX_BATCH, 20_000 - 2 * MAX_BATCH]
    assert set(fake.sleeps) == {0.0}
    assert "replay: 20,000 ticks" in screen.getvalue() and screen.getvalue().endswith("100%\n")


async def test_keep_time_keeps_the_recorded_timestamps() -> None:
    table = recording(100)
    fake = FakeTime(jitter_s=0)
    feed = ReplayFeed(
        table, ReplayOptions(speed=5, keep_time=True), clock=fake.clock, sleep=fake.sleep
    )
    assert [tick["t"] for _, tick in await run(feed, fake)] == table.t.tolist()


def test_loops_continue_q_and_time_in_the_same_epoch() -> None:
    table = recording(10)
    replay = Replay(table, ReplayOptions(speed=0, loop=True), now=0.0, wall_us=WALL0)
    first, second = replay.batch(0.0), replay.batch(0.0)
    assert len(first) == len(second) == 10
    for s in "ABC":
        qs = [t["q"] for t in first + second if t["s"] == s]
        assert qs == list(range(1, len(qs) + 1))  # q keeps counting up, no repeat
    kept = Replay(table, ReplayOptions(speed=1, loop=True, keep_time=True), now=0.0, wall_us=0)
    times = [t["t"] for t in kept.batch(1e9)]
    times += [t["t"] for t in kept.batch(2e9)]
    assert times[:10] == table.t.tolist()
    assert all(b >= a for a, b in itertools.pairwise(times))
    assert not kept.finished and kept.wait(2e9) is not None


def test_pause_seek_and_speed_move_the_anchor() -> None:
    t = T0 + np.arange(0, 10_000_000, 1_000_000)  # one tick a second for 10 s
    table = TickTable.build(["A"], t=t, sym=np.zeros(10, np.int32), p=np.arange(10.0))
    replay = Replay(table, ReplayOptions(speed=1), now=0.0, wall_us=WALL0)
    assert [x["p"] for x in replay.batch(2.5)] == [0, 1, 2]
    replay.pause(2.5)
    assert replay.batch(100.0) == [] and replay.wait(100.0) == 3600.0
    replay.resume(100.0)  # carries on from 2.5 s into the recording
    assert replay.batch(100.4) == [] and replay.wait(100.4) == pytest.approx(0.1)
    assert [x["p"] for x in replay.batch(100.5)] == [3]
    replay.set_speed(10, 100.5)  # at 3 s; the next tick (4 s) now due 0.1 s later
    assert replay.wait(100.5) == pytest.approx(0.1)
    replay.seek(T0 + 8_000_000, 200.0)
    assert [x["p"] for x in replay.batch(200.0)] == [8]
    assert [x["p"] for x in replay.batch(200.1)] == [9]
    assert replay.finished and replay.wait(300.0) is None
    with pytest.raises(ValueError):
        replay.set_speed(-1, 300.0)


def test_windows_and_symbols() -> None:
    table = recording(300)
    start, end = int(table.t[100]), int(table.t[200])
    chosen = select(table, "rec", ["A", "C"], start, end)
    assert set(np.array(chosen.symbols)[chosen.sym]) <= {"A", "C"}
    assert chosen.t.min() >= start and chosen.t.max() < end
    with pytest.raises(RecordingError, match="no ticks in the selected"):
        select(table, "rec", ["ZZZ"], None, None)
    assert parse_time("2020-02-22T00:00:03") == 1582329603000000
    assert parse_time("2020-02-22T01:00:03+01:00") == 1582329603000000
    assert parse_time("1582329603000000") == 1582329603000000
    with pytest.raises(ValueError, match="neither ISO-8601"):
        parse_time("yesterday")


async def test_a_real_recording_replays_into_the_bus_at_speed_zero() -> None:
    problems = Problems()
    feed = ReplayFeed.from_paths(
        [DATA / "tardis_trades.csv"],
        ReplayOptions(speed=0, keep_time=True),
        problems,
        start=parse_time("2020-02-22T00:30:00"),
    )
    bus = Bus()
    supervisor = FeedSupervisor(feed, bus.publish)
    await supervisor.run()  # a finite source: returns when the recording ends
    expected = load([DATA / "tardis_trades.csv"], Problems())
    expected = expected.select(start=parse_time("2020-02-22T00:30:00"))
    assert bus.published == supervisor.ticks == len(expected) > 0
    assert feed.symbols() == ["BTCUSDT"]
    assert bus.snapshot(["BTCUSDT"])[0].endswith(b',"t":1582337147728000,"q":%d}' % len(expected))


@pytest.mark.slow
async def test_real_time_at_speed_10() -> None:
    """One short check against the real clock (generous bound: the machine is shared)."""
    t = T0 + np.arange(0, 1_000_000, 50_000)  # 20 ticks over 0.95 s
    table = TickTable.build(["A"], t=t, sym=np.zeros(20, np.int32), p=np.ones(20))
    feed = ReplayFeed(table, ReplayOptions(speed=10))
    start = time.monotonic()
    count = sum([len(b) async for b in feed.stream()])
    elapsed = time.monotonic() - start
    assert count == 20
    assert 0.09 <= elapsed < 0.6
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--feed", "replay:nowhere.jsonl"], "ticker serve: error: nowhere.jsonl: no such file"),
        (["--feed", f"replay:{DATA / 'tardis_trades.csv'}", "--symbols", "ETH"], "no ticks in the"),
        (["--symbols", "AAPL,MSFT"], "the simulated feed takes a number of symbols"),
        (["--feed", "replay:"], "argument --feed: feed 'replay' needs its files: replay:PATH"),
        (["--speed", "-1"], "argument --speed: invalid speed value"),
        (["--from", "noon"], "argument --from: invalid time value"),
    ],
)
def test_serve_refuses_a_bad_replay_before_listening(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status: int | str | None
    try:
        status = main(["serve", "--port", "1", *argv])  # returns before listening
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    assert status == 2
    assert needle in capsys.readouterr().err


HALTED_FILE = DATA / "lobster_halt" / "AAPL_2012-06-21_34200000_57600000_message_10.csv"


async def test_a_lobster_halt_is_the_symbols_status_at_its_time_in_the_replay() -> None:
    """Type-7 rows (a halt, quotes back, trading back) become the symbol's status, each
    reported before the first tick after it, and the end of the recording ``closed``."""
    fake = FakeTime(jitter_s=0.0)
    problems = Problems()
    feed = ReplayFeed.from_paths([HALTED_FILE], ReplayOptions(speed=1), problems)
    feed._clock, feed._sleep = fake.clock, fake.sleep
    halt_t = [h.t for h in feed.halts]
    assert [h.reason for h in feed.halts] == [
        "trading halted",
        "quoting resumed, trading still halted",
        "",
    ]
    log: list[tuple[str, object]] = []
    feed.bind_status(lambda symbols, status, reason: log.append(("status", (status, reason))))
    async for _batch in feed.stream():
        assert feed.replay is not None
        log.append(("ticks", int(feed.table.t[feed.replay.cursor - 1])))  # recording time
    statuses = [v for kind, v in log if kind == "status"]
    assert statuses == [
        ("halted", "trading halted"),
        ("halted", "quoting resumed, trading still halted"),
        ("live", ""),
        ("closed", "the feed ended"),
    ]
    # each halt between the ticks before it and those after it, at its time
    reached = [v for kind, v in log if kind == "ticks"]
    halt_at = iter(halt_t)
    last_tick = 0
    for kind, value in log:
        if kind == "ticks":
            last_tick = int(value)  # type: ignore[call-overload]
        elif value[1] != "the feed ended":  # type: ignore[index]
            assert last_tick <= next(halt_at)
    assert reached[0] < halt_t[0] < reached[-1] and reached[-1] > halt_t[-1]


def test_halts_outside_the_selection_are_left_out() -> None:
    feed = ReplayFeed.from_paths(
        [HALTED_FILE],
        ReplayOptions(),
        Problems(),
        end=parse_time("2012-06-21T09:30:00.27505-04:00"),
    )
    assert feed.halts == []
