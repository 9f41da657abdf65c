"""The simulated feed: pacing against the clock, batch contents and determinism."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import aclosing

import orjson
import pytest

from feeds.base import FeedAdapter
from feeds.sim import SimulatedFeed, symbol_names
from feeds.sim.adapter import MAX_BATCH_SECONDS
from ticker.core.bus import Bus
from ticker.core.ticks import TickBatch


class FakeClock:
    """Time that only moves when the feed sleeps or the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        assert delay >= 0
        self.sleeps.append(delay)
        self.now += delay


def fake_feed(
    rate: float = 1000.0, *, seed: int, skew: float = 0.0
) -> tuple[SimulatedFeed, FakeClock]:
    clock = FakeClock()  # the pacing tests reason on a 10 ms grid (the default is 2 ms)
    feed = SimulatedFeed(
        100, rate, skew=skew, seed=seed, clock=clock, sleep=clock.sleep, interval=0.01
    )
    return feed, clock


async def take(feed: SimulatedFeed, n_batches: int) -> list[TickBatch]:
    batches = []
    async with aclosing(feed.stream()) as stream:
        async for batch in stream:
            batches.append(batch)
            if len(batches) == n_batches:
                break
    return batches


def test_is_a_feed_adapter() -> None:
    feed = SimulatedFeed(120, name="demo")
    assert isinstance(feed, FeedAdapter)
    assert feed.name == "demo"
    assert feed.symbols() == symbol_names(120)
    assert feed.symbols()[:3] == ["AAPL", "MSFT", "GOOGL"]


async def test_ticks_are_plain_json_ready_dicts() -> None:
    feed, _ = fake_feed(seed=1)
    (batch,) = await take(feed, 1)
    assert len(batch) == 10  # 1000 ticks/s, one 10 ms interval
    symbols = set(feed.symbols())
    for tick in batch:
        assert set(tick) == {"s", "p", "b", "a", "v"}
        assert tick["s"] in symbols
        assert type(tick["p"]) is float
        assert type(tick["b"]) is float
        assert type(tick["a"]) is float
        assert type(tick["v"]) is int
        assert 0 < tick["b"] < tick["p"] < tick["a"]
    assert orjson.loads(orjson.dumps(batch)) == batch  # no numpy scalars in there


async def test_batches_publish_on_the_bus() -> None:
    feed, _ = fake_feed(seed=1)
    bus = Bus()
    bus.add_symbols(feed.symbols())
    for batch in await take(feed, 5):
        bus.publish(batch)
    assert bus.published == 50
    assert bus.symbols() == sorted(feed.symbols())


async def test_same_seed_same_stream() -> None:
    first = await take(fake_feed(seed=42)[0], 20)
    again = await take(fake_feed(seed=42)[0], 20)
    other = await take(fake_feed(seed=43)[0], 20)
    assert first == again
    assert first != other
    assert sum(map(len, first)) == 200


@pytest.mark.parametrize("rate", [100_000, 250_000])
async def test_rate_holds_exactly_with_a_fake_clock(rate: int) -> None:
    feed, clock = fake_feed(rate, seed=1)
    emitted = 0
    sizes = []
    async with aclosing(feed.stream()) as stream:
        async for batch in stream:
            emitted += len(batch)
            sizes.append(len(batch))
            if clock.now >= 10.0:
                break
    assert 10.0 <= clock.now < 10.02
    assert abs(emitted - rate * clock.now) <= 1
    assert len(sizes) in (1000, 1001)  # one batch per 10 ms interval
    assert min(sizes) >= rate // 100 - 1
    assert max(sizes) <= rate // 100 + 1
    assert feed.skipped == 0
    # Wake-ups sit on the 10 ms grid (no drift from sleeping "interval" after work).
    assert clock.sleeps == pytest.approx([0.01] * len(clock.sleeps), abs=1e-9)


async def test_a_slow_rate_sleeps_until_its_next_tick_is_due() -> None:
    feed, clock = fake_feed(2.0, seed=1)  # a tick every 0.5 s, on a 10 ms grid
    times = []
    async with aclosing(feed.stream()) as stream:
        async for batch in stream:
            times.append((clock.now, len(batch)))
            if len(times) == 20:
                break
    assert all(n == 1 for _, n in times)
    # at most two wake-ups per tick (round() halves to even), not 50 per second
    assert len(clock.sleeps) <= 2 * len(times) + 1
    # each tick on the first slot at or after its due time (k + 0.5) / rate
    assert [t for t, _ in times] == pytest.approx([(k + 0.5) / 2.0 for k in range(20)], abs=0.011)


async def test_a_late_consumer_gets_bigger_batches_not_a_lower_rate() -> None:
    feed, clock = fake_feed(10_000, seed=1)
    emitted = 0
    sizes = []
    async with aclosing(feed.stream()) as stream:
        async for batch in stream:
            emitted += len(batch)
            sizes.append(len(batch))
            clock.now += 0.035  # the consumer takes 35 ms per batch
            if clock.now >= 10.0:
                break
    assert abs(emitted - 10_000 * (clock.now - 0.035)) <= 1
    assert set(sizes[1:]) == {400}  # 35 ms of work + 5 ms to the next 10 ms slot
    assert feed.skipped == 0


async def test_a_stall_is_capped_not_replayed() -> None:
    rate = 10_000
    feed, clock = fake_feed(rate, seed=1)
    sizes = []
    async with aclosing(feed.stream()) as stream:
        async for batch in stream:
            sizes.append(len(batch))
            if len(sizes) == 10:
                clock.now += 3.0  # the event loop was blocked for 3 s
            if len(sizes) == 20:
                break
    max_batch = rate * MAX_BATCH_SECONDS
    assert sizes[:10] == [100] * 10
    assert sizes[10] == max_batch
    assert sizes[11:] == [100] * 9  # back to normal at once: no burst of stale ticks
    assert feed.skipped == 30_100 - max_batch  # due: the 3 s stall and the 10 ms slot after it
    assert sum(sizes) + feed.skipped == round(rate * clock.now)


async def test_skewed_feed_has_busy_symbols() -> None:
    feed, _ = fake_feed(100_000, seed=5, skew=1.2)
    counts = Counter(tick["s"] for batch in await take(feed, 100) for tick in batch)
    ranked = sorted((counts[s] for s in feed.symbols()), reverse=True)
    assert sum(ranked) == 100_000
    assert ranked[0] > 50 * ranked[50]


async def test_rate_holds_in_real_time() -> None:
    rate = 100_000
    feed = SimulatedFeed(100, rate, seed=1)
    emitted = 0
    start = time.monotonic()
    async with aclosing(feed.stream()) as stream:
        async for batch in stream:
            emitted += len(batch)
            if time.monotonic() - start >= 1.0:
                break
    elapsed = time.monotonic() - start
    assert emitted == pytest.approx(rate * elapsed, rel=0.02)
