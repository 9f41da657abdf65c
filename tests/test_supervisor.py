"""The feed supervisor: restart with capped exponential backoff, one log line per crash."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator

import pytest

from feeds.base import FeedAdapter
from feeds.supervisor import FeedSupervisor
from ticker.core.backoff import JITTER
from ticker.core.ticks import TickBatch


class ScriptedFeed:
    """Run i yields ``runs[i][0]`` one-tick batches, then fails (``runs[i][1]``) or ends."""

    name = "scripted"

    def __init__(self, runs: list[tuple[int, bool]]) -> None:
        self.runs = runs
        self.started = 0

    def symbols(self) -> list[str]:
        return ["AAA"]

    async def stream(self) -> AsyncIterator[TickBatch]:
        n_batches, fails = self.runs[self.started]
        self.started += 1
        for i in range(n_batches):
            yield [{"s": "AAA", "p": float(self.started * 100 + i)}]
        if fails:
            raise ConnectionError(f"lost upstream #{self.started}")


class NoJitter(random.Random):
    def random(self) -> float:
        return 0.0


class Recorder:
    def __init__(self) -> None:
        self.delays: list[float] = []
        self.batches: list[TickBatch] = []

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)

    def publish(self, batch: TickBatch) -> None:
        self.batches.append(batch)


def supervise(
    feed: FeedAdapter, rec: Recorder, rng: random.Random | None = None, **kwargs: float
) -> FeedSupervisor:
    return FeedSupervisor(
        feed,
        rec.publish,
        sleep=rec.sleep,
        rng=rng or NoJitter(),
        clock=lambda: 123.5,
        **kwargs,
    )


async def test_backoff_is_exponential_and_capped() -> None:
    feed = ScriptedFeed([(0, True)] * 8 + [(1, False)])
    rec = Recorder()
    supervisor = supervise(feed, rec, backoff_initial=0.5, backoff_max=4.0)
    await supervisor.run()
    assert rec.delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert supervisor.restarts == 8
    assert feed.started == 9
    assert rec.batches == [[{"s": "AAA", "p": 900.0}]]


async def test_jitter_shortens_delays_but_keeps_them_increasing_to_the_cap() -> None:
    rec = Recorder()
    supervisor = supervise(ScriptedFeed([(0, True)] * 12 + [(0, False)]), rec, random.Random(1))
    await supervisor.run()
    bases = [min(0.5 * 2**k, 30.0) for k in range(12)]
    assert bases[-1] == 30.0
    for delay, base in zip(rec.delays, bases, strict=True):
        assert base * (1 - JITTER) <= delay <= base
    assert rec.delays[:7] == sorted(rec.delays[:7])  # strictly growing until the cap (k=6)
    assert len(set(rec.delays)) == 12  # jittered: no two equal


async def test_publish_keeps_receiving_batches_across_restarts() -> None:
    rec = Recorder()
    supervisor = supervise(ScriptedFeed([(3, True), (2, True), (4, False)]), rec)
    assert not supervisor.ready
    await supervisor.run()
    prices = [batch[0]["p"] for batch in rec.batches]
    assert prices == [100.0, 101.0, 102.0, 200.0, 201.0, 300.0, 301.0, 302.0, 303.0]
    assert supervisor.restarts == 2
    assert supervisor.ticks == 9
    assert supervisor.ready
    assert supervisor.last_tick_monotonic == 123.5
    assert rec.delays == [0.5, 0.5]  # each run yielded before failing: healthy, no growth


async def test_a_healthy_run_resets_the_backoff() -> None:
    runs = [(0, True), (0, True), (1, True), (0, True), (0, True), (0, False)]
    rec = Recorder()
    await supervise(ScriptedFeed(runs), rec).run()
    assert rec.delays == [0.5, 1.0, 0.5, 1.0, 2.0]  # the third run yielded: back to 0.5


async def test_a_finite_feed_ends_the_run() -> None:
    rec = Recorder()
    supervisor = supervise(ScriptedFeed([(0, False)]), rec)
    await supervisor.run()
    assert supervisor.restarts == 0
    assert supervisor.ticks == 0
    assert not supervisor.ready
    assert supervisor.last_tick_monotonic is None
    assert rec.delays == []


async def test_one_error_line_per_crash_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ticker.feeds")
    await supervise(ScriptedFeed([(1, True), (0, True), (0, False)]), Recorder()).run()
    records = [r for r in caplog.records if r.name == "ticker.feeds"]
    assert [r.levelno for r in records] == [logging.ERROR, logging.ERROR, logging.INFO]
    assert records[0].getMessage() == (
        "feed scripted failed: ConnectionError: lost upstream #1; restart #1 in 0.50 s"
    )
    assert "lost upstream #2" in records[1].getMessage()
    assert records[2].getMessage() == (
        "feed scripted ended: 1 tick(s) published; clients keep the last values"
    )
    assert not any(r.exc_info for r in records)
    assert "Traceback" not in caplog.text


async def test_traceback_only_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="ticker.feeds")
    await supervise(ScriptedFeed([(0, True), (0, False)]), Recorder()).run()
    (record, _ended) = [r for r in caplog.records if r.name == "ticker.feeds"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is ConnectionError


async def test_a_failing_publish_counts_as_a_feed_failure() -> None:
    published: list[TickBatch] = []

    def publish(batch: TickBatch) -> None:
        if not published:
            published.append([])
            raise ValueError("invalid symbol")
        published.append(batch)

    rec = Recorder()
    feed = ScriptedFeed([(2, False), (2, False)])
    supervisor = FeedSupervisor(feed, publish, sleep=rec.sleep, rng=NoJitter())
    await supervisor.run()
    assert supervisor.restarts == 1
    assert rec.delays == [0.5]
    assert [b[0]["p"] for b in published[1:]] == [200.0, 201.0]


class HangingFeed:
    name = "hanging"

    def symbols(self) -> list[str]:
        return []

    async def stream(self) -> AsyncIterator[TickBatch]:
        yield []
        await asyncio.Event().wait()


async def test_cancellation_is_not_a_failure() -> None:
    supervisor = FeedSupervisor(HangingFeed(), lambda batch: None)
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert supervisor.restarts == 0
    assert supervisor.ticks == 0  # an empty batch is not a tick
    assert not supervisor.ready


async def test_cancellation_during_backoff() -> None:
    supervisor = FeedSupervisor(ScriptedFeed([(0, True)] * 2), lambda batch: None)
    task = asyncio.create_task(supervisor.run())
    await asyncio.sleep(0.05)  # the real backoff is 0.4-0.5 s
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert supervisor.restarts == 1


def test_backoff_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="backoff"):
        FeedSupervisor(HangingFeed(), lambda batch: None, backoff_initial=5, backoff_max=1)
