"""The delay line: ticks released at t + D, in order, with t kept; bounded; pure."""

from __future__ import annotations

import orjson

from ticker.core.bus import WILDCARD, Bus
from ticker.core.delay import DelayLine
from ticker.core.entitlements import Entitlements, Principal
from ticker.core.mailbox import QueueMailbox
from ticker.core.session import Session
from ticker.server.delayed import DelayPump

D = 900.0
SEC = 1_000_000


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def setup(max_bytes: int = 1 << 30) -> tuple[Bus, DelayLine, Clock]:
    clock = Clock(1_000 * SEC)
    live = Bus(clock=clock, epoch="e1")
    live.add_symbols(["AAPL", "MSFT"])
    line = DelayLine(D, live, clock=clock, max_bytes=max_bytes)
    live.subscribe(line, [WILDCARD])
    return live, line, clock


def drained(mailbox: QueueMailbox) -> list[dict]:
    segments, _ = mailbox.drain()
    return [tick for s in segments for tick in orjson.loads(b"[" + s + b"]")]


def test_ticks_come_out_at_t_plus_d_in_order_with_their_t() -> None:
    live, line, clock = setup()
    out = QueueMailbox(1 << 20)
    line.bus.subscribe(out, ["AAPL", "MSFT"])
    live.publish([{"s": "AAPL", "p": 1.0}, {"s": "MSFT", "p": 1.5}])  # t = 1000 s
    clock.now += SEC
    live.publish([{"s": "AAPL", "p": 2.0}])  # t = 1001 s
    live.publish([{"s": "AAPL", "p": 3.0, "t": 1003 * SEC}])  # stamped ahead (another clock)
    for now in (1000, 1500, 1899.999999):
        clock.now = int(now * SEC)
        assert line.release() is not None and len(out) == 0, now
    clock.now = 1900 * SEC
    assert line.release() == 1.0 and [t["p"] for t in drained(out)] == [1.0, 1.5]
    clock.now = 1901 * SEC
    assert line.release() == 2.0  # the third waits for its own t + D, not its arrival + D
    (tick,) = drained(out)
    assert (tick["p"], tick["t"], tick["q"]) == (2.0, 1001 * SEC, 2)
    clock.now = 1903 * SEC
    assert line.release() is None and [t["t"] for t in drained(out)] == [1003 * SEC]


def test_a_late_subscriber_gets_the_delayed_snapshot_never_the_live_one() -> None:
    live, line, clock = setup()
    live.publish([{"s": "AAPL", "p": 1.0}])
    clock.now += 600 * SEC
    live.publish([{"s": "AAPL", "p": 2.0}])
    bob = Principal("bob", None, Entitlements(["*"]), delay_s=D)
    session = Session(line.bus, principal=bob)
    session.receive(b'{"op":"subscribe","symbols":["AAPL"]}')
    assert [orjson.loads(f)["type"] for f in session.take_control()] == ["subscribed"]  # none yet
    clock.now += 300 * SEC
    line.release()
    session.receive(b'{"op":"unsubscribe","symbols":["AAPL"]}')
    session.receive(b'{"op":"subscribe","symbols":["AAPL"]}')
    snapshot = orjson.loads(session.take_control()[-1])
    assert snapshot["type"] == "snapshot" and [t["p"] for t in snapshot["ticks"]] == [1.0]


def test_memory_is_bounded_by_dropping_the_oldest_never_releasing_early() -> None:
    live, line, clock = setup(max_bytes=2_000)
    out = QueueMailbox(1 << 20)
    line.bus.subscribe(out, ["AAPL"])
    for i in range(100):
        clock.now += SEC // 10
        live.publish([{"s": "AAPL", "p": float(i)}])
        assert line.nbytes <= 2_000
    assert line.dropped > 0 and len(line) + line.dropped == 100
    line.release()
    assert len(out) == 0  # nothing is due yet, dropped or not
    clock.now += int(D * SEC)
    line.release()
    prices = [t["p"] for t in drained(out)]
    assert prices == [float(i) for i in range(100 - len(prices), 100)]  # the newest, in order


def test_the_pump_shares_a_line_per_delay_and_starts_over_on_a_new_epoch() -> None:
    live = Bus(epoch="e1")
    pump = DelayPump(live, max_bytes=1 << 20)
    first = pump.bus(900.0)
    assert pump.bus(900.0) is first and pump.bus(60.0) is not first
    live.epoch = "e2"  # a cluster's stream restarted
    fresh = pump.bus(900.0)
    assert fresh is not first and fresh.epoch == "e2" and live.wildcard_count() == 2
