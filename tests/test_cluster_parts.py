"""The relay's pure parts, without Redis: the outbox's rounds, the inbox's decisions, backoff."""

from __future__ import annotations

import random

import orjson
import pytest

from ticker.cluster.continuity import GAP_FIELD, Continuity
from ticker.cluster.inbox import Inbox
from ticker.cluster.outbox import Outbox
from ticker.cluster.stats import RedisStats
from ticker.cluster.wire import Keys, decode_message, encode_message, origin_prefix
from ticker.core.backoff import Backoff

KEYS = Keys("t", shards=0)
OWN = origin_prefix("me")


def tick(symbol: str, q: int) -> bytes:
    return orjson.dumps({"s": symbol, "p": 1.0, "q": q, "t": 7})


def batch(*ticks: tuple[str, int]) -> tuple[dict[str, bytes], dict[str, int], dict[str, bytes]]:
    """What the bus hands its publish tap: per symbol the comma-joined run, count, last."""
    runs: dict[str, list[bytes]] = {}
    for symbol, q in ticks:
        runs.setdefault(symbol, []).append(tick(symbol, q))
    segments = {s: b",".join(run) for s, run in runs.items()}
    return (
        segments,
        {s: len(run) for s, run in runs.items()},
        {s: run[-1] for s, run in runs.items()},
    )


def outbox(max_bytes: int = 10**6) -> tuple[Outbox, RedisStats]:
    stats = RedisStats()
    return Outbox(OWN, KEYS.channel, max_bytes, stats), stats


def published(
    args: list[str | bytes | int],
) -> tuple[dict[str, tuple[int, list[int]]], dict[str | bytes | int, str | bytes | int]]:
    """ROUND_SCRIPT's arguments read back: channel -> (number, q values), and the hash part."""
    n = args[0]
    assert isinstance(n, int)
    messages = {}
    for i in range(n):
        channel, data = args[1 + 2 * i], args[2 + 2 * i]
        assert isinstance(channel, str) and isinstance(data, bytes)
        origin, number, ticks = decode_message(data)
        assert origin == "me"
        messages[channel] = (number, [t["q"] for t in ticks])
    rest = args[1 + 2 * n :]
    return messages, dict(zip(rest[::2], rest[1::2], strict=True))


def test_a_round_holds_one_message_per_channel_and_each_symbols_latest_tick() -> None:
    out, stats = outbox()
    out.declare(["AAPL"])
    out.add(*batch(("AAPL", 1), ("MSFT", 1), ("AAPL", 2)), up=True)
    out.add(*batch(("AAPL", 3)), up=True)
    taken = out.take()
    assert taken.undeclared == {"AAPL", "MSFT"} and (taken.messages, taken.ticks) == (2, 4)
    assert taken.script_args is not None
    messages, saved = published(taken.script_args)
    assert messages == {"t:s:AAPL": (1, [1, 2, 3]), "t:s:MSFT": (1, [1])}
    assert saved == {"AAPL": tick("AAPL", 3), "MSFT": tick("MSFT", 1)}
    assert out.empty
    out.sent(taken)
    assert (stats.messages_published, stats.ticks_published) == (2, 4)
    out.add(*batch(("AAPL", 4)), up=True)
    messages, _ = published(out.take().script_args or [])
    assert messages == {"t:s:AAPL": (2, [4])}  # numbered per channel, so a loss shows


def test_the_message_is_the_one_encode_message_builds() -> None:
    out, _ = outbox()
    segments, counts, lasts = batch(("AAPL", 1), ("AAPL", 2))
    out.add(segments, counts, lasts, up=True)
    args = out.take().script_args
    assert args is not None and args[2] == encode_message(OWN, 1, [segments["AAPL"]])


def test_link_down_keeps_only_the_latest_and_counts_the_rest_dropped() -> None:
    out, stats = outbox()
    out.add(*batch(("AAPL", 1), ("AAPL", 2)), up=False)
    assert stats.ticks_dropped == 2 and out.latest == {"AAPL": tick("AAPL", 2)}
    assert out.local == {"AAPL"} and out.undeclared == {"AAPL"}
    out.synced()  # the handshake saved the latest and declared the symbols
    assert out.empty


def test_too_much_pending_is_dropped_whole_and_the_latest_still_saved() -> None:
    out, stats = outbox(max_bytes=len(tick("AAPL", 1)) * 2 + 1)  # two ticks and a comma
    out.add(*batch(("AAPL", 1), ("AAPL", 2)), up=True)
    assert stats.ticks_dropped == 0
    out.add(*batch(("AAPL", 3)), up=True)
    assert stats.ticks_dropped == 3
    taken = out.take()
    assert (taken.messages, taken.ticks) == (0, 0)
    messages, saved = published(taken.script_args or [])
    assert messages == {} and saved == {"AAPL": tick("AAPL", 3)}  # receivers heal from it


