"""The topic bus: stamping, encode-once, routing, last values, subscribe/unsubscribe."""

from __future__ import annotations

import orjson
import pytest

from ticker.core.bus import WILDCARD, Bus
from ticker.core.mailbox import ConflatingMailbox, QueueMailbox


def make_bus() -> Bus:
    clock = iter(range(1_000_000, 10**9, 1000))
    bus = Bus(clock=lambda: next(clock), epoch="e1")
    bus.add_symbols(["AAPL", "MSFT", "IBM"])
    return bus


def decode(drained: tuple[list[bytes], int]) -> list[dict]:
    segments, count = drained
    ticks = orjson.loads(b"[" + b",".join(segments) + b"]")
    assert len(ticks) == count
    return ticks


def test_publish_stamps_q_per_symbol_and_t_when_missing() -> None:
    bus = make_bus()
    box = QueueMailbox(10**6)
    bus.subscribe(box, ["AAPL", "MSFT"])
    bus.publish([{"s": "AAPL", "p": 1.0}, {"s": "MSFT", "p": 2.0}, {"s": "AAPL", "p": 1.5}])
    ticks = decode(box.drain())
    assert [(t["s"], t["q"]) for t in ticks] == [("AAPL", 1), ("AAPL", 2), ("MSFT", 1)]
    assert {t["t"] for t in ticks} == {1_000_000}  # one clock read per batch


def test_publish_keeps_q_and_t_brought_by_the_tick() -> None:
    bus = make_bus()
    box = QueueMailbox(10**6)
    bus.subscribe(box, ["AAPL"])
    bus.publish([{"s": "AAPL", "p": 1.0, "t": 42, "q": 700}])
    bus.publish([{"s": "AAPL", "p": 1.1}])
    assert [(t["t"], t["q"]) for t in decode(box.drain())] == [(42, 700), (1_001_000, 701)]


def test_a_queue_is_told_each_symbols_last_q_without_reading_the_bytes() -> None:
    bus = make_bus()
    box = QueueMailbox(10**6)
    bus.subscribe(box, ["AAPL", "MSFT"])
    bus.publish([{"s": "AAPL", "q": 5}, {"s": "MSFT"}, {"s": "AAPL", "q": 9}])
    positions: dict[str, int] = {}
    box.drain(positions=positions)
    assert positions == {"AAPL": 9, "MSFT": 1}


def test_each_tick_is_encoded_once_and_shared_by_every_subscriber() -> None:
    bus = make_bus()
    boxes = [QueueMailbox(10**6) for _ in range(3)] + [ConflatingMailbox()]
    for box in boxes:
        bus.subscribe(box, ["IBM"])
    bus.publish([{"s": "IBM", "p": 100.0}])
    drained = [box.drain()[0][0] for box in boxes]
    assert all(item is drained[0] for item in drained)  # the very same bytes object
    assert orjson.loads(drained[0])["p"] == 100.0


def test_routing_only_to_subscribers_and_wildcard() -> None:
    bus = make_bus()
    aapl, star, none = QueueMailbox(10**6), QueueMailbox(10**6), QueueMailbox(10**6)
    bus.subscribe(aapl, ["AAPL"])
    bus.subscribe(star, [WILDCARD])
    bus.publish([{"s": "AAPL", "p": 1.0}, {"s": "MSFT", "p": 2.0}, {"s": "NEW", "p": 3.0}])
    assert [t["s"] for t in decode(aapl.drain())] == ["AAPL"]
    assert [t["s"] for t in decode(star.drain())] == ["AAPL", "MSFT", "NEW"]  # future symbols too
    assert len(none) == 0
    assert bus.known("NEW")


def test_snapshot_is_the_last_value_and_the_stream_continues_from_it() -> None:
    bus = make_bus()
    bus.publish([{"s": "AAPL", "p": p} for p in (1.0, 2.0, 3.0)])
    box = QueueMailbox(10**6)
    bus.subscribe(box, ["AAPL", "MSFT"])
    snap = [orjson.loads(t) for t in bus.snapshot(["AAPL", "MSFT"])]
    assert snap == [{"s": "AAPL", "p": 3.0, "q": 3, "t": 1_000_000}]  # MSFT has no tick yet
    bus.publish([{"s": "AAPL", "p": 4.0}])
    assert [t["q"] for t in decode(box.drain())] == [4]


def test_unsubscribe_stops_delivery() -> None:
    bus = make_bus()
    box = QueueMailbox(10**6)
    bus.subscribe(box, ["AAPL", WILDCARD])
    bus.unsubscribe(box, ["AAPL", WILDCARD])
    bus.publish([{"s": "AAPL", "p": 1.0}])
    assert len(box) == 0
    assert bus.subscriber_count() == 0


@pytest.mark.parametrize("symbol", ["", "*", "X" * 33])
def test_invalid_symbols_are_refused(symbol: str) -> None:
    with pytest.raises(ValueError, match="invalid symbol"):
        make_bus().publish([{"s": symbol, "p": 1.0}])


def test_epochs_differ_between_buses() -> None:
    assert Bus().epoch != Bus().epoch


def test_a_lagging_queue_keeps_alive_about_what_it_will_send() -> None:
    """Routing caches and orjson's oversized buffers must not ride along with the bytes."""
    import tracemalloc

    bus = make_bus()
    symbols = [f"S{i:02d}" for i in range(100)]
    healthy = [QueueMailbox(10**6) for _ in range(200)]
    for i, box in enumerate(healthy):  # many distinct subscription sets, each share cached
        bus.subscribe(box, [symbols[(i * 7 + k) % 100] for k in range(10)])
    stalled = QueueMailbox(10**7)
    bus.subscribe(stalled, [WILDCARD])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for b in range(300):
            bus.publish([{"s": symbols[(b + k) % 100], "p": 1.0 + k} for k in range(20)])
            for box in healthy:
                box.drain()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(stalled) == 6000
    # Each share also keeps its symbols' last q (the SSE id): a pointer a segment, ~13 bytes
    # a tick here. A leaked 4 KiB orjson buffer a tick would be 40 times the bound.
    assert kept < 3.5 * stalled.nbytes, (kept, stalled.nbytes)
