"""The per-client mailboxes: conflation, byte-bounded queues, frame-sized drains."""

from __future__ import annotations

import orjson
import pytest

from ticker.core.mailbox import ConflatingMailbox, QueueMailbox


def enc(symbol: str, q: int, pad: int = 0) -> bytes:
    return orjson.dumps({"s": symbol, "p": 1.0, "q": q, "x": "y" * pad})


def put(mailbox: ConflatingMailbox | QueueMailbox, symbol: str, *qs: int, pad: int = 0) -> None:
    items = [enc(symbol, q, pad) for q in qs]
    mailbox.put(symbol, items, sum(map(len, items)))


def qs(frame_items: list[bytes]) -> list[tuple[str, int]]:
    return [(t["s"], t["q"]) for t in map(orjson.loads, frame_items)]


def test_conflate_keeps_latest_per_symbol_in_first_pending_order() -> None:
    wakes: list[int] = []
    box = ConflatingMailbox(lambda: wakes.append(1))
    put(box, "MSFT", 1)
    put(box, "AAPL", 1, 2)
    put(box, "MSFT", 2, 3)
    assert len(box) == 2
    assert box.conflated == 3  # AAPL 1, MSFT 1, MSFT 2 replaced before being sent
    assert wakes == [1]  # woken once, on empty -> non-empty
    assert qs(box.drain()) == [("MSFT", 3), ("AAPL", 2)]
    assert len(box) == 0
    put(box, "AAPL", 3)
    assert wakes == [1, 1]


def test_conflate_holds_at_most_one_tick_per_symbol_whatever_the_rate() -> None:
    box = ConflatingMailbox()
    for q in range(1, 10_001):
        put(box, f"S{q % 7}", q)
    assert len(box) == 7
    assert sorted(q for _, q in qs(box.drain())) == list(range(9994, 10_001))


def test_conflate_drain_is_frame_bounded() -> None:
    box = ConflatingMailbox()
    for i in range(3000):
        put(box, f"S{i}", 1, pad=100)
    first = box.drain(max_bytes=64 * 1024)
    assert 0 < sum(map(len, first)) <= 64 * 1024
    rest = box.drain(max_bytes=10**9)
    assert len(first) + len(rest) == 3000
    assert qs(first + rest) == [(f"S{i}", 1) for i in range(3000)]


def test_discard_drops_pending_of_unsubscribed_symbols() -> None:
    for box in (ConflatingMailbox(), QueueMailbox(10**6)):
        put(box, "AAPL", 1)
        put(box, "MSFT", 1)
        box.discard(["AAPL"])
        assert qs(box.drain()) == [("MSFT", 1)]


def test_queue_keeps_every_tick_in_order_per_symbol() -> None:
    box = QueueMailbox(10**6)
    put(box, "AAPL", 1, 2)
    put(box, "MSFT", 1)
    put(box, "AAPL", 3)
    assert len(box) == 4
    assert qs(box.drain()) == [("AAPL", 1), ("AAPL", 2), ("MSFT", 1), ("AAPL", 3)]
    assert box.nbytes == 0 and len(box) == 0


def test_queue_drain_splits_frames_without_losing_or_reordering() -> None:
    box = QueueMailbox(10**7)
    for start in range(1, 5001, 500):
        put(box, "AAPL", *range(start, start + 500), pad=50)
        put(box, "MSFT", *range(start, start + 500), pad=50)
    total = box.nbytes
    frames = []
    while len(box):
        items = box.drain(max_bytes=16 * 1024)
        assert items and sum(map(len, items)) <= 16 * 1024
        frames.append(items)
    assert box.nbytes == 0
    got = [t for f in frames for t in qs(f)]
    assert sum(len(i) for f in frames for i in f) == total
    for symbol in ("AAPL", "MSFT"):
        assert [q for s, q in got if s == symbol] == list(range(1, 5001))


def test_queue_overflow_clears_and_is_reported() -> None:
    wakes: list[int] = []
    box = QueueMailbox(1000, lambda: wakes.append(1))
    put(box, "AAPL", *range(1, 11))  # ~300 bytes
    assert not box.overflowed
    put(box, "AAPL", *range(11, 41))
    assert box.overflowed
    assert len(box) == 0 and box.nbytes == 0  # memory released at once
    put(box, "AAPL", 41)
    assert len(box) == 0  # nothing more is taken
    assert wakes == [1, 1]  # woken when it got data, and again on overflow


@pytest.mark.parametrize("limit", [100, 4096])
def test_queue_never_exceeds_its_byte_bound(limit: int) -> None:
    box = QueueMailbox(limit)
    for q in range(1, 200):
        put(box, "AAPL", q)
        assert box.nbytes <= limit