def test_a_failed_round_is_dropped_but_its_symbols_are_declared_again() -> None:
    out, stats = outbox()
    out.add(*batch(("AAPL", 1)), up=True)
    taken = out.take()
    out.failed(taken)
    assert stats.ticks_dropped == 1 and out.undeclared == {"AAPL"} and not out.empty
    out.drop_pending()
    assert stats.ticks_dropped == 1  # nothing was pending any more


def inbox() -> tuple[Inbox, RedisStats]:
    stats = RedisStats()
    return Inbox(OWN, KEYS.channel, stats, Continuity()), stats


def message(origin: str, number: int, *ticks: tuple[str, int]) -> bytes:
    return encode_message(origin_prefix(origin), number, [tick(s, q) for s, q in ticks])


def test_interest_is_counted_per_channel_and_the_wildcard_wants_every_remote_channel() -> None:
    box, _ = inbox()
    sharded = Keys("t", shards=2)
    box.follow("AAPL", True)
    box.follow("AAPL", True)
    box.follow("MSFT", True)
    box.follow("AAPL", False)
    assert box.desired(KEYS, list) == {"t:s:AAPL", "t:s:MSFT"}
    box.follow("AAPL", False)
    assert box.desired(KEYS, list) == {"t:s:MSFT"}
    box.follow_all(True)
    assert box.desired(KEYS, lambda: ["IBM"]) == {"t:s:IBM"}
    assert box.desired(sharded, list) == {"t:shard:0", "t:shard:1"}
    box.follow_all(False)
    assert box.desired(KEYS, lambda: ["IBM"]) == {"t:s:MSFT"}


def test_received_ticks_are_admitted_in_order_and_gaps_marked_for_healing() -> None:
    box, stats = inbox()
    box.subscribed = {"t:s:AAPL"}
    box.confirmed("t:s:AAPL")
    assert box.take_sync() == ({"t:s:AAPL"}, set())
    fresh, sync = box.receive("t:s:AAPL", message("o1", 1, ("AAPL", 1), ("AAPL", 2)))
    assert [t["q"] for t in fresh] == [1, 2] and not sync
    fresh, sync = box.receive("t:s:AAPL", message("o1", 2, ("AAPL", 2), ("AAPL", 5)))
    assert [t["q"] for t in fresh] == [5] and dict(fresh[0])[GAP_FIELD] == 2 and sync
    assert box.take_sync() == (set(), {"AAPL"})
    assert (stats.messages_received, stats.ticks_received) == (2, 4)


def test_a_lost_message_asks_for_the_channel_to_be_read_again() -> None:
    box, _ = inbox()
    box.subscribed = {"t:s:AAPL"}
    box.receive("t:s:AAPL", message("o1", 1, ("AAPL", 1)))
    _, sync = box.receive("t:s:AAPL", message("o1", 3, ("AAPL", 2)))
    assert sync and box.take_sync() == ({"t:s:AAPL"}, set())
    assert box.continuity.lost_messages == 1


def test_own_unfollowed_and_bad_messages_bring_nothing() -> None:
    box, stats = inbox()
    box.subscribed = {"t:s:AAPL"}
    assert box.receive("t:s:MSFT", message("o1", 1, ("MSFT", 1))) == ([], False)
    assert box.receive("t:s:AAPL", message("me", 1, ("AAPL", 1))) == ([], False)
    assert stats.messages_received == 0
    assert box.receive("t:s:AAPL", b"not json") == ([], False)
    fresh, _ = box.receive(
        "t:s:AAPL", b'{"o":"o1","n":1,"k":[{"s":"AAPL"},' + tick("AAPL", 1) + b"]}"
    )
    assert [t["q"] for t in fresh] == [1]
    assert stats.bad_messages == 2 and stats.ticks_received == 1


def test_sync_is_only_for_channels_still_subscribed() -> None:
    box, _ = inbox()
    box.subscribed = {"t:s:AAPL"}
    box.confirmed("t:s:AAPL")
    box.subscribed = set()
    assert box.take_sync() == (set(), set())


def test_backoff_doubles_to_its_cap_shortened_by_at_most_the_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 3.0, random.Random(1))
    delays = [backoff.delay() for _ in range(5)]
    for delay, base in zip(delays, [0.5, 1.0, 2.0, 3.0, 3.0], strict=True):
        assert base * 0.8 <= delay <= base
    backoff.reset()
    assert 0.4 <= backoff.delay() <= 0.5
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)
