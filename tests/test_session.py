"""The transport-agnostic session: ops in, frames out, limits enforced; no sockets."""

from __future__ import annotations

from typing import Any

import orjson

from ticker.core.bus import Bus
from ticker.core.codes import CloseCode
from ticker.core.session import Limits, Session


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(mode: str = "conflate", **limits: Any) -> tuple[Bus, Session, Clock]:
    bus = Bus(clock=lambda: 1_000, epoch="e1")
    bus.add_symbols(["AAPL", "MSFT", "IBM"])
    clock = Clock()
    session = Session(
        bus,
        mode=mode,
        limits=Limits(**limits),
        monotonic=clock,
        clock_us=lambda: 5,
        session_id="s1",
    )
    return bus, session, clock


def frames(session: Session) -> list[dict[str, Any]]:
    return [orjson.loads(f) for f in session.take_control()]


def send(session: Session, **op: Any) -> list[dict[str, Any]]:
    session.receive(orjson.dumps(op))
    return frames(session)


def tick_frame(session: Session) -> list[tuple[str, int]]:
    frame, count = session.take_ticks()
    ticks = orjson.loads(frame)["ticks"]
    assert len(ticks) == count
    return [(t["s"], t["q"]) for t in ticks]


def test_welcome_then_connect_time_subscription() -> None:
    bus, session, _ = make(max_symbols=5)
    bus.publish([{"s": "AAPL", "p": 1.0}])
    session.start(20, ["AAPL", "MSFT"])
    welcome, subscribed, snapshot = frames(session)
    assert welcome == {
        "type": "welcome",
        "protocol": 1,
        "session": "s1",
        "epoch": "e1",
        "mode": "conflate",
        "heartbeat_s": 20,
        "server_time": 5,
        "limits": {
            "max_symbols": 5,
            "max_message_bytes": 65536,
            "ops_per_s": 20,
            "queue_bytes": 1048576,
        },
    }
    assert subscribed == {"type": "subscribed", "symbols": ["AAPL", "MSFT"]}
    assert snapshot["type"] == "snapshot" and [t["s"] for t in snapshot["ticks"]] == ["AAPL"]


def test_subscribe_partial_unknown_and_full_set_in_replies() -> None:
    _, session, _ = make()
    error, subscribed = send(session, op="subscribe", symbols=["AAPL", "NOPE", "ZZZ"], id=1)
    assert error["code"] == "unknown_symbol" and error["symbols"] == ["NOPE", "ZZZ"]
    assert error["id"] == 1
    assert subscribed == {"type": "subscribed", "id": 1, "symbols": ["AAPL"]}
    assert send(session, op="subscribe", symbols=["MSFT"], id=2)[0]["symbols"] == ["AAPL", "MSFT"]
    assert send(session, op="unsubscribe", symbols=["AAPL"], id=3) == [
        {"type": "unsubscribed", "id": 3, "symbols": ["MSFT"]}
    ]
    assert [e["code"] for e in send(session, op="subscribe", symbols=["NOPE"])] == [
        "unknown_symbol"
    ]


def test_mode_all_snapshot_then_stream_without_gap() -> None:
    bus, session, _ = make(mode="all")
    bus.publish([{"s": "AAPL", "p": float(i)} for i in range(1, 6)])
    _, snapshot = send(session, op="subscribe", symbols=["AAPL"])
    assert [t["q"] for t in snapshot["ticks"]] == [5]
    bus.publish([{"s": "AAPL", "p": 9.0}, {"s": "MSFT", "p": 1.0}])
    assert tick_frame(session) == [("AAPL", 6)]


def test_unsubscribe_drops_pending_ticks() -> None:
    bus, session, _ = make(mode="all")
    send(session, op="subscribe", symbols=["AAPL", "MSFT"])
    bus.publish([{"s": "AAPL", "p": 1.0}, {"s": "MSFT", "p": 1.0}])
    send(session, op="unsubscribe", symbols=["AAPL"])
    assert tick_frame(session) == [("MSFT", 1)]
    bus.publish([{"s": "AAPL", "p": 1.0}])
    assert not session.has_ticks()


