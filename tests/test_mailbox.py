"""The per-client mailboxes: conflation, byte-bounded queues, frame-sized drains."""

from __future__ import annotations

import orjson
import pytest

from ticker.core.mailbox import ConflatingMailbox, Delivery, QueueMailbox


def enc(symbol: str, q: int, pad: int = 0) -> bytes:
    return orjson.dumps({"s": symbol, "p": 1.0, "q": q, "x": "y" * pad})


def put(mailbox: ConflatingMailbox | QueueMailbox, symbol: str, *qs: int, pad: int = 0) -> None:
    """Offer one symbol's run, as the bus would for a batch holding only that symbol."""
    mailbox.follows = (mailbox.follows or frozenset()) | {symbol}
    items = [enc(symbol, q, pad) for q in qs]
    mailbox.offer(Delivery({symbol: b",".join(items)}, {symbol: len(items)}, {symbol: items[-1]}))


def drained(mailbox: ConflatingMailbox | QueueMailbox, max_bytes: int = 256 * 1024) -> list:
    segments, count = mailbox.drain(max_bytes)
    ticks = orjson.loads(b"[" + b",".join(segments) + b"]")
    assert len(ticks) == count
    return ticks


def qs(ticks: list[dict]) -> list[tuple[str, int]]:
    return [(t["s"], t["q"]) for t in ticks]


def test_conflate_keeps_latest_per_symbol_in_first_pending_order() -> None:
    wakes: list[int] = []
    box = ConflatingMailbox(lambda: wakes.append(1))
    put(box, "MSFT", 1)
    put(box, "AAPL", 1, 2)
    put(box, "MSFT", 2, 3)
    assert len(box) == 2
    assert box.conflated == 3  # AAPL 1, MSFT 1, MSFT 2 replaced before being sent
    assert wakes == [1]  # woken once, on empty -> non-empty
    assert qs(drained(box)) == [("MSFT", 3), ("AAPL", 2)]
    assert len(box) == 0
    put(box, "AAPL", 3)
    assert wakes == [1, 1]


def test_conflate_holds_at_most_one_tick_per_symbol_whatever_the_rate() -> None:
    box = ConflatingMailbox()
    for q in range(1, 10_001):
        put(box, f"S{q % 7}", q)
    assert len(box) == 7
    assert sorted(q for _, q in qs(drained(box))) == list(range(9994, 10_001))


def offer_batch(box: ConflatingMailbox | QueueMailbox, runs: dict[str, range], pad: int) -> None:
    """Offer one batch holding several symbols, as the bus builds it."""
    encoded = {s: [enc(s, q, pad) for q in qs] for s, qs in runs.items()}
    box.follows = (box.follows or frozenset()) | set(runs)
    box.offer(
        Delivery(
            {s: b",".join(e) for s, e in encoded.items()},
            {s: len(e) for s, e in encoded.items()},
            {s: e[-1] for s, e in encoded.items()},
        )
    )


def test_conflate_drain_is_frame_bounded() -> None:
    box = ConflatingMailbox()
    offer_batch(box, {f"S{i}": range(1, 2) for i in range(3000)}, pad=100)
    segments, count = box.drain(max_bytes=64 * 1024)
    assert 0 < sum(map(len, segments)) <= 64 * 1024
    assert count == len(segments) < 3000
    rest = drained(box, 10**9)
    got = orjson.loads(b"[" + b",".join(segments) + b"]") + rest
    assert qs(got) == [(f"S{i}", 1) for i in range(3000)]


def test_discard_drops_pending_of_unsubscribed_symbols() -> None:
    for box in (ConflatingMailbox(), QueueMailbox(10**6)):
        put(box, "AAPL", 1)
        put(box, "MSFT", 1)
        box.discard(["AAPL"])
        assert qs(drained(box)) == [("MSFT", 1)]


def test_queue_keeps_every_tick_in_order_per_symbol() -> None:
    box = QueueMailbox(10**6)
    put(box, "AAPL", 1, 2)
    put(box, "MSFT", 1)
    put(box, "AAPL", 3)
    assert len(box) == 4
    assert qs(drained(box)) == [("AAPL", 1), ("AAPL", 2), ("MSFT", 1), ("AAPL", 3)]
    assert box.nbytes == 0 and len(box) == 0


def test_queue_drain_splits_frames_without_losing_or_reordering() -> None:
    box = QueueMailbox(10**7)
    symbols = [f"S{i}" for i in range(20)]
    for start in range(1, 501, 50):  # 10 batches x 20 symbols x 50 ticks (~5 KiB a segment)
        offer_batch(box, {s: range(start, start + 50) for s in symbols}, pad=50)
    total_ticks = len(box)
    frames = []
    while len(box):
        segments, count = box.drain(max_bytes=16 * 1024)
        # whole segments only: a frame passes the bound by at most one segment
        assert segments and sum(map(len, segments)) <= 16 * 1024 + max(map(len, segments))
        ticks = orjson.loads(b"[" + b",".join(segments) + b"]")
        assert len(ticks) == count
        frames.append(ticks)
    assert box.nbytes == 0
    assert len(frames) > 10  # it really was split, also inside batches
    got = [t for f in frames for t in qs(f)]
    assert len(got) == total_ticks == 10_000
    for symbol in symbols:
        assert [q for s, q in got if s == symbol] == list(range(1, 501))


def test_only_followed_symbols_are_taken() -> None:
    def batch(q: int, *symbols: str) -> Delivery:
        return Delivery(
            {s: enc(s, q) for s in symbols},
            {s: 1 for s in symbols},
            {s: enc(s, q) for s in symbols},
        )

    for box in (ConflatingMailbox(), QueueMailbox(10**6)):
        box.follows = frozenset({"AAPL"})
        box.offer(batch(1, "AAPL", "MSFT", "IBM"))
        box.offer(batch(2, "MSFT"))
        assert qs(drained(box)) == [("AAPL", 1)]
        box.follows = None  # "*"
        box.offer(batch(3, "IBM", "AAPL"))
        assert sorted(qs(drained(box))) == [("AAPL", 3), ("IBM", 3)]


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


def test_a_queue_notes_the_last_q_it_hands_over_of_each_symbol() -> None:
    box = QueueMailbox(10**6)
    box.follows = None
    seg = b'{"s":"A","p":1,"q":7,"t":1},{"s":"A","p":2,"t":2,"q":8}'
    segments = {"A": seg, "B": b'{"s":"B","q":3}', "C": b'{"s":"C","q":5}'}
    box.offer(Delivery(segments, {"A": 2, "B": 1, "C": 1}, {}, last_q={"A": 8, "B": 3}))
    positions: dict[str, int] = {}
    _segments, ticks = box.drain(positions=positions)
    assert ticks == 4 and positions == {"A": 8, "B": 3}  # C's batch did not say its q


def test_a_split_batch_notes_only_the_symbols_it_handed_over() -> None:
    box = QueueMailbox(10**6)
    box.follows = None
    segments = {"A": b"a" * 40, "B": b"b" * 40}
    box.offer(Delivery(segments, {"A": 1, "B": 1}, {}, last_q={"A": 4, "B": 9}))
    positions: dict[str, int] = {}
    box.drain(max_bytes=60, positions=positions)
    assert positions == {"A": 4}
    box.drain(positions=positions)
    assert positions == {"A": 4, "B": 9}
