"""The feed process -> worker link without sockets: frames, and a bus fed by another bus.

A worker's bus must serve what the feed process's bus would: the same bytes, ``q``,
snapshots and resumes, from batches it never encoded (``Bus.forward(numbered=True)``).
"""

from __future__ import annotations

import pytest

from ticker.cluster.pipe import (
    BadFrame,
    FrameReader,
    Kind,
    asked,
    decode_batch,
    decode_status,
    encode_batch,
    json_frame,
    split_asked,
    status_frame,
)
from ticker.core.bus import WILDCARD, Bus
from ticker.core.mailbox import Delivery, Follows
from ticker.core.status import SymbolStatus


class Tap:
    """A "*" subscriber keeping every delivery, as the fan-out is."""

    follows: Follows = None

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    def offer(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)


def frames_of(data: bytes, chunk: int) -> list[tuple[Kind, bytes]]:
    reader = FrameReader(1 << 20)
    return [f for at in range(0, len(data), chunk) for f in reader.feed(data[at : at + chunk])]


def test_a_batch_crosses_byte_for_byte_in_any_chunks() -> None:
    bus, tap = Bus(), Tap()
    bus.subscribe(tap, [WILDCARD])
    bus.publish([{"s": "AAPL", "p": 1.5}, {"s": "AAPL", "p": 1.6}, {"s": "MSFT", "p": 2.0}])
    sent = tap.deliveries[0]
    data = encode_batch(sent) + asked(Kind.ACK, 7, b'{"q":{}}') + json_frame(Kind.FEEDS, {})
    for chunk in (1, 3, len(data)):
        (k1, batch), (k2, ack), (k3, feeds) = frames_of(data, chunk)
        assert (k1, k2, k3) == (Kind.BATCH, Kind.ACK, Kind.FEEDS)
        got = decode_batch(batch)
        assert got.segments == sent.segments and got.latest == sent.latest
        assert got.counts == sent.counts and got.last_q == sent.last_q
        assert (got.t, got.newest) == (sent.t, sent.newest)
        assert split_asked(ack) == (7, b'{"q":{}}')
        assert feeds == b"{}"


def test_bad_frames_are_named_not_buffered() -> None:
    with pytest.raises(BadFrame, match="at most"):
        list(FrameReader(10).feed(b"\xff\xff\xff\x00\x02"))
    with pytest.raises(BadFrame, match="unknown frame kind"):
        list(FrameReader(10).feed(b"\x01\x00\x00\x00\x63"))
    with pytest.raises(BadFrame, match="does not match"):
        decode_batch(encode_batch(Delivery({}, {}, {}, 1, 2, {}))[5:] + b"x")
    for bad in (b"[]", b'{"X": {"status": "gone", "since": 1}}', b'{"X": {"status": "live"}}'):
        with pytest.raises(BadFrame, match="bad status frame"):
            decode_status(bad)


def test_a_status_crosses_with_its_since() -> None:
    changes = {"X": SymbolStatus("halted", "auction", 12), "Y": SymbolStatus("live", "", 13)}
    [(kind, payload)] = frames_of(status_frame(changes), 3)
    assert kind is Kind.STATUS and decode_status(payload) == changes


def test_a_bus_fed_by_another_serves_the_same_snapshots_and_resumes() -> None:
    origin, tap = Bus(history=5), Tap()
    origin.subscribe(tap, [WILDCARD])
    for p in range(8):
        origin.publish([{"s": "AAPL", "p": float(p)}, {"s": "MSFT", "p": p + 0.5}])
    # A worker that joins late: the catch-up first, then the live batches.
    copy = Bus(history=5, epoch=origin.epoch)
    ((_, payload),) = frames_of(encode_batch(origin.catch_up()), 4096)
    copy.forward(decode_batch(payload), numbered=True)
    origin.publish([{"s": "AAPL", "p": 9.0}])
    copy.forward(decode_batch(encode_batch(tap.deliveries[-1])[5:]), numbered=True)
    assert copy.snapshot(["AAPL", "MSFT"]) == origin.snapshot(["AAPL", "MSFT"])
    for symbol, since in (("AAPL", 5), ("MSFT", 4), ("AAPL", 1)):
        assert copy.missed(symbol, since) == origin.missed(symbol, since)
    assert copy.missed("AAPL", 5) is not None  # within the history: not a gap


def test_without_history_the_catch_up_is_the_last_values() -> None:
    origin = Bus()
    origin.publish([{"s": "AAPL", "p": 1.0}, {"s": "AAPL", "p": 2.0}])
    catch_up = origin.catch_up()
    assert (catch_up.counts, catch_up.last_q) == ({"AAPL": 1}, {"AAPL": 2})  # the last tick
    copy = Bus()
    ((_, payload),) = frames_of(encode_batch(catch_up), 64)
    copy.forward(decode_batch(payload), numbered=True)
    assert copy.snapshot(["AAPL"]) == origin.snapshot(["AAPL"])
    assert copy.publish([{"s": "AAPL", "p": 3.0}]) == {"AAPL": 3}