def test_wildcard_covers_all_and_snapshots_only_new_symbols() -> None:
    bus, session, _ = make(mode="all")
    bus.publish([{"s": s, "p": 1.0} for s in ("AAPL", "MSFT", "IBM")])
    send(session, op="subscribe", symbols=["AAPL"])
    subscribed, snapshot = send(session, op="subscribe", symbols=["*"])
    assert subscribed["symbols"] == ["*", "AAPL"]
    assert sorted(t["s"] for t in snapshot["ticks"]) == ["IBM", "MSFT"]
    bus.publish([{"s": "AAPL", "p": 2.0}, {"s": "NEW", "p": 3.0}])
    assert sorted(tick_frame(session)) == [("AAPL", 2), ("NEW", 1)]  # no duplicate AAPL
    # leaving "*" keeps the explicit symbols streaming, without a gap
    assert send(session, op="unsubscribe", symbols=["*"])[0]["symbols"] == ["AAPL"]
    bus.publish([{"s": "AAPL", "p": 3.0}, {"s": "MSFT", "p": 3.0}])
    assert tick_frame(session) == [("AAPL", 3)]


def test_too_many_symbols_subscribes_nothing() -> None:
    _, session, _ = make(max_symbols=2)
    send(session, op="subscribe", symbols=["AAPL"])
    (error,) = send(session, op="subscribe", symbols=["MSFT", "IBM"], id=9)
    assert error["code"] == "too_many_symbols" and error["id"] == 9
    assert send(session, op="ping")[0]["type"] == "pong"
    assert session.subscriptions == {"AAPL"}


def test_ping_and_list() -> None:
    _, session, _ = make()
    assert send(session, op="ping", id="p") == [{"type": "pong", "id": "p", "server_time": 5}]
    assert send(session, op="list", id=4) == [
        {"type": "symbols", "id": 4, "symbols": ["AAPL", "IBM", "MSFT"]}
    ]


def test_bad_input_gets_an_error_and_the_session_stays_usable() -> None:
    _, session, _ = make()
    session.receive(b"{nope")
    session.receive_binary()
    codes = [f["code"] for f in frames(session)]
    assert codes == ["bad_json", "bad_request"]
    assert send(session, op="ping")[0]["type"] == "pong"
    assert session.close_request is None
    assert session.errors == {"bad_json": 1, "bad_request": 1}


def test_rate_limit_errors_then_closes_4029_if_it_goes_on() -> None:
    _, session, clock = make(ops_per_s=5)
    replies = [send(session, op="ping")[0]["type"] for _ in range(7)]
    assert replies == ["pong"] * 5 + ["error"] * 2
    clock.now += 1.0  # the bucket refills: the client is served again
    assert send(session, op="ping")[0]["type"] == "pong"
    for _ in range(30):
        session.receive(b'{"op":"ping"}')
    assert session.close_request is not None
    assert session.close_request.code == CloseCode.RATE_LIMITED


def test_queue_overflow_requests_close_4008() -> None:
    bus, session, _ = make(mode="all", queue_bytes=2000)
    send(session, op="subscribe", symbols=["AAPL"])
    bus.publish([{"s": "AAPL", "p": 1.0} for _ in range(100)])
    assert session.close_request is not None
    assert session.close_request.code == CloseCode.SLOW_CONSUMER
    assert not session.has_ticks()  # the queue was released at once
    session.end()
    assert bus.subscriber_count() == 0


def test_end_leaves_every_topic() -> None:
    bus, session, _ = make()
    send(session, op="subscribe", symbols=["AAPL", "MSFT", "*"])
    assert bus.subscriber_count() == 1  # "*" alone is registered
    session.end()
    assert bus.subscriber_count() == 0


def test_a_big_snapshot_fits_but_unread_replies_close_4008() -> None:
    bus = Bus(clock=lambda: 1_000, epoch="e1")
    symbols = [f"S{i:05d}" for i in range(20_000)]  # ~760 KB of snapshot
    bus.publish([{"s": s, "p": 1.0} for s in symbols])
    limits = Limits(max_symbols=30_000, queue_bytes=256 * 1024)  # replies bound: 512 KiB
    session = Session(bus, limits=limits, session_id="s1")
    session.receive(b'{"op":"subscribe","symbols":["*"]}')
    session.receive(b'{"op":"ping"}')
    assert session.close_request is None  # replies pile up only while the socket is full
    session.backed_up()  # the transport found the client's socket full
    assert session.close_request is not None
    assert session.close_request.code == CloseCode.SLOW_CONSUMER
