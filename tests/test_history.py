"""History rings and resume: every missed tick or none (never a partial recovery)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ticker.core.bus import Bus
from ticker.core.history import Ring, format_positions, missed, parse_position, parse_since
from ticker.core.session import Limits, Session


def qs(encoded: list[bytes] | None) -> list[int] | None:
    """The q of each tick in these runs of encoded ticks."""
    return (
        None
        if encoded is None
        else [t["q"] for t in orjson.loads(b"[" + b",".join(encoded) + b"]")]
    )


def run(*q: int) -> bytes:
    return b",".join(orjson.dumps({"s": "A", "q": n}) for n in q)


def test_ring_keeps_at_least_the_last_n_in_whole_runs_and_answers_all_or_nothing() -> None:
    ring = Ring(3)
    for first, last in [(1, 2), (3, 3), (4, 6), (7, 7)]:
        ring.add(first, last, last - first + 1, run(*range(first, last + 1)))
    assert [r[:2] for r in ring.runs()] == [(4, 6), (7, 7)] and len(ring) == 4  # >= 3, whole runs
    assert missed(ring, 7, 7) == []
    assert qs(missed(ring, 3, 7)) == [4, 5, 6, 7]  # whole runs, as published
    assert missed(ring, 3, 7)[0] == run(4, 5, 6)
    assert qs(missed(ring, 4, 7)) == [5, 6, 7]  # a run cut where the client is
    assert missed(ring, 2, 7) is None  # 3 is gone: nothing rather than a part
    assert missed(ring, 9, 7) is None  # ahead of the stream: another stream
    assert missed(Ring(3), 0, 2) is None
    late = Ring(3)
    late.add(500, 500, 1, run(500))  # a relay that joined late: 1..499 were never here
    assert missed(late, 10, 500) is None and qs(missed(late, 499, 500)) == [500]


def test_bus_history_is_bounded_and_keeps_the_published_bytes() -> None:
    bus = Bus(clock=lambda: 7, epoch="e", history=4)
    bus.add_symbols(["AAPL"])
    for i in range(10):
        bus.publish([{"s": "AAPL", "p": float(i)}])
    assert qs(bus.missed("AAPL", 6)) == [7, 8, 9, 10]
    assert bus.missed("AAPL", 5) is None
    assert bus.snapshot(["AAPL"]) == bus.missed("AAPL", 9)
    bus.publish([{"s": "AAPL", "p": 1.0} for _ in range(6)] + [{"s": "MSFT", "p": 1.0}])
    assert qs(bus.missed("AAPL", 10)) == list(range(11, 17))  # one batch: kept whole
    assert qs(bus.missed("MSFT", 0)) == [1]
    assert Bus(epoch="e").missed("AAPL", 0) is None  # no history kept
    with pytest.raises(ValueError):
        Bus(history=-1)


def test_position_text_round_trips_and_rejects_garbage() -> None:
    text = format_positions("e1-x", {"AAPL": 12, "BRK:B": 3})
    assert parse_position(text) == ("e1-x", {"AAPL": 12, "BRK:B": 3})
    assert parse_since("") == {}
    for bad in ("AAPL", "AAPL:x", "AAPL:-1", ":3", f"AAPL:{2**60}"):
        with pytest.raises(ValueError):
            parse_since(bad)
    with pytest.raises(ValueError):
        parse_position("  ")


def make(mode: str = "all", **limits: Any) -> tuple[Bus, Session]:
    bus = Bus(clock=lambda: 1_000, epoch="e1", history=5)
    bus.add_symbols(["AAPL", "MSFT"])
    return bus, Session(bus, mode=mode, limits=Limits(**limits), session_id="s")


def resume(session: Session, since: dict[str, int], epoch: str = "e1") -> list[dict[str, Any]]:
    session.receive(
        orjson.dumps(
            {"op": "subscribe", "symbols": ["AAPL", "MSFT"], "since": since, "epoch": epoch}
        )
    )
    return [orjson.loads(f) for f in session.take_control()]


def test_resume_replays_what_was_missed_then_live_ticks_follow() -> None:
    bus, session = make()
    bus.publish([{"s": "AAPL", "p": 1.0} for _ in range(4)])
    for _ in range(8):  # one by one: the ring keeps the last 5
        bus.publish([{"s": "MSFT", "p": 2.0}])
    subscribed, snapshot, replay = resume(session, {"AAPL": 1, "MSFT": 1})
    assert subscribed["recovered"] == {"AAPL": True, "MSFT": False}  # MSFT 2 left the ring
    assert [(t["s"], t["q"]) for t in snapshot["ticks"]] == [("MSFT", 8)]
    assert [(t["s"], t["q"]) for t in replay["ticks"]] == [("AAPL", 2), ("AAPL", 3), ("AAPL", 4)]
    bus.publish([{"s": "AAPL", "p": 1.0}])
    frame, _ = session.take_ticks()
    assert [t["q"] for t in orjson.loads(frame)["ticks"]] == [5]  # no gap, no duplicate


def test_resume_from_another_epoch_or_without_history_is_a_snapshot() -> None:
    bus, session = make()
    bus.publish([{"s": "AAPL", "p": 1.0} for _ in range(2)])
    subscribed, snapshot = resume(session, {"AAPL": 1}, epoch="old")
    assert subscribed["recovered"] == {"AAPL": False}
    assert [t["q"] for t in snapshot["ticks"]] == [2]


def test_resume_up_to_date_sends_nothing_and_too_big_a_replay_is_not_partial() -> None:
    bus, session = make()
    bus.publish([{"s": "AAPL", "p": 1.0} for _ in range(3)])
    subscribed, *rest = resume(session, {"AAPL": 3})
    assert subscribed["recovered"] == {"AAPL": True} and rest == []
    bus, session = make(queue_bytes=200)  # half of it: not even two ticks
    bus.publish([{"s": "AAPL", "p": 1.0} for _ in range(3)])
    subscribed, snapshot = resume(session, {"AAPL": 0})
    assert subscribed["recovered"] == {"AAPL": False} and len(snapshot["ticks"]) == 1


@pytest.mark.parametrize(
    "op",
    [
        {"since": {"AAPL": 1}},  # no epoch
        {"since": [1], "epoch": "e1"},
        {"since": {"AAPL": -1}, "epoch": "e1"},
        {"since": {"AAPL": True}, "epoch": "e1"},
        {"since": {"IBM": 1}, "epoch": "e1"},  # not subscribed by this request
        {"since": {}, "epoch": "x" * 65},
    ],
)
def test_bad_resume_requests_are_bad_requests(op: dict[str, Any]) -> None:
    _, session = make()
    session.receive(orjson.dumps({"op": "subscribe", "symbols": ["AAPL"], "id": 3, **op}))
    (error,) = [orjson.loads(f) for f in session.take_control()]
    assert error["code"] == "bad_request" and error["id"] == 3


def test_connect_time_resume() -> None:
    bus, session = make()
    bus.publish([{"s": "AAPL", "p": 1.0} for _ in range(3)])
    session.start(20, ["AAPL"], ("e1", {"AAPL": 2}))
    _, subscribed, replay = [orjson.loads(f) for f in session.take_control()]
    assert subscribed["recovered"] == {"AAPL": True} and replay["ticks"][0]["q"] == 3


def test_history_memory_is_bounded_as_documented() -> None:
    """symbols x depth x (tick bytes + 110), and no growth once the rings are full."""
    import tracemalloc

    names = [f"S{i:02d}" for i in range(20)]
    bus = Bus(clock=lambda: 1_764_097_200_123_456, epoch="e", history=200)
    bus.add_symbols(names)

    def publish(rounds: int) -> None:
        for _ in range(rounds):
            bus.publish([{"s": s, "p": 100.12, "b": 100.11, "a": 100.13, "v": 100} for s in names])

    tracemalloc.start()
    try:
        publish(500)  # past q = 256 + 200: every q is an int object of its own from here on
        full = tracemalloc.get_traced_memory()[0]
        publish(400)
        later = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    tick_bytes = len(bus.snapshot(["S00"])[0])
    assert full < 20 * 200 * (tick_bytes + 110)
    assert later - full < 0.01 * full
