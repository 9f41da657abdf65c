"""The pure parts of scale-out: bus hooks, channel naming, messages, sequence continuity."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from ticker.cluster.config import redacted
from ticker.cluster.continuity import GAP_FIELD, Continuity
from ticker.cluster.wire import (
    BadMessage,
    Keys,
    decode_message,
    decode_tick,
    encode_message,
    origin_prefix,
    valid_tick,
)
from ticker.core.bus import WILDCARD, Bus
from ticker.core.mailbox import ConflatingMailbox, QueueMailbox


def test_interest_hook_fires_on_first_subscriber_and_last_unsubscriber_only() -> None:
    bus = Bus(epoch="e")
    bus.add_symbols(["AAPL", "MSFT"])
    calls: list[tuple[str, bool]] = []
    bus.on_interest = lambda topic, wanted: calls.append((topic, wanted))
    a, b = ConflatingMailbox(), QueueMailbox(10**6)
    bus.subscribe(a, ["AAPL"])
    bus.subscribe(b, ["AAPL", "MSFT"])
    bus.subscribe(a, ["AAPL"])  # already there: nothing new
    bus.unsubscribe(a, ["AAPL"])
    bus.unsubscribe(a, ["AAPL", "NOPE"])  # not subscribed: nothing
    assert calls == [("AAPL", True), ("MSFT", True)]
    bus.unsubscribe(b, ["AAPL", "MSFT"])
    bus.subscribe(a, [WILDCARD])
    bus.subscribe(b, [WILDCARD])
    bus.unsubscribe(a, [WILDCARD])
    bus.unsubscribe(b, [WILDCARD])
    assert calls[2:] == [("AAPL", False), ("MSFT", False), (WILDCARD, True), (WILDCARD, False)]


def test_publish_tap_sees_each_symbols_encoded_ticks_after_stamping() -> None:
    bus = Bus(clock=lambda: 1000, epoch="e")
    seen: list[tuple[dict[str, bytes], dict[str, int], dict[str, bytes]]] = []
    bus.on_publish = lambda *batch: seen.append(batch)
    bus.publish([{"s": "AAPL", "p": 1.0}, {"s": "MSFT", "p": 2.0}, {"s": "AAPL", "p": 3.0}])
    ((segments, counts, lasts),) = seen
    runs = {s: orjson.loads(b"[" + segment + b"]") for s, segment in segments.items()}
    assert [t["q"] for t in runs["AAPL"]] == [1, 2] and counts == {"AAPL": 2, "MSFT": 1}
    assert runs["MSFT"][0] == {"s": "MSFT", "p": 2.0, "q": 1, "t": 1000}
    assert orjson.loads(lasts["AAPL"]) == runs["AAPL"][-1]


def test_forget_drops_last_values_so_no_stale_snapshot_is_served() -> None:
    bus = Bus(epoch="e")
    bus.publish([{"s": "AAPL", "p": 1.0}, {"s": "MSFT", "p": 2.0}])
    bus.forget(["AAPL", "NOPE"])
    assert [orjson.loads(b)["s"] for b in bus.snapshot(["AAPL", "MSFT"])] == ["MSFT"]


def test_channels_per_symbol_or_sharded() -> None:
    per_symbol = Keys("t", shards=0)
    assert per_symbol.channel("AAPL") == "t:s:AAPL"
    assert per_symbol.all_channels(["AAPL", "MSFT"]) == {"t:s:AAPL", "t:s:MSFT"}
    sharded = Keys("t", shards=4)
    assert sharded.channel("AAPL") == sharded.channel("AAPL")  # stable across processes
    assert sharded.channel("AAPL") in sharded.all_channels([])
    assert len(sharded.all_channels([])) == 4
    assert len({sharded.channel(f"S{i}") for i in range(100)}) == 4
    with pytest.raises(ValueError):
        Keys(shards=-1)


def test_message_joins_encoded_ticks_and_starts_with_its_origin() -> None:
    prefix = origin_prefix("node-1")
    ticks = [
        orjson.dumps({"s": "AAPL", "p": 1.0, "q": 1, "t": 5}),
        b'{"s":"MSFT","p":2,"q":9,"t":5}',
    ]
    data = encode_message(prefix, 7, [b",".join(ticks[:1]), ticks[1]])
    assert data.startswith(prefix)
    origin, number, decoded = decode_message(data)
    assert (origin, number) == ("node-1", 7)
    assert [t["q"] for t in decoded] == [1, 9]


@pytest.mark.parametrize(
    "data",
    [b"", b"nope", b"[]", b'{"o":"x"}', b'{"o":1,"n":1,"k":[]}', b'{"o":"x","n":"1","k":[]}'],
)
def test_garbage_on_a_channel_is_a_bad_message_not_a_crash(data: bytes) -> None:
    with pytest.raises(BadMessage):
        decode_message(data)


def test_relayed_ticks_must_carry_a_valid_symbol_price_q_and_t() -> None:
    good = {"s": "AAPL", "p": 1.5, "q": 3, "t": 10}
    assert valid_tick(good)
    bad: object
    for bad in (
        [],
        {**good, "s": ""},
        {**good, "s": "*"},
        {**good, "s": "X" * 33},
        {**good, "q": 0},
        {**good, "q": 1.0},
        {**good, "t": None},
        {**good, "p": "1"},
        {"s": "AAPL", "p": 1.0},
    ):
        assert not valid_tick(bad), bad
    assert decode_tick(orjson.dumps(good)) == good
    assert decode_tick(b"{") is None
    assert decode_tick(b'{"s":"AAPL"}') is None


def tick(symbol: str, q: int) -> dict[str, object]:
    return {"s": symbol, "p": float(q), "q": q, "t": q}


def test_continuity_drops_old_ticks_and_marks_the_first_after_a_gap() -> None:
    c = Continuity()
    fresh, gapped = c.admit([tick("AAPL", 5), tick("AAPL", 6), tick("MSFT", 1)])
    assert [t["q"] for t in fresh] == [5, 6, 1] and gapped == []  # a first q is a baseline
    fresh, gapped = c.admit([tick("AAPL", 6), tick("AAPL", 9), tick("AAPL", 10), tick("MSFT", 2)])
    assert [(t["s"], t["q"], t.get(GAP_FIELD)) for t in fresh] == [
        ("AAPL", 9, 2),
        ("AAPL", 10, None),
        ("MSFT", 2, None),
    ]
    assert gapped == ["AAPL"] and c.gaps == 1 and c.stale == 1
    c.forget(["AAPL"])
    fresh, _ = c.admit([tick("AAPL", 20)])
    assert GAP_FIELD not in fresh[0] and c.gaps == 1  # not followed meanwhile: a fresh start


def test_continuity_notices_lost_messages_per_origin_and_channel() -> None:
    c = Continuity()
    assert not c.message("a", "ch1", 1)
    assert not c.message("a", "ch1", 2)
    assert not c.message("b", "ch1", 40)  # another origin: its own numbering
    assert not c.message("a", "ch2", 7)
    assert c.message("a", "ch1", 4)
    assert c.lost_messages == 1
    c.forget_channel("ch1")  # resubscribed: the next number is a new baseline
    assert not c.message("a", "ch1", 10)
    c.reset()
    assert not c.message("a", "ch2", 100)


def test_the_redis_password_never_reaches_logs_or_readyz() -> None:
    assert redacted("redis://:s3cret@r:6379/0") == "redis://:***@r:6379/0"
    assert redacted("redis://app:s3cret@r:6379/0") == "redis://app:***@r:6379/0"
    assert redacted("redis://r:6379/0") == "redis://r:6379/0"


def test_bars_in_redis_are_named_by_series_and_stored_as_their_56_bytes() -> None:
    from ticker.cluster.candle_store import decode_bars, parse_series, series_key
    from ticker.core.candles import BAR

    assert series_key("ticker", ("BTC-USD", "1m")) == "ticker:bars:BTC-USD@1m"
    assert parse_series("ticker", b"ticker:bars:BTC-USD@1m") == ("BTC-USD", "1m")
    assert parse_series("ticker", b"ticker:bars:BTC-USD@2m") is None  # not an interval
    rows = np.zeros(2, BAR)
    rows["ts"] = [1, 2]
    decoded = decode_bars([row.tobytes() for row in rows])
    assert decoded is not None and decoded.tolist() == rows.tolist()
    assert decode_bars([b"not a bar"]) is None


def test_bars_waiting_for_redis_are_bounded_and_the_rest_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ticker.cluster import candle_store
    from ticker.cluster.config import RedisConfig
    from ticker.core.candles import BAR, Candles

    monkeypatch.setattr(candle_store, "MAX_PENDING", 3)
    store = candle_store.CandleStore(RedisConfig("redis://127.0.0.1:1"), Candles())
    store.keep([(("A", "1s"), np.zeros(2, BAR)), (("B", "1s"), np.zeros(2, BAR))])
    assert store.dropped_bars == 2 and list(store._pending) == [("A", "1s")]
